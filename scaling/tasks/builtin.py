"""The built-in tasks: digits (inside scikit-learn), teacher (a random network's labels),
and the file tasks (mnist, fashion_mnist, cifar10, text). :data:`TASKS` is their registry."""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

import scaling.tasks.files as datasets
from scaling.errors import ConfigError
from scaling.tasks.base import Dataset, TaskSpec

# ---- digits: the 8x8 digits that ship inside scikit-learn -------------------

DIGITS_TEST_SIZE = 297  # 1797 images: 297 fixed test, 300 validation, 1200 train pool

DIGITS_VAL_SIZE = 300

DIGITS_SPLIT_SEED = 20170101

DIGITS_SHAPE = (1, 8, 8)
"""One digit as the CNN and ResNet see it: one channel of 8x8 pixels."""


def _digits_size(options: dict) -> int:
    return 1797 - DIGITS_TEST_SIZE - DIGITS_VAL_SIZE


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as scikit-learn's ``load_digits`` returns them: (pixels 0-16, labels).

    Read straight from the file that ships inside scikit-learn (``digits.csv.gz``, what
    ``load_digits`` parses), found without importing scikit-learn: importing it takes about
    a second, once in every worker process."""
    import gzip
    import importlib.util
    import os

    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "datasets", "data", "digits.csv.gz")
        if os.path.isfile(path):
            with gzip.open(path, "rt", encoding="utf-8") as f:
                data = np.loadtxt(f, delimiter=",")
            return data[:, :-1], data[:, -1].astype(int)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data, bunch.target


@functools.lru_cache(maxsize=4)
def _load_digits_cached() -> Dataset:
    pixels, labels = _digits_arrays()
    # pixels scaled to [0, 1], as Smith & Le (2018) fed MNIST; standardising each pixel
    # instead blows up rare edge pixels and makes small-batch SGD diverge at moderate lr
    x = (pixels / 16.0).astype(np.float32)
    y = labels.astype(np.int64)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(y))
    cut = DIGITS_TEST_SIZE + DIGITS_VAL_SIZE
    test, val, train = order[:DIGITS_TEST_SIZE], order[DIGITS_TEST_SIZE:cut], order[cut:]
    # stored flattened (n, 64) like every image task, so an MLP reads the same 64 features as
    # before; the CNN and ResNet reshape them to one 8x8 channel
    return Dataset(x_train=x[train], y_train=y[train], x_val=x[val], y_val=y[val], x_test=x[test],
                   y_test=y[test], n_classes=10, input_shape=DIGITS_SHAPE, data_version="2")


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
    x_val, y_val = sample(o["n_test"])  # drawn after the test set, so pool and test are as before
    return Dataset(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test,
                   y_test=y_test, n_classes=k)


def _load_teacher(options: dict) -> Dataset:
    return _load_teacher_cached(tuple(sorted(options.items())))


# ---- mnist, fashion_mnist, cifar10, text: local files (scaling.tasks.files) ------------------

@functools.lru_cache(maxsize=4)
def _load_files_cached(name: str, items: tuple) -> Dataset:
    options = dict(items)
    fields_ = datasets.load_text(options) if name == "text" else datasets.load_images(name, options)
    return Dataset(**fields_)


def _loader(name: str) -> Callable[[dict], Dataset]:
    return lambda options: _load_files_cached(name, tuple(sorted(options.items())))


def _image_spec(name: str, prepare, size, what: str) -> TaskSpec:
    return TaskSpec(
        defaults={"data_dir": "", "n_test": 0},
        train_size=size,
        load=_loader(name),
        checks={"data_dir": (lambda v: True, f"a folder with {what}"),  # checked by prepare
                "n_test": (lambda v: v >= 0, "an integer >= 0 (0: the whole test set)")},
        kind="images",
        prepare=prepare,
        data_version="2",
    )


MAX_TEACHER_VALUES = 1 << 28
"""The most values in one array the teacher task builds (2 GiB as float64): each worker holds
its pool, test and validation sets and the teacher's weights in memory."""

MAX_CONTEXT = 1 << 14
"""The longest text window: the transformer holds a context x context mask and attention
scores (16384² is 268M values per sequence and head)."""


def _upto(limit: int, what: str):
    return (lambda v: 1 <= v <= limit, f"an integer in [1, {limit:,}] ({what})")


def _prepare_teacher(options: dict) -> dict:
    """Refuse a teacher whose arrays cannot fit in memory: x (rows x input_dim), its hidden
    layer (rows x teacher_width) and the weights, for the pool and for n_test rows."""
    d, h, k = options["input_dim"], options["teacher_width"], options["n_classes"]
    rows = max(options["pool"], options["n_test"])
    sizes = {"pool or n_test x input_dim": rows * d, "pool or n_test x teacher_width": rows * h,
             "input_dim x teacher_width": d * h, "teacher_width x n_classes": h * k}
    for what, n in sizes.items():
        if n > MAX_TEACHER_VALUES:
            raise ConfigError("task", f"the teacher task would build an array of {what} = {n:,} values, over "
                              f"the {MAX_TEACHER_VALUES:,} a worker can hold (2 GiB as float64); shrink "
                              "pool, n_test, input_dim or teacher_width")
    return options


TASKS: dict[str, TaskSpec] = {
    "digits": TaskSpec(defaults={}, train_size=_digits_size, load=_load_digits, checks={}, kind="images",
                       data_version="2"),
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
            "input_dim": _upto(1 << 16, "features per example"),
            "n_classes": (lambda v: 2 <= v <= 1 << 16, "an integer in [2, 65,536]"),
            "teacher_width": _upto(1 << 16, "the teacher's hidden units"),
            "pool": _upto(10**9, "examples, held in memory"),
            "n_test": _upto(10**9, "examples, held in memory"),
            "label_noise": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
            "data_seed": (lambda v: v >= 0, "an integer >= 0"),
        },
        prepare=_prepare_teacher,
    ),
    "mnist": _image_spec("mnist", datasets.prepare_idx, datasets.idx_train_size, "the MNIST IDX files"),
    "fashion_mnist": _image_spec("fashion_mnist", datasets.prepare_idx, datasets.idx_train_size,
                                 "the Fashion-MNIST IDX files"),
    "cifar10": _image_spec("cifar10", datasets.prepare_cifar, datasets.cifar_train_size,
                           "the CIFAR-10 binary files"),
    "text": TaskSpec(
        defaults={"path": "", "corpus": "", "context": 64, "test_fraction": 0.1, "n_test": 0},
        train_size=datasets.text_train_size,
        load=_loader("text"),
        checks={"path": (lambda v: True, "a text file"),  # path and corpus: checked by prepare
                "corpus": (lambda v: True, "a built-in corpus"),
                "context": _upto(MAX_CONTEXT, "the transformer holds context² attention scores"),
                "test_fraction": (lambda v: 0.0 < v < 0.5, "a number in (0, 0.5): the test part, and "
                                  "as much again for validation"),
                "n_test": (lambda v: v >= 0, "an integer >= 0 (0: every test window)")},
        kind="tokens",
        headline="test_loss",
        prepare=datasets.prepare_text,
        data_version="2",
        version=datasets.text_version,
    ),
}
