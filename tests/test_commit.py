"""The commit protocol, exactly once: two writers of one trial in every order, what verify
flags, a unit that fails after a compaction, and stores of the first release.

Counts are of raw rows across every part (``Store.raw_table``), never of part names.
"""

from __future__ import annotations

import itertools
import shutil
import threading
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import scaling.store.parts as parts_mod
from scaling.store.verify import compact, verify
from scaling.store.writer import Store
from scaling.store.views import load_tables
from test_integrity import Hooked, kinds, result, rows, tid_of

FIXTURE = Path(__file__).parent / "fixtures" / "store_v1"


# ---- two writers, every order -------------------------------------------------------------------

GATES = ("open", "move")
"""The visible steps of a part write: its temporary file is opened, then renamed into place."""


def schedules():
    """Every interleaving of two writers' eight gated steps (curves open/move, trials open/move)."""
    for positions in itertools.combinations(range(8), 4):
        yield "".join("A" if i in positions else "B" for i in range(8))


class Turns:
    """Lets writer A or B pass a gate only when the schedule says it is its turn."""

    def __init__(self, schedule: str):
        self.schedule, self.at, self.cond = schedule, 0, threading.Condition()

    def gate(self, who: str):
        def hook(n, op, path):
            if op not in GATES:
                return
            with self.cond:
                assert self.cond.wait_for(lambda: self.schedule[self.at] == who, timeout=20), (self.schedule, who)
                self.at += 1
                self.cond.notify_all()
        return hook


def writer(root: Path, turns: Turns, who: str) -> Store:
    store = Store(str(root))
    store.fs = pafs.PyFileSystem(Hooked(pafs.LocalFileSystem(), turns.gate(who)))
    return store


@pytest.mark.parametrize("schedule", list(schedules()))
def test_two_writers_of_one_trial_in_every_order(tmp_path, schedule):
    """Two drivers (or a rerun while old workers still run) commit the same trial at once: both runs
    commit, each with all its curve rows, and readers show the one the rule picks."""
    Store(str(tmp_path)).ensure_sweep("s")
    runs = {"A": result(0, acc=0.3, n_curve=4, run_id="b" * 32), "B": result(0, acc=0.7, n_curve=2, run_id="a" * 32)}
    turns = Turns(schedule)
    threads = [threading.Thread(target=writer(tmp_path, turns, who).write_result, args=("s", runs[who]))
               for who in "AB"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert turns.at == 8, "every step ran"
    trials, curves = (Store(str(tmp_path)).raw_table(t) for t in ("trials", "curves"))
    assert sorted(trials.column("run_id").to_pylist()) == ["a" * 32, "b" * 32], "both runs committed, once each"
    per_run = {r: curves.filter(pc.equal(curves.column("run_id"), r)).num_rows for r in ("a" * 32, "b" * 32)}
    assert per_run == {"b" * 32: 4, "a" * 32: 2}, "every committed run keeps all its curve rows"
    kept, kept_curves = load_tables(str(tmp_path))
    assert kept.column("run_id").to_pylist() == ["a" * 32] and kept_curves.num_rows == 2, "the rule's pick"
    assert kinds(verify(str(tmp_path))).get("superseded"), "verify notes the superseded run"
    assert verify(str(tmp_path)).ok, "two drivers' runs of one trial are the normal state, not a problem"


def test_verify_flags_a_committed_run_without_curves(tmp_path):
    """A hand-made commit event whose curves part holds no rows of its run, and an earlier release's
    part whose run has no curves anywhere: readers would show trials without curves."""
    store = Store(str(tmp_path))
    store.write_result("s", result(0))
    name = parts_mod.commit_name(tid_of(1), "c" * 32)
    store.write_table("s", "curves", name, [])
    store.write_table("s", "trials", name, [result(1, run_id="c" * 32)["trial"]])
    store.write_table("s", "trials", "legacy", [result(2)["trial"]])
    report = verify(str(tmp_path))
    assert kinds(report)["no-curves"] == {f"{name}.parquet", "legacy.parquet"}
    line = next(str(f) for f in report.problems if f.kind == "no-curves" and "legacy" in f.path)
    assert tid_of(2) in line and "\n" not in line


def test_verify_reports_a_sweep_that_mixes_code_versions(tmp_path):
    store = Store(str(tmp_path))
    old, new = result(0), result(1)
    old["trial"]["code_version"], new["trial"]["code_version"] = "1", "2"
    for r in (old, new):
        store.write_result("s", r)
    found = [f for f in verify(str(tmp_path)).problems if f.kind == "mixed-versions"]
    assert len(found) == 1 and "['1', '2']" in found[0].message


def test_a_corrupt_curves_part_makes_its_trial_pending(tmp_path):
    from scaling.store.resume import resume_state

    store = Store(str(tmp_path))
    for seed in range(3):
        store.write_result("s", result(seed))
    victim = next((tmp_path / "s" / "curves").glob(f"{tid_of(1)}-*.parquet"))
    victim.write_bytes(b"not parquet")
    with pytest.warns(UserWarning):
        state = resume_state(store, "s", ("ok", "diverged", "failed"), ("1", "1"), rerun_stale=False,
                             accept_mixed=True)
    done = {f"{int(i):016x}" for i in state.done_ids}
    assert done == {tid_of(0), tid_of(2)}, "the trial whose curves are broken runs again"


# ---- a unit that fails after a compaction --------------------------------------------------------

class _Unit:
    def __init__(self, trials, engine):
        self.trials, self.engine = tuple(trials), engine


def test_a_unit_that_fails_after_a_compaction_never_turns_ok_into_failed(tmp_path):
    """The driver settles a failed unit from the store: members committed (and compacted since) are
    counted as they are; only the others are written as failed, and even a stray failed run would
    lose to the ok one."""
    from cluster.driver.drive import _settle_failed
    from scaling.store.resume import Settled
    from scaling.config.sweep import parse_config
    from scaling.store.views import open_store

    cfg = parse_config({"name": "s", "task": {"name": "digits"}, "model": {"name": "mlp", "width": 8},
                        "axes": {"n_train": [100], "batch_size": [16], "lr": [0.1], "seed": [0, 1, 2, 3, 4]},
                        "budget": {"epochs": 1.0}, "eval": {"points": 3}})
    trials = cfg.trials()
    store = Store(str(tmp_path))
    for t in trials[:3]:
        r = result(0)
        r["trial"].update(t.columns())
        store.write_result("s", r)
    compact(str(tmp_path), stale_s=0)
    assert [p.name.startswith("merged-") for p in (tmp_path / "s" / "trials").glob("*.parquet")] == [True]
    counts, lines = [], []
    again = _settle_failed(cfg, store, _Unit([trials[1], trials[3]], "single"), RuntimeError("pack died"),
                           Settled(), counts.append, _NoCompactor(), lines.append)
    assert again == [] and counts == ["ok", "failed"]
    raw = store.raw_table("trials")
    assert raw.filter(pc.equal(raw.column("status"), "failed")).column("trial_id").to_pylist() == [trials[3].trial_id]
    again = _settle_failed(cfg, store, _Unit(trials, "packed"), RuntimeError("pack died"), Settled(("ok",)),
                           counts.append, _NoCompactor(), lines.append)
    assert [t[0].trial_id for t in again] == [trials[3].trial_id, trials[4].trial_id], \
        "a failed pack is split: only its members without an ok run run again"
    with open_store(str(tmp_path)) as view:
        kept = {r["trial_id"]: r["status"] for r in view.sql("SELECT trial_id, status FROM trials").to_pylist()}
    assert kept == {**{t.trial_id: "ok" for t in trials[:3]}, trials[3].trial_id: "failed"}
    assert len(lines) == 2 and "a pack of 5 failed" in lines[1]


class _NoCompactor:
    def add(self, n):
        pass


# ---- the first release's stores -------------------------------------------------------------------

def test_a_first_release_store_reads_the_same_after_compaction_converts_it(tmp_path):
    root = shutil.copytree(FIXTURE, tmp_path / "store")
    before = rows(root)
    assert len(before[0]) == 8 and len(before[1]) > 8
    report = compact(str(root), stale_s=0)
    assert {m.sweep for m in report.merges} == {"digits_v1", "teacher_v1"}
    assert rows(root) == before, "union by name: the old columns read as null, before and after"
    for sweep in ("digits_v1", "teacher_v1"):
        for table in ("trials", "curves"):
            names = [p.name for p in (root / sweep / table).glob("*.parquet")]
            assert len(names) == 1 and names[0].startswith("merged-"), (sweep, table, names)
        merged = next((root / sweep / "trials").glob("*.parquet"))
        assert "val_loss" in pq.read_schema(merged).names, "merged parts are in the current schema"
    assert verify(str(root)).ok
