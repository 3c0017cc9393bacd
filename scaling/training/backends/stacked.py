"""Train many MLP trials as one vectorised model: ``run_pack(trials) -> [result, ...]``.

The ``stacked`` backend of :mod:`scaling.training.loop`. Trials that share the task, the
model config (name, width, depth), the optimizer and the batch size B stack
their weights along a leading member axis M and train with batched matmuls
(``torch.baddbmm``/``torch.bmm``): one step of the pack is one step of every
member. Members may differ in lr (ε), the optimizer's hyperparameters
(momentum m, β₁, β₂, ε, weight decay), the schedule, seed and n_train (N), so
in step count too. Everything else stays per member, exactly as
``scaling.training.run.run_trial`` does it alone:

- initial weights from ``build_model(seed)``, subset from ``subset_indices``,
  batch order from ``BatchStream`` (taken many steps at a time: the same stream);
- the optimizer as ``torch.optim`` computes it, with the hyperparameters held as
  (M, 1, 1) tensors and ε_t the member's scheduled lr at this step: the update of the
  optimizer's entry in scaling.training.optim.OPTIMIZERS (SGD ``b = m b + (g + wd p)``,
  ``p -= ε_t b``; AdamW ``p *= 1 − ε_t wd``, Adam's moments and bias corrections,
  ``p -= ε_t m̂/(√v̂ + eps)``; ...), the one the vmap backend runs too;
- the loop (:mod:`scaling.training.loop`) checks the losses, evaluates each member at its
  own eval steps and drops members as they finish or diverge.

This backend trains the MLP on float features with cross-entropy and no
``metrics``; every other packable trial goes to the vmap backend
(scaling.training.backends.vmap), and ``run_pack`` picks the one ``choose_backend`` names.

SGD without Nesterov takes a fast path of its own: each weight's gradient matmul adds
straight into its momentum buffer (``baddbmm_``, the momentum as its beta for
each run of members that share it), so no gradient is written out and read
back; ``python -m cluster.bench.roofline`` times the step against its roofline. Every other update
(AdamW, Lion, Nesterov) is the optimizer's eager one or, where it pays (``fused``, by default
scaling.training.optim.fused_pays), its compiled kernel (scaling.training.optim.fused_update).

Speed: a step is a handful of batched matmuls whatever M is, so on a CPU a pack
with one torch thread runs at a good share of the core's matmul peak; run one
pack per core (``python -m cluster.bench`` measures the layouts). Eval costs
what ``eval_steps`` asks: each is a forward pass over the member's whole subset
and the validation and test sets.

The backward pass is written out (softmax cross-entropy, ReLU, linear) rather
than taken from autograd: it skips the input gradient of the first layer and
keeps the logits as (M, classes, B), which suits small class counts. The
result agrees with ``run_trial`` to float rounding, not bit for bit.
"""

from __future__ import annotations

import bisect

import numpy as np
import torch

from scaling.tasks.resolve import load_task
from scaling.training.data import BatchStream, batch_block, same_start, subset_indices
from scaling.training.flops import flops_per_example
from scaling.training.models import build_model
from scaling.training import optim
from scaling.training.packing import (
    EVAL_BLOCK_BYTES,
    INDEX_BLOCK_BYTES,
    _layer_dims,
    can_pack,
    choose_backend,
)

MOMENTUM_RUNS = 4
"""Up to this many runs of members with equal momentum (the planner sorts packs by it), the SGD
fast path updates each run's momentum buffers in one ``baddbmm_`` with m as its beta; beyond, it
scales the buffers first (one more pass over them)."""


class StackedBackend:
    """Stacked weights, optimizer state and hyperparameters of the live members.

    Hidden layers keep weights as (M, in, out) and biases as (M, 1, out); the
    output layer keeps nn.Linear's (M, out, in) and (M, out, 1), so its logits
    come out as (M, classes, B).
    """

    name = "stacked"

    def __init__(self, trials, device: str = "cpu", fused: bool | None = None):
        ok, why = can_pack(trials)
        if ok and choose_backend(trials)[0] != "stacked":
            ok, why = False, f"the stacked backend cannot train {choose_backend(trials)[1]}; use the vmap backend"
        if not ok:
            raise ValueError(f"cannot run these trials as one pack: {why}")
        data = load_task(trials[0].task)
        self.trials, self.device = list(trials), device
        self.dims = dims = _layer_dims(trials[0], data.input_dim, data.n_classes)
        self.batch = trials[0].batch_size
        self.optimizer = optim.get(trials[0].optimizer)
        pool = len(data.y_train)
        self.subsets = [subset_indices(t.seed, pool, t.n_train) for t in trials]
        self.streams = [BatchStream(t.seed, t.n_train) for t in trials]
        self.steps = [t.total_steps for t in trials]
        self.n_trains = [t.n_train for t in trials]
        self.x_pool = torch.from_numpy(data.x_train).reshape(pool, -1).to(device)
        self.y_pool = torch.from_numpy(data.y_train).to(device)
        self.sets = {"val": None, "test": None}
        for name, x, y in (("val", data.x_val, data.y_val), ("test", data.x_test, data.y_test)):
            if x is not None:
                self.sets[name] = (torch.from_numpy(x).reshape(len(x), -1).to(device), torch.from_numpy(y).to(device))
        models = [build_model(t.model_spec, dims[0], dims[-1], t.seed) for t in trials]
        linears = [[layer for layer in model if isinstance(layer, torch.nn.Linear)] for model in models]
        last = len(dims) - 2
        self.w, self.b = [], []
        for i in range(last + 1):
            w = torch.stack([ls[i].weight.detach() for ls in linears])
            b = torch.stack([ls[i].bias.detach() for ls in linears])
            if i < last:
                w, b = w.transpose(1, 2), b.unsqueeze(1)
            else:
                b = b.unsqueeze(2)
            self.w.append(w.contiguous().to(device))
            self.b.append(b.contiguous().to(device))
        self.n_params = sum(p.numel() for p in models[0].parameters())
        self.flops_per_example = flops_per_example(trials[0])
        self.tokens_per_example, self.pool_size, self.data_version = 1, pool, data.data_version
        self.state = [[torch.zeros_like(p) for p in self.w + self.b] for _ in range(self.optimizer.state)]
        self.hyper = {key: self._hyper(key)
                      for key in ("lr", "momentum", "nesterov", "weight_decay", "beta1", "beta2", "eps")}
        self.any_wd = bool((self.hyper["weight_decay"] != 0).any())
        self.any_momentum = bool((self.hyper["momentum"] != 0).any())
        self.momentum_runs = _runs([t.momentum for t in self.trials])
        self.nesterov = [bool(t.nesterov) for t in trials]
        self.lr_now = self.hyper["lr"]
        self.t = 0
        width = max(self.n_trains)
        pad = np.zeros((len(trials), width), dtype=np.int64)
        for row, sub in zip(pad, self.subsets):
            row[:len(sub)] = sub
        self.subset = torch.from_numpy(pad).to(device)
        self.n_train = torch.tensor(self.n_trains, device=device)
        self.block, self.block_start = None, 1
        self._scratch: dict[str, torch.Tensor] = {}
        self._saved = None
        fast_sgd = self.optimizer.name == "sgd" and not any(self.nesterov)
        self.fused = fused if fused is not None else (
            not fast_sgd and optim.fused_pays(self.optimizer.name, sum(self.steps), self.n_params))
        """Whether the update is the optimizer's compiled kernel (scaling.training.optim.fused_update); by
        default where it pays (optim.fused_pays), never for SGD's fast path, which moves fewer bytes."""

    def _hyper(self, key: str) -> torch.Tensor:
        values = [float(getattr(t, key)) for t in self.trials]
        return torch.tensor(values, dtype=torch.float32, device=self.device).view(-1, 1, 1)

    # ---- membership --------------------------------------------------------

    def keep(self, positions: list[int]) -> None:
        """Drop every member not at these positions (in the current order)."""
        idx = torch.tensor(positions, dtype=torch.int64, device=self.device)
        take = lambda t: t.index_select(0, idx).contiguous()  # noqa: E731
        self.w, self.b = [take(t) for t in self.w], [take(t) for t in self.b]
        self.state = [[take(t) for t in state] for state in self.state]
        self.hyper = {k: take(v) for k, v in self.hyper.items()}
        self.lr_now = self.hyper["lr"]
        self.subset, self.n_train = take(self.subset), take(self.n_train)
        if self.block is not None:
            self.block = self.block.index_select(1, idx).contiguous()
        for name in ("trials", "subsets", "streams", "steps", "n_trains", "nesterov"):
            setattr(self, name, [getattr(self, name)[p] for p in positions])
        self.momentum_runs = _runs([t.momentum for t in self.trials])
        self._scratch = {}

    def params_of(self, position: int) -> dict[str, torch.Tensor]:
        """One member's weights as ``build_model(...).state_dict()`` would name and shape them."""
        out, last = {}, len(self.w) - 1
        for i, (w, b) in enumerate(zip(self.w, self.b)):
            w, b = w[position], b[position]
            out[f"{2 * i}.weight"] = (w if i == last else w.t()).detach().cpu().clone()
            out[f"{2 * i}.bias"] = b.reshape(-1).detach().cpu().clone()
        return out

    def final_extra(self, position: int, ok: bool) -> dict:
        return {}

    # ---- training ----------------------------------------------------------

    def batch_indices(self, step: int) -> torch.Tensor:
        """Pool indices of every member's minibatch at ``step``, shape (M, B)."""
        if self.block is None or step - self.block_start >= len(self.block):
            self.block = batch_block(self.subsets, self.streams, self.batch, max(self.steps) - step + 1,
                                     INDEX_BLOCK_BYTES, self.device)
            self.block_start = step
        return self.block[step - self.block_start]

    def scratch(self, name: str, *shape: int) -> torch.Tensor:
        """A reused buffer for one step's intermediates (big allocations every step cost page faults)."""
        t = self._scratch.get(name)
        if t is None or t.shape != shape:
            t = self._scratch[name] = torch.empty(shape, device=self.device)
        return t

    def forward(self, step: int) -> torch.Tensor:
        """Forward pass on this step's minibatches: the loss of each member (backward needs the rest)."""
        m, batch = len(self.trials), self.batch
        idx = self.batch_indices(step).reshape(-1)
        x = torch.index_select(self.x_pool, 0, idx, out=self.scratch("x", m * batch, self.dims[0]))
        y = self.y_pool.index_select(0, idx).view(m, 1, batch)
        inputs, logits = _forward(self.w, self.b, x.view(m, batch, -1), scratch=self.scratch)
        losses, probs = _cross_entropy(logits, y)
        self._saved = (inputs, probs, y)
        return losses.mean(1)

    def update(self, lr) -> None:
        """Gradients of the mean minibatch loss, then one optimizer step of every member."""
        if lr is not None:
            self.lr_now = torch.from_numpy(np.asarray(lr, dtype=np.float32)).view(-1, 1, 1).to(self.device)
        self.t += 1
        if not self.fused and self.optimizer.name == "sgd" and not any(self.nesterov):
            self._sgd_fused(self._saved)
            return
        grads = self._gradients(*self._saved)
        nesterov = "all" if all(self.nesterov) else "some" if any(self.nesterov) else "none"
        step = optim.Step(self.hyper, self.lr_now, self.t, optim.same, any_wd=self.any_wd, nesterov=nesterov,
                          own_grads=True)  # the gradients are scratch buffers
        if self.fused:
            optim.fused_update(self.optimizer.name, self.w + self.b, grads, list(zip(*self.state)), step)
        else:
            self.optimizer.update(self.w + self.b, grads, list(zip(*self.state)), step)

    def _gradients(self, inputs, probs, y, into: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Gradients of every weight and bias (weights first), in scratch buffers; or, with
        ``into`` (the momentum buffers, in the same order), ``into = m · into + gradient``
        in place: each weight's gradient is a matmul that then adds straight into its buffer
        (``baddbmm_``), so it is never written out and read back."""
        m, last = len(self.trials), len(self.w) - 1
        if "minus_one" not in self._scratch:
            self.scratch("minus_one", m, 1, self.batch).fill_(-1.0)
        g = probs.scatter_add_(1, y, self._scratch["minus_one"]).mul_(1.0 / self.batch)
        gw, gb = [None] * (last + 1), [None] * (last + 1)

        def weight(i: int, a: torch.Tensor, b: torch.Tensor) -> None:
            if into is None:
                gw[i] = torch.bmm(a, b, out=self.scratch(f"gw{i}", *self.w[i].shape))
            elif len(self.momentum_runs) <= MOMENTUM_RUNS:  # m as baddbmm's beta: no extra pass
                for start, end, m in self.momentum_runs:
                    into[i][start:end].baddbmm_(a[start:end], b[start:end], beta=m)
                gw[i] = into[i]
            else:
                gw[i] = into[i].mul_(self.hyper["momentum"]).baddbmm_(a, b)

        def bias(i: int, grad: torch.Tensor) -> None:
            if into is None:
                gb[i] = grad
            else:
                buf = into[last + 1 + i]
                gb[i] = buf.mul_(self.hyper["momentum"]).add_(grad) if self.any_momentum else buf.copy_(grad)

        weight(last, g, inputs[last])
        bias(last, g.sum(2, keepdim=True))
        for i in range(last - 1, -1, -1):
            w_next = self.w[i + 1] if i + 1 == last else self.w[i + 1].transpose(1, 2)
            g = torch.bmm(g.transpose(1, 2) if i + 1 == last else g, w_next,
                          out=self.scratch(f"gh{i}", *inputs[i + 1].shape))
            g = torch.ops.aten.threshold_backward.grad_input(g, inputs[i + 1], 0, grad_input=g)
            weight(i, inputs[i].transpose(1, 2), g)
            bias(i, g.sum(1, keepdim=True))
        return gw + gb

    def _sgd_fused(self, saved) -> None:
        """``torch.optim.SGD`` without Nesterov, in fewer passes over the parameters:
        buf = m buf + g (the gradient matmul adds into buf), buf += wd p, p -= lr buf.
        The same update as the registry's SGD (scaling.training.optim), summed in another order
        (float rounding apart)."""
        bufs = self._gradients(*saved, into=self.state[0])
        for p, buf in zip(self.w + self.b, bufs):
            if self.any_wd:
                buf.addcmul_(p, self.hyper["weight_decay"])
            p.addcmul_(buf, self.lr_now, value=-1.0)

    # ---- evaluation --------------------------------------------------------

    def evaluate(self, positions: list[int], step: int) -> list[dict]:
        """Metrics of the members at these positions. At step 0 members with the same seed and
        n_train have the same weights and subset, so one of them is evaluated for all."""
        if step > 0:
            return self._evaluate(positions)
        first = same_start(self.trials, self.n_trains, positions)
        unique = list(dict.fromkeys(first.values()))
        metrics = dict(zip(unique, self._evaluate(unique)))
        return [dict(metrics[first[p]]) for p in positions]

    def _evaluate(self, positions: list[int]) -> list[dict]:
        """{train_loss on the member's subset, val_loss, val_acc, test_loss, test_acc} of the
        members at these positions.

        All members go through together, a block of rows at a time (about EVAL_BLOCK_BYTES of
        activations, which keeps the matmuls the size of a training step's); members sorted
        by n_train drop out of the blocks past their subset."""
        order = sorted(positions, key=lambda p: self.n_trains[p])
        n = [self.n_trains[p] for p in order]
        idx = torch.tensor(order, dtype=torch.int64, device=self.device)
        w = [t.index_select(0, idx) for t in self.w]
        b = [t.index_select(0, idx) for t in self.b]
        sub, n_t = self.subset.index_select(0, idx), self.n_train.index_select(0, idx)
        per_row = 4 * (2 * sum(self.dims[1:-1]) + 4 * self.dims[-1] + self.dims[0])
        rows = max(64, EVAL_BLOCK_BYTES // (per_row * len(order)))
        train = torch.zeros(len(order), device=self.device)
        for r0 in range(0, n[-1], rows):
            first, r1 = bisect.bisect_right(n, r0), min(r0 + rows, n[-1])
            block = sub[first:, r0:r1].reshape(-1)
            x = self.x_pool.index_select(0, block).view(len(order) - first, r1 - r0, -1)
            y = self.y_pool.index_select(0, block).view(len(order) - first, 1, r1 - r0)
            losses = _cross_entropy(_forward(w, b, x, first)[1], y, probs=False)[0]
            if n[first] < r1:  # some members' subsets end inside this block
                inside = torch.arange(r0, r1, device=self.device) < n_t[first:].unsqueeze(1)
                losses = torch.where(inside, losses, 0.0)
            train[first:] += losses.sum(1)
        columns = {"train_loss": (train / n_t).tolist()}
        for name, pair in self.sets.items():
            if pair is None:
                columns[f"{name}_loss"] = columns[f"{name}_acc"] = [None] * len(order)
                continue
            loss, acc = _eval_set(w, b, *pair, rows)
            columns[f"{name}_loss"], columns[f"{name}_acc"] = loss.tolist(), acc.tolist()
        by_position = {p: {k: v[i] for k, v in columns.items()} for i, p in enumerate(order)}
        return [by_position[p] for p in positions]


def _runs(values: list[float]) -> list[tuple[int, int, float]]:
    """(start, end, value) of each run of equal consecutive values."""
    runs: list[tuple[int, int, float]] = []
    for i, v in enumerate(values):
        if runs and runs[-1][2] == v:
            runs[-1] = (runs[-1][0], i + 1, v)
        else:
            runs.append((i, i + 1, float(v)))
    return runs


def _eval_set(w, b, x_all: torch.Tensor, y_all: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and accuracy of every member on one fixed set, in blocks of ``rows``."""
    members = w[0].shape[0]
    total, correct = torch.zeros(members, device=x_all.device), torch.zeros(members, device=x_all.device)
    for r0 in range(0, len(y_all), rows):
        x = x_all[r0:r0 + rows].expand(members, -1, -1)
        y = y_all[r0:r0 + rows].view(1, 1, -1).expand(members, 1, -1)
        logits = _forward(w, b, x)[1]
        total += _cross_entropy(logits, y, probs=False)[0].sum(1)
        correct += (logits.max(1).indices == y.squeeze(1)).sum(1)  # argmax, 10x faster here
    return total / len(y_all), correct / len(y_all)


def _forward(w: list[torch.Tensor], b: list[torch.Tensor], x: torch.Tensor, first: int = 0, scratch=None):
    """Layer inputs and the logits, (M, classes, n), of inputs x of shape (M, n, in), using
    the members from ``first`` on. With ``scratch`` (name, *shape -> buffer) outputs go to
    reused buffers."""
    inputs = [x]
    for i, (wi, bi) in enumerate(zip(w[:-1], b[:-1])):
        out = scratch(f"h{i}", x.shape[0], x.shape[1], wi.shape[2]) if scratch else None
        inputs.append(torch.baddbmm(bi[first:], inputs[-1], wi[first:], out=out).relu_())
    out = scratch("logits", x.shape[0], w[-1].shape[1], x.shape[1]) if scratch else None
    return inputs, torch.baddbmm(b[-1][first:], w[-1][first:], inputs[-1].transpose(1, 2), out=out)


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor, probs: bool = True):
    """Per-example cross-entropy (M, n) and, with ``probs``, the softmax (M, classes, n)
    of logits (M, classes, n) and labels y (M, 1, n)."""
    top = logits.amax(1, keepdim=True)
    e = (logits - top).exp_()
    total = e.sum(1, keepdim=True)
    losses = ((top - logits.gather(1, y)) + total.log()).squeeze(1)  # exact 0 for the top class
    return losses, e.div_(total) if probs else None
