"""Learning-rate schedules: the factor that multiplies a trial's peak lr at each step.

Step k = 0, 1, ..., T−1 is the k-th optimizer step of a budget of T steps (the
loop's step k + 1). With W warmup steps (``warmup_steps``, or
``round(warmup_frac · T)``) and f = ``final_lr_frac``:

- warmup, k < W: (k + 1) / W, linear from lr/W up to lr at step W − 1
  (``torch.optim.lr_scheduler.LinearLR(start_factor=1/W, total_iters=W−1)``);
- ``constant``: 1 after warmup;
- ``cosine``: f + (1 − f)·(1 + cos(π (k − W)/(T − W)))/2 after warmup
  (``CosineAnnealingLR(T_max=T−W, eta_min=f·lr)``, Loshchilov & Hutter 2017);
- ``wsd`` (warmup-stable-decay; Hägele et al. 2024): 1 until the decay starts at
  D = max(W, T − round(decay_frac · T)), then linear down to f at the last step:
  1 − (1 − f)·(k − D + 1)/(T − D).

Every backend takes its per-step lr from :func:`lr_factors`, so the schedule is
written once. No torch here.
"""

from __future__ import annotations

import numpy as np

KINDS = {"constant": 0, "cosine": 1, "wsd": 2}


def warmup_steps(trial, total: int) -> int:
    """W of a trial with a budget of ``total`` steps."""
    return int(trial.warmup_steps) if trial.warmup_steps else int(round(trial.warmup_frac * total))


def is_constant(trial) -> bool:
    """Whether the trial's lr never changes (constant schedule, no warmup)."""
    return trial.schedule == "constant" and not trial.warmup_steps and not trial.warmup_frac


class Schedules:
    """The schedules of several trials, evaluated together (vectorised over members)."""

    def __init__(self, trials: list, totals: list[int]):
        self.lr = np.array([t.lr for t in trials], dtype=np.float64)
        self.total = np.array(totals, dtype=np.float64)
        self.warmup = np.array([warmup_steps(t, n) for t, n in zip(trials, totals)], dtype=np.float64)
        self.kind = np.array([KINDS[t.schedule] for t in trials])
        self.final = np.array([t.final_lr_frac for t in trials], dtype=np.float64)
        decay = np.round(np.array([t.decay_frac for t in trials]) * self.total)
        self.decay_start = np.maximum(self.warmup, self.total - decay)
        self.constant = all(is_constant(t) for t in trials)

    def take(self, positions: list[int]) -> "Schedules":
        """The schedules of the members at these positions."""
        out = object.__new__(Schedules)
        for name in ("lr", "total", "warmup", "kind", "final", "decay_start"):
            setattr(out, name, getattr(self, name)[positions])
        out.constant = self.constant
        return out

    def lr_at(self, step: int) -> np.ndarray:
        """The lr of every member for the loop's step ``step`` (>= 1), i.e. k = step − 1."""
        return self.lr * lr_factors(step - 1, self.total, self.warmup, self.kind, self.final, self.decay_start)


def lr_factors(k, total, warmup, kind, final, decay_start) -> np.ndarray:
    """Schedule factors at 0-based step(s) ``k`` for members described by arrays (see module doc)."""
    k = np.asarray(k, dtype=np.float64)
    warm = np.where(k < warmup, (k + 1) / np.maximum(warmup, 1), 1.0)
    span = np.maximum(total - warmup, 1)
    cosine = final + (1 - final) * 0.5 * (1 + np.cos(np.pi * np.clip(k - warmup, 0, None) / span))
    left = np.maximum(total - decay_start, 1)
    wsd = np.where(k >= decay_start, 1 - (1 - final) * (k - decay_start + 1) / left, 1.0)
    after = np.select([kind == 1, kind == 2], [cosine, wsd], 1.0)
    return np.where(k < warmup, warm, after)
