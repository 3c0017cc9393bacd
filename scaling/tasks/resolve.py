"""A task dict resolved: validated (options coerced and checked), loaded (cached per
process), and the planner's questions answered without loading (kind, pool size, whether
it packs, its shape, its data version). The package docstring describes the tasks."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from scaling.errors import ConfigError
from scaling.spec.axes import number_hint
from scaling.tasks.base import Dataset, _show
from scaling.tasks.builtin import DIGITS_TEST_SIZE, DIGITS_VAL_SIZE, TASKS, _digits_size
from scaling.tasks.plugins import _load_plugin_cached, _validate_plugin, is_plugin

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
    other tasks pack through the vmap backend (scaling.training.packing.choose_backend)."""
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
    spec = TASKS[task["name"]]
    return spec.data_version if spec.version is None else spec.version(_options(task))


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
