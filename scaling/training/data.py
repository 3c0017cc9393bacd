"""What every backend trains and evaluates on: a trial's training subset, its batch stream (and
blocks of batch indices for packs), the eval sets, evaluation in chunks, and the default loss
and metric (cross-entropy, accuracy)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scaling.tasks.base import Dataset

EVAL_CHUNK = 256
"""Examples per forward pass when evaluating models other than the MLP (which takes all at once)."""


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
