"""The fused (compiled) optimizer update: when it is chosen, and the eager fallback.

That the compiled kernels train what plain torch trains (every optimizer and schedule, 300
steps, 1e-4) is tests/test_equivalence.py's test_fused_update_matches_plain_torch (slow: a compile
takes 5-25 s here). These tests compile nothing.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from scaling.spec.schema import as_trial
from scaling.training import optim

MLP = {"task": {"name": "digits"}, "model": {"name": "mlp", "width": 32, "depth": 1}, "n_train": 200,
       "batch_size": 16, "lr": 3e-3, "optimizer": "adamw", "weight_decay": 0.01, "seed": 0, "eval": {"points": 3}}


@pytest.fixture
def fresh(monkeypatch):
    """optim's per-process memory of compiled and failed kernels, emptied for the test."""
    monkeypatch.setattr(optim, "_warm", set())
    monkeypatch.setattr(optim, "_failed", {})


def test_the_rule_compiles_only_where_the_saving_exceeds_the_compile(fresh):
    params = 19_210  # the reference MLP, 64-256-10
    short = 64 * 300  # the reference sweep: 64 trials of 300 steps
    assert not optim.fused_pays("adamw", short, params)
    needed = 2 * optim.COMPILE_S / (params * optim.SAVED_S_PER_PARAM_STEP["adamw"])
    assert not optim.fused_pays("adamw", int(needed * 0.9), params)
    assert optim.fused_pays("adamw", int(needed * 1.1), params)
    optim._warm.add("adamw")  # compiled in this process already: the pack alone decides still
    assert not optim.fused_pays("adamw", short, params)
    optim._failed["lion"] = "no compiler"
    assert not optim.fused_pays("lion", 10**12, params)


def test_backends_choose_by_the_rule_and_sgd_keeps_its_fast_path(fresh):
    from scaling.training.backends.stacked import StackedBackend
    from scaling.training.backends.vmap import VmapBackend

    short = [as_trial({**MLP, "budget": {"steps": 300}, "seed": s}) for s in range(4)]
    long = [as_trial({**MLP, "budget": {"steps": 10**7}, "seed": s}) for s in range(4)]
    assert StackedBackend(short).fused is False and VmapBackend(short).optimizer.fused is False
    assert StackedBackend(long).fused is True and VmapBackend(long).optimizer.fused is True
    sgd = [as_trial({**MLP, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0,
                     "budget": {"steps": 10**7}, "seed": s}) for s in range(4)]
    assert StackedBackend(sgd).fused is False  # its eager fast path moves fewer bytes than a fused update
    assert StackedBackend(short, fused=True).fused is True  # forced, as the roofline and the tests do


def test_a_failed_compile_falls_back_to_the_eager_update_and_says_so_once(fresh, monkeypatch, capsys):
    def broken(name, many=False):
        def kernel(*args):
            raise RuntimeError("no C++ compiler\nsecond line")
        return kernel

    monkeypatch.setattr(optim, "_compiled", broken)
    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 4, 5), (3, 1, 5)]
    p = [torch.randn(s, generator=gen) for s in shapes]
    g = [torch.randn(s, generator=gen) for s in shapes]
    hyper = {k: torch.full((3, 1, 1), v) for k, v in
             {"beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "weight_decay": 0.01, "momentum": 0.0, "nesterov": 0.0}.items()}
    lr = torch.tensor([1e-3, 3e-3, 1e-2]).view(3, 1, 1)
    fused_p, eager_p = [t.clone() for t in p], [t.clone() for t in p]
    fused_s = [(torch.zeros_like(t), torch.zeros_like(t)) for t in p]
    eager_s = [(torch.zeros_like(t), torch.zeros_like(t)) for t in p]
    for t in (1, 2):
        step = optim.Step(hyper, lr, t, optim.same)
        optim.fused_update("adamw", fused_p, g, fused_s, step)
        optim.get("adamw").update(eager_p, g, eager_s, step)
    assert all(torch.equal(a, b) for a, b in zip(fused_p, eager_p))
    assert not torch.equal(fused_p[0], p[0])  # the update did something
    err = capsys.readouterr().err
    assert err.count("warning: the fused adamw update failed to compile") == 1 and "no C++ compiler" in err
    assert "second line" not in err and optim._failed["adamw"].startswith("RuntimeError")
    assert not optim.fused_pays("adamw", 10**12, 10**6)


@pytest.mark.slow  # 5-7 s under load: the subprocess imports torch
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where CUDA is missing")
def test_roofline_on_cuda_without_a_gpu_is_one_line():
    for args, words in ((["--device", "cuda"], "torch.cuda.is_available() is False"),
                        (["--optimizer", "rmsprop"], "sgd or adamw")):
        proc = subprocess.run([sys.executable, "-m", "cluster.bench.roofline", *args], capture_output=True,
                              text=True, timeout=120, cwd=ROOT)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.startswith("error:") and proc.stderr.count("\n") == 1 and words in proc.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["stacked", "vmap"])
def test_the_fused_update_on_cuda_matches_the_eager_one_on_the_cpu(backend):
    """Inductor writes Triton kernels on a GPU: the fused step there against the eager CPU step."""
    from scaling.training.backends.stacked import StackedBackend
    from scaling.training.backends.vmap import VmapBackend
    from scaling.training.loop import run_members

    cls = StackedBackend if backend == "stacked" else VmapBackend
    trials = [as_trial({**MLP, "budget": {"steps": 60}, "seed": s, "lr": 1e-3 * (s + 1)}) for s in range(3)]
    gpu = run_members(trials, lambda ts: cls(ts, "cuda", fused=True), engine="packed", return_params=True)
    cpu = run_members(trials, lambda ts: cls(ts, "cpu", fused=False), engine="packed", return_params=True)
    assert "adamw" not in optim._failed, optim._failed
    for g, c in zip(gpu, cpu):
        for k, w in c["params"].items():
            assert float(torch.linalg.norm(g["params"][k].double() - w.double()) / torch.linalg.norm(w.double())) <= 1e-4
