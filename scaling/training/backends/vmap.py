"""Train many trials of any model as one: ``run_vmap(trials) -> [result, ...]``, the ``vmap`` backend.

The members of a pack share the task, the model config, the optimizer and the
batch size B, and may differ in everything else (seed, n_train, lr, the
optimizer's hyperparameters, the schedule, the step count). Their parameters
are stacked along a leading member axis M (``torch.func.stack_module_state``)
and one step of the pack is one step of every member:

- the forward pass of every member's minibatch in one call, ``vmap(loss)`` over
  the stacked parameters, where ``loss`` runs the trial's own ``nn.Module``
  through ``functional_call``: the MLP, the CNN, the ResNet (GroupNorm, no batch
  statistics) and the byte-level transformer of scaling.training.models, or a plug-in
  task's model and loss; then one ordinary backward pass of the summed losses
  (members share no parameter, so each member's slice of the gradient is its
  own). That is faster than ``vmap(grad(loss))`` here, and spares each worker
  the second it takes torch.func.grad to import torch._dynamo;
- the optimizer update on the stacked tensors (:class:`StackedOptimizer`: the
  optimizer's update in scaling.training.optim, exactly as its ``torch.optim``
  class computes it), with each member's hyperparameters and its scheduled lr; where it pays
  (scaling.training.optim.fused_pays) the same update as a compiled kernel (optim.fused_update);
- the loop (:mod:`scaling.training.loop`) checks losses, evaluates each member at its own
  eval steps and drops members as they finish or diverge.

Metrics, as ``scaling.training.data``'s single engine measures them (scaling.training.metrics):

- ``noise_scale``: every minibatch is back-propagated in two halves, per member,
  giving |G_small|² and |G_big|²; the moving averages of |G|² and tr(Σ) are kept
  per member on the device, in float64;
- ``grad_norms``: per-example gradients are a second ``vmap`` (over examples,
  inside the one over members), so every member's norms come from one call;
- ``sharpness``: the top Hessian eigenvalue at the start and the end, computed
  member by member with the single engine's power iteration (twice per trial, so
  packing it would save little).

A model that ``vmap`` cannot batch (batch statistics, dropout, data-dependent
Python control flow) is refused by :func:`vmap_problem` before any work starts.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from scaling.training.loop import run_members
from scaling.training.measure import activation_bytes
from scaling.training.metrics import MetricsSpec, hessian_top_eigenvalue
from scaling.training.packing import INDEX_BLOCK_BYTES, VMAP_EVAL_BYTES, can_pack, choose_backend  # noqa: F401
from scaling.spec.schema import as_trial
from scaling.tasks.resolve import load_task
from scaling.training.data import BatchStream, accuracy, batch_block, cross_entropy, same_start, subset_indices
from scaling.training.flops import flops_per_example
from scaling.training.models import make_model
from scaling.training import optim

HYPER = ("lr", "momentum", "weight_decay", "beta1", "beta2", "eps")


class StackedOptimizer:
    """The trials' optimizer for M members at once, on stacked (M, ...) tensors: the update of its
    entry in scaling.training.optim.OPTIMIZERS (SGD, AdamW, ... as torch.optim computes them).

    Each hyperparameter is an (M,) float64 tensor, viewed as (M, 1, ..., 1) in the parameter's
    dtype against a parameter (:func:`_viewer`); per-step scalars (AdamW's bias corrections)
    are computed in float64, as torch.optim computes them in Python floats."""

    def __init__(self, trials, params: dict[str, torch.Tensor], fused: bool | None = None):
        device = next(iter(params.values())).device
        self.spec = optim.get(trials[0].optimizer)
        n_params = sum(p[0].numel() for p in params.values())
        self.fused = fused if fused is not None else optim.fused_pays(
            self.spec.name, sum(t.total_steps for t in trials), n_params)
        """Whether the update is the compiled kernel (scaling.training.optim.fused_update): by default
        where it pays (optim.fused_pays)."""
        self.hyper = {k: torch.tensor([float(getattr(t, k)) for t in trials], dtype=torch.float64, device=device)
                      for k in HYPER}
        self.hyper["nesterov"] = torch.tensor([bool(t.nesterov) for t in trials], device=device)
        self.any_wd = bool((self.hyper["weight_decay"] != 0).any())
        self._flags()
        self.state = {name: [torch.zeros_like(p) for _ in range(self.spec.state)] for name, p in params.items()}
        self.t = 0

    def _flags(self) -> None:
        nesterov = self.hyper["nesterov"]
        self.nesterov = "all" if bool(nesterov.all()) else "some" if bool(nesterov.any()) else "none"

    def keep(self, idx: torch.Tensor) -> None:
        self.hyper = {k: v.index_select(0, idx) for k, v in self.hyper.items()}
        self._flags()
        self.state = {k: [s.index_select(0, idx) for s in v] for k, v in self.state.items()}

    def step(self, params: dict, grads: dict, lr: torch.Tensor | None) -> None:
        """One update of every member; ``lr``: this step's (M,) learning rates, None for the peak."""
        lr = self.hyper["lr"] if lr is None else lr.to(torch.float64)
        self.t += 1
        step = optim.Step(self.hyper, lr, self.t, _viewer, any_wd=self.any_wd, nesterov=self.nesterov)
        update = functools.partial(optim.fused_update, self.spec.name) if self.fused else self.spec.update
        update(list(params.values()), [grads[name] for name in params], [self.state[name] for name in params], step)


def _viewer(p: torch.Tensor):
    """(M,) float64 -> (M, 1, ..., 1) in p's dtype, to broadcast against a stacked parameter."""
    shape = (-1,) + (1,) * (p.dim() - 1)
    return lambda v: v.to(p.dtype).view(shape)


class NoiseScaleState:
    """Per-member moving averages of the |G|² and tr(Σ) estimates (scaling.training.metrics.NoiseScaleEMA,
    vectorised): float64 (M,) tensors on the device, updated where an estimate is finite."""

    def __init__(self, members: int, beta: float, device):
        self.beta = beta
        self.grad_sq = torch.zeros(members, dtype=torch.float64, device=device)
        self.trace_cov = torch.zeros_like(self.grad_sq)
        self.updates = torch.zeros(members, dtype=torch.int64, device=device)

    def keep(self, idx: torch.Tensor) -> None:
        self.grad_sq, self.trace_cov = self.grad_sq.index_select(0, idx), self.trace_cov.index_select(0, idx)
        self.updates = self.updates.index_select(0, idx)

    def update(self, g_small_sq, b_small: float, g_big_sq, b_big: float) -> None:
        if not b_big > b_small > 0:
            return
        grad_sq = (b_big * g_big_sq - b_small * g_small_sq) / (b_big - b_small)
        trace_cov = (g_small_sq - g_big_sq) / (1.0 / b_small - 1.0 / b_big)
        ok = torch.isfinite(grad_sq) & torch.isfinite(trace_cov)
        self.updates += ok
        self.grad_sq = torch.where(ok, self.beta * self.grad_sq + (1 - self.beta) * grad_sq, self.grad_sq)
        self.trace_cov = torch.where(ok, self.beta * self.trace_cov + (1 - self.beta) * trace_cov, self.trace_cov)

    def values(self, positions: list[int]) -> list[dict]:
        """``b_simple``, ``grad_sq_norm``, ``grad_cov_trace`` of these members (None before an update)."""
        g, tr, n = self.grad_sq.tolist(), self.trace_cov.tolist(), self.updates.tolist()
        out = []
        for p in positions:
            if not n[p]:
                out.append(dict.fromkeys(("b_simple", "grad_sq_norm", "grad_cov_trace")))
                continue
            correct = 1 - self.beta ** n[p]
            out.append({"b_simple": tr[p] / g[p] if g[p] != 0 else None,
                        "grad_sq_norm": g[p] / correct, "grad_cov_trace": tr[p] / correct})
        return out


class VmapBackend:
    """Stacked parameters, optimizer state and metrics of the live members (the loop's ``vmap`` backend)."""

    name = "vmap"

    def __init__(self, trials, device: str = "cpu", fused: bool | None = None):
        ok, why = can_pack(trials)
        if not ok:
            raise ValueError(f"cannot run these trials as one pack: {why}")
        data = self.data = load_task(trials[0].task)
        self.trials, self.device, self.batch = list(trials), device, trials[0].batch_size
        models = [make_model(t.model_spec, data, t.seed) for t in trials]
        params, buffers = stack_module_state(models)  # before models[0] moves (Module.to is in place)
        self.params = {k: v.detach().to(device).contiguous() for k, v in params.items()}
        self.buffers = {k: v.to(device).contiguous() for k, v in buffers.items()}
        self.model = models[0].to(device)  # the template functional_call runs; its own tensors are unused
        self.state_keys = list(self.model.state_dict())
        self.loss_fn, self.metric_fn = data.loss or cross_entropy, data.metric or accuracy
        self.optimizer = StackedOptimizer(trials, self.params, fused)
        pool = len(data.y_train)
        self.subsets = [subset_indices(t.seed, pool, t.n_train) for t in trials]
        self.streams = [BatchStream(t.seed, t.n_train) for t in trials]
        self.steps, self.n_trains = [t.total_steps for t in trials], [t.n_train for t in trials]
        self.x_pool, self.y_pool = torch.from_numpy(data.x_train).to(device), torch.from_numpy(data.y_train).to(device)
        self.sets = {name: None if x is None else (torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
                     for name, x, y in (("val", data.x_val, data.y_val), ("test", data.x_test, data.y_test))}
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.flops_per_example = flops_per_example(trials[0])
        self.tokens_per_example, self.pool_size = data.tokens_per_example, pool
        self.data_version = data.data_version
        self.spec = MetricsSpec(**trials[0].metrics) if trials[0].metrics else MetricsSpec()
        self.noise = NoiseScaleState(len(trials), self.spec.noise_ema, device) if self.spec.noise_scale else None
        self._losses = vmap(self._loss)
        self.block, self.block_start = None, 1
        self._grads, self._pending_noise = None, None
        self.extra = [{} for _ in trials]
        if self.spec.sharpness:
            for p, extra in enumerate(self.extra):
                extra["sharpness_init"] = self._sharpness(p)

    def _loss(self, params, buffers, x, y):
        return self.loss_fn(functional_call(self.model, (params, buffers), (x,)), y)

    def _value_and_grad(self, x, y) -> tuple[dict, torch.Tensor]:
        """Every member's gradient of its minibatch loss, and the losses (M,)."""
        leaves = {k: v.detach().requires_grad_() for k, v in self.params.items()}
        losses = self._losses(leaves, self.buffers, x, y)
        grads = torch.autograd.grad(losses.sum(), list(leaves.values()))
        return dict(zip(leaves, grads)), losses.detach()

    # ---- membership --------------------------------------------------------

    def keep(self, positions: list[int]) -> None:
        """Drop every member not at these positions (in the current order)."""
        idx = torch.tensor(positions, dtype=torch.int64, device=self.device)
        self.params = {k: v.index_select(0, idx) for k, v in self.params.items()}
        self.buffers = {k: v.index_select(0, idx) for k, v in self.buffers.items()}
        self.optimizer.keep(idx)
        if self.noise is not None:
            self.noise.keep(idx)
        if self.block is not None:
            self.block = self.block.index_select(1, idx)
        for name in ("trials", "subsets", "streams", "steps", "n_trains", "extra"):
            setattr(self, name, [getattr(self, name)[p] for p in positions])
        self._grads = self._pending_noise = None

    def params_of(self, position: int) -> dict[str, torch.Tensor]:
        """One member's ``state_dict``, as its own ``nn.Module`` would give it."""
        tensors = {**self.params, **self.buffers}
        return {k: tensors[k][position].detach().cpu().clone() for k in self.state_keys}

    def final_extra(self, position: int, ok: bool) -> dict:
        extra = dict(self.extra[position])
        if self.spec.sharpness:
            extra["sharpness_final"] = self._sharpness(position) if ok else math.nan
        return extra

    # ---- training ----------------------------------------------------------

    def batch_indices(self, step: int) -> torch.Tensor:
        """Pool indices of every member's minibatch at ``step``, shape (M, B)."""
        if self.block is None or step - self.block_start >= len(self.block):
            self.block = batch_block(self.subsets, self.streams, self.batch, max(self.steps) - step + 1,
                                     INDEX_BLOCK_BYTES, self.device)
            self.block_start = step
        return self.block[step - self.block_start]

    def forward(self, step: int) -> torch.Tensor:
        """Every member's minibatch loss and gradients (the gradients wait for ``update``)."""
        idx = self.batch_indices(step)
        x, y = self.x_pool[idx], self.y_pool[idx]
        if self.noise is None or self.batch < 2:
            self._grads, losses = self._value_and_grad(x, y)
            return losses
        b, b1 = self.batch, self.batch // 2
        g1, l1 = self._value_and_grad(x[:, :b1], y[:, :b1])
        g2, l2 = self._value_and_grad(x[:, b1:], y[:, b1:])
        self._grads = {k: g1[k] * (b1 / b) + g2[k] * ((b - b1) / b) for k in g1}
        small = (_sq_norms(g1) + _sq_norms(g2)) / 2
        self._pending_noise = (small, 2.0 / (1.0 / b1 + 1.0 / (b - b1)), _sq_norms(self._grads), float(b))
        return (l1 * b1 + l2 * (b - b1)) / b

    def update(self, lr) -> None:
        """One optimizer step of every member with the gradients of ``forward``."""
        if lr is not None:
            lr = torch.from_numpy(np.asarray(lr, dtype=np.float64)).to(self.device)
        self.optimizer.step(self.params, self._grads, lr)
        if self._pending_noise is not None:
            self.noise.update(*self._pending_noise)
        self._grads = self._pending_noise = None

    # ---- evaluation --------------------------------------------------------

    def evaluate(self, positions: list[int], step: int) -> list[dict]:
        """Metrics of the members at these positions. At step 0 members with the same seed and
        n_train have the same weights and subset, so one of them is evaluated for all."""
        if step > 0:
            return self._evaluate(positions)
        first = same_start(self.trials, self.n_trains, positions)
        unique = list(dict.fromkeys(first.values()))
        metrics = dict(zip(unique, self._evaluate(unique)))
        noise = self.noise.values(positions) if self.noise is not None else [{}] * len(positions)
        return [{**metrics[first[p]], **n} for p, n in zip(positions, noise)]

    @torch.no_grad()
    def _evaluate(self, positions: list[int]) -> list[dict]:
        self.model.eval()
        try:
            idx = torch.tensor(positions, dtype=torch.int64, device=self.device)
            params = {k: v.index_select(0, idx) for k, v in self.params.items()}
            buffers = {k: v.index_select(0, idx) for k, v in self.buffers.items()}
            rows = self._eval_rows(len(positions))
            out = [{"train_loss": v} for v in self._train_losses(positions, params, buffers, rows)]
            for name, pair in self.sets.items():
                if pair is None:
                    values = [(None, None)] * len(positions)
                else:
                    values = self._set_means(params, buffers, *pair, rows)
                for o, (loss, metric) in zip(out, values):
                    o[f"{name}_loss"], o[f"{name}_acc"] = loss, metric
        finally:
            self.model.train()
        if self.noise is not None:
            for o, n in zip(out, self.noise.values(positions)):
                o.update(n)
        if self.spec.grad_norms:
            finite = [math.isfinite(o["train_loss"]) for o in out]
            for o, n, ok in zip(out, self._example_grad_norms(positions), finite):
                o.update(n if ok else dict.fromkeys(n))
        if self.noise is not None:
            for o in out:
                if not math.isfinite(o["train_loss"]):
                    o.update(dict.fromkeys(("b_simple", "grad_sq_norm", "grad_cov_trace")))
        return out

    def _eval_rows(self, members: int) -> int:
        per_example = activation_bytes(self.trials[0].task, self.trials[0].model_spec)
        return int(max(1, min(256, VMAP_EVAL_BYTES // max(1, members * per_example))))

    def _means(self, params, buffers, x, y, in_dims):
        """Per-member (loss, metric) batch means of one chunk: (M,) tensors."""
        def both(p, b, xx, yy):
            out = functional_call(self.model, (p, b), (xx,))
            return self.loss_fn(out, yy), self.metric_fn(out, yy)
        return vmap(both, in_dims=(0, 0, in_dims, in_dims))(params, buffers, x, y)

    def _train_losses(self, positions, params, buffers, rows: int) -> list[float]:
        """Mean loss of each member on its own training subset, in chunks of ``rows``
        (the example-weighted mean of chunk means, as the single engine computes it)."""
        n = torch.tensor([self.n_trains[p] for p in positions])
        width = int(n.max())
        sub = np.zeros((len(positions), width), dtype=np.int64)
        for i, p in enumerate(positions):
            sub[i, :self.n_trains[p]] = self.subsets[p]
        sub = torch.from_numpy(sub).to(self.device)
        total = torch.zeros(len(positions), dtype=torch.float64, device=self.device)
        for r0 in range(0, width, rows):
            r1 = min(r0 + rows, width)
            # members whose subset ends at or after r1 take the whole chunk; the others (grouped
            # by where their subset ends) take what is left of theirs
            for end in sorted({min(int(v), r1) for v in n if v > r0}):
                group = torch.nonzero((n > r0) & (n.clamp(max=r1) == end)).view(-1).to(self.device)
                take = lambda t: t.index_select(0, group)  # noqa: E731
                rows_idx = sub.index_select(0, group)[:, r0:end]
                losses, _ = self._means({k: take(v) for k, v in params.items()},
                                        {k: take(v) for k, v in buffers.items()},
                                        self.x_pool[rows_idx], self.y_pool[rows_idx], 0)
                total.index_add_(0, group, losses.double() * (end - r0))
        return (total / n.to(self.device)).tolist()

    def _set_means(self, params, buffers, x_all, y_all, rows: int) -> list[tuple[float, float]]:
        members = next(iter(params.values())).shape[0]
        loss = torch.zeros(members, dtype=torch.float64, device=self.device)
        metric = torch.zeros_like(loss)
        for r0 in range(0, len(y_all), rows):
            x, y = x_all[r0:r0 + rows], y_all[r0:r0 + rows]
            a, b = self._means(params, buffers, x, y, None)
            loss += a.double() * len(y)
            metric += b.double() * len(y)
        return list(zip((loss / len(y_all)).tolist(), (metric / len(y_all)).tolist()))

    def _example_grad_norms(self, positions: list[int]) -> list[dict]:
        """Mean and std of per-example gradient norms on each member's probe set (the first
        ``grad_norm_examples`` of its subset), model in eval mode, as scaling.training.metrics does it."""
        k = self.spec.grad_norm_examples
        idx = torch.tensor(positions, dtype=torch.int64, device=self.device)
        params = {n: v.index_select(0, idx) for n, v in self.params.items()}
        buffers = {n: v.index_select(0, idx) for n, v in self.buffers.items()}
        out = [None] * len(positions)
        by_size: dict[int, list[int]] = {}
        for i, p in enumerate(positions):
            by_size.setdefault(min(k, self.n_trains[p]), []).append(i)

        def loss_one(p, b, xi, yi):
            return self._loss(p, b, xi.unsqueeze(0), yi.unsqueeze(0))

        from torch.func import grad  # imports torch._dynamo (a second), so only when asked

        per_example = vmap(vmap(grad(loss_one), in_dims=(None, None, 0, 0)))
        self.model.eval()
        try:
            for size, members in by_size.items():
                rows = torch.tensor(np.stack([self.subsets[positions[i]][:size] for i in members])).to(self.device)
                group = torch.tensor(members, device=self.device)
                take = lambda t: t.index_select(0, group)  # noqa: E731
                grads = per_example({n: take(v) for n, v in params.items()}, {n: take(v) for n, v in buffers.items()},
                                    self.x_pool[rows], self.y_pool[rows])
                norms = sum(g.flatten(2).double().pow(2).sum(2) for g in grads.values()).sqrt()
                for i, mean, std in zip(members, norms.mean(1).tolist(), norms.std(1, correction=0).tolist()):
                    out[i] = {"example_grad_norm_mean": mean, "example_grad_norm_std": std}
        finally:
            self.model.train()
        return out

    def _sharpness(self, position: int) -> float:
        """The single engine's sharpness (scaling.training.metrics.sharpness) of one member."""
        k = self.spec.sharpness_examples
        rows = torch.from_numpy(self.subsets[position][:k]).to(self.device)
        x, y = self.x_pool[rows], self.y_pool[rows]
        names = list(self.params)
        leaves = [self.params[n][position].detach().clone().requires_grad_() for n in names]
        buffers = {n: b[position] for n, b in self.buffers.items()}

        def closure():
            out = functional_call(self.model, ({**dict(zip(names, leaves)), **buffers}), (x,))
            return self.loss_fn(out, y)

        self.model.eval()
        try:
            return hessian_top_eigenvalue(closure, leaves, iters=self.spec.sharpness_iters,
                                          seed=self.trials[position].seed)
        finally:
            self.model.train()


def _sq_norms(grads: dict) -> torch.Tensor:
    """Squared norm of each member's gradient, (M,) float64."""
    return sum(g.flatten(1).double().pow(2).sum(1) for g in grads.values())


def run_vmap(trials, *, device: str = "cpu", on_result=None, return_params: bool = False,
             fused: bool | None = None) -> list[dict]:
    """Train trials together with the vmap backend; one result per trial, in input order.

    The results are ``scaling.training.run.run_pack``'s (engine ``"packed"``), with ``backend``
    ``"vmap"``. ``fused``: the compiled optimizer update (True), the eager one (False), or the one
    that pays (None, scaling.training.optim.fused_pays). Raises ``ValueError`` if ``can_pack(trials)``
    says no."""
    trials = [as_trial(t) for t in trials]
    return run_members(trials, lambda ts: VmapBackend(ts, device, fused), engine="packed",
                       on_result=on_result, return_params=return_params)
