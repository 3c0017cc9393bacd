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
import os
import sys

from scaling.errors import ConfigError

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
