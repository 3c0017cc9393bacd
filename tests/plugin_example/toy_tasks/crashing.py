"""A plug-in whose data loads but whose model raises when a worker builds it, for the crash tests."""

from __future__ import annotations

import numpy as np

from scaling.tasks.base import Dataset
from scaling.tasks.plugins import task_factory


@task_factory
def model_cannot_be_built(pool: int = 100, n_test: int = 20) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((pool + n_test, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)

    def make_model(model: dict):
        raise RuntimeError(f"this model cannot be built (width {model['width']})")

    return Dataset(x_train=x[:pool], y_train=y[:pool], x_test=x[pool:], y_test=y[pool:], n_classes=2,
                   make_model=make_model)
