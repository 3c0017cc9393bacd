"""The layers and their import direction, as declared in docs/architecture.md.

Every module of scaling/, cluster/ and analysis/ is parsed; imports at module level *and inside
functions* count. The test fails on any cycle between modules, and on any import that a
package's row below does not allow. Three properties that a static reading cannot see are
checked in fresh processes: the sweep driver loads no torch, analysis loads no torch or ray, and
no scaling module loads ray.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

TOPS = ("scaling", "cluster", "analysis")
HEAVY = ("torch", "ray", "duckdb", "sklearn")

# package -> what it may import (project prefixes), and the heavy libraries it must never import.
# The longest matching prefix of a module's name is its row. A module may always import inside
# its own package (row).
_TRAIN_FREE = ("scaling.training.loop", "scaling.training.schedules", "scaling.training.packing",
               "scaling.training.optim")
RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "scaling": ((), ("ray",)),
    # `python -m scaling` runs the command cluster.cli assembles (the entry point's function); nothing
    # imports this module, and cluster.cli loads no ray at import (checked below)
    "scaling.__main__": (("cluster.cli",), ("torch", "ray")),
    "scaling.errors": ((), HEAVY),
    "scaling.textout": ((), HEAVY),
    "scaling.spec": (("scaling.errors",), ("torch", "ray", "duckdb")),
    "scaling.store": (("scaling.spec", "scaling.errors", "scaling.textout"), ("torch", "ray")),
    "scaling.tasks": (("scaling.spec", "scaling.errors"), ("torch", "ray", "duckdb")),
    "scaling.config": (("scaling.tasks", "scaling.store", "scaling.spec", "scaling.errors"),
                       ("torch", "ray", "duckdb")),
    "scaling.training": (("scaling.tasks", "scaling.spec", "scaling.errors"), ("ray", "duckdb")),
    "scaling.status": (("scaling.config", "scaling.store", "scaling.tasks", "scaling.spec", "scaling.errors"),
                       ("torch", "ray")),
    "scaling.cli": (("scaling.status", "scaling.config", "scaling.store", "scaling.tasks", "scaling.spec",
                     "scaling.errors", "scaling.textout"), ("torch", "ray")),
    "cluster": (("cluster", "scaling", "analysis"), ()),  # cluster.cli assembles the command
    "cluster.launch": (("scaling.errors",), ("torch",)),
    "cluster.worker": (("scaling.training", "scaling.store", "scaling.tasks", "scaling.spec", "scaling.errors"),
                       ()),
    "cluster.driver": (("cluster.worker", "cluster.launch", "scaling.config", "scaling.store", "scaling.tasks",
                        "scaling.spec", "scaling.errors", *_TRAIN_FREE), ()),
    "cluster.deploy": ((), ("torch", "ray")),
    "analysis": ((), ("torch", "ray")),
    "analysis.errors": (("scaling.errors",), HEAVY),
    "analysis.stats": (("analysis.errors",), ("torch", "ray", "duckdb")),
    "analysis.tables": (("analysis.stats", "analysis.errors", "scaling.spec", "scaling.store", "scaling.tasks"),
                        ("torch", "ray")),
    "analysis.fit": (("analysis.tables", "analysis.stats", "analysis.errors"), ("torch", "ray", "duckdb")),
    "analysis.rules": (("analysis.tables", "analysis.stats", "analysis.errors"), ("torch", "ray", "duckdb")),
    # an adaptive sweep's plan reads the fits of `scaling bopt` and `scaling fit` (one code path)
    "analysis.plan": (("analysis.rules", "analysis.fit", "analysis.tables", "analysis.stats", "analysis.errors"),
                      ("torch", "ray", "duckdb")),
    "analysis.report": (("analysis.fit", "analysis.rules", "analysis.tables", "analysis.stats", "analysis.errors",
                         "scaling.textout"), ("torch", "ray")),
    # the report's adaptive-plan section reads <sweep>/plans/round-<k>.json where scaling.status names it
    "analysis.report.plans": (("analysis.report", "analysis.errors", "scaling.status", "scaling.store.writer",
                               "scaling.errors"), ("torch", "ray")),
    "analysis.cli": (("analysis", "scaling.errors", "scaling.textout"), ("torch", "ray")),
    "analysis.api": (("analysis",), ("torch", "ray")),
    "analysis.testing": (("analysis.tables", "analysis.stats", "analysis.errors", "scaling.spec", "scaling.store",
                          "scaling.config"), ("torch", "ray")),
    "analysis.bench": (("analysis",), ("torch", "ray")),
    # the dashboard's ETA counts the trials a sweep's stored config expands to as `scaling status`
    # does (scaling.status.expected_trials, on a scaling.store.writer.Store); it reads the store
    # itself only through analysis.tables
    "analysis.serve": (("analysis", "scaling.status", "scaling.store.writer"), ("torch", "ray")),
}
# the driver reaches torch only through imports inside functions, on paths the tests below name
DRIVER_TORCH_FREE = ("cluster.driver.sweep", "cluster.driver.drive", "cluster.driver.planner",
                     "cluster.driver.warmup", "cluster.driver.progress", "cluster.driver.dryrun")


def modules(root: Path) -> dict[str, Path]:
    out = {}
    for top in TOPS:
        for p in sorted((root / top).rglob("*.py")):
            name = ".".join(p.relative_to(root).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = p
    return out


def imports(name: str, path: Path, known: dict) -> list[tuple[str, int]]:
    """(imported module or heavy library, line) for every import in the file, nested ones too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names]
            targets = subs + ([] if all(t in known for t in subs) else [base])
        else:
            continue
        for t in targets:
            top = t.split(".")[0]
            if top in HEAVY:
                found.append((top, node.lineno))
            elif top in TOPS:
                while t and t not in known:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    found.append((t, node.lineno))
    return found


def row(name: str) -> str:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        key = ".".join(parts[:i])
        if key in RULES:
            return key
    raise AssertionError(f"{name} has no row in RULES: declare its package")


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(root: Path) -> list[str]:
    known = modules(root)
    bad = []
    for name, path in known.items():
        key = row(name)
        allowed, banned = RULES[key]
        for target, line in imports(name, path, known):
            where = f"{path.relative_to(root)}:{line}"
            if target in HEAVY:
                if target in banned:
                    bad.append(f"{where}: {name} imports {target} (row {key} never does)")
            elif not (under(target, key) or target in TOPS or any(under(target, a) for a in allowed)):
                bad.append(f"{where}: {name} imports {target}, against the direction of row {key}")
    return bad


def cycles(root: Path) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), imports in functions included."""
    known = modules(root)
    graph = {n: {t for t, _ in imports(n, p, known) if t in known} for n, p in known.items()}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_modules():
    found = cycles(ROOT)
    assert not found, "import cycles (imports inside functions count): " + "; ".join(" <-> ".join(c) for c in found)


def test_every_import_follows_the_declared_direction():
    bad = violations(ROOT)
    assert not bad, "\n".join(bad)


def test_no_package_folder_holds_more_than_12_modules():
    for top in TOPS:
        for folder in [ROOT / top, *[p for p in (ROOT / top).rglob("*") if p.is_dir()]]:
            n = len([p for p in folder.glob("*.py") if p.name != "__init__.py"])
            assert n <= 12, f"{folder.relative_to(ROOT)} holds {n} modules"


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for top in TOPS:
        (tmp_path / top).mkdir(exist_ok=True)
        (tmp_path / top / "__init__.py").touch()
    return tmp_path


def test_a_planted_cycle_through_a_function_level_import_is_found(tmp_path):
    root = _plant(tmp_path, {"analysis/stats/__init__.py": "",
                             "analysis/stats/a.py": "from analysis.stats.b import f\n",
                             "analysis/stats/b.py": "def f():\n    from analysis.stats.a import g\n"})
    assert cycles(root) == [["analysis.stats.a", "analysis.stats.b"]]


def test_a_planted_upward_import_and_a_banned_library_are_found(tmp_path):
    root = _plant(tmp_path, {"scaling/spec/__init__.py": "", "scaling/store/__init__.py": "",
                             "scaling/spec/schema.py": "def f():\n    from scaling.store import writer\n",
                             "scaling/store/writer.py": "", "analysis/fit/__init__.py": "",
                             "analysis/fit/curves.py": "import torch\n"})
    bad = violations(root)
    assert any("scaling.spec.schema imports scaling.store" in b for b in bad), bad
    assert any("analysis.fit.curves imports torch" in b for b in bad), bad


def _loaded(code: str) -> set:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return {m.split(".")[0] for m in out.stdout.split()}


def test_the_sweep_driver_loads_no_torch_at_import():
    code = "\n".join(f"import {m}" for m in DRIVER_TORCH_FREE) + "\nimport cluster.cli"
    assert "torch" not in _loaded(code)


# one sweep of each built-in model, as tiny as a sweep gets (2 trials, 2 steps)
_BUILT_IN_SWEEPS = """
import yaml
from scaling.config.sweep import parse_config
def sweep(name, task, model, width, depth):
    return {"name": name, "task": task, "model": {"name": model, "width": width, "depth": depth},
            "axes": {"n_train": [16], "batch_size": [8], "lr": [0.1, 0.2]}, "budget": {"steps": 2},
            "eval": {"points": 2}}
SWEEPS = [sweep("m", {"name": "digits"}, "mlp", 16, 1), sweep("c", {"name": "digits"}, "cnn", 4, 1),
          sweep("r", {"name": "digits"}, "resnet", 1, 1),
          sweep("t", {"name": "text", "corpus": "stdlib"}, "transformer", 32, 1)]
"""


def test_planning_a_sweep_of_built_in_models_loads_no_torch():
    """What the driver does before Ray for every built-in model (the size check, each model's
    parameters for pack sizing) and the MLP's whole plan, in a fresh process: no torch
    (scaling.training.params counts the models; a vmap model's footprint comes from the workers)."""
    code = _BUILT_IN_SWEEPS + """
from cluster.driver.planner import check_model_size, model_params, plan, too_big_to_measure
for raw in SWEEPS:
    cfg = parse_config(raw)
    check_model_size(cfg)
    trials = [cfg.make(p) for p in cfg.points()]
    assert model_params(trials[0]) > 0 and too_big_to_measure(trials[0]) is None, raw
    if raw["model"]["name"] == "mlp":
        assert [u.backend for u in plan(trials, engine="packed", slots=1, memory_bytes=1 << 30,
                                        log=lambda *_: None)] == ["stacked"]
"""
    assert "torch" not in _loaded(code)


@pytest.mark.slow
def test_a_sweep_of_every_built_in_model_never_imports_torch_in_the_driver(tmp_path):
    """Real sweeps on a local Ray, of the MLP (stacked) and the CNN and ResNet (vmap: footprints
    measured by the workers), in a fresh driver process: the workers train them (torch there), the
    driver never imports torch."""
    code = _BUILT_IN_SWEEPS + f"""
import cluster.launch.localray as localray
from cluster.launch.connect import connect
from cluster.driver.sweep import run_sweep
with localray.session(lambda: connect(None, 2)):
    for raw in SWEEPS[:3]:  # the transformer's trials evaluate on the whole text corpus (slow)
        s = run_sweep(parse_config(raw), yaml.safe_dump(raw), {str(tmp_path)!r}, progress=False,
                      log=lambda *_: None)
        assert s.counts["ok"] == 2, (raw["model"], s.counts)
"""
    assert "torch" not in _loaded(code)


def test_analysis_loads_neither_torch_nor_ray():
    names = [n for n in modules(ROOT) if n.startswith("analysis") and not n.endswith("__main__")]
    loaded = _loaded("\n".join(f"import {n}" for n in names))
    assert not {"torch", "ray"} & loaded


@pytest.mark.parametrize("top", ["scaling"])
def test_no_scaling_module_loads_ray(top):
    names = [n for n in modules(ROOT) if n.startswith(top)]
    assert "ray" not in _loaded("\n".join(f"import {n}" for n in names))
