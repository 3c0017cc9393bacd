"""Tasks: built-in ones that run offline, and plug-in tasks from your own package.

Each built-in task has a spec: it validates its options, knows its training-pool
size without loading anything (so configs are checked before work starts), and
loads its data. The data of a task depends only on its options, never on the
trial seed, so every trial of a sweep sees the same pool and test set. No torch
here: data are numpy arrays (models and losses live in scaling.models/train).

Built-in tasks (``task:`` in a sweep config)::

    {name: digits}                                  sklearn's 8x8 digits
    {name: teacher, input_dim: 32, pool: 20000}     a random teacher network's labels
    {name: mnist, data_dir: DIR}                    MNIST IDX files (plain or .gz)
    {name: fashion_mnist, data_dir: DIR}            Fashion-MNIST, the same format
    {name: cifar10, data_dir: DIR}                  CIFAR-10, binary version
    {name: text, path: FILE, context: 64}           next-byte prediction on a file

A relative ``data_dir`` or ``path`` is taken from the current directory and
stored absolute in the trial config, so it is part of the trial id: write an
absolute path (the same on every machine) for ids that survive a move.

Plug-in tasks
-------------
``task: {name: "mypackage.module:make_task", **options}`` imports
``mypackage.module`` with importlib and calls ``make_task(**options)``. Only
functions marked with the :func:`task_factory` decorator can be named, so a
config cannot call an arbitrary function (``subprocess:run``); a module not yet
imported is imported only after its source shows the decorator on that function
(:mod:`scaling.plugins`), so naming anything else runs none of its code. The
module must be importable on the driver *and* on every Ray worker: install it
in the workers' environment or put its folder on their PYTHONPATH (a local Ray
inherits the driver's environment). Options must be plain YAML values (numbers,
strings, booleans, lists, mappings); they are part of the trial id. The factory
returns a :class:`Dataset` (or a mapping of its fields):

- ``x_train, y_train, x_test, y_test``: numpy arrays: the training pool (trials
  draw their ``n_train`` examples from it) and the fixed test set. Features are
  float32 (vectors, or flattened images with ``input_shape=(C, H, W)``) or
  integer tokens.
- ``x_val, y_val`` (optional, recommended): a fixed validation set, disjoint from
  the pool and the test set. The analysis selects the best configuration on it
  and reports test; without it the ``val_*`` columns are null and the analysis
  cross-fits over seeds instead.
- ``data_version`` (optional, default "1"): change it when the data the factory
  returns changes, so a resume does not mix results from two versions.
- ``n_classes``: output size of the built-in models (classes, or the vocabulary).
- ``make_model`` (optional): ``make_model(model: dict) -> torch.nn.Module``, where
  ``model`` is the trial's ``{"name": "task", "width": W, "depth": D}``; chosen
  with ``model: {name: task}``. Torch's RNG is seeded from the trial seed around
  the call, so build the modules inside it and do not reseed.
- ``loss`` (optional): ``loss(output, y) -> scalar tensor``, the mean over the
  batch; default: cross-entropy over the last axis of ``output``.
- ``metric`` (optional): ``metric(output, y) -> scalar tensor``, a mean over the
  batch, stored as ``test_acc`` (so higher should be better); default: accuracy.
- ``tokens_per_example`` (optional): what one example adds to ``examples_seen``
  (the sequence length for a language model); default 1.

The driver calls the factory once while checking the config (to learn the pool
size), and each worker once per process, so it must be deterministic: the same
options give the same data everywhere. Raise ``ValueError`` for bad options; the
message is shown as one line. A task with its own model, ``loss`` or ``metric``
packs through the vmap backend (scaling.vmapped) when ``torch.func.vmap`` can
batch them (no batch statistics, no dropout); otherwise its trials run one by one.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import re
import sys
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Mapping

import numpy as np

from scaling import datasets, plugins
from scaling.axes import number_hint
from scaling.errors import ConfigError, UserError


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """A task's data as numpy arrays, and optionally its own model, loss and metric."""

    x_train: np.ndarray
    """Training pool, shape (n_pool, ...). Trials draw subsets of it."""
    y_train: np.ndarray
    """Labels of the pool, shape (n_pool,), or (n_pool, context) for a language model."""
    x_test: np.ndarray
    """Held-out test features, the same for every trial."""
    y_test: np.ndarray
    """Held-out test labels."""
    n_classes: int
    """Number of classes (the vocabulary size of a language model)."""
    input_shape: tuple | None = None
    """One example's shape as models see it, e.g. (1, 28, 28) for images stored
    flattened; default ``x_train.shape[1:]``."""
    tokens_per_example: int = 1
    """What one example adds to ``examples_seen`` (the context of a language model)."""
    make_model: Callable | None = None
    """The task's own model, ``make_model(model: dict) -> nn.Module``, or None."""
    loss: Callable | None = None
    """``loss(output, y) -> scalar tensor`` (a batch mean); None: cross-entropy."""
    metric: Callable | None = None
    """``metric(output, y) -> scalar tensor`` (a batch mean) stored as test_acc; None: accuracy."""
    x_val: np.ndarray | None = None
    """Validation features (fixed, disjoint from the pool and the test set), or None."""
    y_val: np.ndarray | None = None
    """Validation labels, or None."""
    data_version: str = "1"
    """Version of this data (its split and preprocessing); stored with every trial."""

    def __post_init__(self):
        if self.input_shape is None and isinstance(self.x_train, np.ndarray):
            object.__setattr__(self, "input_shape", tuple(int(d) for d in self.x_train.shape[1:]))
        elif isinstance(self.input_shape, list):
            object.__setattr__(self, "input_shape", tuple(self.input_shape))

    @property
    def input_dim(self) -> int:
        """Features per example, flattened: what an MLP's first layer takes."""
        return int(np.prod(self.x_train.shape[1:], dtype=np.int64))

    @property
    def kind(self) -> str:
        """'tokens' (integer inputs), 'images' ((C, H, W) inputs) or 'vectors'."""
        if np.issubdtype(self.x_train.dtype, np.integer):
            return "tokens"
        return "images" if len(self.input_shape) == 3 else "vectors"


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
    kind: str = "vectors"
    """What the inputs are: 'vectors', 'images' or 'tokens' (which models fit them)."""
    prepare: Callable[[dict], dict] | None = None
    """Resolve paths and check files cheaply (headers, sizes) when the config is parsed."""
    data_version: str = "1"
    """Version of the task's split and preprocessing (the first release's data is "1")."""


# ---- digits: the 8x8 digits that ship inside scikit-learn -------------------

DIGITS_TEST_SIZE = 297  # 1797 images: 297 fixed test, 300 validation, 1200 train pool
DIGITS_VAL_SIZE = 300
DIGITS_SPLIT_SEED = 20170101


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
    return Dataset(x_train=x[train], y_train=y[train], x_val=x[val], y_val=y[val], x_test=x[test],
                   y_test=y[test], n_classes=10, data_version="2")


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


# ---- mnist, fashion_mnist, cifar10, text: local files (scaling.datasets) ------------------

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
    "digits": TaskSpec(defaults={}, train_size=_digits_size, load=_load_digits, checks={}, data_version="2"),
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
        defaults={"path": "", "context": 64, "test_fraction": 0.1, "n_test": 0},
        train_size=datasets.text_train_size,
        load=_loader("text"),
        checks={"path": (lambda v: True, "a text file"),  # checked by prepare
                "context": _upto(MAX_CONTEXT, "the transformer holds context² attention scores"),
                "test_fraction": (lambda v: 0.0 < v < 0.5, "a number in (0, 0.5): the test part, and "
                                  "as much again for validation"),
                "n_test": (lambda v: v >= 0, "an integer >= 0 (0: every test window)")},
        kind="tokens",
        prepare=datasets.prepare_text,
        data_version="2",
    ),
}


# ---- plug-in tasks -----------------------------------------------------------------------

PLUGIN_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def is_plugin(task: dict) -> bool:
    """Whether a (validated) task config names a plug-in factory 'module:function'."""
    return ":" in task["name"]


def _plain(key: str, value: Any, depth: int = 0) -> Any:
    """A YAML value that JSON keeps exactly (it becomes part of the trial id)."""
    if depth > 20:
        raise ConfigError(key, "nested more than 20 levels deep")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ConfigError(key, f"value {_show(value)} does not fit in 64 bits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(key, f"expected a finite number, got {value!r}")
        return value
    if isinstance(value, list):
        return [_plain(key, v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(key, v, depth + 1) for k, v in value.items()}
    raise ConfigError(key, f"expected a number, string, boolean, list or mapping, got {_show(value)}")


def task_factory(func: Callable) -> Callable:
    """Mark ``func`` as a plug-in task factory that sweep configs may name (see above)."""
    func.__scaling_task__ = True
    return func


def _factory(name: str) -> Callable:
    """The factory a plug-in reference names. A module not imported yet is imported only once its
    source shows ``func_name`` marked @task_factory (scaling.plugins), so naming any other
    function runs none of the module's code."""
    module_name, func_name = name.split(":")
    if module_name not in sys.modules:
        plugins.check_declared(module_name, func_name)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise plugins.not_importable(module_name, str(e)) from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ConfigError("task.name", f"module {module_name!r} has no function {func_name!r}")
    if getattr(func, "__scaling_task__", False) is not True:
        raise ConfigError("task.name", f"{name} {plugins.NOT_A_FACTORY}")
    return func


@functools.lru_cache(maxsize=8)
def _load_plugin_cached(name: str, options_json: str) -> Dataset:
    options = json.loads(options_json)
    try:
        out = _factory(name)(**options)
    except UserError:
        raise
    except (TypeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        shown = json.dumps(options)
        shown = shown if len(shown) <= 200 else shown[:200] + "...}"
        raise ConfigError("task", f"the plug-in {name} refused the options {shown}: "
                          f"{type(e).__name__}: {first[:300]}") from None
    return _check_plugin_data(name, out)


def _check_plugin_data(name: str, out: Any) -> Dataset:
    def bad(what: str):
        return ConfigError("task.name", f"the plug-in {name} returned {what}; see the protocol in "
                           "scaling.tasks (a Dataset of numpy arrays)")

    if isinstance(out, Mapping):
        allowed = {f.name for f in fields(Dataset)}
        if set(out) - allowed or not {"x_train", "y_train", "x_test", "y_test", "n_classes"} <= set(out):
            raise bad(f"a mapping with keys {sorted(out)}; expected keys among {sorted(allowed)}")
        out = Dataset(**out)
    if not isinstance(out, Dataset):
        raise bad(f"a {type(out).__name__}")
    if (out.x_val is None) != (out.y_val is None):
        raise bad("only one of x_val and y_val; give both or neither")
    if not isinstance(out.data_version, str) or not out.data_version:
        raise bad(f"data_version {_show(out.data_version)}; expected a non-empty string")
    names = ("x_train", "y_train", "x_test", "y_test") + (("x_val", "y_val") if out.x_val is not None else ())
    arrays = {k: getattr(out, k) for k in names}
    for k, a in arrays.items():
        if not isinstance(a, np.ndarray) or a.ndim < 1 or len(a) == 0:
            raise bad(f"{k} that is not a non-empty numpy array")
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.float32):
            raise bad(f"{k} of dtype {a.dtype}; expected float32 or integers (use .astype(np.float32))")
    if len(out.x_train) != len(out.y_train) or len(out.x_test) != len(out.y_test) or (
            out.x_val is not None and len(out.x_val) != len(out.y_val)):
        raise bad("x and y of different lengths")
    if out.x_val is not None and (out.x_val.shape[1:] != out.x_train.shape[1:] or out.x_val.dtype != out.x_train.dtype):
        raise bad(f"x_val {out.x_val.shape[1:]} {out.x_val.dtype} that differs per example from x_train")
    if out.x_train.shape[1:] != out.x_test.shape[1:] or out.x_train.dtype != out.x_test.dtype:
        raise bad(f"x_train {out.x_train.shape[1:]} {out.x_train.dtype} and x_test "
                  f"{out.x_test.shape[1:]} {out.x_test.dtype} that differ per example")
    if not isinstance(out.input_shape, tuple) or int(np.prod(out.input_shape, dtype=np.int64)) != out.input_dim:
        raise bad(f"input_shape {_show(out.input_shape)} that does not hold {out.input_dim} features")
    for k in ("n_classes", "tokens_per_example"):
        value = getattr(out, k)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise bad(f"{k} {_show(value)}; expected an integer >= 1")
    for k in ("make_model", "loss", "metric"):
        if getattr(out, k) is not None and not callable(getattr(out, k)):
            raise bad(f"a {k} that is not callable")
    # integer arrays as int64: what torch's embedding and cross-entropy take
    wide = {k: a.astype(np.int64) for k, a in arrays.items()
            if np.issubdtype(a.dtype, np.integer) and a.dtype != np.int64}
    return replace(out, n_classes=int(out.n_classes), tokens_per_example=int(out.tokens_per_example), **wide)


def _validate_plugin(raw: dict) -> dict:
    name = raw["name"]
    if not PLUGIN_RE.fullmatch(name):
        raise ConfigError("task.name", f"{_show(name)} is not a plug-in reference; expected "
                          "'package.module:function'")
    for k in raw:
        if not (isinstance(k, str) and k.isidentifier()):
            raise ConfigError("task", f"option name {_show(k, 40)} of the plug-in {name} is not a Python "
                              "identifier (options are passed as keyword arguments)")
    options = {k: _plain(f"task.{k}", v) for k, v in raw.items() if k != "name"}
    _load_plugin_cached(name, json.dumps(options, sort_keys=True))  # imports, calls and checks it
    return {"name": name, **options}


# ---- validation and loading ----------------------------------------------------------------

def validate_task(raw: Any) -> dict:
    """Check a ``task:`` section and return ``{"name": ..., **options}`` with defaults filled.

    Built-in tasks check their files here (headers and sizes); a plug-in task is
    imported and its factory called once."""
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise ConfigError("task", f"expected a mapping like {{name: digits}}, got {type(raw).__name__}")
    name = raw.get("name")
    if isinstance(name, str) and ":" in name:
        return _validate_plugin(raw)
    if not isinstance(name, str) or name not in TASKS:
        raise ConfigError("task.name", f"unknown task {_show(name)}; choose one of {sorted(TASKS)}, "
                          "or a plug-in 'package.module:function'")
    spec = TASKS[name]
    out: dict[str, Any] = {"name": name}
    for key, value in raw.items():
        if key == "name":
            continue
        if key not in spec.defaults:
            allowed = sorted(spec.defaults) or "no options"
            raise ConfigError(f"task.{_key(key)}", f"unknown option for task {name!r}; allowed: {allowed}")
    for key, default in spec.defaults.items():
        value = raw.get(key, default)
        out[key] = _coerce_like(f"task.{key}", value, default)
        ok, allowed = spec.checks[key]
        if not ok(out[key]):
            raise ConfigError(f"task.{key}", f"value {_show(value)} is out of range; expected {allowed}")
    if spec.prepare is not None:
        out = {"name": name, **spec.prepare({k: v for k, v in out.items() if k != "name"})}
    return out


def _coerce_like(key: str, value: Any, default: Any) -> Any:
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string (a path), got {_show(value)}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = number_hint(value[:100], isinstance(default, int)) if isinstance(value, str) else ""
        raise ConfigError(key, f"expected a number, got {_show(value)}{hint}")
    if isinstance(default, int):
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(key, f"expected an integer, got {_show(value)}")
        if not -(2**63) <= value < 2**63:
            raise ConfigError(key, f"value {_show(value)} does not fit in 64 bits")
        return int(value)
    try:
        value = float(value)
    except OverflowError:
        raise ConfigError(key, f"expected a finite number, got {_show(value)}") from None
    if not math.isfinite(value):
        raise ConfigError(key, f"expected a finite number, got {_show(value)}")
    return value


def _show(value: Any, limit: int = 80) -> str:
    """A short repr for messages: cut long values, and survive deep nesting and huge integers."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        return f"a {type(value).__name__} too deep or too long to show"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key(key: Any) -> str:
    return key if isinstance(key, str) and key.isprintable() and len(key) <= 40 else _show(key, 40)


def _options(task: dict) -> dict:
    return {k: v for k, v in task.items() if k != "name"}


def task_train_size(task: dict) -> int:
    """Training-pool size of a validated task config, without loading data (plug-ins: loaded)."""
    if is_plugin(task):
        return len(load_task(task).y_train)
    return TASKS[task["name"]].train_size(_options(task))


def task_kind(task: dict) -> str:
    """'vectors', 'images' or 'tokens': what the task's inputs are (which models fit them)."""
    if is_plugin(task):
        return load_task(task).kind
    return TASKS[task["name"]].kind


def own_model(task: dict) -> bool:
    """Whether the task brings its own model (a plug-in with ``make_model``)."""
    return is_plugin(task) and load_task(task).make_model is not None


def packable(task: dict) -> bool:
    """Whether the stacked backend (an MLP with cross-entropy on float features) fits the task;
    other tasks pack through the vmap backend (scaling.packing.choose_backend)."""
    if not is_plugin(task):
        return TASKS[task["name"]].kind != "tokens"
    data = load_task(task)
    return (data.kind != "tokens" and data.loss is None and data.metric is None
            and data.y_train.ndim == 1 and np.issubdtype(data.y_train.dtype, np.integer)
            and data.tokens_per_example == 1)


def task_data_version(task: dict) -> str:
    """The data version of a validated task (a plug-in's is its Dataset's)."""
    if is_plugin(task):
        return load_task(task).data_version
    return TASKS[task["name"]].data_version


def task_shape(task: dict) -> tuple[int, int, int, int]:
    """(input_dim, n_classes, train pool size, eval size: validation plus test) of a validated task.

    Cheap for the built-in vector tasks (no data is loaded, so a sweep driver
    that plans packs imports neither scikit-learn nor torch); other tasks are loaded.
    """
    name, options = task["name"], _options(task)
    if name == "digits":
        return 64, 10, _digits_size(options), DIGITS_TEST_SIZE + DIGITS_VAL_SIZE
    if name == "teacher":
        return options["input_dim"], options["n_classes"], options["pool"], 2 * options["n_test"]
    data = load_task(task)
    n_val = 0 if data.y_val is None else len(data.y_val)
    return data.input_dim, data.n_classes, len(data.y_train), len(data.y_test) + n_val


def load_task(task: dict) -> Dataset:
    """Load a validated task config. Results are cached per process."""
    if is_plugin(task):
        return _load_plugin_cached(task["name"], json.dumps(_options(task), sort_keys=True))
    return TASKS[task["name"]].load(_options(task))
