"""run_trial_ddp: k Ray Train (DDP) workers reproduce the one-worker run_trial.

Tolerance: the DDP update is the same SGD step as one worker on the full batch,
but float32 sums come out in another order (a mean over B/k, then an average of
k), so results differ by rounding only. Measured here (digits, 32 steps, 2 gloo
workers): the largest difference in any curve loss was 2.4e-7 (1e-7 relative)
and no test example was classified differently. The tests allow 1e-4 relative
(plus 1e-6 absolute) on losses and one test example (1/297) on accuracy. Real
mismatches are far outside that: summed instead of averaged gradients (lr x2),
another seed, or even momentum 0.89 instead of 0.9 each move some curve loss by
2% or more.
"""

from __future__ import annotations

import math
import re
import signal

import pytest

from cluster.worker.ddp import check_workers, run_trial_ddp
from scaling.spec.schema import trial_id
from scaling.errors import ConfigError
from scaling.tasks.builtin import DIGITS_TEST_SIZE
from scaling.training.loop import divergence_threshold
from scaling.training.run import run_trial

LOSS_TOL = {"rel": 1e-4, "abs": 1e-6}
ACC_TOL = 1.0 / DIGITS_TEST_SIZE + 1e-9  # one test example

# Ray Train imports ray.data, whose config warns about its own deprecated fields.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


def trial(**kw):
    base = {"task": {"name": "digits"}, "model": {"name": "mlp", "width": 32, "depth": 1},
            "n_train": 200, "batch_size": 32, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
            "seed": 0, "budget": {"epochs": 5.0}, "eval": {"points": 6}}
    return {**base, **kw}


def assert_same_run(single: dict, ddp: dict, loss_tol: dict = LOSS_TOL) -> None:
    a, b = single["trial"], ddp["trial"]
    assert b["engine"] == "ddp" and a["engine"] == "single"
    same = ("trial_id", "status", "steps", "examples_seen", "n_params", "batch_size", "n_train", "config")
    assert {k: b[k] for k in same} == {k: a[k] for k in same}
    for key in ("train_loss", "test_loss"):  # NaN in both when diverged
        assert b[key] == pytest.approx(a[key], nan_ok=True, **loss_tol), key
    if a["status"] == "ok":
        assert abs(b["test_acc"] - a["test_acc"]) <= ACC_TOL
    else:
        assert math.isnan(a["test_acc"]) and math.isnan(b["test_acc"])
    assert [c["step"] for c in ddp["curves"]] == [c["step"] for c in single["curves"]]
    for p, q in zip(single["curves"], ddp["curves"]):
        assert (q["epoch"], q["examples_seen"]) == (p["epoch"], p["examples_seen"])
        assert q["train_loss"] == pytest.approx(p["train_loss"], **loss_tol), p["step"]
        assert q["test_loss"] == pytest.approx(p["test_loss"], **loss_tol), p["step"]
        assert abs(q["test_acc"] - p["test_acc"]) <= ACC_TOL, p["step"]
    assert set(ddp["curves"][0]) == set(single["curves"][0])
    assert set(b) == set(a)


def test_batch_not_divisible_by_workers_is_a_clear_error():
    with pytest.raises(ConfigError, match="batch_size 30 is not divisible by workers_per_trial 4") as e:
        run_trial_ddp(trial(batch_size=30), workers=4)  # raised before Ray is touched
    assert "28 or 32" in str(e.value) and e.value.key == "workers_per_trial"
    with pytest.raises(ConfigError, match="expected an integer >= 1, got 0"):
        check_workers(32, 0)
    with pytest.raises(ConfigError, match="e.g. 4\\)"):
        check_workers(3, 4)
    check_workers(32, 4)


@pytest.mark.slow
def test_two_gloo_workers_match_one_worker(ray_local):
    t = trial()
    handler = signal.getsignal(signal.SIGINT)
    ddp = run_trial_ddp(t, workers=2)
    assert signal.getsignal(signal.SIGINT) is handler  # fit() swaps it; we put it back
    single = run_trial(t)
    assert ddp["trial"]["status"] == "ok" and ddp["trial"]["error"] is None
    assert ddp["trial"]["trial_id"] == trial_id(t) and ddp["trial"]["steps"] == 32
    assert ddp["curves"][-1]["test_acc"] > 0.8 > ddp["curves"][0]["test_acc"]  # it trained
    assert_same_run(single, ddp)


@pytest.mark.slow
def test_divergence_matches_inside_a_ray_task(ray_local):
    # lr=100 with momentum explodes the loss past the divergence threshold within a few steps.
    t = trial(lr=100.0, weight_decay=0.0, budget={"steps": 20}, eval={"every_steps": 5})
    # The task holds no CPU: the two workers take the test Ray's two CPUs.
    task = ray_local.remote(run_trial_ddp).options(num_cpus=0, max_retries=0)
    ddp = ray_local.get(task.remote(t, workers=2), timeout=300)
    single = run_trial(t)
    assert single["trial"]["status"] == "diverged" and single["trial"]["steps"] == 2
    assert_same_run(single, ddp)
    pattern = r"training loss (\S+) at step 3 \(lr=100.0\)"
    loss_a = float(re.fullmatch(pattern, single["trial"]["error"]).group(1))
    loss_b = float(re.fullmatch(pattern, ddp["trial"]["error"]).group(1))
    assert loss_b == pytest.approx(loss_a, rel=1e-3)
    assert loss_b > divergence_threshold(single["curves"][0]["train_loss"])


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.skipif(_cuda_count() == 0, reason="needs a CUDA GPU")
def test_nccl_workers_match_one_gpu_worker(ray_local):
    # NCCL needs one GPU per rank: 2 workers where there are 2 GPUs, else 1 (still NCCL).
    workers = min(2, _cuda_count())
    if ray_local.cluster_resources().get("GPU", 0) < workers:
        pytest.skip("the test Ray sees fewer GPUs than torch does")
    t = trial()
    ddp = run_trial_ddp(t, workers=workers, use_gpu=True)
    single = run_trial(t, device="cuda")
    # GPU kernels for a B/k batch round differently from those for B: allow 1e-3.
    assert_same_run(single, ddp, loss_tol={"rel": 1e-3, "abs": 1e-5})


@pytest.mark.slow
def test_sweep_with_two_workers_per_trial_runs_through_the_runner(ray_local, tmp_path):
    """workers_per_trial: 2 in a config runs each trial as DDP and stores it like any other."""
    from cluster.driver.sweep import run_sweep
    from scaling.config.sweep import parse_config
    from scaling.store.views import load_tables

    raw = {"name": "ddp", "task": {"name": "digits"}, "model": {"name": "mlp", "width": 16, "depth": 1},
           "axes": {"n_train": 64, "batch_size": 16, "lr": 0.1, "seed": 0},
           "budget": {"steps": 8}, "eval": {"points": 3}, "workers_per_trial": 2,
           "resources": {"cpu": 1}}
    summary = run_sweep(parse_config(raw), "", str(tmp_path), progress=False, log=lambda *_: None)
    assert summary.counts == {"ok": 1, "diverged": 0, "failed": 0}
    trials, curves = load_tables(str(tmp_path))
    assert trials.column("engine").to_pylist() == ["ddp"] and curves.num_rows == 3
