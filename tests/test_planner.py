"""Planning trials into packs, and resuming a half-done pack."""

from __future__ import annotations

from cluster.driver.planner import plan
from cluster.worker.units import execute_unit
from scaling.config.sweep import parse_config
from scaling.spec.schema import trial_id
from scaling.store.writer import Store
from scaling.store.views import load_tables
from scaling.training.run import run_trial

RAW = {"name": "p", "task": {"name": "digits"}, "model": {"name": "mlp", "width": 16, "depth": 1},
       "axes": {"n_train": [50, 100], "batch_size": [8, 32], "lr": [0.05, 0.1, 0.2],
                "momentum": [0.0, 0.9], "seed": [0, 1]},
       "budget": {"epochs": 1}, "eval": {"points": 3}}


def trials():
    return parse_config(RAW).trials()


def test_packs_share_batch_size_and_respect_limits():
    ts = trials()
    units = plan(ts, engine="packed", slots=2, memory_bytes=1 << 30, max_members=10, log=lambda *_: None)
    assert sorted(trial_id(t) for u in units for t in u.trials) == sorted(trial_id(t) for t in ts)
    assert all(u.engine == "packed" and len({t.batch_size for t in u.trials}) == 1 for u in units)
    assert max(len(u.trials) for u in units) <= 10
    per_batch = {}
    for u in units:
        per_batch.setdefault(u.trials[0].batch_size, []).append(len(u.trials))
    assert all(len(v) >= 2 for v in per_batch.values()), "each group is split over the 2 slots"


def test_memory_budget_shrinks_packs_and_single_engine_packs_nothing():
    ts = trials()
    small = plan(ts, engine="packed", slots=1, memory_bytes=1, max_members=100, log=lambda *_: None)
    assert all(len(u.trials) == 1 for u in small)
    single = plan(ts, engine="single", slots=2, memory_bytes=1 << 30, log=lambda *_: None)
    assert len(single) == len(ts) and {u.engine for u in single} == {"single"}


def test_half_done_pack_resumes_only_its_unfinished_members(tmp_path):
    members = [t for t in trials() if t.batch_size == 8][:4]
    store = Store(str(tmp_path))
    for t in members[:2]:  # stored by an earlier attempt that then died
        store.write_result("p", run_trial(t))
    before = {r["trial_id"]: r["run_id"] for r in load_tables(str(tmp_path))[0].to_pylist()}
    summaries = execute_unit(tuple(members), "packed", "p", str(tmp_path), 1, "cpu")
    assert sorted(s["trial_id"] for s in summaries) == sorted(trial_id(t) for t in members)
    assert all(s["status"] == "ok" for s in summaries)
    after = {r["trial_id"]: r for r in load_tables(str(tmp_path))[0].to_pylist()}
    assert len(after) == 4
    for tid, run_id in before.items():
        assert after[tid]["run_id"] == run_id, "finished members were not trained again"
    assert {after[trial_id(t)]["engine"] for t in members[2:]} == {"packed"}
