"""The packed engine: a trial packed gives what it gives alone, members fail alone, and the bench runs.

Tolerances: packed and single trials run the same arithmetic in a different order
(batched matmuls, a hand-written backward, per-member hyperparameter tensors), so
they agree to float32 rounding, not bit for bit. Over these short runs (<= 75
steps) the largest gap seen is 7e-7 (metrics and weights, relative and absolute);
the tests allow rtol 1e-4 and atol 1e-5. Long runs at the edge of stability
amplify rounding (run_trial itself differs between 1 and 2 torch threads there),
so the tests keep to short, stable runs.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import scaling.training.backends.stacked as packed
from scaling.training.packing import can_pack, estimate_pack_bytes, pack_key
from scaling.training.run import run_pack
from scaling.spec.schema import as_trial
from scaling.store.writer import Store
from scaling.store.views import load_tables
from scaling.training.loop import eval_steps
from scaling.training.run import run_trial
from scaling.spec.schema import total_steps

ROOT = Path(__file__).resolve().parents[1]
RTOL, ATOL = 1e-4, 1e-5
BASE = {"task": {"name": "digits"}, "model": {"name": "mlp", "width": 32, "depth": 1},
        "n_train": 200, "batch_size": 16, "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0,
        "seed": 0, "budget": {"epochs": 3.0}, "eval": {"points": 5}}
# Different lr, momentum, weight decay, seed and n_train; with an epochs budget
# n_train 100, 200 and 400 give 19, 38 and 75 steps, so members finish apart.
MIXED = [BASE,
         {**BASE, "lr": 0.3, "momentum": 0.9, "seed": 1, "n_train": 100},
         {**BASE, "lr": 0.05, "momentum": 0.5, "weight_decay": 1e-2, "seed": 2, "n_train": 400},
         {**BASE, "lr": 0.2, "momentum": 0.95, "weight_decay": 1e-3, "seed": 1, "n_train": 200},
         {**BASE, "lr": 0.02, "momentum": 0.9}]  # same start and subset as BASE
DIVERGES = {**BASE, "lr": 100.0, "seed": 3}  # its loss passes the divergence threshold within a few steps


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def alone(trial: dict, monkeypatch) -> tuple[dict, dict]:
    """run_trial's result and its model's final weights."""
    result = run_trial(trial, return_params=True)
    return result, result.pop("params")


def assert_same_result(mine: dict, ref: dict) -> None:
    a, b = mine["trial"], ref["trial"]
    for key in ("trial_id", "status", "steps", "examples_seen", "n_params", "n_train", "lr", "seed"):
        assert a[key] == b[key], key
    for key in ("train_loss", "test_loss", "test_acc"):
        assert math.isclose(a[key], b[key], rel_tol=RTOL, abs_tol=ATOL) or (
            math.isnan(a[key]) and math.isnan(b[key])), (key, a[key], b[key])
    assert [c["step"] for c in mine["curves"]] == [c["step"] for c in ref["curves"]]
    for c, d in zip(mine["curves"], ref["curves"]):
        assert c["examples_seen"] == d["examples_seen"] and c["epoch"] == d["epoch"]
        for key in ("train_loss", "test_loss", "test_acc"):
            assert math.isclose(c[key], d[key], rel_tol=RTOL, abs_tol=ATOL), (c["step"], key, c[key], d[key])


@pytest.fixture(scope="module")
def mixed_pack():
    return run_pack(MIXED, return_params=True)


@pytest.mark.parametrize("i", range(len(MIXED)))
def test_packed_trial_matches_the_trial_alone(mixed_pack, i, monkeypatch):
    ref, ref_params = alone(MIXED[i], monkeypatch)
    mine = mixed_pack[i]
    assert_same_result(mine, ref)
    assert mine["trial"]["steps"] == total_steps(MIXED[i])
    assert [c["step"] for c in mine["curves"]] == eval_steps(MIXED[i], total_steps(MIXED[i]))
    assert mine["params"].keys() == ref_params.keys()
    for name, value in ref_params.items():
        torch.testing.assert_close(mine["params"][name], value, rtol=RTOL, atol=ATOL, msg=name)


@pytest.mark.parametrize("depth", [0, 2])
def test_other_depths_match_too(depth, monkeypatch):
    trials = [{**BASE, "model": {"name": "mlp", "width": 24, "depth": depth}, "budget": {"steps": 30},
               "eval": {"every_steps": 7}, **extra}
              for extra in ({}, {"lr": 0.3, "momentum": 0.9, "seed": 5, "n_train": 64})]
    for mine, trial in zip(run_pack(trials, return_params=True), trials):
        ref, ref_params = alone(trial, monkeypatch)
        assert_same_result(mine, ref)
        for name, value in ref_params.items():
            torch.testing.assert_close(mine["params"][name], value, rtol=RTOL, atol=ATOL, msg=name)


def test_small_index_blocks_and_eval_chunks_change_nothing(mixed_pack, monkeypatch):
    """One step of batch indices drawn at a time, eval in blocks of 64 rows: the same numbers."""
    monkeypatch.setattr(packed, "INDEX_BLOCK_BYTES", 1)
    monkeypatch.setattr(packed, "EVAL_BLOCK_BYTES", 1)
    for mine, ref in zip(run_pack(MIXED), mixed_pack):
        assert_same_result(mine, ref)


def test_a_diverging_member_stops_alone(monkeypatch):
    trials = [MIXED[0], DIVERGES, MIXED[2]]
    results = run_pack(trials)
    bad = results[1]["trial"]
    ref, _ = alone(trials[1], monkeypatch)
    assert bad["status"] == "diverged" and bad["error"] == ref["trial"]["error"]
    assert "training loss" in bad["error"] and "lr=100.0" in bad["error"]
    assert bad["steps"] == ref["trial"]["steps"] < total_steps(trials[1])
    assert math.isnan(bad["train_loss"]) and math.isnan(bad["test_acc"])
    for i in (0, 2):
        row = results[i]["trial"]
        assert row["status"] == "ok" and row["error"] is None
        assert row["steps"] == total_steps(trials[i])
        assert [c["step"] for c in results[i]["curves"]] == eval_steps(trials[i], total_steps(trials[i]))
        assert all(math.isfinite(c["train_loss"]) for c in results[i]["curves"])


def test_on_result_is_called_once_per_member_as_each_finishes():
    trials = [MIXED[2], DIVERGES, MIXED[1], MIXED[0]]
    seen = []
    results = run_pack(trials, on_result=seen.append)
    assert len(seen) == len(trials)
    assert sorted(r["trial"]["trial_id"] for r in seen) == sorted(r["trial"]["trial_id"] for r in results)
    assert all(any(s is r for r in results) for s in seen), "on_result gets the returned objects"
    # the diverged member first, then by step count: n_train 100, 200, 400
    assert [r["trial"]["n_train"] for r in seen] == [200, 100, 200, 400]
    assert seen[0]["trial"]["status"] == "diverged"
    assert [r["trial"]["wall_s"] for r in seen] == sorted(r["trial"]["wall_s"] for r in seen)


def test_results_have_run_trials_format_and_store(tmp_path, mixed_pack):
    ref = run_trial({**BASE, "budget": {"steps": 3}, "eval": {"points": 2}})
    for result in mixed_pack:
        assert set(result["trial"]) == set(ref["trial"])
        assert set(result["curves"][0]) == set(ref["curves"][0])
        assert result["trial"]["engine"] == "packed"
    assert len({r["trial"]["run_id"] for r in mixed_pack}) == len(mixed_pack)
    store = Store(str(tmp_path))
    for result in mixed_pack:
        store.write_result("s", {k: v for k, v in result.items() if k != "params"})
    trials, curves = load_tables(str(tmp_path))
    assert trials.num_rows == len(MIXED)
    assert curves.num_rows == sum(len(r["curves"]) for r in mixed_pack)


def test_can_pack_names_what_differs():
    assert can_pack(MIXED) == (True, "")
    ok, why = can_pack([BASE, {**BASE, "batch_size": 32}])
    assert not ok and "batch_size (16, 32)" in why
    ok, why = can_pack([BASE, {**BASE, "model": {"name": "mlp", "width": 64, "depth": 1}}])
    assert not ok and "model width (32, 64)" in why
    ok, why = can_pack([BASE, {**BASE, "task": {"name": "teacher"}}])
    assert not ok and "task" in why
    ok, why = can_pack([BASE, {**BASE, "metrics": {"noise_scale": True}}])
    assert not ok and "metrics" in why
    with pytest.raises(ValueError, match="stacked backend cannot train model 'cnn'"):
        packed.StackedBackend([as_trial({**BASE, "model": {"name": "cnn", "width": 8, "depth": 1}})])
    assert can_pack([]) == (False, "no trials to pack")
    assert pack_key(BASE) == pack_key(MIXED[2]) != pack_key({**BASE, "batch_size": 32})
    with pytest.raises(ValueError, match="batch_size"):
        run_pack([BASE, {**BASE, "batch_size": 32}])


def test_estimate_pack_bytes_grows_with_members_and_width():
    one, four = estimate_pack_bytes([BASE]), estimate_pack_bytes([BASE] * 4)
    wide = {**BASE, "model": {"name": "mlp", "width": 1024, "depth": 1}}
    n_params = 64 * 1024 + 1024 + 1024 * 10 + 10
    assert 0 < one < four
    assert estimate_pack_bytes([wide] * 4) > 4 * 3 * 4 * n_params  # at least params, grads, momentum
    with pytest.raises(ValueError, match="batch_size"):
        estimate_pack_bytes([BASE, {**BASE, "batch_size": 32}])


LION_SWEEP = """
name: lion
task: {name: digits}
model: {name: mlp, width: 24, depth: 1}
optimizer: {name: lion, weight_decay: 0.1}
schedule: {name: cosine, warmup_steps: 3}
axes: {lr: [3.0e-4, 1.0e-3], beta1: [0.9, 0.95], seed: [0, 1], n_train: [100, 200], batch_size: [16]}
budget: {steps: 30}
eval: {points: 3}
"""


def test_a_lion_sweep_packs_and_each_member_trains_as_alone(monkeypatch):
    """``optimizer: {name: lion}`` in a sweep config: its trials group into stacked packs, the
    planner sizes them (one state copy: less than AdamW's two), and a pack trains every member as
    it trains alone."""
    from cluster.driver.planner import plan
    from scaling.config.sweep import config_from_text
    from scaling.training import optim

    trials = config_from_text(LION_SWEEP).trials()
    assert len(trials) == 16 and {(t.optimizer, t.beta2) for t in trials} == {("lion", 0.99)}
    assert can_pack(trials) == (True, "") and packed.choose_backend(trials)[0] == "stacked"
    units = plan(trials, engine="packed", slots=1, memory_bytes=1 << 30, log=lambda *_: None)
    assert [(u.engine, u.backend, len(u.trials)) for u in units] == [("packed", "stacked", 16)]
    adamw = [t.replace(optimizer="adamw") for t in trials]
    assert estimate_pack_bytes(trials) < estimate_pack_bytes(adamw)
    with pytest.raises(ValueError, match="unknown optimizer 'adam'; known: sgd, adamw, lion"):
        optim.get("adam")
    chosen = trials[::3]  # lr, beta1, seed and n_train all vary among these
    for mine, trial in zip(run_pack(chosen, return_params=True), chosen):
        assert mine["trial"]["backend"] == "stacked"
        ref, ref_params = alone(trial.to_dict(), monkeypatch)
        assert_same_result(mine, ref)
        for name, value in ref_params.items():
            torch.testing.assert_close(mine["params"][name], value, rtol=RTOL, atol=ATOL, msg=name)


@pytest.mark.slow
def test_bench_quick_runs():
    proc = subprocess.run([sys.executable, "-m", "cluster.bench", "--quick", "--no-tune"], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "packed" in proc.stdout and "single" in proc.stdout and "x faster" in proc.stdout
    lines = proc.stdout.splitlines()
    # both reference sweeps, SGD and AdamW + cosine, and the CNN and transformer sweeps (vmap),
    # each timed on both engines
    assert [line.split()[0] for line in lines if line.endswith("8 ok")] == ["packed", "single"] * 4
    assert "side by side: MLP SGD" in proc.stdout and "AdamW + cosine" in proc.stdout
    assert "CNN (vmap)" in proc.stdout and "transformer LM (vmap)" in proc.stdout
    assert "8-wide cnn (2 deep)" in proc.stdout and "32-wide transformer (2 deep)" in proc.stdout
    assert proc.stdout.count("of 8 trials") == 4, "the cross-check compared every trial"


def without_ray(folder: Path) -> dict:
    """An environment whose Python finds no Ray (a package ``ray`` that refuses to import, first
    on PYTHONPATH), as on a GPU machine that has torch and not Ray."""
    import os

    (folder / "ray").mkdir()
    (folder / "ray" / "__init__.py").write_text("raise ImportError('Ray is not installed here')\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), str(ROOT),
                                                                       os.environ.get("PYTHONPATH")]))}


@pytest.mark.slow
def test_the_bench_runs_without_ray(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cluster.bench", "--quick", "--no-tune", "--sweeps", "sgd"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=without_ray(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "side by side" not in proc.stdout and "x faster" in proc.stdout
    (tmp_path / "again").mkdir()
    check = subprocess.run([sys.executable, "-c", "import ray"], capture_output=True, text=True,
                           env=without_ray(tmp_path / "again"))
    assert check.returncode != 0 and "not installed" in check.stderr, "the check itself hides Ray"


@pytest.mark.slow
def test_roofline_quick_runs():
    proc = subprocess.run([sys.executable, "-m", "cluster.bench.roofline", "--quick", "--members", "8",
                           "--explain"], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table, _, explained = proc.stdout.partition("where a step's time goes")
    rows = [line.split() for line in table.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == [1, 4, 16, 64, 256]
    steps = [line.split() for line in explained.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in steps] == [1, 4, 16, 64, 256]
    assert all(float(r[1]) > float(r[4]) > 0 for r in steps), "the fused step calls fewer aten ops"
    assert "USDT" not in proc.stderr, "the profiler's start/stop lines reach the terminal"
    for r in rows:  # B, eager us, fused us, speedup, GFLOP/s, set MB, cache GB/s, flop us, bytes us, bound us, eager %, fused %
        us, fused_us, flop_us, bound_cache = float(r[1]), float(r[2]), float(r[7]), float(r[9])
        share, share_fused = float(r[10].rstrip("%")), float(r[11].rstrip("%"))
        assert us > 0 and fused_us > 0 and bound_cache >= flop_us and 0 < share <= 100 * 1.5
        assert share_fused == pytest.approx(100 * bound_cache / fused_us, abs=1)
    assert "fp32 matmul peak" in proc.stderr and "triad" in proc.stderr
