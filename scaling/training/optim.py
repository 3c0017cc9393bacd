"""Every optimizer the system trains with, in one registry: :data:`OPTIMIZERS`.

Each :class:`OptimizerSpec` carries all that the rest of the code asks about an optimizer:

- ``factory(params, trial)``: the ``torch.optim.Optimizer`` of the ``module`` and ``ddp``
  backends (scaling.training.backends.module.make_optimizer), at the trial's peak lr (the
  loop sets each step's lr in ``param_groups``);
- ``update(params, grads, states, step)``: the same update on stacked tensors, for the packed
  backends (scaling.training.backends.stacked and .vmap): every parameter has a leading member
  axis M, ``states[i]`` holds its ``state`` tensors (zeros at the start, shaped like it), and
  ``step`` (:class:`Step`) holds the per-member hyperparameters and this step's lr;
- ``state``: tensors of optimizer state per parameter, for the planner's memory estimate
  (scaling.training.packing, which imports this module without torch: torch is imported only
  inside the functions here).

Adding an optimizer is one entry here plus its name in the ``optimizer`` field's choices (and
which hyperparameter fields apply to it) in scaling.spec.schema; every backend then trains it.
tests/test_equivalence.py and tests/test_vmapped.py check each entry against plain torch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Step:
    """One update of a pack: per-member hyperparameters as tensors, as the backend holds them.

    ``hyper`` maps a trial field (momentum, nesterov, weight_decay, beta1, beta2, eps) to a
    tensor of one value per member; ``lr`` is this step's learning rates, the same way; ``t``
    counts updates from 1. ``view(p)`` gives the function that turns such a tensor into one that
    broadcasts against the stacked parameter ``p`` (the stacked backend keeps them as (M, 1, 1)
    float32 already: identity; the vmap backend as (M,) float64: reshaped and cast per
    parameter). ``any_wd``: some member has weight decay; ``nesterov``: "none", "some" or "all"
    members use Nesterov momentum; ``own_grads``: the update may overwrite the gradients."""

    hyper: dict
    lr: Any
    t: int
    view: Callable[[Any], Callable[[Any], Any]]
    any_wd: bool = True
    nesterov: str = "none"
    own_grads: bool = False


def same(p):
    """``Step.view`` of hyperparameters already shaped and typed for every parameter."""
    return _identity


def _identity(v):
    return v


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer: its torch factory, its update on stacked tensors and its state count."""

    name: str
    doc: str
    """One line, for docs and error messages."""
    state: int
    """State tensors per parameter (SGD's momentum buffer, AdamW's two moments, ...)."""
    factory: Callable
    """(params, trial) -> torch.optim.Optimizer at the trial's peak lr."""
    update: Callable
    """(params, grads, states, step: Step) -> None, in place on params and states."""


# ---- SGD -----------------------------------------------------------------------------------------

def _sgd_factory(params, trial):
    import torch

    return torch.optim.SGD(params, lr=trial.lr, momentum=trial.momentum, weight_decay=trial.weight_decay,
                           nesterov=trial.nesterov)


def _sgd_update(params, grads, states, s: Step) -> None:
    """``torch.optim.SGD`` (dampening 0): g += wd p; b = m b + g; p -= lr b, or with Nesterov
    p -= lr (g + m b)."""
    import torch

    h = s.hyper
    for p, g, (buf,) in zip(params, grads, states):
        view = s.view(p)
        momentum = view(h["momentum"])
        if s.any_wd:
            g = g.addcmul_(p, view(h["weight_decay"])) if s.own_grads else g.addcmul(p, view(h["weight_decay"]))
        torch.addcmul(g, buf, momentum, out=buf)
        direction = buf
        if s.nesterov != "none":
            direction = g.addcmul_(buf, momentum) if s.own_grads else g.addcmul(buf, momentum)
            if s.nesterov == "some":
                direction = torch.where(view(h["nesterov"]) > 0, direction, buf)
        p.addcmul_(direction, view(s.lr), value=-1.0)


# ---- AdamW ---------------------------------------------------------------------------------------

def _adamw_factory(params, trial):
    import torch

    return torch.optim.AdamW(params, lr=trial.lr, betas=(trial.beta1, trial.beta2), eps=trial.eps,
                             weight_decay=trial.weight_decay)


def _adamw_update(params, grads, states, s: Step) -> None:
    """``torch.optim.AdamW``: p *= 1 − lr wd; m₁ = lerp(m₁, g, 1 − β₁), m₂ = β₂ m₂ + (1 − β₂) g²;
    p −= lr/(1 − β₁ᵗ) · m₁/(√m₂/√(1 − β₂ᵗ) + eps). The per-member scalars are computed in the
    hyperparameters' own dtype (torch.optim computes them in Python floats)."""
    h = s.hyper
    bc1 = 1 - h["beta1"] ** s.t
    bc2_sqrt = (1 - h["beta2"] ** s.t).sqrt()
    step_size = s.lr / bc1
    decay = 1 - s.lr * h["weight_decay"] if s.any_wd else None
    for p, g, (m1, m2) in zip(params, grads, states):
        view = s.view(p)
        if decay is not None:
            p.mul_(view(decay))
        m1.lerp_(g, view(1 - h["beta1"]))
        m2.mul_(view(h["beta2"])).addcmul_(g, g * view(1 - h["beta2"]))
        denom = (m2.sqrt() / view(bc2_sqrt)).add_(view(h["eps"]))
        p.addcdiv_(m1 * view(step_size), denom, value=-1.0)


# ---- Lion ----------------------------------------------------------------------------------------

@functools.cache
def _lion_class():
    """``Lion``, a ``torch.optim.Optimizer`` (torch has none), made on first use: torch is
    imported only here."""
    import torch

    class Lion(torch.optim.Optimizer):
        """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), with
        decoupled weight decay: c = β₁ m + (1 − β₁) g; p *= 1 − lr wd; p −= lr sign(c);
        m = β₂ m + (1 − β₂) g."""

        def __init__(self, params, lr: float = 1e-4, betas: tuple = (0.9, 0.99), weight_decay: float = 0.0):
            super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    g, state = p.grad, self.state[p]
                    if not state:
                        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    m = state["exp_avg"]
                    c = (m * beta1).add_(g * (1 - beta1))
                    if wd:
                        p.mul_(1 - lr * wd)
                    p.add_(c.sign_(), alpha=-lr)
                    m.mul_(beta2).add_(g * (1 - beta2))
            return loss

    Lion.__module__ = __name__
    Lion.__qualname__ = "Lion"
    return Lion


def _lion_factory(params, trial):
    import torch

    cls = getattr(torch.optim, "Lion", None) or _lion_class()
    return cls(params, lr=trial.lr, betas=(trial.beta1, trial.beta2), weight_decay=trial.weight_decay)


def _lion_update(params, grads, states, s: Step) -> None:
    """Lion: c = β₁ m + (1 − β₁) g; p *= 1 − lr wd; p −= lr sign(c); m = β₂ m + (1 − β₂) g; the
    same operations as :func:`_lion_class`'s step (sign() turns a rounding difference in c near
    0 into a step of 2 lr, so the two round alike)."""
    h = s.hyper
    decay = 1 - s.lr * h["weight_decay"] if s.any_wd else None
    for p, g, (m,) in zip(params, grads, states):
        view = s.view(p)
        c = (m * view(h["beta1"])).add_(g * view(1 - h["beta1"]))
        if decay is not None:
            p.mul_(view(decay))
        p.addcmul_(c.sign_(), view(s.lr), value=-1.0)
        m.mul_(view(h["beta2"])).add_(g * view(1 - h["beta2"]))


# ---- fused updates: one compiled kernel per optimizer ---------------------------------------------
#
# The eager updates above are several ops per tensor, each a pass over it (AdamW: about ten passes
# over weights, gradients, moments and temporaries where one would do). The kernels below are the
# same arithmetic written for torch.compile: Inductor fuses a tensor's update into one loop (C++ on a
# CPU, Triton on a GPU) that reads the gradient, the weights and the state once and writes them once.
# Each kernel takes one parameter viewed as (M, N) (M members, N its entries per member) and
# per-member hyperparameters as tensors (cast and viewed as (M, 1) inside), and nothing in them is
# a Python number that changes per step, so one compile (dynamic in M and N) serves every tensor of
# every model, every step and pack size, and, through Inductor's on-disk cache (its FX graph cache,
# on by default), every worker process of a node.


def _member(p):
    """A per-member tensor, (M, 1) in p's dtype already (fused_update casts them once), against p (M, N)."""
    return lambda v: v.to(p.dtype).view(-1, 1)


def _sgd_kernel(p, g, buf, momentum, weight_decay, lr, nesterov_mask, any_wd: bool, nesterov: str):
    v = _member(p)
    if any_wd:
        g = g + p * v(weight_decay)
    buf.copy_(g + buf * v(momentum))
    direction = buf
    if nesterov != "none":
        direction = g + buf * v(momentum)
        if nesterov == "some":
            direction = direction.where(v(nesterov_mask) > 0, buf)
    p.sub_(direction * v(lr))


def _adamw_kernel(p, g, m1, m2, decay, one_minus_b1, beta2, one_minus_b2, bc2_sqrt, eps, step_size):
    v = _member(p)
    if decay is not None:
        p.mul_(v(decay))
    m1.lerp_(g, v(one_minus_b1))
    m2.mul_(v(beta2)).addcmul_(g, g * v(one_minus_b2))
    p.addcdiv_(m1 * v(step_size), (m2.sqrt() / v(bc2_sqrt)).add_(v(eps)), value=-1.0)


def _lion_kernel(p, g, m, beta1, one_minus_b1, decay, lr, beta2, one_minus_b2):
    v = _member(p)
    c = m * v(beta1) + g * v(one_minus_b1)
    if decay is not None:
        p.mul_(v(decay))
    p.sub_(c.sign() * v(lr))
    m.copy_(m * v(beta2) + g * v(one_minus_b2))


def _many_sgd(ps, gs, bufs, *args):
    for p, g, buf in zip(ps, gs, bufs):
        _sgd_kernel(p, g, buf, *args)


def _many_adamw(ps, gs, m1s, m2s, *args):
    for p, g, m1, m2 in zip(ps, gs, m1s, m2s):
        _adamw_kernel(p, g, m1, m2, *args)


def _many_lion(ps, gs, ms, *args):
    for p, g, m in zip(ps, gs, ms):
        _lion_kernel(p, g, m, *args)


def _sgd_args(s: Step) -> tuple:
    h = s.hyper
    return h["momentum"], h["weight_decay"], s.lr, h["nesterov"], s.any_wd, s.nesterov


def _adamw_args(s: Step) -> tuple:
    h = s.hyper
    decay = 1 - s.lr * h["weight_decay"] if s.any_wd else None
    return (decay, 1 - h["beta1"], h["beta2"], 1 - h["beta2"], (1 - h["beta2"] ** s.t).sqrt(), h["eps"],
            s.lr / (1 - h["beta1"] ** s.t))


def _lion_args(s: Step) -> tuple:
    h = s.hyper
    decay = 1 - s.lr * h["weight_decay"] if s.any_wd else None
    return h["beta1"], 1 - h["beta1"], decay, s.lr, h["beta2"], 1 - h["beta2"]


KERNELS = {"sgd": (_sgd_kernel, _sgd_args, _many_sgd), "adamw": (_adamw_kernel, _adamw_args, _many_adamw),
           "lion": (_lion_kernel, _lion_args, _many_lion)}
"""Per optimizer: its update of one tensor written for torch.compile, the per-step tensors it takes
from a Step, and the same over a list of tensors."""
ONE_CALL_TENSORS = 8
"""Up to this many tensors (the MLP to depth 3) the update is one compiled call over all of them: each
call of a compiled function costs 30-50 µs here, 4 calls a step made AdamW's update 1.5x slower
than one. Beyond, one call per tensor: one graph for every model, where a graph unrolled over the
29 tensors of the benchmark's transformer took 258 s to compile under load."""

COMPILE_S = 8.0
"""What a fused update costs before its first step in a process, seconds: importing torch._dynamo
and Inductor (2.5 s here) and compiling its one kernel with Inductor's on-disk cache warm (5 s on
the 2-core development machine under load; 15-25 s with the cache cold, once per node)."""
SAVED_S_PER_PARAM_STEP = {"sgd": 0.0, "adamw": 1.0e-9, "lion": 0.5e-9}
"""Seconds the fused update saves per parameter and step over the eager one on a CPU, one thread
(``python -m cluster.bench.roofline --updates`` times both, five runs: AdamW 0.84-1.24 ns, Lion
0.33-0.67, SGD with Nesterov -0.19 to 0.16, so never by default; SGD's eager fast path in the
stacked backend is not replaced either). :func:`fused_pays` weighs them against COMPILE_S."""

_failed: dict[str, str] = {}
_warm: set = set()


def fused_pays(name: str, member_steps: int, n_params: int) -> bool:
    """Whether a pack should run optimizer ``name``'s fused update: the time it saves over the
    pack's ``member_steps`` (the steps of all its members together) of ``n_params`` parameters each
    exceeds the compile it costs. Decided by the pack alone, never by what this process compiled
    before: the fused update rounds differently (1e-7 relative), chaotic training amplifies that
    (a ResNet's weights 12% apart after 100 steps, as one torch thread against two does), and a
    trial's numbers must not depend on which worker, with which history, ran it."""
    if name not in KERNELS or name in _failed:
        return False
    return member_steps * n_params * SAVED_S_PER_PARAM_STEP[name] > 2 * COMPILE_S


@functools.cache
def _compiled(name: str, many: bool = False):
    import torch

    return torch.compile(KERNELS[name][2 if many else 0], dynamic=True)


def _rows(t):
    """A contiguous (M, ...) tensor as its (M, N) view."""
    return t.view(t.shape[0], -1)


def fused_update(name: str, params, grads, states, s: Step) -> None:
    """Optimizer ``name``'s update as compiled kernels over its tensors, each viewed as (M, N): one
    call for them all up to ONE_CALL_TENSORS tensors, else one per tensor; the same arithmetic as its
    eager ``update`` (float rounding apart). A pack of one member, or a tensor that is not
    contiguous, takes the eager update (a size of 1 or a copy would cost a compile or the write). If compiling fails (no C++ compiler, an unsupported device), this process goes
    on with the eager update, and says so once."""
    eager = list(range(len(params)))
    if name not in _failed and params and params[0].shape[0] > 1:
        dtype = params[0].dtype
        args = [a.to(dtype).reshape(-1, 1) if hasattr(a, "reshape") else a for a in KERNELS[name][1](s)]
        eager, done = [], 0
        contiguous = all(p.is_contiguous() and all(t.is_contiguous() for t in st) for p, st in zip(params, states))
        try:
            if contiguous and len(params) <= ONE_CALL_TENSORS:
                _compiled(name, True)([_rows(p) for p in params], [g.reshape(g.shape[0], -1) for g in grads],
                                      *([_rows(t) for t in ts] for ts in zip(*states)), *args)
                _warm.add(name)
                return
            kernel = _compiled(name)
            for i, (p, g, state) in enumerate(zip(params, grads, states)):
                if not (p.is_contiguous() and all(t.is_contiguous() for t in state)):
                    eager.append(i)
                    continue
                kernel(_rows(p), g.reshape(g.shape[0], -1), *map(_rows, state), *args)
                done += 1
            _warm.add(name)
        except Exception as e:
            import sys

            if done:  # a tensor is updated already: only a failed first compile falls back
                raise
            _failed[name] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            print(f"warning: the fused {name} update failed to compile ({_failed[name]}); "
                  "training goes on with the eager one", file=sys.stderr)
            eager = list(range(len(params)))
    if eager:
        get(name).update([params[i] for i in eager], [grads[i] for i in eager], [states[i] for i in eager], s)


# ---- the registry --------------------------------------------------------------------------------

OPTIMIZERS: dict[str, OptimizerSpec] = {
    "sgd": OptimizerSpec("sgd", "SGD with momentum (heavy ball or Nesterov) and weight decay added to the gradient",
                         1, _sgd_factory, _sgd_update),
    "adamw": OptimizerSpec("adamw", "AdamW: Adam with decoupled weight decay", 2, _adamw_factory, _adamw_update),
    "lion": OptimizerSpec("lion", "Lion (Chen et al. 2023): the sign of an interpolated momentum, decoupled "
                          "weight decay", 1, _lion_factory, _lion_update),
}


def get(name: str) -> OptimizerSpec:
    """The registry entry of optimizer ``name``; ValueError naming the known ones if none."""
    try:
        return OPTIMIZERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}") from None


def state_count(name: str) -> int:
    """State tensors per parameter of optimizer ``name`` (no torch)."""
    return get(name).state


def __getattr__(name: str):
    if name == "Lion":  # the class, made (and torch imported) on first use
        return _lion_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
