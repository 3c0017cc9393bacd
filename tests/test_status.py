"""``scaling status`` reads each stored sweep.yaml as data: it imports and calls nothing the
store names, and a malformed, huge or odd stored config leaves a blank ``in_config`` with a
one-line warning, never a traceback (issue 16, items 3 and 12)."""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime, timezone

import pytest
import yaml

from conftest import run_cli, run_cli_here
from scaling.config.sweep import count_trials, parse_config
from scaling.errors import ConfigError, StoreError
from scaling.spec.schema import as_trial
from scaling.store.writer import Store

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
GOOD = "name: {name}\ntask: {{name: digits}}\naxes: {{n_train: [100, 200], batch_size: [16, 128], lr: 0.1}}\n" \
       "budget: {{epochs: 1}}\n"
SIDE_EFFECT = """
open({marker!r}, "w").write("imported")
from scaling.tasks import task_factory


@task_factory
def make(**options):
    open({marker!r}, "a").write(" and called")
    raise ValueError("never mind")
"""


def one_trial(sweep_seed: int) -> dict:
    """One stored trial row, as the runner writes it."""
    trial = {"task": {"name": "digits"}, "n_train": 100, "batch_size": 16, "lr": 0.1, "seed": sweep_seed,
             "budget": {"epochs": 1.0}, "eval": {"points": 3}}
    row = {**as_trial(trial).columns(), "run_id": uuid.uuid4().hex, "status": "ok", "error": None, "steps": 7,
           "test_acc": 0.5, "wall_s": 1.0, "host": "h", "start_time": T0, "end_time": T0, "version": "t"}
    return {"trial": row, "curves": []}


def store_with(tmp_path, configs: dict) -> str:
    """A store whose sweeps hold one trial each and the given sweep.yaml text (None: no text
    but a FIFO in its place)."""
    root = tmp_path / "results"
    store = Store(str(root))
    for i, (name, text) in enumerate(configs.items()):
        store.write_result(name, one_trial(i))
        if text is None:
            os.mkfifo(root / name / "sweep.yaml")
        else:
            store.save_config(name, text)
    return str(root)


def test_status_counts_stored_configs_as_data_and_never_imports_a_plugin(tmp_path):
    marker = tmp_path / "marker"
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "status_side_effect.py").write_text(SIDE_EFFECT.format(marker=str(marker)))
    root = store_with(tmp_path, {
        "good": GOOD.format(name="good"),
        "plugin": GOOD.format(name="plugin").replace("{name: digits}", '{name: "status_side_effect:make"}'),
        "malformed": "name: [unclosed\n",
        "not_a_sweep": "- 1\n- 2\n",
        "duplicate": GOOD.format(name="duplicate") + "name: other\n",
        "huge": GOOD.format(name="huge") + "description: " + "x" * 3_000_000 + "\n",
        "fifo": None,
        "python_tag": GOOD.format(name="python_tag") + "description: !!python/object/apply:os.system ['touch "
                      + str(tmp_path / "PWNED") + "']\n",
    })
    t0 = time.monotonic()
    proc = run_cli("status", root, env={"PYTHONPATH": os.pathsep.join(filter(None, [str(plugins), os.environ.get("PYTHONPATH")]))},
                   timeout=60)
    assert time.monotonic() - t0 < 30, "a huge stored config is refused by its size, not parsed"
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not marker.exists(), "status imported (or called) the plug-in a stored config names"
    assert not (tmp_path / "PWNED").exists()
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[2:-1]}
    # 2 x 2 grid, batch_size 128 > n_train 100 left out: 3 trials; the plug-in's config counts too
    assert rows["good"][-2:] == ["3", "2"] and rows["plugin"][-2:] == ["3", "2"]
    blank = {"malformed", "not_a_sweep", "duplicate", "huge", "fifo", "python_tag"}
    assert all(len(rows[name]) == 6 for name in blank), proc.stdout  # sweep + 5 counts, in_config blank
    warnings = proc.stderr.strip().splitlines()
    assert len(warnings) == len(blank) and all(w.startswith("warning: sweep '") for w in warnings), proc.stderr
    assert {w.split("'")[1] for w in warnings} == blank
    assert any("is given twice" in w for w in warnings) and any("over the limit" in w for w in warnings)


@pytest.mark.parametrize("raw", [
    {"axes": {"n_train": [100, 200], "batch_size": [16, 128], "lr": {"log": [0.01, 1.0], "num": 3}}},
    {"axes": {"n_train": {"log2": [64, 1024]}, "batch_size": {"log2": [1, 2048]}, "lr": 0.1, "seed": [0, 1]}},
    {"axes": {"n_train": 100, "batch_size": 16, "lr": {"loguniform": [0.01, 1.0]}},
     "search": {"kind": "random", "samples": 7}},
])
def test_count_trials_agrees_with_the_parsed_config(raw):
    raw = {"name": "t", "task": "digits", "budget": {"steps": 1}, **raw}
    cfg = parse_config(raw)
    assert count_trials(raw) == cfg.count() - (cfg.skipped() or 0)
    assert count_trials(raw) == len(cfg.trials()) or cfg.search.kind == "random"


def test_count_trials_reads_the_task_as_data():
    raw = yaml.safe_load(GOOD.format(name="t"))
    raw["task"] = {"name": "no_such_module_anywhere:make"}
    assert count_trials(raw) == 3
    with pytest.raises(ConfigError, match="cannot import the plug-in module"):
        parse_config(raw)


def test_counting_two_axes_of_100000_values_does_not_form_their_pairs():
    axes = {"n_train": {"linear": [1, 10**9], "num": 100_000}, "batch_size": {"linear": [1, 2**24], "num": 100_000},
            "lr": 0.1}
    t0 = time.monotonic()
    n = count_trials({"name": "t", "task": "digits", "budget": {"steps": 1}, "axes": axes})
    assert 0 < n < 10**10 and time.monotonic() - t0 < 5


def test_a_renamed_sweep_folder_is_counted_and_said_so(tmp_path):
    """Issue 26: a renamed sweep folder showed 'stored 0' (its rows name the old sweep). Now status
    counts its trials and says, in one warning line, what a sweep of the old name would do."""
    root = store_with(tmp_path, {"k1": GOOD.format(name="k1"), "k2": GOOD.format(name="k2")})
    os.rename(os.path.join(root, "k1"), os.path.join(root, "renamed"))
    proc = run_cli_here("status", root)
    assert proc.returncode == 0, proc.stderr
    row = next(line.split() for line in proc.stdout.splitlines() if line.startswith("renamed"))
    assert row[:6] == ["renamed", "1", "0", "0", "0", "1"], proc.stdout  # ok, diverged, pruned, failed, stored
    warned = [line for line in proc.stderr.splitlines() if "renamed" in line]
    assert len(warned) == 1 and "holds sweep 'k1'" in warned[0] and "rename the folder back" in warned[0]
    assert Store(root).check_for_sweep("k1") and "was it renamed?" in Store(root).check_for_sweep("k1")[0]
    assert Store(root).check_for_sweep("k2") == [], "a sweep in its own folder gets no warning"


@pytest.mark.slow
def test_sweep_refuses_results_inside_a_sweep_folder_before_training(tmp_path):
    """Issue 26, item 11: --results pointing at a sweep folder (or inside one) trained everything and
    then failed; now it is one line (exit 2) before Ray starts, and nothing is written there."""
    from conftest import SMALL_SWEEP, write_config

    root = store_with(tmp_path, {"k1": GOOD.format(name="k1")})
    before = sorted(os.listdir(os.path.join(root, "k1")))
    config = write_config(tmp_path, SMALL_SWEEP)
    for dry in ([], ["--dry-run"]):  # the dry run refuses it too, rather than plan a sweep there
        proc = run_cli("sweep", str(config), "--results", os.path.join(root, "k1"), "--quiet", *dry)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (dry, proc.stderr[-2000:])
        assert "is a sweep folder" in lines[0] and f"--results {root}" in lines[0]
    assert sorted(os.listdir(os.path.join(root, "k1"))) == before
    with pytest.raises(StoreError, match="inside the sweep folder"):  # the same check, a level deeper
        Store(os.path.join(root, "k1", "trials", "x")).check_for_sweep("small")
