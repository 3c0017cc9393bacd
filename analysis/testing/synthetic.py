r"""Synthetic sweep tables with a known answer, for smoke tests, the benchmark and demos.

Its noise is independent per trial and its optimum an exact parabola in log B, the
estimators' own model: statistical tests use :mod:`analysis.testing.simulate` instead.

:func:`sweep_table` builds a trials table in the results-store schema where
every configuration has a known learning curve and a known optimal batch
size:

.. math:: \mathrm{error} = (a N^{b} + c)\,\big(1 + w\,(\log B - \log B^*)^2\big)\,e^{\sigma z},
          \qquad B^* = k\,\Big(\frac{\varepsilon N}{1-m}\Big)^{p}

with :math:`z \sim \mathcal N(0, 1)` per trial. ``test_acc = 1 - error``,
``test_loss = 3 error`` and ``train_loss = 2.4 error``; trials with
``lr * batch_size`` above ``diverge_above`` are marked diverged with NaN
metrics, as a real store records them.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa


def sweep_table(*, n_trains=(1000, 2000, 4000, 8000), batch_sizes=tuple(2 ** i for i in range(15)),
                lrs=(0.02, 0.05, 0.1, 0.2), momenta=(0.0, 0.5, 0.9), seeds=(0, 1, 2),
                k: float = 0.2, power: float = 1.0, width: float = 0.1,
                curve=(2.0, -0.5, 0.02), noise: float = 0.01, diverge_above: float | None = None,
                sweep: str = "synthetic", seed: int = 0) -> pa.Table:
    r"""A trials table over the grid ``n_trains x batch_sizes x lrs x momenta x seeds``.

    Parameters
    ----------
    k, power
        :math:`B^* = k (\varepsilon N/(1-m))^{p}`; ``power=1`` is the rule.
    width
        Curvature :math:`w` of the error in :math:`\log B` around :math:`B^*`.
    curve
        :math:`(a, b, c)` of the best-case error :math:`a N^b + c`.
    noise
        :math:`\sigma` of the multiplicative log-normal noise per trial.
    diverge_above
        Trials with ``lr * batch_size`` above this diverge (None: none do).
    """
    rng = np.random.default_rng(seed)
    a, b, c = curve
    rows = []
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for i, (n, bs, lr, m, s) in enumerate(itertools.product(n_trains, batch_sizes, lrs,
                                                            momenta, seeds)):
        x = lr * n / (1.0 - m)
        b_star = k * x ** power
        err = (a * n ** b + c) * (1.0 + width * (np.log(bs) - np.log(b_star)) ** 2)
        err *= np.exp(noise * rng.standard_normal())
        bad = diverge_above is not None and lr * bs > diverge_above
        nan = float("nan")
        rows.append({
            "sweep": sweep, "trial_id": f"t{i:06d}", "run_id": f"r{i:06d}",
            "status": "diverged" if bad else "ok", "error": "loss is nan" if bad else None,
            "task": "synthetic", "model": "none", "width": 1, "depth": 1, "n_train": int(n),
            "batch_size": int(bs), "lr": float(lr), "momentum": float(m),
            "weight_decay": 0.0, "seed": int(s), "epochs": 10.0,
            "steps": int(10 * n // bs), "examples_seen": int(10 * n),
            "noise_scale": float(x / bs), "n_params": 10,
            "train_loss": nan if bad else 2.4 * err, "test_loss": nan if bad else 3.0 * err,
            "test_acc": nan if bad else 1.0 - err, "wall_s": 1.0, "host": "localhost",
            "start_time": t0, "end_time": t0, "version": "0", "engine": "synthetic",
            "config": json.dumps({"n_train": n, "batch_size": bs, "lr": lr, "momentum": m,
                                  "seed": s}, sort_keys=True)})
    from analysis.tables.load import from_store

    return from_store(pa.Table.from_pylist(rows, schema=_schema()))  # its axes are the store's


def _schema() -> pa.Schema:
    try:
        from scaling.spec.schema import TRIALS_SCHEMA
        return TRIALS_SCHEMA
    except ImportError:  # the store module is optional for fitting
        return None


def write_store(table: pa.Table, root: str) -> str:
    """Write ``table`` as one sweep (``root/<sweep>/trials/part-0.parquet``, marked as a sweep the
    way the store marks one); return the folder."""
    import os

    import pyarrow.parquet as pq

    from scaling.store.writer import Store

    sweep = table.column("sweep")[0].as_py() if table.num_rows else "empty"
    Store(root).ensure_sweep(sweep)
    folder = os.path.join(root, sweep, "trials")
    os.makedirs(folder, exist_ok=True)
    pq.write_table(table, os.path.join(folder, "part-0.parquet"))
    return os.path.join(root, sweep)
