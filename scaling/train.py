"""Train one trial: ``run_trial(config) -> rows``. No Ray, no globals.

The trial's ``seed`` fixes everything random about it:

- the training subset: the first ``n_train`` entries of a seed-specific
  permutation of the task's pool, so a larger n_train's subset contains the
  smaller ones (Hestness et al. 2017's nested shards);
- the initial weights, which do not depend on lr, momentum or batch size, so
  trials that differ only in those start from the same point;
- the data order: an endless stream of per-epoch permutations of the subset,
  cut into consecutive batches of ``batch_size``. A batch may straddle two
  epochs; ``epoch`` in the curves is ``examples_seen / n_train``.

A loss that is not finite (or explodes past ``EXPLODED_LOSS``) ends the trial
with status ``diverged``: a result, not an error.

The model is the MLP (``build_model``), a built-in one from scaling.models, or
the task's own (a plug-in's ``make_model``); the loss is cross-entropy (over
the last axis, so per token for a language model) unless the task gives its
own. A language model's examples are windows of ``context`` bytes, so
``examples_seen`` counts tokens: steps x batch_size x context. With a
``metrics`` mapping in the trial, scaling.metrics adds the gradient noise scale
and per-example gradient norms to the curves and the sharpness at the start and
end to the trial row.
"""

from __future__ import annotations

import math
import socket
import time
import uuid
from datetime import datetime, timezone

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scaling import __version__, models
from scaling.config import config_columns, total_steps  # noqa: F401 (re-exported)
from scaling.tasks import Dataset, load_task

EXPLODED_LOSS = 1e4
"""A training loss above this counts as diverged (cross-entropy of a sane model is O(log classes))."""


def exploded(value: float) -> bool:
    """Whether a minibatch loss ends the trial as diverged: not finite, or above EXPLODED_LOSS."""
    return not math.isfinite(value) or value > EXPLODED_LOSS


def exploded_message(value: float, step: int, lr: float) -> str:
    """The ``error`` of a trial whose minibatch loss exploded (the same in every engine)."""
    return f"training loss {value:.4g} at step {step} (lr={lr})"


def nonfinite_eval_message(step: int, lr: float) -> str:
    """The ``error`` of a trial whose train loss was not finite at an eval point."""
    return f"train loss not finite at step {step} (lr={lr})"
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


def eval_steps(trial: dict, steps: int) -> list[int]:
    """Steps after which the model is evaluated: step 0, log-spaced or regular steps, and the last."""
    ev = trial["eval"]
    if "every_steps" in ev:
        chosen = set(range(0, steps + 1, ev["every_steps"]))
    else:
        chosen = {0} | {int(round(s)) for s in np.geomspace(1, steps, max(ev["points"] - 1, 1))}
    return sorted(chosen | {steps})


@torch.no_grad()
def evaluate(model: nn.Module, x_train, y_train, x_test, y_test, *, loss=None, metric=None,
             chunk: int | None = None) -> tuple[float, float, float]:
    """(train_loss on the trial's subset, test_loss, test_acc).

    By default cross-entropy and accuracy over all examples in one pass; ``loss`` and
    ``metric`` replace them, and ``chunk`` evaluates that many examples at a time
    (the example-weighted mean of batch means)."""
    model.eval()
    if loss is None and metric is None and chunk is None:
        train_loss = F.cross_entropy(model(x_train), y_train).item()
        logits = model(x_test)
        test_loss = F.cross_entropy(logits, y_test).item()
        test_acc = (logits.argmax(dim=1) == y_test).float().mean().item()
    else:
        loss, metric = loss or cross_entropy, metric or accuracy
        (train_loss,) = _chunked_means(model, x_train, y_train, (loss,), chunk)
        test_loss, test_acc = _chunked_means(model, x_test, y_test, (loss, metric), chunk)
    model.train()
    return train_loss, test_loss, test_acc


def _chunked_means(model: nn.Module, x, y, fns, chunk: int | None) -> list[float]:
    chunk = chunk or len(x)
    totals = [0.0] * len(fns)
    for lo in range(0, len(x), chunk):
        out, yy = model(x[lo:lo + chunk]), y[lo:lo + chunk]
        for i, fn in enumerate(fns):
            totals[i] += float(fn(out, yy)) * len(yy)
    return [t / len(x) for t in totals]


def run_trial(trial: dict, *, device: str = "cpu") -> dict:
    """Train the model a trial config describes, and return its rows.

    Returns ``{"trial": row, "curves": [row, ...]}`` where the trial row holds the
    config columns, ``status`` (ok | diverged), ``error``, final metrics and timing.
    With ``trial["metrics"]`` the curve rows gain the metrics' columns and the trial
    row ``sharpness_init``/``sharpness_final`` (see scaling.metrics).
    Exceptions (bad device, out of memory, bugs) propagate to the caller, which
    decides about retries and records ``failed``.
    """
    start = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    data = load_task(trial["task"])
    seed, n_train, batch = trial["seed"], trial["n_train"], trial["batch_size"]
    subset = torch.from_numpy(subset_indices(seed, len(data.y_train), n_train))
    x_pool = torch.from_numpy(data.x_train).to(device)
    y_pool = torch.from_numpy(data.y_train).to(device)
    x_train, y_train = x_pool[subset.to(device)], y_pool[subset.to(device)]
    x_test = torch.from_numpy(data.x_test).to(device)
    y_test = torch.from_numpy(data.y_test).to(device)

    model = make_model(trial["model"], data, seed).to(device)
    loss_fn = data.loss or cross_entropy
    scoring = {"loss": data.loss, "metric": data.metric,
               "chunk": None if trial["model"]["name"] == "mlp" else EVAL_CHUNK}
    opt = torch.optim.SGD(model.parameters(), lr=trial["lr"], momentum=trial["momentum"],
                          weight_decay=trial["weight_decay"])
    steps = total_steps(trial)
    evals = eval_steps(trial, steps)
    stream = BatchStream(seed, n_train)
    tokens = data.tokens_per_example
    curves: list[dict] = []
    status, error, done = "ok", None, 0
    probe = None
    extra: dict = {}
    if trial.get("metrics"):
        from scaling.metrics import TrialMetrics

        probe = TrialMetrics(trial["metrics"], loss_fn, x_train, y_train, seed)
        if probe.spec.sharpness:
            extra["sharpness_init"] = probe.sharpness(model)
    split = probe is not None and probe.ema is not None  # backward in two halves, for the noise scale

    def record(step: int) -> bool:
        metrics = evaluate(model, x_train, y_train, x_test, y_test, **scoring)
        curves.append({"step": step, "epoch": step * batch / n_train, "examples_seen": step * batch * tokens,
                       "train_loss": metrics[0], "test_loss": metrics[1], "test_acc": metrics[2],
                       "wall_s": time.perf_counter() - t0})
        if probe is not None:
            curves[-1].update(probe.curve_values(model, math.isfinite(metrics[0])))
        return math.isfinite(metrics[0])

    record(0)
    next_eval = 1
    for step in range(1, steps + 1):
        idx = torch.from_numpy(stream.take(batch)).to(device)
        if split:
            value = probe.backward(model, x_train[idx], y_train[idx])  # leaves the gradient in .grad
        else:
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            value = loss.item()
        if exploded(value):
            status, error = "diverged", exploded_message(value, step, trial["lr"])
            break
        if not split:
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        done = step
        if step == evals[next_eval]:
            next_eval += 1
            if not record(step):
                status, error = "diverged", nonfinite_eval_message(step, trial["lr"])
                break

    final = curves[-1] if status == "ok" else {}
    if probe is not None and probe.spec.sharpness:
        extra["sharpness_final"] = probe.sharpness(model) if status == "ok" else math.nan
    row = {
        **config_columns(trial),
        "run_id": uuid.uuid4().hex,
        "status": status,
        "error": error,
        "steps": done,
        "examples_seen": done * batch * tokens,
        "n_params": sum(p.numel() for p in model.parameters()),
        "train_loss": final.get("train_loss", math.nan),
        "test_loss": final.get("test_loss", math.nan),
        "test_acc": final.get("test_acc", math.nan),
        "wall_s": time.perf_counter() - t0,
        "host": socket.gethostname(),
        "start_time": start,
        "end_time": datetime.now(timezone.utc),
        "version": __version__,
        "engine": "single",
        **extra,
    }
    return {"trial": row, "curves": curves}
