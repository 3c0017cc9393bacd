"""Streaming expansion: ids hashed from templates equal the Trials' own, the pending trials come out
once each in the sweep's order, and the size limits are checked without expanding anything."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings

from conftest import run_cli, run_cli_here, write_config
from scaling.config.sweep import parse_config
from scaling.errors import ConfigError
from scaling.config.expand import pending_trials, scan
from scaling.spec.schema import PointIds
from test_fuzz import FUZZ, small_config, valid_configs

SHAPES = {
    "name": "shapes", "task": {"name": "teacher", "input_dim": 4, "pool": 500},
    "model": {"name": "mlp", "depth": 1},
    "axes": {"n_train": [50, 200], "batch_size": [8, 16], "lr": [0.01, 0.1],
             "optimizer": ["sgd", "adamw"], "momentum": [0.0, 0.9], "nesterov": [False, True],
             "beta2": [0.95, 0.999], "weight_decay": [0.0, 0.1], "width": [32, 256],
             "schedule": ["constant", "cosine", "wsd"], "decay_frac": [0.2, 0.5], "warmup_steps": [0, 10],
             "seed": [0, 1]},
    "budget": {"steps": 20}, "metrics": {"noise_scale": True}, "engine": "single",
}
"""Every rule that shapes a canonical config at once: fields that apply to one optimizer or schedule
only, a field that applies only when the momentum is positive, values equal to their defaults
(left out) and legacy keys (always written), a computed default (width), metrics."""


def ids_of(trials) -> list[str]:
    return [t.trial_id for t in trials]


def test_template_ids_equal_the_trials_own_for_every_shape():
    cfg = parse_config(SHAPES)
    ids = PointIds(cfg.make, tuple(cfg.axes))
    points = list(cfg.points())
    assert len(points) > 5000
    assert [ids(p) for p in points] == [_slow_id(cfg.make(p)) for p in points]
    expected = ids_of(cfg.trials())
    assert len(set(expected)) < len(points), "fields that do not apply make some points the same trial"
    expansion = scan(cfg)
    assert expansion.total == len(expected) and expansion.pending == len(expected)
    assert ids_of(pending_trials(cfg, expansion)) == expected, "each once, in the sweep's order"


def _slow_id(trial) -> str:
    from scaling.spec.schema import trial_id

    return trial_id(trial.to_dict())


def test_done_trials_are_skipped_and_the_rest_come_out_in_order():
    cfg = parse_config(SHAPES)
    expected = ids_of(cfg.trials())
    done = np.sort(np.array([int(i, 16) for i in expected[::3]], dtype=np.uint64))
    expansion = scan(cfg, done)
    assert expansion.done == len(done) and expansion.pending == len(expected) - len(done)
    assert ids_of(pending_trials(cfg, expansion)) == [i for n, i in enumerate(expected) if n % 3]


@settings(FUZZ, max_examples=150)
@given(valid_configs())
def test_streaming_expansion_matches_the_trials_of_any_valid_config(raw):
    cfg = small_config(raw)
    if cfg is None:
        return
    try:
        expected = ids_of(cfg.trials())
    except ConfigError:
        with pytest.raises(ConfigError):
            scan(cfg)
        return
    expansion = scan(cfg)
    assert expansion.total == len(expected)
    assert ids_of(pending_trials(cfg, expansion)) == expected


def test_size_limits_are_counted_not_expanded(tmp_path):
    from cluster.driver.sweep import LARGE_LIMIT, check_size

    def sweep(n_lr: int, n_seeds: int):
        return parse_config({"name": "big", "task": {"name": "digits"}, "budget": {"steps": 1},
                             "axes": {"n_train": [100], "batch_size": [8], "lr": {"log": [0.001, 1.0], "num": n_lr},
                                      "seed": {"linear": [0, n_seeds - 1], "num": n_seeds}}})

    with pytest.raises(ConfigError, match="--allow-large"):
        check_size(sweep(2, 50_001), allow_large=False)
    check_size(sweep(2, 50_001), allow_large=True)
    assert sweep(100, 100_000).count() == LARGE_LIMIT
    check_size(sweep(100, 100_000), allow_large=True)
    with pytest.raises(ConfigError, match="even with --allow-large"):
        check_size(sweep(101, 99_010), allow_large=True)
    path = write_config(tmp_path, "name: huge\ntask: {name: digits}\nbudget: {steps: 1}\naxes:\n"
                                  "  n_train: [100]\n  batch_size: [8]\n  lr: {log: [0.001, 1.0], num: 100000}\n"
                                  "  seed: {linear: [0, 99999], num: 100000}\n")
    proc = run_cli("sweep", str(path), "--results", str(tmp_path / "r"), "--allow-large", timeout=120)
    assert proc.returncode == 2 and "10,000,000,000 trials" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_filled_ids_keep_1_1p0_and_true_apart():
    """The number cache is split by exact type: 1, 1.0 and True are equal dict keys but
    different JSON, so different ids; 0.0 and -0.0 likewise, so zeros are not cached."""
    import hashlib

    from scaling.spec.schema import _fill

    template = (('{"v":', '}'), ("v",))
    got = [_fill(template, {"v": v}) for v in (1, 1.0, True, 1, 1.0, -0.0, 0.0)]
    want = [hashlib.sha256(t.encode()).hexdigest()[:16]
            for t in ('{"v":1}', '{"v":1.0}', '{"v":true}', '{"v":-0.0}', '{"v":0.0}')]
    assert got == want[:3] + want[:2] + want[3:]


def test_a_large_sweep_hashes_its_ids_while_ray_starts():
    """cluster.driver.sweep._scan_while: the scan runs while the session starts; the sweep is announced
    and driven only after both; a scan error surfaces (after the session is left), as does a
    failed start (after the scan is done)."""
    import contextlib
    import threading

    from cluster.driver.sweep import _scan_while

    events, scanning = [], threading.Event()

    def scan_fn(result="expansion", fail=False):
        def run():
            scanning.set()
            events.append("scan")
            if fail:
                raise ValueError("bad axes")
            return result
        return run

    @contextlib.contextmanager
    def session(fail=False):
        assert scanning.wait(5), "the scan started before Ray"
        events.append("ray up")
        if fail:
            raise RuntimeError("ray would not start")
        try:
            yield
        finally:
            events.append("ray down")

    class Exp:
        pending = 3

    out = _scan_while(scan_fn(Exp), session(), lambda e: events.append("announce"),
                      lambda e: events.append(("drive", e.pending)))
    assert out is Exp and events[-3:] == ["announce", ("drive", 3), "ray down"]
    assert set(events[:2]) == {"scan", "ray up"}

    class Done:
        pending = 0

    events.clear(), scanning.clear()
    _scan_while(scan_fn(Done), session(), lambda e: events.append("announce"), lambda e: events.append("drive"))
    assert "drive" not in events and events[-1] == "ray down"

    events.clear(), scanning.clear()
    with pytest.raises(ValueError, match="bad axes"):
        _scan_while(scan_fn(fail=True), session(), lambda e: events.append("announce"), lambda e: None)
    assert "announce" not in events and events[-1] == "ray down"

    events.clear(), scanning.clear()
    with pytest.raises(RuntimeError, match="would not start"):
        _scan_while(scan_fn(Exp), session(fail=True), lambda e: events.append("announce"), lambda e: None)
    assert "scan" in events and "announce" not in events


NEAR = """
name: near
task: {name: digits}
model: {name: mlp, width: 8, depth: 1}
axes:
  n_train: 50
  batch_size: 16
  lr: LR
  seed: [0, 1]
budget: {steps: 4}
eval: {points: 2}
"""


@pytest.mark.slow
def test_a_rounded_value_that_extends_a_sweep_warns_and_snap_stores_nothing_new(ray_local, tmp_path):
    """A value typed from a rounded printout is not the stored one: the sweep says so and names
    the stored value; --snap uses the stored value, so nothing new runs or is stored. The
    command runs in this process (what it prints and stores, not its process) on the session's
    Ray, which it joins."""
    from scaling.store.writer import Store

    results = str(tmp_path / "r")
    base = write_config(tmp_path, NEAR.replace("LR", "{log: [0.001, 0.01], num: 3}"), "base.yaml")
    assert run_cli_here("sweep", str(base), "--results", results, "--quiet").returncode == 0
    stored = sorted(Store(results).raw_table("trials").column("lr").to_pylist())
    assert len(stored) == 6 and 0.00316227766017 in stored
    rounded = write_config(tmp_path, NEAR.replace("LR", "[0.001, 0.00316228, 0.01, 0.1]"), "more.yaml")

    dry = run_cli_here("sweep", str(rounded), "--results", results, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "warning: lr 0.00316228 is within 1e-06 (relative) of the stored 0.00316227766017" \
        in dry.stdout, dry.stdout
    assert "0.001 " not in dry.stdout.split("warning")[-1], "a stored value is no warning"
    assert re.search(r"8 trials, 4 already stored, 4 to run", dry.stdout), dry.stdout

    snapped = run_cli_here("sweep", str(rounded), "--results", results, "--snap", "--quiet")
    assert snapped.returncode == 0, snapped.stderr
    assert "snapped: lr 0.00316228 -> the stored 0.00316227766017" in snapped.stdout
    assert "8 trials, 6 already stored, 2 to run" in snapped.stdout, snapped.stdout
    lrs = Store(results).raw_table("trials").column("lr").to_pylist()
    assert len(lrs) == 8 and 0.00316228 not in lrs, "only lr 0.1 is new; the rounded value is never stored"
