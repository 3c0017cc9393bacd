"""Checking a plug-in reference ``module:function`` before its module is imported.

Importing a module runs its top level, so a config naming ``some.module:anything``
would run ``some.module``'s import side effects before the ``@task_factory``
marker on ``anything`` could be checked. Where the module is not imported yet,
:func:`check_declared` first decides from its source alone, without running
anything:

1. the module is located with the import system's finders, as ``import`` would,
   but without importing its parent packages (``importlib.util.find_spec`` would
   run their ``__init__``);
2. its source is read (at most :data:`MAX_SOURCE_BYTES`) and parsed with
   :mod:`ast`, not executed;
3. the function must be defined at the module's top level with the
   ``@task_factory`` decorator (by that name, as an attribute
   ``@scaling.tasks.task_factory``, or under an alias imported from
   ``scaling.tasks``), or assigned as ``name = task_factory(...)``.

Only then is the module imported, and the marker checked again on the function
itself. This is a gate on what a config may name, not a sandbox: a module whose
author put ``@task_factory`` on a function has agreed that configs may import
it, and importing it runs its package's ``__init__`` and its top level as usual.
A module with no Python source to read (an extension module, bytecode only, a
built-in) cannot be checked and is refused unless something already imported
it. A module already imported is checked on its function alone: importing it
again runs nothing.
"""

from __future__ import annotations

import ast
import functools
import importlib
import json
import math
import os
import re
import sys
from dataclasses import fields, replace
from typing import Any, Callable, Mapping

import numpy as np

from scaling.errors import ConfigError, UserError
from scaling.tasks.base import Dataset
from scaling.tasks.base import _show

MAX_SOURCE_BYTES = 8_000_000
"""Largest plug-in module source read to check the decorator."""

NOT_A_FACTORY = ("is not a task factory; mark it with the decorator @scaling.tasks.task_factory "
                 "(configs may call only functions made for them)")


def not_importable(module_name: str, why: str) -> ConfigError:
    return ConfigError("task.name", f"cannot import the plug-in module {module_name!r} ({why}); it must be "
                       "importable on the driver and every worker: install it or add its folder to PYTHONPATH")


def check_declared(module_name: str, func_name: str) -> None:
    """Raise ConfigError unless the source of ``module_name`` (not imported) defines
    ``func_name`` at its top level as a ``@task_factory``. Imports and runs nothing."""
    spec = find_spec(module_name)
    source = _source(module_name, spec)
    try:
        tree = ast.parse(source, filename=spec.origin or module_name)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise not_importable(module_name, f"its source does not parse: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from None
    found = _definitions(tree, func_name)
    name = f"{module_name}:{func_name}"
    if "factory" in found:
        return
    if "plain" in found:
        raise ConfigError("task.name", f"{name} {NOT_A_FACTORY}")
    imported = [k for k in found if k.startswith("from ")]
    if imported:
        where = imported[-1][5:]
        raise ConfigError("task.name", f"{name} is imported into {module_name!r} from {where!r}; name the "
                          f"module that defines it, '{where}:{func_name}'")
    raise ConfigError("task.name", f"module {module_name!r} has no function {func_name!r}")


def find_spec(module_name: str):
    """The module spec ``import module_name`` would use, found without importing any package
    on the way (each level is looked up by the finders on ``sys.meta_path`` in the parent's
    ``__path__``, which is what ``import`` does after it has run the parent)."""
    parts = module_name.split(".")
    path, spec = None, None
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        loaded = sys.modules.get(name)
        if loaded is not None:
            spec, path = getattr(loaded, "__spec__", None), getattr(loaded, "__path__", None)
        else:
            spec = None
            for finder in sys.meta_path:
                find = getattr(finder, "find_spec", None)
                try:
                    spec = find(name, path) if find is not None else None
                except (ImportError, ValueError, OSError) as e:
                    raise not_importable(module_name, f"{type(e).__name__}: {e}") from None
                if spec is not None:
                    break
            if spec is None:
                raise not_importable(module_name, f"No module named {name!r}")
            path = spec.submodule_search_locations
        if i < len(parts) and path is None:
            raise not_importable(module_name, f"{name!r} is not a package")
    return spec


def _source(module_name: str, spec) -> str:
    origin = spec.origin if spec is not None and spec.has_location else None
    if origin and os.path.isfile(origin) and os.path.getsize(origin) > MAX_SOURCE_BYTES:
        raise ConfigError("task.name", f"the plug-in module {module_name!r} has a source of over "
                          f"{MAX_SOURCE_BYTES:,} bytes; a task factory's module is smaller")
    get_source = getattr(spec.loader, "get_source", None) if spec is not None else None
    try:
        source = get_source(module_name) if get_source is not None else None
    except (ImportError, OSError, UnicodeDecodeError, SyntaxError) as e:
        raise not_importable(module_name, f"its source cannot be read: {type(e).__name__}: {e}") from None
    if source is None:
        raise ConfigError("task.name", f"the plug-in module {module_name!r} has no Python source to check "
                          "for @task_factory before importing it (an extension, bytecode-only or built-in "
                          "module); define the factory in a .py file")
    return source


def _definitions(tree: ast.Module, func_name: str) -> list[str]:
    """How the module's top level binds ``func_name``: 'factory' (a def marked @task_factory,
    or ``= task_factory(...)``), 'plain' (any other def, class or assignment), or
    'from MODULE' (imported). Statements under top-level ``if``/``try``/``with`` count too."""
    marks = {"task_factory"}  # the decorator's name, and aliases imported from scaling.tasks
    factory_modules = {"scaling.tasks", "tasks"}
    found: list[str] = []
    stack = list(reversed(tree.body))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            inner = [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", [])]
            for handler in getattr(node, "handlers", []):
                inner += handler.body
            stack += reversed(inner)
        elif isinstance(node, ast.ImportFrom):
            source = "." * node.level + (node.module or "")
            for alias in node.names:
                if alias.name == "task_factory" and (node.module or "").endswith("tasks"):
                    marks.add(alias.asname or alias.name)
                if alias.name == "tasks":  # from scaling import tasks [as T]: @T.task_factory
                    factory_modules.add(alias.asname or alias.name)
                if (alias.asname or alias.name) == func_name:
                    found.append(f"from {source}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.endswith("tasks") and alias.asname:
                    factory_modules.add(alias.asname)
                if (alias.asname or alias.name.split(".")[0]) == func_name:
                    found.append("plain")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == func_name:
            marked = any(_is_mark(d, marks, factory_modules) for d in node.decorator_list)
            found.append("factory" if marked else "plain")
        elif isinstance(node, ast.ClassDef) and node.name == func_name:
            found.append("plain")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == func_name for t in targets):
                call = node.value
                marked = isinstance(call, ast.Call) and _is_mark(call.func, marks, factory_modules)
                found.append("factory" if marked else "plain")
    return found


def _is_mark(expr: ast.expr, marks: set, modules: set) -> bool:
    """``task_factory`` (or an alias of it), or ``<something>.tasks.task_factory``."""
    if isinstance(expr, ast.Name):
        return expr.id in marks
    if isinstance(expr, ast.Attribute) and expr.attr == "task_factory":
        return ast.unparse(expr.value) in modules or ast.unparse(expr.value).endswith(".tasks")
    return False


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
    source shows ``func_name`` marked @task_factory (scaling.tasks.plugins), so naming any other
    function runs none of the module's code."""
    module_name, func_name = name.split(":")
    if module_name not in sys.modules:
        check_declared(module_name, func_name)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise not_importable(module_name, str(e)) from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ConfigError("task.name", f"module {module_name!r} has no function {func_name!r}")
    if getattr(func, "__scaling_task__", False) is not True:
        raise ConfigError("task.name", f"{name} {NOT_A_FACTORY}")
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
