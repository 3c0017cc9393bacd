"""Train one trial: ``run_trial(trial) -> rows``, the ``module`` backend of the loop. No Ray, no globals.

The trial's ``seed`` fixes everything random about it:

- the training subset: the first ``n_train`` entries of a seed-specific
  permutation of the task's pool, so a larger n_train's subset contains the
  smaller ones (Hestness et al. 2017's nested shards);
- the initial weights, which do not depend on lr, momentum or batch size, so
  trials that differ only in those start from the same point;
- the data order: an endless stream of per-epoch permutations of the subset,
  cut into consecutive batches of ``batch_size``. A batch may straddle two
  epochs; ``epoch`` in the curves is ``examples_seen / n_train``.

The schedule (evals, divergence, finishing, the rows) is :mod:`scaling.loop`'s;
:class:`ModuleBackend` supplies one ``nn.Module`` trained with autograd and
``torch.optim`` (SGD or AdamW, the learning rate set each step from the
trial's schedule). The model is the MLP (``build_model``), a built-in one from
scaling.models, or the task's own (a plug-in's ``make_model``); the loss is
cross-entropy (over the last axis, so per token for a language model) unless
the task gives its own. With a ``metrics`` mapping in the trial,
scaling.metrics adds the gradient noise scale and per-example gradient norms
to the curves and the sharpness at the start and end to the trial row.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scaling import models
from scaling.loop import eval_steps, run_members  # noqa: F401 (re-exported)
from scaling.schema import total_steps  # noqa: F401 (re-exported)
from scaling.tasks import Dataset, load_task

EVAL_CHUNK = 256
"""Examples per forward pass when evaluating models other than the MLP (which takes all at once)."""


def build_model(model: dict, input_dim: int, n_classes: int, seed: int) -> nn.Module:
    """An MLP of ``depth`` hidden ReLU layers of ``width`` units, initialised from ``seed``."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        layers: list[nn.Module] = []
        fan_in = input_dim
        for _ in range(model["depth"]):
            layers += [nn.Linear(fan_in, model["width"]), nn.ReLU()]
            fan_in = model["width"]
        layers.append(nn.Linear(fan_in, n_classes))
        return nn.Sequential(*layers)
    finally:
        torch.random.set_rng_state(gen_state)


def make_model(model: dict, data: Dataset, seed: int) -> nn.Module:
    """The trial's model, initialised from ``seed``: the MLP (``build_model``), the task's
    own (``model: {name: task}``) or a built-in one from scaling.models."""
    if model["name"] == "mlp":
        return build_model(model, data.input_dim, data.n_classes, seed)
    with models.seeded(seed):
        if model["name"] == "task":
            if data.make_model is None:
                raise ValueError("model 'task' needs a task whose factory gives make_model")
            return data.make_model(dict(model))
        return models.build(model, data)


def make_optimizer(params, trial) -> torch.optim.Optimizer:
    """The trial's ``torch.optim`` optimizer at its peak lr (the loop sets each step's lr)."""
    if trial.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=trial.lr, betas=(trial.beta1, trial.beta2), eps=trial.eps,
                                 weight_decay=trial.weight_decay)
    return torch.optim.SGD(params, lr=trial.lr, momentum=trial.momentum, weight_decay=trial.weight_decay,
                           nesterov=trial.nesterov)


def cross_entropy(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over examples (and positions, for outputs of shape (n, T, classes))."""
    if output.dim() > 2:
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), y.reshape(-1))
    return F.cross_entropy(output, y)


def accuracy(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of argmax predictions equal to y (over examples and positions)."""
    return (output.argmax(dim=-1) == y).float().mean()


def subset_indices(seed: int, pool_size: int, n_train: int) -> np.ndarray:
    """Indices of the trial's training subset; nested in n_train for a fixed seed."""
    return np.random.default_rng([seed, 0]).permutation(pool_size)[:n_train]


class BatchStream:
    """Consecutive batches from an endless stream of per-epoch permutations of range(n)."""

    def __init__(self, seed: int, n: int):
        self._rng = np.random.default_rng([seed, 1, n])
        self._n = n
        self._buf = np.empty(0, dtype=np.int64)

    def take(self, k: int) -> np.ndarray:
        while len(self._buf) < k:
            self._buf = np.concatenate([self._buf, self._rng.permutation(self._n)])
        out, self._buf = self._buf[:k], self._buf[k:]
        return out


def batch_block(subsets, streams, batch: int, steps_left: int, block_bytes: int, device) -> torch.Tensor:
    """Pool indices of every member's minibatches for the next steps, shape (n, M, B): as many
    steps as fit in ``block_bytes`` (at least one, at most ``steps_left``), each member's from
    its own subset and stream, as run_trial draws them one step at a time (packed backends)."""
    n = max(1, min(steps_left, block_bytes // (8 * len(subsets) * batch)))
    blocks = [sub[stream.take(n * batch)].reshape(n, batch) for sub, stream in zip(subsets, streams)]
    return torch.from_numpy(np.stack(blocks, axis=1)).to(device)


def same_start(trials, n_trains, positions: list[int]) -> dict[int, int]:
    """{position: the first position with the same seed and n_train}: members that share them
    have the same initial weights and subset, so at step 0 one is evaluated for all."""
    first: dict[tuple, int] = {}
    for p in positions:
        first.setdefault((trials[p].seed, n_trains[p]), p)
    return {p: first[(trials[p].seed, n_trains[p])] for p in positions}


def eval_sets(data: Dataset, device) -> dict:
    """{'val': (x, y) or None, 'test': (x, y)} as tensors on ``device``."""
    def pair(x, y):
        return None if x is None else (torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
    return {"val": pair(data.x_val, data.y_val), "test": pair(data.x_test, data.y_test)}


@torch.no_grad()
def evaluate(model: nn.Module, x_train, y_train, sets: dict, *, loss=None, metric=None,
             chunk: int | None = None) -> dict:
    """{train_loss on the trial's subset, val_loss, val_acc, test_loss, test_acc} (val_* None
    without a validation set). Cross-entropy and accuracy unless ``loss``/``metric`` replace them;
    ``chunk`` evaluates that many examples at a time (the example-weighted mean of batch means)."""
    model.eval()
    loss, metric = loss or cross_entropy, metric or accuracy
    (train_loss,) = _chunked_means(model, x_train, y_train, (loss,), chunk)
    out = {"train_loss": train_loss}
    for name, pair in sets.items():
        values = (None, None) if pair is None else _chunked_means(model, *pair, (loss, metric), chunk)
        out[f"{name}_loss"], out[f"{name}_acc"] = values
    model.train()
    return out


def _chunked_means(model: nn.Module, x, y, fns, chunk: int | None) -> list[float]:
    chunk = chunk or len(x)
    totals = [0.0] * len(fns)
    for lo in range(0, len(x), chunk):
        out, yy = model(x[lo:lo + chunk]), y[lo:lo + chunk]
        for i, fn in enumerate(fns):
            totals[i] += float(fn(out, yy)) * len(yy)
    return [t / len(x) for t in totals]


def count_flops(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> float:
    """Training FLOPs per example: the matmuls and convolutions of one forward and backward
    pass over ``x``, divided by its length. Gradients are cleared afterwards.

    Counted from forward hooks, the way ``torch.utils.flop_counter`` counts them (2 per
    multiply-add; the backward pass computes the weight gradient and, where the layer's
    input needs one, the input gradient, each as many FLOPs as the forward), without that
    module's one-off cost of importing torch._dynamo (about a second per worker process).
    Layers: ``nn.Linear``, ``nn.Conv2d`` and any module with a ``matmul_flops(inputs,
    output)`` method (the attention of scaling.models)."""
    total = [0.0]

    def hook(module, inputs, output):
        if isinstance(module, nn.Linear):
            forward = 2.0 * inputs[0].numel() // module.in_features * module.in_features * module.out_features
        elif isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            forward = 2.0 * output.numel() * k
        else:
            forward = float(module.matmul_flops(inputs, output))
        grads = 1 + (inputs[0].requires_grad if isinstance(module, (nn.Linear, nn.Conv2d)) else 1)
        total[0] += forward * (1 + grads)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Linear, nn.Conv2d)) or hasattr(m, "matmul_flops")]
    try:
        loss_fn(model(x), y).backward()
    finally:
        for h in handles:
            h.remove()
    for p in model.parameters():
        p.grad = None
    return total[0] / len(x)


@functools.lru_cache(maxsize=32)
def _flops_cached(task_json: str, model_json: str) -> float:
    task, model = json.loads(task_json), json.loads(model_json)
    data = load_task(task)
    net = make_model(model, data, 0)
    x, y = torch.from_numpy(data.x_train[:2]), torch.from_numpy(data.y_train[:2])
    return count_flops(net, data.loss or cross_entropy, x, y)


def flops_per_example(trial) -> float:
    """Training FLOPs per example of the trial's model on its task (cached per process)."""
    return _flops_cached(json.dumps(trial.task, sort_keys=True), json.dumps(trial.model_spec, sort_keys=True))


class ModuleBackend:
    """One trial as an ``nn.Module`` with autograd and ``torch.optim`` (the loop's ``module`` backend).

    ``shard=(rank, world)`` trains worker ``rank``'s contiguous slice of each global batch
    (the DDP backend in cluster.ddp builds on that)."""

    name = "module"

    def __init__(self, trials, device: str = "cpu", shard: tuple[int, int] = (0, 1)):
        if len(trials) != 1:
            raise ValueError(f"the module backend trains one trial at a time, got {len(trials)}")
        trial = self.trial = trials[0]
        data = self.data = load_task(trial.task)
        rank, world = shard
        self.lo, self.hi = rank * trial.batch_size // world, (rank + 1) * trial.batch_size // world
        subset = torch.from_numpy(subset_indices(trial.seed, len(data.y_train), trial.n_train)).to(device)
        self.x_train = torch.from_numpy(data.x_train).to(device)[subset]
        self.y_train = torch.from_numpy(data.y_train).to(device)[subset]
        self.sets = eval_sets(data, device)
        self.model = self.net = make_model(trial.model_spec, data, trial.seed).to(device)
        self.loss_fn = data.loss or cross_entropy
        self.scoring = {"loss": data.loss, "metric": data.metric,
                        "chunk": None if trial.model == "mlp" else EVAL_CHUNK}
        self.opt = make_optimizer(self.model.parameters(), trial)
        self.stream = BatchStream(trial.seed, trial.n_train)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.flops_per_example = flops_per_example(trial)
        self.tokens_per_example, self.pool_size = data.tokens_per_example, len(data.y_train)
        self.data_version = data.data_version
        self.probe, self.extra = None, {}
        if trial.metrics:
            from scaling.metrics import TrialMetrics

            self.probe = TrialMetrics(trial.metrics, self.loss_fn, self.x_train, self.y_train, trial.seed)
            if self.probe.spec.sharpness:
                self.extra["sharpness_init"] = self.probe.sharpness(self.model)
        self.split = self.probe is not None and self.probe.ema is not None  # backward in two halves
        self._loss = None

    def forward(self, step: int) -> torch.Tensor:
        idx = torch.from_numpy(self.stream.take(self.trial.batch_size)[self.lo:self.hi]).to(self.x_train.device)
        if self.split:  # leaves the gradient in .grad
            return torch.tensor([self.probe.backward(self.model, self.x_train[idx], self.y_train[idx])])
        self._loss = self.loss_fn(self.net(self.x_train[idx]), self.y_train[idx])
        return self._loss.detach().reshape(1)

    def update(self, lr) -> None:
        if lr is not None:
            for group in self.opt.param_groups:
                group["lr"] = float(lr[0])
        if not self.split:
            self.opt.zero_grad(set_to_none=True)
            self._loss.backward()
        self.opt.step()

    def evaluate(self, positions: list[int], step: int) -> list[dict]:
        if not positions:
            return []
        metrics = evaluate(self.model, self.x_train, self.y_train, self.sets, **self.scoring)
        if self.probe is not None:
            metrics.update(self.probe.curve_values(self.model, math.isfinite(metrics["train_loss"])))
        return [metrics]

    def keep(self, positions: list[int]) -> None:
        pass

    def params_of(self, position: int) -> dict:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def final_extra(self, position: int, ok: bool) -> dict:
        extra = dict(self.extra)
        if self.probe is not None and self.probe.spec.sharpness:
            extra["sharpness_final"] = self.probe.sharpness(self.model) if ok else math.nan
        return extra


def run_trial(trial, *, device: str = "cpu", return_params: bool = False) -> dict:
    """Train the model a trial describes, and return its rows.

    Returns ``{"trial": row, "curves": [row, ...]}`` (:func:`scaling.loop.result_row`), with
    ``"params"`` (the final state dict) when ``return_params``. Exceptions (bad device, out of
    memory, bugs) propagate to the caller, which decides about retries and records ``failed``.
    """
    return run_members([trial], lambda trials: ModuleBackend(trials, device), engine="single",
                       return_params=return_params)[0]
