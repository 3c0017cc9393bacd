"""Plug-in tasks with bad data, for the training-fault tests."""

from __future__ import annotations

import numpy as np

from scaling.tasks.plugins import task_factory


@task_factory
def nan_features(pool: int = 200, n_test: int = 50, bad: str = "nan") -> dict:
    """Gaussian inputs with a few NaN (or inf) features in the training pool."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((pool + n_test, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    if bad in ("nan", "inf"):
        x[: pool : 7, 3] = np.nan if bad == "nan" else np.inf
    return {"x_train": x[:pool], "y_train": y[:pool], "x_test": x[pool:], "y_test": y[pool:],
            "n_classes": 2}


class _Huge:
    """A model whose construction asks the allocator for more memory than any machine has."""

    def __new__(cls, model: dict):
        import torch

        return torch.nn.Linear(1 << 20, 1 << 20)  # 2^40 weights (4 TB): refused at once, nothing touched


@task_factory
def huge_model(pool: int = 200, n_test: int = 50) -> dict:
    """Separable Gaussian data with a model too big to allocate (the out-of-memory test)."""
    data = nan_features(pool, n_test, bad="none")
    return {**data, "make_model": _Huge}
