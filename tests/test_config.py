"""Config parsing, validation, axis expansion and trial ids."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, run_cli, write_config
from scaling.config import load_config, parse_config, trial_id
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
