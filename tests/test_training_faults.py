"""Training faults are recorded statuses with their message, and the sweep goes on."""

from __future__ import annotations

import math
import os

import pytest

from conftest import ROOT, SMALL_SWEEP, run_cli, write_config
from cluster.driver.sweep import run_sweep
from scaling.config.sweep import parse_config
from scaling.store.views import load_tables
from scaling.training.run import run_trial

PLUGINS = str(ROOT / "tests" / "plugin_example")


@pytest.fixture()
def plugin_path(monkeypatch):
    monkeypatch.syspath_prepend(PLUGINS)


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_nan_or_inf_in_the_data_is_a_diverged_trial(plugin_path, bad):
    raw = {"name": "f", "task": {"name": "toy_tasks.faulty:nan_features", "bad": bad},
           "model": {"name": "mlp", "width": 8, "depth": 1},
           "axes": {"n_train": 100, "batch_size": 10, "lr": 0.1}, "budget": {"epochs": 2}}
    out = run_trial(parse_config(raw).trials()[0])
    assert out["trial"]["status"] == "diverged"
    assert "step" in out["trial"]["error"] and math.isnan(out["trial"]["test_acc"])


@pytest.mark.slow
def test_out_of_memory_is_a_failed_trial_and_the_sweep_goes_on(tmp_path):
    from scaling.spec.schema import BY_NAME

    # widths the schema accepts are bounded (a width of 3e9 is refused before anything runs) ...
    assert not BY_NAME["width"].check(3_000_000_000)
    # ... so a plug-in model asks the allocator for 2^40 weights; the real command, whose
    # local Ray's workers inherit PYTHONPATH and so find the plug-in
    config = write_config(tmp_path, """
        name: oom
        task: {name: "toy_tasks.faulty:huge_model"}
        model: {name: task}
        axes: {n_train: 100, batch_size: 10, lr: 0.1, seed: [0, 1]}
        budget: {epochs: 1}
        retries: 1
        """)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [PLUGINS, os.environ.get("PYTHONPATH")]))}
    proc = run_cli("sweep", str(config), "--results", str(tmp_path / "r"), "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "0 ok, 0 diverged, 2 failed" in proc.stdout
    rows = load_tables(str(tmp_path / "r"))[0].to_pylist()
    assert {r["status"] for r in rows} == {"failed"} and len(rows) == 2
    assert all("allocate" in r["error"] for r in rows), rows[0]["error"]


def test_unwritable_results_directory_is_one_line_naming_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = write_config(tmp_path, SMALL_SWEEP)
    proc = run_cli("sweep", str(config), "--results", str(blocker / "results"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(blocker) in lines[0]
    assert blocker.read_text() == "not a directory"


def test_resources_the_cluster_cannot_give_are_one_clear_error(ray_local, tmp_path):
    from scaling.errors import UserError

    raw = {"name": "gpu", "task": {"name": "digits"}, "axes": {"n_train": 100, "batch_size": 10, "lr": 0.1},
           "budget": {"epochs": 1}, "resources": {"cpu": 1, "gpu": 1}}
    with pytest.raises(UserError, match="0 GPUs, too few for one trial"):
        run_sweep(parse_config(raw), "", str(tmp_path), progress=False, log=lambda *_: None)
