"""The vmap backend: any model packs, and each member trains as it does alone.

The reference is the ``module`` backend (``run_trial``: one ``nn.Module``, autograd and
``torch.optim``), itself checked against plain float64 torch in tests/test_equivalence.py.
A pack holds members that differ in seed, n_train, lr, the optimizer's hyperparameters,
the schedule and the step count; after 100 steps every weight tensor of every member must
satisfy ‖w − w_alone‖ / ‖w_alone‖ ≤ 1e-4. Widths and data are small so the file runs in
well under a minute on one core.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import ROOT
from test_datasets import text_file, write_idx
from scaling.training.run import run_pack
from scaling.training.packing import can_pack, choose_backend, estimate_pack_bytes, pack_key
from scaling.tasks.resolve import validate_task
from scaling.training.run import run_trial

STEPS, TOL = 100, 1e-4
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict:
    """An MNIST-format task of 8x8 images whose brightness pattern follows the label."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, n in (("train", 440), ("t10k", 60)):
        y = rng.integers(0, 10, n)
        x = np.clip(rng.integers(0, 60, (n, 8, 8)) + 18 * y[:, None, None] * (np.arange(8) % 2), 0, 255)
        write_idx(folder / f"{split}-images-idx3-ubyte", x)
        write_idx(folder / f"{split}-labels-idx1-ubyte", y)
    return validate_task({"name": "mnist", "data_dir": str(folder)})


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    text_file(path, 3000)
    return validate_task({"name": "text", "path": str(path), "context": 12})


MODELS = {"cnn": {"name": "cnn", "width": 4, "depth": 2},
          "resnet": {"name": "resnet", "width": 1, "depth": 1},
          "transformer": {"name": "transformer", "width": 16, "depth": 1, "heads": 2}}
OPTIMIZERS = {
    "sgd": [{"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3},
            {"lr": 0.02, "momentum": 0.5, "nesterov": True, "seed": 1, "n_train": 96},
            {"lr": 0.1, "momentum": 0.0, "seed": 2, "budget": {"steps": 60}}],  # leaves the pack early
    "adamw": [{"optimizer": "adamw", "lr": 3e-3, "beta1": 0.8, "beta2": 0.99, "eps": 1e-7, "weight_decay": 0.05,
               "schedule": "cosine", "warmup_frac": 0.05, "final_lr_frac": 0.1},
              {"optimizer": "adamw", "lr": 1e-3, "beta2": 0.95, "eps": 1e-6, "seed": 1, "n_train": 96,
               "schedule": "wsd", "warmup_steps": 10, "decay_frac": 0.3},
              {"optimizer": "adamw", "lr": 2e-3, "eps": 1e-6, "seed": 2, "budget": {"steps": 60}}],
    "lion": [{"optimizer": "lion", "lr": 1e-3, "beta2": 0.98, "weight_decay": 0.1,
              "schedule": "cosine", "warmup_frac": 0.05, "final_lr_frac": 0.1},
             {"optimizer": "lion", "lr": 3e-4, "beta1": 0.95, "seed": 1, "n_train": 96,
              "schedule": "wsd", "warmup_steps": 10, "decay_frac": 0.3},
             {"optimizer": "lion", "lr": 5e-4, "seed": 2, "budget": {"steps": 60}}],
}


LR_SCALE = {("resnet", "sgd"): 0.03, ("resnet", "adamw"): 0.3, ("resnet", "lion"): 0.1, ("transformer", "sgd"): 0.5,
            ("transformer", "adamw"): 0.5, ("transformer", "lion"): 0.3}
"""Where training amplifies float rounding, no two ways of computing the same step agree to 1e-4
after 100 steps, so the cases stay where it does not. Measured with the module backend against
itself, one torch thread against two: the ResNet on 8x8 images at the CNN's learning rates ends
10-25% apart (a tenth of the lr: 1e-6), the transformer at twice these rates 8e-4. In float64 the
same chaotic ResNet runs agree to 1e-10 (test_float64_agrees_where_float32_is_chaotic), so the gap
is rounding, amplified, and not a difference in the arithmetic. AdamW's eps
matters too: a parameter whose true gradient is zero (the attention's key bias, since softmax
ignores a shift shared by all keys) gets rounding noise as its gradient, and with eps = 1e-8
AdamW turns that noise into lr-sized steps (9e-5 apart, one thread against two); eps >= 1e-7
keeps those steps small. The optimizer itself is checked on identical gradients below."""


def members(task: dict, model: dict, optimizer: str) -> list[dict]:
    base = {"task": task, "model": model, "n_train": 160, "batch_size": 8, "seed": 0,
            "budget": {"steps": STEPS}, "eval": {"points": 4}}
    scale = LR_SCALE.get((model["name"], optimizer), 1.0)
    return [{**base, **changes, "lr": changes["lr"] * scale} for changes in OPTIMIZERS[optimizer]]


def gap(mine: dict, ref: dict) -> float:
    assert mine.keys() == ref.keys()
    return max(float(torch.linalg.norm(mine[k].double() - ref[k].double()) / torch.linalg.norm(ref[k].double()))
               for k in ref if ref[k].is_floating_point() and torch.linalg.norm(ref[k]) > 0)


LION_SIGN = """Lion steps each weight by ±lr, the sign of its interpolated momentum, so where that is within
rounding of 0 the pack and the trial alone (float32, gradients summed in another order) step opposite
ways and the weight ends 2 lr apart. A parameter whose true gradient is 0 takes such steps every time:
the transformer's key bias (softmax ignores a shift shared by all keys), left out of the Lion
comparison below. On the ResNet the zero-initialised GroupNorm biases of the third member are a few
lr-steps in norm after 60 steps, so one flip is 1e-2 of them (gaps of 4e-2 to 2e-1 measured at lr
scales 0.03 to 0.3): expected to fail. The arithmetic is the same (test_float64_agrees_where_float32_is_chaotic
runs the Lion ResNet in float64: 1e-9), and test_equivalence checks the vmap backend's Lion against
plain float64 torch on the MLP."""
CASES = [(m, o) for m in MODELS for o in OPTIMIZERS if (m, o) != ("resnet", "lion")]
"""Every model and optimizer but the Lion ResNet, whose float32 sign flips are explained above and
whose arithmetic test_float64_agrees_where_float32_is_chaotic checks in float64 instead (an xfail
here would assert nothing)."""


def without_key_bias(params: dict, model: dict) -> dict:
    """The transformer's parameters with the key third of each qkv bias left out (see LION_SIGN)."""
    w = model["width"]
    return {k: torch.cat([v[:w], v[2 * w:]]) if k.endswith("qkv.bias") else v for k, v in params.items()}


@pytest.mark.parametrize("model, optimizer", CASES)
def test_vmap_pack_matches_each_trial_alone(model, optimizer, images, text):
    task = text if model == "transformer" else images
    trials = members(task, MODELS[model], optimizer)
    assert choose_backend(trials)[0] == "vmap" and can_pack(trials) == (True, "")
    packed = run_pack(trials, return_params=True)
    for trial, mine in zip(trials, packed):
        alone = run_trial(trial, return_params=True)
        row, ref = mine["trial"], alone["trial"]
        assert (row["engine"], row["backend"], ref["backend"]) == ("packed", "vmap", "module")
        assert row["status"] == ref["status"] == "ok", (row["error"], ref["error"])
        assert row["steps"] == ref["steps"] == trial["budget"]["steps"]
        assert row["n_params"] == ref["n_params"] and row["tokens_seen"] == ref["tokens_seen"]
        if (model, optimizer) == ("transformer", "lion"):
            mine["params"], alone["params"] = (without_key_bias(p, MODELS[model]) for p in (mine["params"],
                                                                                             alone["params"]))
        assert gap(mine["params"], alone["params"]) <= TOL
        assert [c["step"] for c in mine["curves"]] == [c["step"] for c in alone["curves"]]
        for c, d in zip(mine["curves"], alone["curves"]):
            for key in ("train_loss", "val_loss", "test_loss", "test_acc", "lr_now"):
                assert math.isclose(c[key], d[key], rel_tol=1e-4, abs_tol=1e-5), (c["step"], key, c[key], d[key])


def test_the_members_really_differ(images):
    """The comparison above is not vacuous: the members end far apart from each other."""
    trials = members(images, MODELS["cnn"], "sgd")
    params = [r["params"] for r in run_pack(trials[:2], return_params=True)]
    assert gap(params[0], params[1]) > 0.1


def test_a_diverging_member_stops_alone_and_the_rest_match(images):
    trials = members(images, MODELS["cnn"], "sgd")[:2]
    bad = {**trials[0], "lr": 1e4, "momentum": 0.0, "seed": 5}
    results = run_pack([trials[0], bad, trials[1]], return_params=True)
    alone = run_trial(bad)["trial"]
    assert results[1]["trial"]["status"] == alone["status"] == "diverged"
    assert results[1]["trial"]["steps"] == alone["steps"] and results[1]["trial"]["error"] == alone["error"]
    for i, trial in ((0, trials[0]), (2, trials[1])):
        assert gap(results[i]["params"], run_trial(trial, return_params=True)["params"]) <= TOL


def test_packing_rules_for_other_models(images, text):
    cnn = members(images, MODELS["cnn"], "sgd")
    assert choose_backend(cnn)[0] == "vmap" and "'cnn'" in choose_backend(cnn)[1]
    mlp = [{**t, "task": {"name": "digits"}, "model": {"name": "mlp", "width": 8, "depth": 1}} for t in cnn]
    assert choose_backend(mlp) == ("stacked", choose_backend(mlp)[1])
    noisy = [{**t, "metrics": {"noise_scale": True}} for t in mlp]
    assert choose_backend(noisy)[0] == "vmap" and "metrics" in choose_backend(noisy)[1]
    assert pack_key(noisy[0]) != pack_key(mlp[0]), "metrics are part of the pack key"
    ok, why = can_pack([cnn[0], {**cnn[1], "model": {**MODELS["cnn"], "width": 8}}])
    assert not ok and "model width (4, 8)" in why
    lm = members(text, MODELS["transformer"], "adamw")
    assert estimate_pack_bytes(lm * 4) > estimate_pack_bytes(lm) > 0


@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adamw", "lion"])
def test_stacked_optimizer_is_torch_optim_on_identical_gradients(optimizer):
    """Three members with their own hyperparameters and lr schedules, fed the same gradients
    (large, tiny and exactly zero entries) as three torch.optim optimizers: 200 steps apart by
    no more than float32 rounding."""
    from scaling.spec.schema import trial_from_dict
    from scaling.training.backends.module import make_optimizer
    from scaling.training.backends.vmap import StackedOptimizer

    base = {"task": {"name": "digits"}, "model": {"name": "mlp", "width": 8, "depth": 1}, "n_train": 100,
            "batch_size": 10, "budget": {"steps": 200}}
    hyper = {"sgd": [{"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-2}, {"lr": 0.3, "momentum": 0.0},
                     {"lr": 0.05, "momentum": 0.5}],
             "nesterov": [{"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
                          {"lr": 0.2, "momentum": 0.5}, {"lr": 0.05, "momentum": 0.95, "nesterov": True}],
             "adamw": [{"optimizer": "adamw", "lr": 1e-2, "weight_decay": 0.1, "eps": 1e-6},
                       {"optimizer": "adamw", "lr": 3e-3, "beta1": 0.8, "beta2": 0.95, "eps": 1e-6},
                       {"optimizer": "adamw", "lr": 1e-3, "beta2": 0.99, "eps": 1e-6}],
             "lion": [{"optimizer": "lion", "lr": 1e-3, "weight_decay": 0.1},
                      {"optimizer": "lion", "lr": 3e-4, "beta1": 0.8, "beta2": 0.95},
                      {"optimizer": "lion", "lr": 1e-4, "beta2": 0.999, "weight_decay": 1.0}]}[optimizer]
    trials = [trial_from_dict({**base, **h}) for h in hyper]
    gen = torch.Generator().manual_seed(0)
    shapes = {"w": (5, 3, 2), "b": (7,)}
    start = {k: torch.randn((len(trials), *s), generator=gen) for k, s in shapes.items()}
    stacked = {k: v.clone() for k, v in start.items()}
    opt = StackedOptimizer(trials, stacked)
    alone = [{k: torch.nn.Parameter(v[i].clone()) for k, v in start.items()} for i in range(len(trials))]
    torch_opts = [make_optimizer(list(p.values()), t) for p, t in zip(alone, trials)]
    for step in range(200):
        lr = np.array([t.lr * (1 - step / 400) for t in trials])
        grads = {k: torch.randn((len(trials), *s), generator=gen) * 10.0 ** torch.randint(-6, 1, (1,), generator=gen)
                 for k, s in shapes.items()}
        grads["b"][:, 0] = 0.0
        opt.step(stacked, grads, torch.from_numpy(lr))
        for i, (params, o) in enumerate(zip(alone, torch_opts)):
            for group in o.param_groups:
                group["lr"] = float(lr[i])
            for k, p in params.items():
                p.grad = grads[k][i].clone()
            o.step()
    for i, params in enumerate(alone):
        for k, p in params.items():
            torch.testing.assert_close(stacked[k][i], p.detach(), rtol=1e-5, atol=1e-6)


@pytest.fixture
def float64(monkeypatch):
    """Models built in float64 and every task's float features as float64."""
    import dataclasses

    import scaling.training.backends.module
    import scaling.training.backends.vmap
    import scaling.training.flops
    import scaling.training.measure
    from scaling.tasks.resolve import load_task

    def load64(task):
        data = load_task(task)
        wide = {k: getattr(data, k).astype(np.float64) for k in ("x_train", "x_val", "x_test")
                if getattr(data, k) is not None}
        return dataclasses.replace(data, **wide)

    monkeypatch.setattr(scaling.training.backends.module, "load_task", load64)
    monkeypatch.setattr(scaling.training.backends.vmap, "load_task", load64)
    # FLOPs and footprints are measured on a model in the default dtype, and cached per process:
    # measured here on float64 data, and forgotten after, so no other test sees float64 bytes
    monkeypatch.setattr(scaling.training.flops, "load_task", load64)
    monkeypatch.setattr(scaling.training.measure, "load_task", load64)
    caches = (scaling.training.flops._flops_cached, scaling.training.measure._footprint,
              scaling.training.measure._problem)
    before = torch.get_default_dtype()
    for cache in caches:
        cache.cache_clear()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)
    for cache in caches:
        cache.cache_clear()


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_float64_agrees_where_float32_is_chaotic(optimizer, images, float64):
    """The ResNet at the CNN's learning rates: in float32 pack and alone end up to 50% apart
    (so does the module backend with one thread against two); in float64 they agree to 1e-9,
    so the vmap backend computes the same arithmetic."""
    scale = LR_SCALE[("resnet", optimizer)]
    trials = [{**t, "lr": t["lr"] / scale} for t in members(images, MODELS["resnet"], optimizer)]
    for mine, trial in zip(run_pack(trials, return_params=True), trials):
        assert mine["params"]["stem.weight"].dtype == torch.float64
        assert gap(mine["params"], run_trial(trial, return_params=True)["params"]) <= 1e-9


PEAK = """
import json, sys
import torch
from scaling.training.run import run_pack
from scaling.training.packing import estimate_pack_bytes
torch.set_num_threads(1)
trials, device = json.loads(sys.argv[1]), sys.argv[2]
run_pack(trials[:1], device=device)  # libraries, the task and the allocator warmed up first
if device == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); before = torch.cuda.memory_allocated()
    run_pack(trials, device=device); torch.cuda.synchronize()
    measured = torch.cuda.max_memory_allocated() - before
else:
    def status():
        with open("/proc/self/status") as f:
            fields = (line.split(":", 1) for line in f)
            return {k: int(v.split()[0]) * 1024 for k, v in fields if k.startswith(("Vm", "Rss"))}
    before = status()
    run_pack(trials, device=device)
    after = status()
    # the peak resident set grew by the pack's tensors, and by library pages read back in if the
    # system had dropped them meanwhile (file-backed: not the pack's, so taken off)
    measured = after["VmHWM"] - before["VmRSS"] - max(0, after["RssFile"] - before["RssFile"])
print(json.dumps({"estimate": estimate_pack_bytes(trials), "measured": measured}))
"""


def peak_cases(images: dict, text: dict) -> dict:
    base = {"n_train": 150, "lr": 0.01, "momentum": 0.9, "budget": {"steps": 3}, "eval": {"points": 2}}
    mlp = {**base, "task": {"name": "digits"}, "model": {"name": "mlp", "width": 512, "depth": 2}, "batch_size": 256}
    lm = {**base, "task": text, "model": {"name": "transformer", "width": 64, "depth": 2}, "batch_size": 32}
    res = {**base, "task": images, "model": {"name": "resnet", "width": 2, "depth": 1}, "batch_size": 32}
    return {"stacked sgd": [{**mlp, "seed": s} for s in range(32)],
            "stacked adamw": [{**mlp, "optimizer": "adamw", "seed": s} for s in range(32)],
            "vmap transformer adamw": [{**lm, "optimizer": "adamw", "seed": s} for s in range(16)],
            "vmap resnet, noise scale": [{**res, "metrics": {"noise_scale": True}, "seed": s} for s in range(16)]}


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_estimate_pack_bytes_against_measured_peaks(device, images, text):
    """Each pack in a fresh process: peak resident memory (on CUDA: peak allocated) while it
    trains, over what the process held before (less library pages the system had dropped and
    the pack read back in); the planner's estimate is within [0.8, 3] of it for both backends
    (on CPU the allocator's caching and page granularity blur small packs, so each is 100 MB
    or more)."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for name, trials in peak_cases(images, text).items():
        proc = subprocess.run([sys.executable, "-c", PEAK, json.dumps(trials), device], capture_output=True,
                              text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        r = json.loads(proc.stdout)
        assert r["measured"] > 50 << 20, (name, r)
        assert 0.8 <= r["estimate"] / r["measured"] <= 3.0, (name, r)
