"""The peers of issue 28's bench (cluster.bench.peers): a member stopped on request through
``run_members(..., on_eval=...)``, and Optuna's TPE + Hyperband through the real loop, the real
store and ``scaling bopt``'s code."""

from __future__ import annotations

import pytest

from scaling.config.sweep import config_from_text
from scaling.training.backends.stacked import StackedBackend
from scaling.training.loop import run_members

SWEEP = """
name: peers
task: {name: digits}
model: {name: mlp, width: 16, depth: 1}
axes: {n_train: [100, 200], batch_size: [4, 8, 16, 32, 64], lr: [0.3], seed: [0, 1]}
budget: {epochs: 4}
eval: {every_steps: 5}
"""


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread, as a sweep's packs (and the peers) train on CPU: with two on the shared
    2-core machine these three tiny trainings took 2-4 s each instead of 0.04 s."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_on_eval_returning_a_reason_stops_that_member_as_pruned():
    trials = [t for t in config_from_text(SWEEP).trials() if t.batch_size == 8][:3]  # one pack: one B
    target = trials[0]
    heard = []

    def on_eval(trial, row):
        heard.append((trial.trial_id, row["step"]))
        return "asked to stop" if trial.trial_id == target.trial_id and row["step"] >= 10 else None

    results = run_members(trials, lambda ts: StackedBackend(ts, "cpu"), engine="packed", on_eval=on_eval)
    rows = {r["trial"]["trial_id"]: r for r in results}
    stopped = rows[target.trial_id]
    assert stopped["trial"]["status"] == "pruned" and stopped["trial"]["error"] == "asked to stop"
    assert stopped["trial"]["steps"] == 10 < target.total_steps
    assert [c["step"] for c in stopped["curves"]] == [0, 5, 10]
    for t in trials[1:]:  # the others run their whole budget, ok
        assert rows[t.trial_id]["trial"]["status"] == "ok"
        assert rows[t.trial_id]["trial"]["steps"] == t.total_steps
    # asked at every eval: stopped at the first after step 0; asked only at the last step: not a prune
    first = run_members(trials[1:2], lambda ts: StackedBackend(ts, "cpu"), engine="packed",
                        on_eval=lambda trial, row: "stop")[0]["trial"]
    assert first["status"] == "pruned" and first["steps"] == 5
    t = trials[2]
    late = run_members([t], lambda ts: StackedBackend(ts, "cpu"), engine="packed",
                       on_eval=lambda trial, row: "stop" if row["step"] == t.total_steps else None)[0]["trial"]
    assert late["status"] == "ok" and late["steps"] == t.total_steps


def _run_peer_apart(peer: str, results) -> tuple[dict, object, list, list[dict]]:
    """``run_peers(SWEEP, results, [peer], budget=1/3, num_cpus=1)[peer]`` in a fresh interpreter:
    (that answer, the peer's sweep config, its groups' trials, the stored trial rows), the answer
    checked to name the sweep and its two groups."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from cluster.bench.peers import groups, peer_config
    from scaling.store.views import open_store

    run = ("import json, sys, yaml\n"
           "from cluster.bench.peers import run_peers\n"
           "out = run_peers(yaml.safe_load(sys.stdin.read()), sys.argv[1], [sys.argv[2]], budget=1 / 3,"
           " num_cpus=1, log=None)[sys.argv[2]]\n"
           "print(json.dumps(out, default=str))\n")
    proc = subprocess.run([sys.executable, "-c", run, str(results), peer], input=SWEEP, capture_output=True, check=False,
                          text=True, cwd=Path(__file__).resolve().parents[1], timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    name = f"peers_{peer}"
    _, cfg = peer_config(yaml.safe_load(SWEEP), name)
    grouped = list(groups(cfg).values())
    assert out["sweep"] == name and len(out["groups"]) == len(grouped) == 2
    with open_store(str(results), [name]) as view:
        rows = view.sql("SELECT trial_id, status, steps, error, n_train FROM trials").to_pylist()
    return out, cfg, grouped, rows


def test_optuna_peer_through_the_real_loop_store_and_bopt(tmp_path):
    """Two groups, TPE + Hyperband at a third of each group's steps, one process: the rows are
    stored, the steps the peer counted are the stored rows' steps, a pruned trial stopped before
    its budget, each group stayed within its budget (plus at most one eval interval) and
    scaling bopt's code reads the sweep. The peer runs in a fresh interpreter, as the Tune test's
    does. (Twice no trial was stopped by Hyperband: its brackets hash the study's name, which was
    random; the peer now names its study, ``cluster/bench/peers.py``.)"""

    from analysis.rules.bopt import find_bopt
    from analysis.tables.load import load_trials

    out, cfg, grouped, rows = _run_peer_apart("optuna", tmp_path)
    total = {t.trial_id: t.total_steps for t in cfg.trials()}
    assert sum(r["steps"] for r in rows) == sum(g["steps"] for g in out["groups"])
    pruned = [r for r in rows if r["status"] == "pruned"]
    assert pruned and all(r["steps"] < total[r["trial_id"]] for r in pruned)
    assert any("Hyperband" in r["error"] for r in pruned)
    for g, trials in zip(out["groups"], grouped):
        grid = sum(t.total_steps for t in trials)
        assert g["budget"] == pytest.approx(grid / 3)
        largest_interval = max(t.total_steps for t in trials) * (1 - 1 / 1.75)
        assert g["steps"] <= g["budget"] + largest_interval and g["steps"] >= 0.5 * g["budget"]
        assert g["trained"] < len(trials)  # the budget left grid points unrun
    res = find_bopt(load_trials(str(tmp_path / "peers_optuna")), metric="val_loss", n_boot=50)
    assert len(res.groups) == 2


@pytest.mark.slow
@pytest.mark.serial  # a local Ray (conftest)
def test_tune_peer_through_the_real_loop_store_and_bopt(tmp_path):
    """Ray Tune's ASHA on two groups at a third of their steps, one CPU: no trial errors, each
    group's trials ran on one reused actor (a trial's process outlives it: without reuse, or with
    the stopped trial's thread left waiting, each trial needed a fresh actor or failed), every trial
    that reported is stored once, a trial ASHA stopped is stored ``pruned`` before its budget,
    each group kept its budget (plus at most one eval interval) and scaling bopt's code reads the
    sweep. The peer runs in a fresh interpreter: Tune starts a local Ray of its own, and the
    session's (``ray_local``) may already be up in this one."""

    from analysis.rules.bopt import find_bopt
    from analysis.tables.load import load_trials
    from scaling.store.writer import Store

    out, cfg, grouped, rows = _run_peer_apart("tune", tmp_path)
    raw = [r["trial_id"] for r in Store(str(tmp_path)).raw_table("trials").to_pylist() if r["sweep"] == "peers_tune"]
    assert len(raw) == len(set(raw)) == len(rows), "each trial stored once"
    total = {t.trial_id: t.total_steps for t in cfg.trials()}
    pruned = [r for r in rows if r["status"] == "pruned"]
    assert pruned and all(r["steps"] < total[r["trial_id"]] and "Ray Tune" in r["error"] for r in pruned)
    assert all(r["steps"] == total[r["trial_id"]] for r in rows if r["status"] == "ok")
    for g, trials in zip(out["groups"], grouped):
        assert g["errors"] == 0 and g["actors"] == 1 < g["reported"], g
        mine = [r for r in rows if r["trial_id"] in {t.trial_id for t in trials}]
        assert len(mine) >= g["reported"], g  # a trial stopped before its first report is stored too
        grid = sum(t.total_steps for t in trials)
        assert g["budget"] == pytest.approx(grid / 3)
        largest_interval = max(t.total_steps for t in trials) * (1 - 1 / 1.75)
        steps = sum(r["steps"] for r in mine)
        assert 0.5 * g["budget"] <= steps <= g["budget"] + 2 * largest_interval, (steps, g)
        assert len(mine) < len(trials)  # the budget left grid points unrun
    res = find_bopt(load_trials(str(tmp_path / "peers_tune")), metric="val_loss", n_boot=50)
    assert len(res.groups) == 2
