"""Built-in tasks that run offline, as numpy arrays (no torch here).

Each task has a spec: it validates its options, knows its training-pool size
without loading anything (so configs are checked before work starts), and
loads its data. The data of a task depends only on its options, never on the
trial seed, so every trial of a sweep sees the same pool and test set.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from scaling.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """A classification task as float32 features and int64 labels."""

    x_train: np.ndarray
    """Training pool, shape (n_pool, input_dim). Trials draw subsets of it."""
    y_train: np.ndarray
    """Labels of the pool, shape (n_pool,)."""
    x_test: np.ndarray
    """Held-out test features, the same for every trial."""
    y_test: np.ndarray
    """Held-out test labels."""
    n_classes: int
    """Number of classes."""

    @property
    def input_dim(self) -> int:
        return int(self.x_train.shape[1])


@dataclass(frozen=True)
class TaskSpec:
    defaults: dict[str, Any]
    """Every option the task takes, with its default and therefore its type."""
    train_size: Callable[[dict], int]
    """Size of the training pool for the given (validated) options."""
    load: Callable[[dict], Dataset]
    """Build the data for the given (validated) options."""
    checks: dict[str, tuple[Callable[[Any], bool], str]]
    """Per-option range check and the description of what is allowed."""


# ---- digits: the 8x8 digits that ship inside scikit-learn -------------------

DIGITS_TEST_SIZE = 297  # 1797 images: 1500 train pool, 297 fixed test
DIGITS_SPLIT_SEED = 20170101


def _digits_size(options: dict) -> int:
    return 1797 - DIGITS_TEST_SIZE


@functools.lru_cache(maxsize=4)
def _load_digits_cached() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(y))
    test, train = order[:DIGITS_TEST_SIZE], order[DIGITS_TEST_SIZE:]
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0) + 0.1
    x = (x - mean) / std
    return Dataset(x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test], n_classes=10)


def _load_digits(options: dict) -> Dataset:
    return _load_digits_cached()


# ---- teacher: a random teacher network labels Gaussian inputs ---------------

def _teacher_size(options: dict) -> int:
    return int(options["pool"])


@functools.lru_cache(maxsize=4)
def _load_teacher_cached(items: tuple) -> Dataset:
    o = dict(items)
    rng = np.random.default_rng(o["data_seed"])
    d, h, k = o["input_dim"], o["teacher_width"], o["n_classes"]
    w1 = rng.standard_normal((d, h)) / np.sqrt(d)
    w2 = rng.standard_normal((h, k)) / np.sqrt(h)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.standard_normal((n, d))
        y = np.argmax(np.maximum(x @ w1, 0.0) @ w2, axis=1)
        flip = rng.random(n) < o["label_noise"]
        y[flip] = rng.integers(0, k, size=int(flip.sum()))
        return x.astype(np.float32), y.astype(np.int64)

    x_train, y_train = sample(o["pool"])
    x_test, y_test = sample(o["n_test"])
    return Dataset(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, n_classes=k)


def _load_teacher(options: dict) -> Dataset:
    return _load_teacher_cached(tuple(sorted(options.items())))


_positive = (lambda v: v >= 1, "an integer >= 1")

TASKS: dict[str, TaskSpec] = {
    "digits": TaskSpec(defaults={}, train_size=_digits_size, load=_load_digits, checks={}),
    "teacher": TaskSpec(
        defaults={
            "input_dim": 32,
            "n_classes": 10,
            "teacher_width": 64,
            "pool": 20000,
            "n_test": 2000,
            "label_noise": 0.0,
            "data_seed": 0,
        },
        train_size=_teacher_size,
        load=_load_teacher,
        checks={
            "input_dim": _positive,
            "n_classes": (lambda v: v >= 2, "an integer >= 2"),
            "teacher_width": _positive,
            "pool": _positive,
            "n_test": _positive,
            "label_noise": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
            "data_seed": (lambda v: v >= 0, "an integer >= 0"),
        },
    ),
}


def validate_task(raw: Any) -> dict:
    """Check a ``task:`` section and return ``{"name": ..., **options}`` with defaults filled."""
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise ConfigError("task", f"expected a mapping like {{name: digits}}, got {type(raw).__name__}")
    name = raw.get("name")
    if name not in TASKS:
        raise ConfigError("task.name", f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    spec = TASKS[name]
    out: dict[str, Any] = {"name": name}
    for key, value in raw.items():
        if key == "name":
            continue
        if key not in spec.defaults:
            allowed = sorted(spec.defaults) or "no options"
            raise ConfigError(f"task.{key}", f"unknown option for task {name!r}; allowed: {allowed}")
    for key, default in spec.defaults.items():
        value = raw.get(key, default)
        out[key] = _coerce_like(f"task.{key}", value, default)
        ok, allowed = spec.checks[key]
        if not ok(out[key]):
            raise ConfigError(f"task.{key}", f"value {value!r} is out of range; expected {allowed}")
    return out


def _coerce_like(key: str, value: Any, default: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"expected a number, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return int(value)
    if not np.isfinite(value):
        raise ConfigError(key, f"expected a finite number, got {value!r}")
    return float(value)


def task_train_size(task: dict) -> int:
    """Training-pool size of a validated task config, without loading data."""
    options = {k: v for k, v in task.items() if k != "name"}
    return TASKS[task["name"]].train_size(options)


def load_task(task: dict) -> Dataset:
    """Load a validated task config. Results are cached per process."""
    options = {k: v for k, v in task.items() if k != "name"}
    return TASKS[task["name"]].load(options)
