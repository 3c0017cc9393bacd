"""Plug-in tasks: a user's factory from a package outside ``scaling`` (tests/plugin_example)
is checked with the config, trains with its own model, loss and metric, and runs in a sweep."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest

from conftest import run_cli, write_config
from scaling.config.sweep import parse_config
from scaling.errors import ConfigError
from scaling.store.views import load_tables
from scaling.tasks.resolve import load_task, validate_task
from scaling.training.run import run_trial

PLUGIN_DIR = Path(__file__).resolve().parent / "plugin_example"
REGRESSION = "toy_tasks.regression:make_task"


@pytest.fixture(autouse=True)
def plugin_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def config(task, model=None, **extra) -> dict:
    return {"name": "p", "task": task, "model": model or {"name": "task", "width": 16, "depth": 1},
            "axes": {"n_train": 256, "batch_size": 32, "lr": 0.05, "momentum": 0.9},
            "budget": {"steps": 60}, "eval": {"points": 4}, **extra}


def test_plugin_task_trains_with_its_own_model_loss_and_metric():
    cfg = parse_config(config({"name": REGRESSION, "dim": 6, "noise": 0.1}))
    assert cfg.task == {"name": REGRESSION, "dim": 6, "noise": 0.1}, "options as given: part of the trial id"
    assert cfg.engine == "packed", "its own model and loss pack with the vmap backend"
    out = run_trial(cfg.trials()[0])
    row, curves = out["trial"], out["curves"]
    assert row["status"] == "ok", row["error"]
    assert row["n_params"] == 6 * 16 + 16 + 16 + 1, "the plug-in's model, sized by the trial's width"
    assert curves[0]["test_acc"] < 0.5 < 0.9 < row["test_acc"] <= 1.0, "test_acc holds the plug-in's R^2"
    assert row["test_loss"] < 0.05 and row["examples_seen"] == 60 * 32


def test_plugin_model_and_loss_pack_and_match_the_trial_alone():
    import torch

    from scaling.training.run import run_pack

    cfg = parse_config({**config({"name": REGRESSION, "dim": 6}), "axes": {
        "n_train": [128, 256], "batch_size": 32, "lr": [0.02, 0.05], "momentum": 0.9}})
    trials = cfg.trials()
    for mine, trial in zip(run_pack(trials, return_params=True), trials):
        alone = run_trial(trial, return_params=True)
        assert mine["trial"]["backend"] == "vmap" and mine["trial"]["test_acc"] > 0.5
        assert mine["trial"]["test_acc"] == pytest.approx(alone["trial"]["test_acc"], rel=1e-4)
        for k, v in alone["params"].items():
            torch.testing.assert_close(mine["params"][k], v, rtol=1e-4, atol=1e-5)


def test_a_plugin_model_that_vmap_cannot_batch_runs_single_and_says_why():
    from cluster.driver.planner import plan
    from scaling.training.packing import can_pack

    cfg = parse_config(config({"name": "toy_tasks.regression:batchnorm_blobs"}))
    trials = cfg.trials() * 1
    trials = [trials[0], trials[0].replace(seed=1)]
    ok, why = can_pack(trials)
    assert not ok and "BatchNorm1d" in why and "\n" not in why
    lines = []
    units = plan(trials, engine="packed", slots=1, memory_bytes=1 << 30, log=lines.append)
    assert [u.engine for u in units] == ["single", "single"] and "BatchNorm1d" in lines[0]
    assert run_trial(trials[0])["trial"]["status"] == "ok"


def test_plugin_may_return_a_mapping_and_use_the_built_in_models():
    task = validate_task({"name": "toy_tasks.regression:make_blobs", "classes": 4})
    data = load_task(task)
    assert data.n_classes == 4 and data.kind == "vectors" and data.y_train.dtype.name == "int64"
    cfg = parse_config(config(task, {"name": "mlp", "width": 8}))
    assert cfg.engine == "packed", "plain classification data: the packed engine fits"
    with pytest.raises(ConfigError, match="'model.name'.*gives no make_model"):
        parse_config(config(task))


@pytest.mark.parametrize("task, key, message", [
    ({"name": "toy_tasks.nowhere:make"}, "task.name", "cannot import the plug-in module 'toy_tasks.nowhere'"),
    ({"name": "toy_tasks.regression:missing"}, "task.name", "has no function 'missing'"),
    ({"name": "toy_tasks.regression:not_a_factory"}, "task.name", "mark it with the decorator"),
    ({"name": "subprocess:run", "args": "true"}, "task.name", "is not a task factory"),
    ({"name": "toy_tasks/regression:make_task"}, "task.name", "expected 'package.module:function'"),
    ({"name": REGRESSION, "dim": 0}, "task", "ValueError: need dim"),
    ({"name": REGRESSION, "size": 3}, "task", "unexpected keyword argument 'size'"),
    ({"name": REGRESSION, "dim": {1, 2}}, "task.dim", "expected a number, string"),
    ({"name": REGRESSION, "noise": float("nan")}, "task.noise", "finite"),
    ({"name": "toy_tasks.broken:returns_a_list"}, "task.name", "returned a list"),
    ({"name": "toy_tasks.broken:float64_features"}, "task.name", "dtype float64"),
])
def test_bad_plugins_are_refused_in_one_line(task, key, message):
    with pytest.raises(ConfigError) as err:
        parse_config(config(task))
    text = str(err.value)
    assert text.startswith(f"config key '{key}'") and message in text and "\n" not in text, text


def test_a_plugin_outside_the_path_gets_a_hint(monkeypatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(PLUGIN_DIR)])
    monkeypatch.delitem(sys.modules, "toy_tasks.regression", raising=False)
    monkeypatch.delitem(sys.modules, "toy_tasks", raising=False)
    with pytest.raises(ConfigError, match="PYTHONPATH"):
        validate_task({"name": "toy_tasks.regression:make_task", "pool": 77})


PLUGIN_SWEEP = """
name: plugin
task: {name: "toy_tasks.regression:make_task", dim: 6, pool: 512}
model: {name: task, depth: 1}
axes:
  width: [4, 16]
  n_train: [64, 256]
  batch_size: 32
  lr: 0.05
  momentum: 0.9
budget: {steps: 40}
eval: {points: 3}
resources: {cpu: 1}
"""


@pytest.mark.slow
def test_plugin_task_runs_in_a_sweep_on_ray(tmp_path):
    """The real command in a fresh process: its local Ray's workers inherit PYTHONPATH."""
    path = write_config(tmp_path, PLUGIN_SWEEP)
    results = tmp_path / "results"
    python_path = os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")]))
    proc = run_cli("sweep", str(path), "--results", str(results), "--quiet", "--num-cpus", "2",
                   env={"PYTHONPATH": python_path}, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials, curves = load_tables(str(results))
    rows = trials.to_pylist()
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}, [r["error"] for r in rows]
    assert {r["task"] for r in rows} == {"toy_tasks.regression:make_task"} and {r["model"] for r in rows} == {"task"}
    sizes = {r["width"]: r["n_params"] for r in rows}
    assert sizes == {4: 6 * 4 + 4 + 4 + 1, 16: 6 * 16 + 16 + 16 + 1}
    assert all(math.isfinite(r["test_acc"]) for r in rows) and max(r["test_acc"] for r in rows) > 0.8
    assert curves.num_rows == 4 * 3


# ---- a module is imported only once its source shows @task_factory (issue 16, item 3) ----------

SIDE_EFFECTS = '''
import json
from json import dumps
from scaling.tasks import task_factory
from scaling import tasks as T
from scaling.tasks import task_factory as marked

open(MARKER, "a").write("imported ")


def plain(**options):
    return {}


class Klass:
    pass


@task_factory
def make(**options):
    raise ValueError("made")


@T.task_factory
def make_attr(**options):
    raise ValueError("made")


@marked
def make_alias(**options):
    raise ValueError("made")


assigned = task_factory(lambda **options: {})
'''


@pytest.fixture
def side_effects(tmp_path, monkeypatch):
    """A package ``sidefx`` whose __init__ and module ``mod`` write a marker file when imported."""
    marker = tmp_path / "imported"
    pkg = tmp_path / "sidefx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'a').write('package ')\n")
    (pkg / "mod.py").write_text(f"MARKER = {str(marker)!r}\n" + SIDE_EFFECTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("sidefx", "sidefx.mod"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield marker
    for name in ("sidefx", "sidefx.mod"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("func, message", [
    ("plain", "sidefx.mod:plain is not a task factory"),
    ("Klass", "is not a task factory"),
    ("json", "is not a task factory"),
    ("missing", "module 'sidefx.mod' has no function 'missing'"),
    ("dumps", "is imported into 'sidefx.mod' from 'json'; name the module that defines it, 'json:dumps'"),
])
def test_a_function_not_marked_in_the_source_never_imports_its_module(side_effects, func, message):
    with pytest.raises(ConfigError, match=message) as err:
        validate_task({"name": f"sidefx.mod:{func}"})
    assert "\n" not in str(err.value)
    assert not side_effects.exists(), "neither the module nor its package was imported"
    assert "sidefx" not in sys.modules and "sidefx.mod" not in sys.modules


@pytest.mark.parametrize("func", ["make", "make_attr", "make_alias", "assigned"])
def test_a_function_marked_in_the_source_is_imported_and_called(side_effects, func):
    with pytest.raises(ConfigError, match="ValueError: made|returned a mapping"):
        validate_task({"name": f"sidefx.mod:{func}"})
    assert side_effects.read_text() == "package imported "


def test_a_module_without_source_cannot_be_checked_and_is_refused(tmp_path, monkeypatch):
    import py_compile

    (tmp_path / "compiled_only.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w')\n")
    py_compile.compile(str(tmp_path / "compiled_only.py"), cfile=str(tmp_path / "compiled_only.pyc"))
    (tmp_path / "compiled_only.py").unlink()
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="has no Python source to check"):
        validate_task({"name": "compiled_only:make"})
    assert not (tmp_path / "ran").exists() and "compiled_only" not in sys.modules


def test_cli_refuses_an_unmarked_plugin_without_importing_it(tmp_path, side_effects):
    path = write_config(tmp_path, PLUGIN_SWEEP.replace("toy_tasks.regression:make_task", "sidefx.mod:plain"))
    results = tmp_path / "results"
    proc = run_cli("sweep", str(path), "--results", str(results), env={"PYTHONPATH": os.pathsep.join(
        [str(tmp_path), os.environ.get("PYTHONPATH", "")])}, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "error: config key 'task.name': sidefx.mod:plain is not a task factory; mark it with the decorator "
        "@scaling.tasks.task_factory (configs may call only functions made for them)"]
    assert not side_effects.exists() and not results.exists()
