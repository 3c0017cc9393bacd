"""Plug-in tasks for the tests, written as a user would write them.

``make_task``: noisy linear regression with its own model (a tanh MLP with one
output, sized by the trial's width and depth), loss (mean squared error) and
metric (R², stored as test_acc). ``make_blobs``: Gaussian blobs to classify with
the built-in models (no model, loss or metric of its own).
"""

from __future__ import annotations

import numpy as np
from torch import nn

from scaling.tasks.base import Dataset
from scaling.tasks.plugins import task_factory


@task_factory
def make_task(dim: int = 8, pool: int = 1024, n_test: int = 256, noise: float = 0.1,
              data_seed: int = 0) -> Dataset:
    if min(dim, pool, n_test) < 1 or noise < 0:
        raise ValueError(f"need dim, pool, n_test >= 1 and noise >= 0, got {dim}, {pool}, {n_test}, {noise}")
    rng = np.random.default_rng(data_seed)
    w = rng.standard_normal(dim) / np.sqrt(dim)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.standard_normal((n, dim)).astype(np.float32)
        return x, (x @ w + noise * rng.standard_normal(n)).astype(np.float32)

    x_train, y_train = sample(pool)
    x_test, y_test = sample(n_test)
    variance = float(y_test.var())

    def make_model(model: dict) -> nn.Module:
        layers, fan_in = [], dim
        for _ in range(model["depth"]):
            layers += [nn.Linear(fan_in, model["width"]), nn.Tanh()]
            fan_in = model["width"]
        return nn.Sequential(*layers, nn.Linear(fan_in, 1))

    def loss(output, y):
        return ((output.squeeze(-1) - y) ** 2).mean()

    def r_squared(output, y):
        return 1.0 - ((output.squeeze(-1) - y) ** 2).mean() / variance

    return Dataset(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, n_classes=1,
                   make_model=make_model, loss=loss, metric=r_squared)


@task_factory
def make_blobs(dim: int = 4, classes: int = 3, pool: int = 600, n_test: int = 300, data_seed: int = 0) -> dict:
    rng = np.random.default_rng(data_seed)
    centres = 2.0 * rng.standard_normal((classes, dim))

    def sample(n: int):
        y = rng.integers(0, classes, n)
        return (centres[y] + rng.standard_normal((n, dim))).astype(np.float32), y

    x_train, y_train = sample(pool)
    x_test, y_test = sample(n_test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, "n_classes": classes}


@task_factory
def batchnorm_blobs(dim: int = 4, classes: int = 3) -> Dataset:
    """Blobs with a model that has BatchNorm, which mixes the examples of a batch: it trains
    alone but does not pack."""
    data = make_blobs(dim=dim, classes=classes)

    def make_model(model: dict) -> nn.Module:
        return nn.Sequential(nn.Linear(dim, model["width"]), nn.BatchNorm1d(model["width"]), nn.ReLU(),
                             nn.Linear(model["width"], classes))

    return Dataset(**data, make_model=make_model)


def not_a_factory(**options):
    """Not marked with @task_factory: configs cannot call it."""
    raise AssertionError("must never be called from a config")
