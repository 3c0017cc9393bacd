"""Every backend (stacked, vmap, module, ddp) trains what plain torch trains.

The reference below is written from scratch with ``torch.optim`` and
``torch.optim.lr_scheduler`` (and, as torch has no Lion, a few lines of Lion
from the paper) and shares no helper with the product: it loads
and splits digits itself, draws the subset and the batch order itself, and runs
in float64. For each optimizer and schedule, after 300 steps every weight
tensor of every backend must satisfy ‖w − w_ref‖ / ‖w_ref‖ ≤ 1e-4.

The DDP backend runs in two real processes joined by a gloo process group (the
all-reduce is torch.distributed's), without Ray; tests/test_ddp.py runs it
through Ray Train.
"""

from __future__ import annotations

import inspect
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from scaling.spec.schema import trial_from_dict

STEPS, TOL = 300, 1e-4
LION_LR = 1e-3
"""Lion steps every weight by ±lr, the sign of an interpolated momentum c, so where c is within
rounding of 0 float32 and float64 step opposite ways and that weight ends 2 lr apart: one such
flip in a weight tensor of norm ~5 is 4e-4 relative at lr 1e-3, over the bound. Measured here
(all three schedules, every backend): at lr 1e-3 no entry flips and the gap is <= 7e-6, at 3e-4
up to 5e-5, at 1e-4 1-3 entries per weight tensor end 2 or 4 lr apart (the rest within 1e-6)
and the gap is 1.4e-4. A smaller lr flips more (c hovers near 0 longer), so the cases use 1e-3,
a usual Lion lr (3-10x below AdamW's), where 300 steps move the weights as far as their initial
norm (test_lion_is_not_vacuous). A failure of a Lion case alone, by a few 2 lr steps, is such a
flip, not a wrong update."""
BASE = {"task": {"name": "digits"}, "model": {"name": "mlp", "width": 32, "depth": 1}, "n_train": 200,
        "batch_size": 16, "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3, "seed": 3,
        "budget": {"steps": STEPS}, "eval": {"points": 3}}
OPTIMIZERS = {
    "sgd": {},
    "nesterov": {"nesterov": True},
    "adamw": {"optimizer": "adamw", "lr": 3e-3, "beta1": 0.8, "beta2": 0.99, "eps": 1e-7, "weight_decay": 0.05},
    "lion": {"optimizer": "lion", "lr": LION_LR, "beta1": 0.9, "beta2": 0.98, "weight_decay": 0.1},
}
SCHEDULES = {
    "constant": {"warmup_steps": 10},
    "cosine": {"schedule": "cosine", "warmup_frac": 0.05, "final_lr_frac": 0.1},
    "wsd": {"schedule": "wsd", "warmup_steps": 10, "decay_frac": 0.3},
}
CASES = [(o, s) for o in OPTIMIZERS for s in SCHEDULES]


def case(optimizer: str, schedule: str) -> dict:
    return {**BASE, **OPTIMIZERS[optimizer], **SCHEDULES[schedule]}


# ---- the reference: plain torch, float64 ------------------------------------------------------

def reference(t: dict) -> dict:
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(20170101).permutation(len(d.target))[297 + 300:]  # test, val first
    x, y = torch.tensor(d.data[order] / 16.0, dtype=torch.float64), torch.tensor(d.target[order])
    sub = np.random.default_rng([t["seed"], 0]).permutation(len(y))[:t["n_train"]]
    rng, stream = np.random.default_rng([t["seed"], 1, t["n_train"]]), np.empty(0, dtype=np.int64)
    torch.manual_seed(t["seed"])
    model = nn.Sequential(nn.Linear(64, t["model"]["width"]), nn.ReLU(), nn.Linear(t["model"]["width"], 10))
    model = model.double()
    cls = {"adamw": torch.optim.AdamW, "lion": ReferenceLion}.get(t.get("optimizer"), torch.optim.SGD)
    wanted = {**t, "betas": (t.get("beta1", 0.9), t.get("beta2", 0.99 if cls is ReferenceLion else 0.999))}
    opt = cls(model.parameters(), **{k: wanted[k] for k in inspect.signature(cls).parameters if k in wanted})
    sched = scheduler(opt, t)
    for _ in range(STEPS):
        while len(stream) < t["batch_size"]:
            stream = np.concatenate([stream, rng.permutation(t["n_train"])])
        idx, stream = sub[stream[:t["batch_size"]]], stream[t["batch_size"]:]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return {k: v.detach() for k, v in model.state_dict().items()}


class ReferenceLion(torch.optim.Optimizer):
    """Lion as the paper's Program 1 writes it (Chen et al. 2023): the update is the sign of
    β₁ m + (1 − β₁) g, weight decay decoupled, then m = β₂ m + (1 − β₂) g."""

    def __init__(self, params, lr, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            (beta1, beta2), lr = group["betas"], group["lr"]
            for p in group["params"]:
                m = self.state[p].setdefault("m", torch.zeros_like(p))
                update = torch.sign(beta1 * m + (1 - beta1) * p.grad) + group["weight_decay"] * p
                p.sub_(lr * update)
                m.copy_(beta2 * m + (1 - beta2) * p.grad)


def scheduler(opt, t: dict):
    """Linear warmup, then constant, cosine or warmup-stable-decay, from torch's schedulers."""
    from torch.optim import lr_scheduler as S

    w = t.get("warmup_steps") or round(t.get("warmup_frac", 0) * STEPS)
    f, kind = t.get("final_lr_frac", 0.0), t.get("schedule", "constant")
    parts, milestones = [S.LinearLR(opt, start_factor=1 / w, end_factor=1.0, total_iters=w - 1)], [w]
    if kind == "constant":
        parts.append(S.LambdaLR(opt, lambda k: 1.0))
    elif kind == "cosine":
        parts.append(S.CosineAnnealingLR(opt, T_max=STEPS - w, eta_min=f * t["lr"]))
    else:  # torch has no WSD scheduler: stable, then linear decay to f over the last decay_frac
        decay = round(t["decay_frac"] * STEPS)
        parts += [S.LambdaLR(opt, lambda k: 1.0),
                  S.LambdaLR(opt, lambda k: 1 - (1 - f) * (k + 1) / decay)]
        milestones.append(STEPS - decay)
    return S.SequentialLR(opt, parts, milestones)


# ---- the backends --------------------------------------------------------------------------

def assert_matches(params: dict, ref: dict) -> None:
    assert params.keys() == ref.keys()
    for name, w_ref in ref.items():
        gap = torch.linalg.norm(params[name].double() - w_ref) / torch.linalg.norm(w_ref)
        assert gap <= TOL, (name, float(gap))


@pytest.fixture(scope="module")
def references(one_torch_thread):
    """On one thread, as the tests using them: a tiny float64 model on two threads of a loaded
    2-core machine took 30-50x as long (212 s for the twelve under load)."""
    return {c: reference(case(*c)) for c in CASES}


@pytest.mark.parametrize("optimizer, schedule", CASES)
def test_module_backend_matches_plain_torch(optimizer, schedule, references, one_torch_thread):
    from scaling.training.run import run_trial

    out = run_trial(case(optimizer, schedule), return_params=True)
    assert out["trial"]["status"] == "ok" and out["trial"]["backend"] == "module"
    assert_matches(out["params"], references[optimizer, schedule])


def pack_of(optimizer: str) -> list[dict]:
    """Every schedule of an optimizer, and a member with another seed and lr (and for Nesterov one
    without it: the update mixes both)."""
    trials = [case(optimizer, s) for s in SCHEDULES]
    trials.append({**case(optimizer, "cosine"), "seed": 4, "lr": LION_LR / 3 if optimizer == "lion" else 0.01})
    if optimizer == "nesterov":
        trials.append(case("sgd", "wsd"))
    return trials


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_stacked_backend_matches_plain_torch(optimizer, references, one_torch_thread):
    """One pack holds every schedule of an optimizer (and a seed more), so members with
    different schedules and hyperparameters share the stacked tensors."""
    from scaling.training.run import run_pack

    results = run_pack(pack_of(optimizer), return_params=True)
    for schedule, result in zip(SCHEDULES, results):
        assert result["trial"]["status"] == "ok" and result["trial"]["backend"] == "stacked"
        assert_matches(result["params"], references[optimizer, schedule])


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_vmap_backend_matches_plain_torch(optimizer, references, one_torch_thread):
    """The same packs through the vmap backend (the MLP, which run_pack gives the stacked one)."""
    from scaling.training.backends.vmap import run_vmap

    results = run_vmap(pack_of(optimizer), return_params=True)
    for schedule, result in zip(SCHEDULES, results):
        assert result["trial"]["status"] == "ok" and result["trial"]["backend"] == "vmap"
        assert_matches(result["params"], references[optimizer, schedule])


@pytest.mark.slow  # a compile per optimizer and backend: 5-25 s each on two loaded cores
@pytest.mark.parametrize("backend", ["stacked", "vmap"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_fused_update_matches_plain_torch(optimizer, backend, references, one_torch_thread):
    """The compiled optimizer update (scaling.training.optim.fused_update), forced on, trains what
    plain torch trains: the same packs as above, every schedule, 300 steps, 1e-4."""
    from scaling.spec.schema import as_trial
    from scaling.training import optim
    from scaling.training.backends.stacked import StackedBackend
    from scaling.training.backends.vmap import VmapBackend
    from scaling.training.loop import run_members

    cls = StackedBackend if backend == "stacked" else VmapBackend
    results = run_members([as_trial(t) for t in pack_of(optimizer)], lambda ts: cls(ts, fused=True),
                          engine="packed", return_params=True)
    name = optim.get(case(optimizer, "constant").get("optimizer", "sgd")).name
    assert name in optim._warm and name not in optim._failed, optim._failed  # it ran compiled, not the fallback
    for schedule, result in zip(SCHEDULES, results):
        assert result["trial"]["status"] == "ok" and result["trial"]["backend"] == backend
        assert_matches(result["params"], references[optimizer, schedule])


def _ddp_worker(rank: int, world: int, port: int, cases: list, out_dir: str) -> None:
    import torch.distributed as dist

    from cluster.worker.ddp import train_shard

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        for i, c in enumerate(cases):
            out = train_shard(c, rank=rank, world=world, device=torch.device("cpu"), return_params=True)
            if rank == 0:
                torch.save({"params": out["params"], "row": {k: out["trial"][k] for k in ("status", "backend")}},
                           os.path.join(out_dir, f"{i}.pt"))
        dist.barrier()  # both ranks leave together: rank 1 must not tear gloo down while rank 0 still saves
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two gloo processes on a loopback port the OS picks: beside the Ray group (conftest)
def test_ddp_backend_matches_plain_torch(references, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cases = [case(*c) for c in CASES]
    mp.start_processes(_ddp_worker, args=(2, port, cases, str(tmp_path)), nprocs=2, start_method="spawn")
    for i, c in enumerate(CASES):
        out = torch.load(tmp_path / f"{i}.pt")
        assert out["row"] == {"status": "ok", "backend": "ddp"}
        assert_matches(out["params"], references[c])


def test_the_schedules_reach_the_lr_they_promise(references):
    """lr_now in the curves: warmup from lr/W, the peak, and final_lr_frac at the last step."""
    from scaling.training.run import run_trial

    for schedule, final in (("cosine", None), ("wsd", 0.0)):
        t = case("sgd", schedule)
        curves = run_trial(t)["curves"]
        lr_now = {c["step"]: c["lr_now"] for c in curves}
        w = t.get("warmup_steps") or round(t["warmup_frac"] * STEPS)
        assert lr_now[0] == pytest.approx(t["lr"] / w), "step 0 shows the first step's lr"
        if final is not None:
            assert lr_now[STEPS] == pytest.approx(final * t["lr"], abs=1e-12)
        else:  # cosine ends one step short of eta_min, as CosineAnnealingLR does
            f = t["final_lr_frac"]
            expected = t["lr"] * (f + (1 - f) * 0.5 * (1 + np.cos(np.pi * (STEPS - 1 - w) / (STEPS - w))))
            assert lr_now[STEPS] == pytest.approx(expected)


def test_nesterov_changes_the_weights_and_applies_only_with_momentum():
    """The Nesterov cases above are not SGD's by accident: the references differ."""
    plain, nesterov = reference(case("sgd", "constant")), reference(case("nesterov", "constant"))
    gap = max(float(torch.linalg.norm(plain[k] - nesterov[k]) / torch.linalg.norm(plain[k])) for k in plain)
    assert gap > 100 * TOL
    assert trial_from_dict({**BASE, "momentum": 0.0, "nesterov": True}).nesterov is False


def test_lion_is_not_vacuous(references):
    """The Lion cases move the weights as far as their initial norm (so matching the reference says
    something), and the reference is Lion: one step from zero momentum is lr (sign(g) + wd p)."""
    torch.manual_seed(BASE["seed"])
    init = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).double().state_dict()
    for schedule in SCHEDULES:
        ref = references["lion", schedule]
        assert min(float(torch.linalg.norm(ref[k] - init[k]) / torch.linalg.norm(ref[k])) for k in ref) > 0.5
    p = nn.Parameter(torch.tensor([1.0, -2.0, 3.0, 0.5], dtype=torch.float64))
    opt = ReferenceLion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    p.grad = torch.tensor([0.3, -1e-9, 0.0, -2.0], dtype=torch.float64)
    opt.step()
    expected = torch.tensor([1.0, -2.0, 3.0, 0.5]) - 0.1 * (torch.tensor([1.0, -1.0, 0.0, -1.0])
                                                              + 0.5 * torch.tensor([1.0, -2.0, 3.0, 0.5]))
    torch.testing.assert_close(p.detach(), expected.double())


def test_a_trial_id_does_not_change_for_keys_left_at_their_defaults():
    plain = trial_from_dict(BASE)
    spelled = trial_from_dict({**BASE, "optimizer": "sgd", "schedule": "constant", "beta2": 0.999,
                               "warmup_steps": 0, "final_lr_frac": 0.0})
    assert plain.to_dict() == spelled.to_dict() and plain.trial_id == spelled.trial_id
    assert trial_from_dict(case("adamw", "cosine")).trial_id != plain.trial_id
    # an AdamW trial has no momentum: a grid over momentum does not duplicate it
    assert trial_from_dict({**case("adamw", "cosine"), "momentum": 0.5}).trial_id == \
        trial_from_dict(case("adamw", "cosine")).trial_id
    # Lion's beta2 defaults to 0.99 (the paper's), AdamW's stays 0.999: each is left out at its own
    lion = {**BASE, "optimizer": "lion", "lr": 1e-3}
    assert trial_from_dict(lion).beta2 == 0.99 and "beta2" not in trial_from_dict(lion).to_dict()
    assert trial_from_dict({**lion, "beta2": 0.99}).trial_id == trial_from_dict(lion).trial_id
    assert trial_from_dict({**lion, "beta2": 0.999}).to_dict()["beta2"] == 0.999
    adamw = {**BASE, "optimizer": "adamw", "lr": 1e-3}
    assert trial_from_dict(adamw).beta2 == 0.999
    assert trial_from_dict({**adamw, "beta2": 0.999}).trial_id == trial_from_dict(adamw).trial_id
    assert trial_from_dict({**lion, "momentum": 0.9, "eps": 1e-6}).trial_id == trial_from_dict(lion).trial_id
