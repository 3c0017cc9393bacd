"""A published-style lr x batch-size grid with known per-cell optima, for the bopt --over tests.

Unlike the estimator's model (a quadratic bowl in log lr, log B): the loss
rises exponentially faster on one side of each optimum than on the other, lr
and B interact, seeds shift every cell of a seed together (an offset and a
scale), the largest learning rates diverge at small batches, and batch sizes are
not powers of two. Bookkeeping columns (run ids, timestamps, hosts) differ on
every row, as in a W&B export.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

BATCHES = (48, 80, 136, 224, 376, 624, 1040)
LRS = (1.0e-4, 1.8e-4, 3.2e-4, 5.6e-4, 1.0e-3, 1.8e-3, 3.2e-3)
NS = (1.0e7, 3.0e7, 1.2e8)
DS = (1.0e9, 3.3e9, 1.1e10, 3.6e10)
B_EXP, B_K = 0.4, 100.0          # B_opt = 100 (D/1e9)^0.4
LR_N, LR_D, LR_K = -0.3, 0.1, 6e-4   # lr_opt = 6e-4 (N/1e7)^-0.3 (D/1e9)^0.1


def _g(t, k):
    """(e^{kt} - 1 - kt) / (k^2/2): t^2 near 0, steeper on one side."""
    return (np.exp(k * t) - 1.0 - k * t) / (0.5 * k * k)


def true_loss(n, d, lr, b):
    """Expected loss of one (N, D, lr, B) point (no seed effect, no noise)."""
    u = np.log(lr / (LR_K * (n / 1e7) ** LR_N * (d / 1e9) ** LR_D))
    v = np.log(b / (B_K * (d / 1e9) ** B_EXP))
    base = 1.8 + 40.0 / n ** 0.3 + 60.0 / d ** 0.25
    return base + 0.06 * _g(u, 0.9) + 0.04 * _g(v, -0.7) + 0.012 * u * v


def grid_argmin(n, d):
    """(lr, B) of the noiseless grid optimum of one cell, among points that do not diverge."""
    best = min((true_loss(n, d, lr, b), lr, b) for lr in LRS for b in BATCHES
               if not diverges(lr, b))
    return best[1], best[2]


def diverges(lr, b) -> bool:
    return lr >= 3.2e-3 and b <= 80


def lr_batch_grid(seeds=(0, 1, 2), noise: float = 1e-4, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    offset = {s: 0.03 * rng.standard_normal() for s in seeds}
    scale = {s: 1.0 + 0.01 * rng.standard_normal() for s in seeds}
    rows = []
    for n in NS:
        for d in DS:
            for s in seeds:
                for lr in LRS:
                    for b in BATCHES:
                        loss = (true_loss(n, d, lr, b) * scale[s] + offset[s]
                                + noise * rng.standard_normal())
                        bad = diverges(lr, b)
                        i = len(rows)
                        stamp = f"2024-03-{1 + i % 28:02d}T{i % 24:02d}:00:00"
                        rows.append({"run_id": f"wandb-{i:05d}", "created": stamp,
                                     "host": f"node{i % 7}",
                                     "N": n, "D": d, "lr": lr, "bs": b, "seed": s,
                                     "state": "crashed" if bad else "finished",
                                     "eval_loss": float("nan") if bad else float(loss)})
    return pa.Table.from_pylist(rows)
