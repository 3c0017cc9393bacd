"""Plug-in factories that break the protocol, for the error messages of the tests."""

from __future__ import annotations

import numpy as np

from scaling.tasks.plugins import task_factory


@task_factory
def returns_a_list(**options):
    return [1, 2, 3]


@task_factory
def float64_features(**options):
    x = np.zeros((10, 3))
    return {"x_train": x, "y_train": np.zeros(10, dtype=np.int64), "x_test": x,
            "y_test": np.zeros(10, dtype=np.int64), "n_classes": 2}
