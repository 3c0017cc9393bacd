"""Plug-in tasks with bad data, for the training-fault tests."""

from __future__ import annotations

import numpy as np

from scaling.tasks import task_factory


@task_factory
def nan_features(pool: int = 200, n_test: int = 50, bad: str = "nan") -> dict:
    """Gaussian inputs with a few NaN (or inf) features in the training pool."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((pool + n_test, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    x[: pool : 7, 3] = np.nan if bad == "nan" else np.inf
    return {"x_train": x[:pool], "y_train": y[:pool], "x_test": x[pool:], "y_test": y[pool:],
            "n_classes": 2}
