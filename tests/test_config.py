"""Config parsing, validation, axis expansion and trial ids."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, run_cli, write_config
from scaling.config.sweep import load_config, parse_config
from scaling.spec.schema import trial_id
from scaling.errors import ConfigError

BASE = {
    "name": "t",
    "task": {"name": "digits"},
    "model": {"name": "mlp", "width": 16, "depth": 1},
    "axes": {"n_train": [100, 200], "batch_size": {"log2": [4, 128]},
             "lr": {"log": [0.01, 1.0], "num": 5}, "momentum": [0.0, 0.9], "seed": [0, 1, 2]},
    "budget": {"epochs": 20},
}


def cfg(**changes):
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split("__")
        for p in parents:
            node = node[p]
        if value is ...:
            del node[last]
        else:
            node[last] = value
    return parse_config(raw)


def test_grid_expands_to_the_cartesian_product():
    sweep = cfg()
    trials = sweep.trials()
    assert sweep.count() == 2 * 6 * 5 * 2 * 3
    # n_train 100 with batch_size 128 would repeat examples in a batch: left out
    assert sweep.skipped() == 1 * 5 * 2 * 3 and len(trials) == sweep.count() - sweep.skipped()
    assert all(t.batch_size <= t.n_train for t in trials)
    assert sorted({t.batch_size for t in trials}) == [4, 8, 16, 32, 64, 128]
    lrs = sorted({t.lr for t in trials})
    assert lrs[0] == 0.01 and lrs[-1] == 1.0 and len(lrs) == 5
    assert math.isclose(lrs[2], 0.1, rel_tol=1e-9)
    assert len({t.trial_id for t in trials}) == len({trial_id(t.to_dict()) for t in trials}) == len(trials)


def test_single_values_and_defaults():
    sweep = cfg(axes__n_train=300, axes__momentum=..., axes__seed=..., axes__batch_size=32)
    trials = sweep.trials()
    assert len(trials) == 5
    assert all(t.n_train == 300 and t.momentum == 0.0 and t.seed == 0 for t in trials)


def test_axes_may_override_model_width():
    trials = cfg(axes__width=[8, 64]).trials()
    assert sorted({t.width for t in trials}) == [8, 64]


def test_random_search_is_reproducible_and_mixes_with_grid():
    axes = {"n_train": [100, 200], "batch_size": [16, 64],
            "lr": {"loguniform": [1.0e-5, 1.0e-1]},
            "momentum": {"one_minus_loguniform": [1.0e-3, 1.0e-1]}}
    a = cfg(axes=axes, search={"kind": "random", "samples": 8, "seed": 0}).trials()
    b = cfg(axes=axes, search={"kind": "random", "samples": 8, "seed": 0}).trials()
    c = cfg(axes=axes, search={"kind": "random", "samples": 8, "seed": 1}).trials()
    more = cfg(axes=axes, search={"kind": "random", "samples": 12, "seed": 0}).trials()
    assert a == b and a != c
    assert len(a) == 8 * 4
    assert more[: len(a)] == a, "adding samples keeps the earlier ones"
    assert all(1e-5 <= t.lr <= 1e-1 and 0.9 <= t.momentum <= 0.999 for t in a)
    # each random (lr, momentum) draw is paired with the whole n_train x batch_size grid
    by_draw = {}
    for t in a:
        by_draw.setdefault((t.lr, t.momentum), set()).add((t.n_train, t.batch_size))
    assert len(by_draw) == 8 and all(len(v) == 4 for v in by_draw.values())


GOLDEN = {"task": {"name": "digits"}, "model": {"name": "mlp", "width": 16, "depth": 1},
          "n_train": 100, "batch_size": 32, "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0,
          "seed": 0, "budget": {"epochs": 20.0}, "eval": {"points": 20}}


def test_trial_id_is_stable_across_processes_and_key_order():
    code = ("import json,sys; from scaling.config import trial_id;"
            "print(trial_id(json.loads(sys.stdin.read())))")
    shuffled = dict(reversed(list(GOLDEN.items())))
    ids = {subprocess.run([sys.executable, "-c", code], input=json.dumps(t), capture_output=True,
                          text=True, cwd=ROOT, env={"PYTHONHASHSEED": str(seed)}).stdout.strip()
           for seed, t in ((1, GOLDEN), (2, shuffled))}
    assert ids == {trial_id(GOLDEN)}


def test_trial_id_golden_value():
    # If this changes, every stored sweep would rerun from scratch: change it only on purpose.
    assert trial_id(GOLDEN) == "cc9b1092f475e000"


def test_expanded_trial_matches_golden_config():
    sweep = cfg(axes={"n_train": 100, "batch_size": 32, "lr": 0.1, "momentum": 0.9},
                model={"name": "mlp", "width": 16, "depth": 1})
    assert [t.to_dict() for t in sweep.trials()] == [GOLDEN]


@pytest.mark.parametrize("change, key", [
    ({"bogus": 1}, "bogus"),
    ({"axes__momentum": [0.0, 1.0]}, "axes.momentum"),
    ({"axes__lr": -1}, "axes.lr"),
    ({"axes__lr": 0}, "axes.lr"),
    ({"axes__n_train": [100, 5000]}, "axes.n_train"),
    ({"axes__batch_size": 0}, "axes.batch_size"),
    ({"axes__seed": []}, "axes.seed"),
    ({"axes__lr": "1e-3"}, "axes.lr"),
    ({"axes__lr": {"loguniform": [1.0e-5, 1.0e-1]}}, "axes.lr"),
    ({"axes__lr": {"log": [0.0, 1.0], "num": 3}}, "axes.lr"),
    ({"axes__width2": [1]}, "axes.width2"),
    ({"axes__n_train": ...}, "axes.n_train"),
    ({"axes__n_train": 10.5}, "axes.n_train"),
    ({"budget": {"epochs": 1, "steps": 3}}, "budget"),
    ({"budget": {"epochs": -1}}, "budget.epochs"),
    ({"model__width": "wide"}, "model.width"),
    ({"task": {"name": "imagenet"}}, "task.name"),
    ({"task": {"name": "digits", "pool": 3}}, "task.pool"),
    ({"name": "../escape"}, "name"),
    ({"resources": {"cpu": 0}}, "resources.cpu"),
    ({"search": {"kind": "random", "samples": 4}}, "search.kind"),
])
def test_bad_configs_name_the_key(change, key):
    with pytest.raises(ConfigError) as err:
        cfg(**change)
    assert f"'{key}'" in str(err.value)
    assert "\n" not in str(err.value)


def test_n_train_limit_follows_the_task():
    teacher = cfg(task={"name": "teacher", "pool": 500}, axes__n_train=[100, 500])
    assert len(teacher.trials()) > 0
    with pytest.raises(ConfigError, match="500 training examples"):
        cfg(task={"name": "teacher", "pool": 500}, axes__n_train=[501])


def test_huge_sweeps_need_explicit_permission():
    sweep = cfg(axes__seed={"linear": [0, 99999], "num": 100000}, axes__n_train=[100, 200, 300])
    assert sweep.count() > 1_000_000
    with pytest.raises(ConfigError, match="--allow-large"):
        sweep.trials()


def test_yaml_problems_are_config_errors(tmp_path):
    cases = {"notmap.yaml": b"- 1\n- 2\n", "bad.yaml": b"name: [unclosed\n",
             "latin1.yaml": b"name: caf\xe9\n", "tag.yaml": b"name: !!python/object:os.system ls\n"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ConfigError):
            load_config(tmp_path / name)
    with pytest.raises(ConfigError, match="no config file"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("line, key", [
    ("unknown_key: 3", "unknown_key"),
    ("axes: {n_train: 100, batch_size: 16, lr: 0.1, momentum: 1.0}", "axes.momentum"),
    ("axes: {n_train: 100, batch_size: 16, lr: -1}", "axes.lr"),
    ("axes: {n_train: 100000, batch_size: 16, lr: 0.1}", "axes.n_train"),
])
def test_cli_refuses_bad_configs_with_exit_2_and_one_line(tmp_path, line, key):
    body = {"name": "bad", "task": "{name: digits}", "budget": "{epochs: 1}",
            "axes": "{n_train: 100, batch_size: 16, lr: 0.1}"}
    k = line.split(":")[0]
    body[k] = line.split(":", 1)[1].strip()
    path = write_config(tmp_path, "\n".join(f"{a}: {b}" for a, b in body.items()) + "\n")
    proc = run_cli("sweep", str(path), "--results", str(tmp_path / "results"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"'{key}'" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists(), "nothing is written for a refused config"


# ---- hostile files and values through the real command line (issue 16) ------------------------

GOOD = "name: t\ntask: {name: digits}\naxes: {n_train: [100, 200], batch_size: 16, lr: 0.1}\nbudget: {epochs: 1}\n"


def refused(tmp_path, config, *extra) -> str:
    """Run `scaling sweep CONFIG`; check it exits 2 with one line, no traceback and no results."""
    results = tmp_path / "results"
    proc = run_cli("sweep", str(config), "--results", str(results), *extra, timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not proc.stdout
    assert not results.exists(), "nothing is written for a refused config"
    return lines[0]


def test_cli_refuses_a_config_over_the_size_limit_before_parsing_it(tmp_path):
    path = write_config(tmp_path, GOOD + "retries: 101\ndescription: " + "x" * 1_000_000 + "\n")
    line = refused(tmp_path, path)
    assert "over the limit of 1,000,000 bytes" in line and "--max-config-bytes" in line
    # the flag raises the limit: the same file is then parsed, and stops at a later check
    assert "'retries'" in refused(tmp_path, path, "--max-config-bytes", "2000000")
    assert "--max-config-bytes" in refused(tmp_path, write_config(tmp_path, GOOD), "--max-config-bytes", "0")


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "directory"])
def test_cli_refuses_a_path_that_is_not_a_regular_file_without_reading_it(tmp_path, kind):
    import os

    path = {"fifo": tmp_path / "sweep.yaml", "/dev/zero": "/dev/zero", "directory": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)  # opening it for reading would block until a writer came
    line = refused(tmp_path, path)
    assert {"fifo": "a FIFO", "/dev/zero": "a character device", "directory": "a directory"}[kind] in line


@pytest.mark.parametrize("text, key, where", [
    (GOOD + "name: other\n", "'name'", "at lines 1 and 5"),
    (GOOD.replace("lr: 0.1}", "lr: 0.1, n_train: 5}"), "'axes.n_train'", "on line 3 (columns 8 and"),
    (GOOD + "model: {width: 8}\nmodel: {depth: 2}\n", "'model'", "at lines 5 and 6"),
    (GOOD + "description: {1: a, 0x1: b}\n", "'description.0x1'", "on line 5"),  # one key by value
])
def test_cli_refuses_duplicate_keys_naming_the_key_and_both_lines(tmp_path, text, key, where):
    line = refused(tmp_path, write_config(tmp_path, text))
    assert f"config key {key}: is given twice" in line and where in line


def test_a_key_next_to_a_merge_overrides_it_and_is_not_a_duplicate(tmp_path):
    path = write_config(tmp_path, GOOD + "model: {<<: {width: 8, depth: 2}, width: 16}\n")
    assert {(t.width, t.depth) for t in load_config(path).trials()} == {(16, 2)}


def test_duplicate_keys_are_refused_by_the_c_and_the_python_loader(tmp_path, monkeypatch):
    import scaling.config.file as configfile

    path = write_config(tmp_path, GOOD + "name: other\n")
    assert configfile.Loader is yaml.CSafeLoader, "libyaml's loader where PyYAML has it"
    for loader in (yaml.CSafeLoader, yaml.SafeLoader):
        monkeypatch.setattr(configfile, "Loader", loader)
        with pytest.raises(ConfigError, match="'name': is given twice .* at lines 1 and 5"):
            load_config(path)


@pytest.mark.parametrize("line, message", [
    ("task: {name: teacher, pool: 9223372036854775807}", "'task.pool': value 9223372036854775807 is out of range"),
    ("task: {name: teacher, input_dim: 65536, pool: 100000}", "would build an array of"),
    ("model: {width: 9223372036854775807}", "'model.width': value 9223372036854775807 is out of range"),
    ("eval: {points: 9223372036854775807}", "'eval.points': value 9223372036854775807 is out of range"),
    ("budget: {epochs: 1.0e+300}", "'budget.epochs': value 1e+300 is out of range"),
    ("budget: {steps: 9223372036854775807}", "'budget.steps': value 9223372036854775807 is out of range"),
    ("axes: {n_train: 100, batch_size: 1000000, lr: 0.1}", "every batch_size (from 1000000) is larger"),
    ("retries: 9223372036854775807", "'retries': value 9223372036854775807 is out of range"),
    ("packing: {memory_mb: 1.0e+300}", "'packing.memory_mb': value 1e+300 is out of range"),
    ("search: {samples: 9223372036854775807}", "'search.samples': value 9223372036854775807 is out of range"),
    ("axes: {n_train: 100, batch_size: 16, lr: 1.0e5}", "write 1.0e+5"),
    ("budget: {steps: 1e5}", "write 100000"),
])
def test_cli_refuses_values_that_validate_but_cannot_work(tmp_path, line, message):
    key = line.split(":")[0]
    body = {k: v for k, v in yaml.safe_load(GOOD).items()}
    text = "".join(f"{k}: {json.dumps(v)}\n" for k, v in body.items() if k != key) + line + "\n"
    assert message in refused(tmp_path, write_config(tmp_path, text))


def test_cli_refuses_a_negative_num_cpus_in_one_line(tmp_path):
    assert "--num-cpus" in refused(tmp_path, write_config(tmp_path, GOOD), "--num-cpus", "-1")
