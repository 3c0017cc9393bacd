"""Train many trials as one vectorised model: ``run_pack(trials) -> [result, ...]``.

Trials that share the task, the model config (name, width, depth) and the
batch size B stack their weights along a leading member axis M and train with
batched matmuls (``torch.baddbmm``/``torch.bmm``): one step of the pack is one
step of every member. Members may differ in lr (ε), momentum (m), weight decay,
seed and n_train (N), so in step count too. Everything else stays per member,
exactly as ``scaling.train.run_trial`` does it alone:

- initial weights from ``build_model(seed)``, subset from ``subset_indices``,
  batch order from ``BatchStream`` (taken many steps at a time: the same stream);
- SGD as ``torch.optim.SGD`` (dampening 0, no Nesterov), with ε, m and weight
  decay held as (M, 1, 1) tensors: ``b = m b + (g + wd p)``, ``p -= ε b``;
- the loss is checked before every step: a member whose minibatch loss is not
  finite or above ``EXPLODED_LOSS`` stops there, ``diverged``, as does one whose
  train loss is not finite at an eval point; the others go on;
- eval at the member's own ``eval_steps``, on its own subset and the test set.

Only the MLP on float features with cross-entropy packs (no per-trial
``metrics``); ``can_pack`` says why not, in words. A member that finishes or
diverges leaves the stacked tensors at once, so it costs nothing afterwards, and
``on_result`` gets its result right away.

Speed: a step is a handful of batched matmuls whatever M is, so on a CPU a pack
with one torch thread runs at a good share of the core's matmul peak; run one
pack per core (``python -m cluster.bench`` measures the layouts). Eval costs
what ``eval_steps`` asks: each is a forward pass over the member's whole subset
and the test set.

The backward pass is written out (softmax cross-entropy, ReLU, linear) rather
than taken from autograd: it skips the input gradient of the first layer and
keeps the logits as (M, classes, B), which suits small class counts. The
result agrees with ``run_trial`` to float rounding, not bit for bit.
"""

from __future__ import annotations

import bisect
import math
import socket
import time
import uuid
from datetime import datetime, timezone

import numpy as np
import torch

from scaling import __version__
from scaling.config import config_columns
from scaling.packing import (EVAL_BLOCK_BYTES, INDEX_BLOCK_BYTES, PACKABLE_MODELS,  # noqa: F401
                             _layer_dims, can_pack, estimate_pack_bytes, pack_key)
from scaling.tasks import load_task
from scaling.train import (EXPLODED_LOSS, BatchStream, build_model, eval_steps, exploded_message,
                           nonfinite_eval_message, subset_indices, total_steps)

class _Member:
    """One trial's own bookkeeping inside a pack."""

    def __init__(self, index: int, trial: dict, pool_size: int):
        self.index, self.trial = index, trial
        """Position in run_pack's input (positions elsewhere count the pack's live members)."""
        self.n_train = trial["n_train"]
        self.subset = subset_indices(trial["seed"], pool_size, self.n_train)
        self.stream = BatchStream(trial["seed"], self.n_train)
        self.steps = total_steps(trial)
        self.evals = set(eval_steps(trial, self.steps))
        self.curves: list[dict] = []
        self.status, self.error, self.done = "ok", None, 0


class _Pack:
    """Stacked weights, momentum and hyperparameters of the live members.

    Hidden layers keep weights as (M, in, out) and biases as (M, 1, out); the
    output layer keeps nn.Linear's (M, out, in) and (M, out, 1), so its logits
    come out as (M, classes, B).
    """

    def __init__(self, members: list[_Member], dims: list[int], data, device: str):
        self.members, self.dims, self.device = members, dims, device
        self.batch = members[0].trial["batch_size"]
        self.x_pool = torch.from_numpy(data.x_train).reshape(len(data.x_train), -1).to(device)
        self.y_pool = torch.from_numpy(data.y_train).to(device)
        self.x_test = torch.from_numpy(data.x_test).reshape(len(data.x_test), -1).to(device)
        self.y_test = torch.from_numpy(data.y_test).to(device)
        models = [build_model(m.trial["model"], dims[0], dims[-1], m.trial["seed"]) for m in members]
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
        self.buf = [torch.zeros_like(p) for p in self.w + self.b]
        def hyper(key: str) -> torch.Tensor:
            values = [float(m.trial[key]) for m in members]
            return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1)

        self.lr, self.momentum, self.wd = hyper("lr"), hyper("momentum"), hyper("weight_decay")
        self.any_wd = bool((self.wd != 0).any())
        width = max(m.n_train for m in members)
        pad = np.zeros((len(members), width), dtype=np.int64)
        for row, m in zip(pad, members):
            row[:m.n_train] = m.subset
        self.subset = torch.from_numpy(pad).to(device)
        self.n_train = torch.tensor([m.n_train for m in members], device=device)
        self.block, self.block_start = None, 1
        self._scratch: dict[str, torch.Tensor] = {}

    # ---- membership --------------------------------------------------------

    def keep(self, positions: list[int]) -> None:
        """Drop every member not at these positions (in the current order)."""
        idx = torch.tensor(positions, dtype=torch.int64, device=self.device)
        take = lambda t: t.index_select(0, idx).contiguous()  # noqa: E731
        self.w, self.b = [take(t) for t in self.w], [take(t) for t in self.b]
        self.buf = [take(t) for t in self.buf]
        self.lr, self.momentum, self.wd = take(self.lr), take(self.momentum), take(self.wd)
        self.subset, self.n_train = take(self.subset), take(self.n_train)
        if self.block is not None:
            self.block = self.block.index_select(1, idx).contiguous()
        self.members = [self.members[p] for p in positions]
        self._scratch = {}

    def params_of(self, position: int) -> dict[str, torch.Tensor]:
        """One member's weights as ``build_model(...).state_dict()`` would name and shape them."""
        out, last = {}, len(self.w) - 1
        for i, (w, b) in enumerate(zip(self.w, self.b)):
            w, b = w[position], b[position]
            out[f"{2 * i}.weight"] = (w if i == last else w.t()).detach().cpu().clone()
            out[f"{2 * i}.bias"] = b.reshape(-1).detach().cpu().clone()
        return out

    # ---- training ----------------------------------------------------------

    def batch_indices(self, step: int) -> torch.Tensor:
        """Pool indices of every member's minibatch at ``step``, shape (M, B)."""
        if self.block is None or step - self.block_start >= len(self.block):
            left = max(m.steps for m in self.members) - step + 1
            n = max(1, min(left, INDEX_BLOCK_BYTES // (8 * len(self.members) * self.batch)))
            blocks = [m.subset[m.stream.take(n * self.batch)].reshape(n, self.batch) for m in self.members]
            self.block = torch.from_numpy(np.stack(blocks, axis=1)).to(self.device)
            self.block_start = step
        return self.block[step - self.block_start]

    def scratch(self, name: str, *shape: int) -> torch.Tensor:
        """A reused buffer for one step's intermediates (big allocations every step cost page faults)."""
        t = self._scratch.get(name)
        if t is None or t.shape != shape:
            t = self._scratch[name] = torch.empty(shape, device=self.device)
        return t

    def train_loss(self, step: int):
        """Forward pass on this step's minibatches: (loss per member, what backward needs)."""
        m, batch = len(self.members), self.batch
        idx = self.batch_indices(step).reshape(-1)
        x = torch.index_select(self.x_pool, 0, idx, out=self.scratch("x", m * batch, self.dims[0]))
        y = self.y_pool.index_select(0, idx).view(m, 1, batch)
        inputs, logits = _forward(self.w, self.b, x.view(m, batch, -1), scratch=self.scratch)
        losses, probs = _cross_entropy(logits, y)
        return losses.mean(1), (inputs, probs, y)

    def backward_and_step(self, saved) -> None:
        """Gradients of the mean minibatch loss, then one SGD step of every member."""
        inputs, probs, y = saved
        m, last = len(self.members), len(self.w) - 1
        if "minus_one" not in self._scratch:
            self.scratch("minus_one", m, 1, self.batch).fill_(-1.0)
        g = probs.scatter_add_(1, y, self._scratch["minus_one"]).mul_(1.0 / self.batch)
        gw, gb = [None] * (last + 1), [None] * (last + 1)
        gw[last] = torch.bmm(g, inputs[last], out=self.scratch(f"gw{last}", *self.w[last].shape))
        gb[last] = g.sum(2, keepdim=True)
        for i in range(last - 1, -1, -1):
            w_next = self.w[i + 1] if i + 1 == last else self.w[i + 1].transpose(1, 2)
            g = torch.bmm(g.transpose(1, 2) if i + 1 == last else g, w_next,
                          out=self.scratch(f"gh{i}", *inputs[i + 1].shape))
            g = torch.ops.aten.threshold_backward.grad_input(g, inputs[i + 1], 0, grad_input=g)
            gw[i] = torch.bmm(inputs[i].transpose(1, 2), g, out=self.scratch(f"gw{i}", *self.w[i].shape))
            gb[i] = g.sum(1, keepdim=True)
        for p, grad, buf in zip(self.w + self.b, gw + gb, self.buf):
            if self.any_wd:
                grad.addcmul_(p, self.wd)
            torch.addcmul(grad, buf, self.momentum, out=buf)
            p.addcmul_(buf, self.lr, value=-1.0)

    # ---- evaluation --------------------------------------------------------

    def evaluate(self, positions: list[int]) -> list[tuple[float, float, float]]:
        """(train_loss on the member's subset, test_loss, test_acc) of the members at these positions.

        All members go through together, a block of rows at a time (about EVAL_BLOCK_BYTES of
        activations, which keeps the matmuls the size of a training step's); members sorted
        by n_train drop out of the blocks past their subset."""
        order = sorted(positions, key=lambda p: self.members[p].n_train)
        n = [self.members[p].n_train for p in order]
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
        test, correct = torch.zeros_like(train), torch.zeros_like(train)
        for r0 in range(0, len(self.y_test), rows):
            x = self.x_test[r0:r0 + rows].expand(len(order), -1, -1)
            y = self.y_test[r0:r0 + rows].view(1, 1, -1).expand(len(order), 1, -1)
            logits = _forward(w, b, x)[1]
            test += _cross_entropy(logits, y, probs=False)[0].sum(1)
            correct += (logits.max(1).indices == y.squeeze(1)).sum(1)  # argmax, 10x faster here
        metrics = torch.stack([train / n_t, test / len(self.y_test), correct / len(self.y_test)], 1).tolist()
        by_position = dict(zip(order, metrics))
        return [tuple(by_position[p]) for p in positions]


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


def run_pack(trials: list[dict], *, device: str = "cpu", on_result=None,
             return_params: bool = False) -> list[dict]:
    """Train trials together as one vectorised model; one result per trial, in input order.

    Each result is what ``run_trial`` returns for that trial alone, ``{"trial": row,
    "curves": [...]}``, with ``engine`` ``"packed"`` and ``wall_s`` the pack's elapsed
    time when the member finished. ``on_result(result)`` is called as each member
    finishes or diverges, so a caller can store it before the pack ends. With
    ``return_params`` each result also holds ``"params"``, the member's final
    weights named as in ``build_model(...).state_dict()`` (for tests).
    Raises ``ValueError`` if ``can_pack(trials)`` says no. Uses the caller's torch
    threads; on CPU one thread per pack (and one pack per core) is fastest.
    """
    ok, why = can_pack(trials)
    if not ok:
        raise ValueError(f"cannot run these trials as one pack: {why}")
    run = _Run(trials, device, on_result, return_params)
    run.train()
    return run.results


class _Run:
    """One call of run_pack: the step loop and each member's ending."""

    def __init__(self, trials: list[dict], device: str, on_result, return_params: bool):
        self.start, self.t0 = datetime.now(timezone.utc), time.perf_counter()
        self.on_result, self.return_params = on_result, return_params
        data = load_task(trials[0]["task"])
        members = [_Member(i, t, len(data.y_train)) for i, t in enumerate(trials)]
        self.pack = _Pack(members, _layer_dims(trials[0], data.input_dim, data.n_classes), data, device)
        self.results: list[dict | None] = [None] * len(trials)

    def train(self) -> None:
        pack = self.pack
        stops = set().union(*(m.evals for m in pack.members))  # eval steps include the last step
        self.record(0, list(range(len(pack.members))))
        step = 0
        while pack.members:
            step += 1
            losses, saved = pack.train_loss(step)
            sane = losses <= EXPLODED_LOSS  # NaN compares false
            if not bool(sane.all()):  # the step's one host sync
                bad = (~sane).nonzero().view(-1).tolist()
                for p, value in zip(bad, losses[bad].tolist()):
                    m = pack.members[p]
                    m.status = "diverged"
                    m.error = exploded_message(value, step, m.trial["lr"])
                self.finish(bad, step - 1)
                if not pack.members:
                    break
                losses, saved = pack.train_loss(step)
            pack.backward_and_step(saved)
            if step in stops:
                due = [p for p, m in enumerate(pack.members) if step in m.evals]
                ended = set(self.record(step, due)) | {p for p in due if pack.members[p].steps == step}
                if ended:
                    self.finish(sorted(ended), step)

    def record(self, step: int, positions: list[int]) -> list[int]:
        """Evaluate, append curve rows; return the positions whose train loss is not finite."""
        bad = []
        for p, metrics in zip(positions, _evaluate(self.pack, positions, step)):
            m = self.pack.members[p]
            m.curves.append(_curve_row(step, m, metrics, time.perf_counter() - self.t0))
            if step > 0 and not math.isfinite(metrics[0]):
                m.status, m.error = "diverged", nonfinite_eval_message(step, m.trial["lr"])
                bad.append(p)
        return bad

    def finish(self, positions: list[int], done: int) -> None:
        """Report the members at these positions, ``done`` steps in, and drop them from the pack."""
        for p in positions:
            m = self.pack.members[p]
            m.done = done
            result = _result(m, self.pack, self.start, time.perf_counter() - self.t0)
            if self.return_params:
                result["params"] = self.pack.params_of(p)
            self.results[m.index] = result
            if self.on_result is not None:
                self.on_result(result)
        gone = set(positions)
        self.pack.keep([p for p in range(len(self.pack.members)) if p not in gone])


def _evaluate(pack: _Pack, positions: list[int], step: int) -> list[tuple[float, float, float]]:
    """Metrics of the members at these positions. At step 0 members with the same seed and
    n_train have the same weights and subset, so one of them is evaluated for all."""
    if step > 0:
        return pack.evaluate(positions)
    key = lambda p: (pack.members[p].trial["seed"], pack.members[p].n_train)  # noqa: E731
    first: dict[tuple, int] = {}
    for p in positions:
        first.setdefault(key(p), p)
    metrics = dict(zip(first.values(), pack.evaluate(list(first.values()))))
    return [metrics[first[key(p)]] for p in positions]


def _curve_row(step: int, m: _Member, metrics, wall_s: float) -> dict:
    batch = m.trial["batch_size"]
    return {"step": step, "epoch": step * batch / m.n_train, "examples_seen": step * batch,
            "train_loss": metrics[0], "test_loss": metrics[1], "test_acc": metrics[2], "wall_s": wall_s}


def _result(m: _Member, pack: _Pack, start: datetime, wall_s: float) -> dict:
    final = m.curves[-1] if m.status == "ok" else {}
    row = {
        **config_columns(m.trial),
        "run_id": uuid.uuid4().hex,
        "status": m.status,
        "error": m.error,
        "steps": m.done,
        "examples_seen": m.done * m.trial["batch_size"],
        "n_params": pack.n_params,
        "train_loss": final.get("train_loss", math.nan),
        "test_loss": final.get("test_loss", math.nan),
        "test_acc": final.get("test_acc", math.nan),
        "wall_s": wall_s,
        "host": socket.gethostname(),
        "start_time": start,
        "end_time": datetime.now(timezone.utc),
        "version": __version__,
        "engine": "packed",
    }
    return {"trial": row, "curves": m.curves}
