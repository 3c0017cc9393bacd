"""Every backend on CUDA, against the same trials on the CPU. Skipped without a CUDA GPU.

Float32 on two devices rounds differently (cuBLAS and cuDNN sum in other orders, TF32 is
off), so the runs are short and stable and the tolerance is 1e-4 relative, as between
engines on one device. DDP over NCCL needs two GPUs and is not tested here.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import ROOT

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

BASE = {"task": {"name": "digits"}, "model": {"name": "mlp", "width": 32, "depth": 1}, "n_train": 200,
        "batch_size": 16, "lr": 0.05, "momentum": 0.9, "seed": 0, "budget": {"steps": 40}, "eval": {"points": 3}}
MEMBERS = [BASE, {**BASE, "lr": 0.1, "momentum": 0.5, "seed": 1, "n_train": 100},
           {**BASE, "optimizer": "adamw", "lr": 1e-3, "momentum": 0.0, "seed": 2}]


def gap(a: dict, b: dict) -> float:
    return max(float(torch.linalg.norm(a[k].double() - b[k].double()) / torch.linalg.norm(b[k].double()))
               for k in b)


@pytest.mark.parametrize("backend", ["stacked", "vmap"])
def test_packs_on_cuda_match_the_cpu(backend):
    from scaling.training.run import run_pack

    trials = MEMBERS[:2] if backend == "stacked" else MEMBERS[:2] + [{**MEMBERS[0], "seed": 3}]
    gpu = run_pack(trials, device="cuda", return_params=True, backend=backend)
    cpu = run_pack(trials, device="cpu", return_params=True, backend=backend)
    for g, c in zip(gpu, cpu):
        assert g["trial"]["backend"] == backend and g["trial"]["status"] == "ok"
        assert gap(g["params"], c["params"]) <= 1e-4


def test_module_backend_and_metrics_on_cuda():
    from scaling.training.run import run_pack
    from scaling.training.run import run_trial

    trial = {**BASE, "metrics": {"noise_scale": True, "grad_norms": True, "sharpness": True}}
    gpu, cpu = run_trial(trial, device="cuda", return_params=True), run_trial(trial, return_params=True)
    assert gap(gpu["params"], cpu["params"]) <= 1e-4
    packed = run_pack([trial, {**trial, "seed": 1}], device="cuda")[0]
    for key in ("grad_sq_norm", "example_grad_norm_mean"):
        assert packed["curves"][-1][key] == pytest.approx(cpu["curves"][-1][key], rel=1e-3)


def test_warm_up_reports_the_gpus_free_memory():
    from cluster.driver.warmup import Probe, memory_budget
    from cluster.worker.units import warm_worker

    report = warm_worker({"name": "digits"}, "cuda", 1, [])
    free, total = torch.cuda.mem_get_info()
    assert 0 < report["gpu_free_bytes"] <= total
    budget = memory_budget(Probe([report]), cpus_per_pack=1, gpus_per_pack=0.25, node_cpus={})
    assert 0 < budget <= report["gpu_free_bytes"] / 4


@pytest.mark.slow
def test_the_benchmarks_run_on_cuda_without_ray(tmp_path):
    from test_packed import without_ray

    env = without_ray(tmp_path)
    for args in (["cluster.bench", "--device", "cuda", "--no-tune", "--quick", "--sweeps", "sgd,cnn"],
                 ["cluster.bench.roofline", "--device", "cuda", "--quick"]):
        proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=600,
                              cwd=ROOT, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
