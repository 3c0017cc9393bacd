"""End to end: config -> real local Ray -> torch -> Parquet -> SQL, resume, kills."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from conftest import (ROOT, SMALL_SWEEP, kill_a_busy_worker, reap_orphaned_ray_processes, run_cli,
                      run_cli_here, write_config)
from cluster.driver.sweep import run_sweep
from scaling.config.sweep import load_config
from scaling.spec.schema import trial_id
from scaling.store.writer import Store
from scaling.store.views import load_tables


def sweep(tmp_path, text=SMALL_SWEEP, name="sweep.yaml"):
    path = write_config(tmp_path, text, name)
    return load_config(path), path.read_text()


def test_sweep_end_to_end_and_resume(ray_local, tmp_path):
    cfg, text = sweep(tmp_path)
    results = str(tmp_path / "results")
    summary = run_sweep(cfg, text, results, progress=False, log=lambda *_: None)
    assert summary.total == 16 and summary.skipped == 0 and summary.counts["ok"] == 16

    # read back with plain pyarrow, not our reader
    trial_parts = list((tmp_path / "results" / "small" / "trials").glob("*.parquet"))
    rows = [r for p in trial_parts for r in pq.read_table(p).to_pylist()]
    assert sorted(r["trial_id"] for r in rows) == sorted(trial_id(t) for t in cfg.trials())
    assert {r["status"] for r in rows} == {"ok"}
    assert all(r["host"] and r["version"] and r["wall_s"] > 0 for r in rows)
    assert sum(r["test_acc"] for r in rows) / len(rows) > 0.5, "the models learned"
    curve_rows = [r for p in (tmp_path / "results" / "small" / "curves").glob("*.parquet")
                  for r in pq.read_table(p).to_pylist()]
    assert {r["trial_id"] for r in curve_rows} == {r["trial_id"] for r in rows}
    assert (tmp_path / "results" / "small" / "sweep.yaml").read_text() == text

    again = run_sweep(cfg, text, results, progress=False, log=lambda *_: None)
    assert again.skipped == 16 and sum(again.counts.values()) == 0

    # the axes gain a value: only the new trials run
    grown, grown_text = sweep(tmp_path, SMALL_SWEEP.replace("lr: [0.1, 0.2]", "lr: [0.1, 0.2, 0.15]"))
    third = run_sweep(grown, grown_text, results, progress=False, log=lambda *_: None)
    assert third.skipped == 16 and third.counts["ok"] == 8
    trials, curves = load_tables(results)
    assert trials.num_rows == 24 and len(set(trials.column("trial_id").to_pylist())) == 24


def test_a_large_sweeps_path_hashes_while_ray_starts_and_stores_each_trial_once(ray_local, tmp_path, monkeypatch):
    """Sweeps of OVERLAP_TRIALS or more scan their ids on a thread while Ray starts (here joined):
    lowered to 0, a small sweep takes that path, first and on resume, with the same results."""
    import cluster.driver.sweep as runner

    monkeypatch.setattr(runner, "OVERLAP_TRIALS", 0)
    cfg, text = sweep(tmp_path)
    results = str(tmp_path / "results")
    lines = []
    summary = run_sweep(cfg, text, results, progress=False, log=lines.append)
    assert summary.total == 16 and summary.counts["ok"] == 16
    assert lines[0] == "sweep 'small': 16 trials, 0 already stored, 16 to run"
    raw = Store(results).raw_table("trials").column("trial_id").to_pylist()
    assert sorted(raw) == sorted(trial_id(t) for t in cfg.trials())
    grown, grown_text = sweep(tmp_path, SMALL_SWEEP.replace("lr: [0.1, 0.2]", "lr: [0.1, 0.2, 0.15]"))
    third = run_sweep(grown, grown_text, results, progress=False, log=lambda *_: None)
    assert third.skipped == 16 and third.counts["ok"] == 8
    again = run_sweep(grown, grown_text, results, progress=False, log=lambda *_: None)
    assert again.skipped == 24 and sum(again.counts.values()) == 0
    assert len(Store(results).raw_table("trials")) == 24


def test_diverging_trial_is_recorded_and_the_sweep_goes_on(ray_local, tmp_path):
    text = SMALL_SWEEP.replace("lr: [0.1, 0.2]", "lr: [0.1, 1000.0]").replace("seed: [0, 1]", "seed: [0]")
    cfg, text = sweep(tmp_path, text)
    summary = run_sweep(cfg, text, str(tmp_path / "r"), progress=False, log=lambda *_: None)
    assert summary.counts == {"ok": 4, "diverged": 4, "failed": 0}
    trials, _ = load_tables(str(tmp_path / "r"))
    by_lr = {}
    for r in trials.to_pylist():
        by_lr.setdefault(r["lr"], set()).add(r["status"])
    assert by_lr == {0.1: {"ok"}, 1000.0: {"diverged"}}


def test_each_trial_uses_the_threads_it_was_given(ray_local, tmp_path):
    import torch

    from cluster.worker.units import execute_trial

    cfg, _ = sweep(tmp_path)

    @ray_local.remote(num_cpus=1)
    def probe(trial, root):
        torch.set_num_threads(7)
        execute_trial(trial, "probe", root, 1, "cpu")
        return torch.get_num_threads()

    assert ray_local.get(probe.remote(cfg.trials()[0], str(tmp_path / "r"))) == 1


def test_cli_sweep_status_and_query(tmp_path):
    path = write_config(tmp_path, SMALL_SWEEP.replace("seed: [0, 1]", "seed: [0]"))
    results = str(tmp_path / "results")
    proc = run_cli("sweep", str(path), "--results", results)
    assert proc.returncode == 0, proc.stderr
    assert "results:" in proc.stdout and "chosen on 1 - validation accuracy" in proc.stdout
    assert "8/8 done" in proc.stderr, "the progress bar reports done/total"
    status = run_cli_here("status", results)
    assert status.returncode == 0 and status.stdout.splitlines()[2].split()[:6] == ["small", "8", "0", "0", "0", "8"]
    query = run_cli_here("query", results, "SELECT status, count(*) AS n FROM trials GROUP BY status")
    assert query.returncode == 0 and query.stdout.splitlines()[2].split() == ["ok", "8"]
    bad = run_cli_here("query", results, "SELECT nope FROM trials")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: SQL")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["packed", "single"])
def test_sigkill_of_the_driver_then_rerun_stores_every_trial_once(tmp_path, engine):
    """Killed once the first trial is stored (the small-n_train ones finish first) while the rest
    are in flight; 24 trials are enough for that (two seeds: 36 before, the same kill point)."""
    text = SMALL_SWEEP.replace("n_train: [50, 100]", "n_train: [100, 300, 1000]").replace(
        "epochs: 10", "epochs: 20")
    path = write_config(tmp_path, text)
    results = tmp_path / "results"
    expected = {trial_id(t) for t in load_config(path).trials()}
    cmd = [sys.executable, "-m", "cluster.cli", "sweep", str(path), "--results", str(results), "--quiet",
           "--engine", engine]
    driver = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trials_dir = results / "small" / "trials"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = len(list(trials_dir.glob("*.parquet"))) if trials_dir.exists() else 0
        if done >= 1:  # small-n_train trials finish first; the rest are mid-flight
            break
        time.sleep(0.05)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    time.sleep(0.5)
    reap_orphaned_ray_processes()
    stored_before = {p.stem for p in trials_dir.glob("*.parquet")}
    assert 0 < len(stored_before) < len(expected), "the driver was killed halfway"

    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    time.sleep(1.0)  # let any worker of the killed driver finish a write
    store = Store(str(results))
    raw = store.raw_table("trials").column("trial_id").to_pylist()
    assert sorted(raw) == sorted(expected), "every trial stored exactly once"
    raw_curves = store.raw_table("curves")
    assert set(raw_curves.column("trial_id").to_pylist()) == expected
    trials, curves = load_tables(str(results))
    assert trials.num_rows == len(expected)
    per_trial = {}
    for tid, run_id in zip(curves.column("trial_id").to_pylist(), curves.column("run_id").to_pylist()):
        per_trial.setdefault(tid, set()).add(run_id)
    assert all(len(v) == 1 for v in per_trial.values())


def test_retry_failed_reruns_failed_trials_under_the_packed_engine(ray_local, tmp_path):
    """Failed rows (as the driver writes them) are kept by a plain resume and trained again,
    inside packs, with --retry-failed; counted over raw rows of every part."""
    from scaling.training.loop import failed_row

    cfg, text = sweep(tmp_path)
    results = str(tmp_path / "r")
    store = Store(results)
    trials = cfg.trials()
    failed = [t for t in trials if t.batch_size == 16]  # 8 trials: two packs of 4 on the 2 slots
    for t in failed:
        store.write_result(cfg.name, {"trial": failed_row(t, "RuntimeError: worker lost", "packed"), "curves": []})
    lines = []
    first = run_sweep(cfg, text, results, progress=False, log=lines.append)
    assert first.skipped == 8 and first.counts == {"ok": 8, "diverged": 0, "failed": 0}
    assert any("packs" in line for line in lines), "the packed engine trained them"
    again = run_sweep(cfg, text, results, retry_failed=True, progress=False, log=lines.append)
    assert again.skipped == 8 and again.counts == {"ok": 8, "diverged": 0, "failed": 0}
    raw = store.raw_table("trials").to_pylist()
    ok = {r["trial_id"] for r in raw if r["status"] == "ok"}
    assert {t.trial_id for t in trials} == ok, "every trial has an ok run"
    trials_read, curves = load_tables(results)
    assert set(trials_read.column("status").to_pylist()) == {"ok"} and trials_read.num_rows == 16
    assert set(curves.column("trial_id").to_pylist()) == ok
    assert {r["engine"] for r in raw if r["status"] == "ok"} == {"packed"}


def test_retry_failed_reruns_failed_trials_under_the_single_engine(ray_local, tmp_path):
    from scaling.training.loop import failed_row

    cfg, text = sweep(tmp_path, SMALL_SWEEP.replace("seed: [0, 1]", "seed: [0]"))
    results = str(tmp_path / "r")
    store = Store(results)
    trials = cfg.trials()
    for t in trials[:3]:
        store.write_result(cfg.name, {"trial": failed_row(t, "RuntimeError: worker lost", "single"), "curves": []})
    first = run_sweep(cfg, text, results, engine="single", compact=False, progress=False, log=lambda *_: None)
    assert first.skipped == 3 and first.counts["ok"] == 5
    again = run_sweep(cfg, text, results, engine="single", retry_failed=True, compact=False, progress=False,
                      log=lambda *_: None)
    assert again.skipped == 5 and again.counts == {"ok": 3, "diverged": 0, "failed": 0}
    raw = store.raw_table("trials").to_pylist()
    assert sorted((r["trial_id"], r["status"]) for r in raw) == sorted(
        [(t.trial_id, "ok") for t in trials] + [(t.trial_id, "failed") for t in trials[:3]]), \
        "the failed runs stay, each trial has one ok run (raw rows, no compaction)"
    assert {r["engine"] for r in raw if r["status"] == "ok"} == {"single"}
    kept, _ = load_tables(results)
    assert set(kept.column("status").to_pylist()) == {"ok"}


def test_a_trial_whose_curves_part_broke_is_run_again_by_a_plain_resume(ray_local, tmp_path):
    cfg, text = sweep(tmp_path, SMALL_SWEEP.replace("seed: [0, 1]", "seed: [0]"))
    results = tmp_path / "r"
    run_sweep(cfg, text, str(results), engine="single", compact=False, progress=False, log=lambda *_: None)
    victim = sorted((results / "small" / "curves").glob("*.parquet"))[0]
    victim_id = victim.name.split("-")[0]
    victim.write_bytes(victim.read_bytes()[:100])
    lines = []
    with pytest.warns(UserWarning, match=victim.name):
        again = run_sweep(cfg, text, str(results), progress=False, log=lines.append)
    assert "7 already stored, 1 to run" in lines[0] and again.counts["ok"] == 1
    trials, curves = load_tables(str(results))
    assert trials.num_rows == 8 and victim_id in curves.column("trial_id").to_pylist()


@pytest.mark.slow
@pytest.mark.parametrize("config", ["five thousand", "demo"])
def test_a_finished_sweep_has_at_most_20_files_per_table(ray_local, tmp_path, config):
    """Compaction at the end of a sweep (and during it): the demo and a 5,000-trial sweep end with a
    few files per table, and every trial once in them (raw rows). `scaling sweep` runs in this
    process on the session's Ray (2 CPUs, as make demo's on this machine), which it joins."""
    path = write_config(tmp_path, FIVE_THOUSAND) if config == "five thousand" else ROOT / "configs" / "demo.yaml"
    results = tmp_path / "r"
    quiet = ("--quiet",) if config == "five thousand" else ()
    proc = run_cli_here("sweep", str(path), "--results", str(results), *quiet)
    assert proc.returncode == 0, proc.stderr
    cfg = load_config(path)
    for table in ("trials", "curves"):
        files = list((results / cfg.name / table).glob("*.parquet"))
        assert 1 <= len(files) <= 20, (table, len(files))
    raw = Store(str(results)).raw_table("trials").column("trial_id").to_pylist()
    assert sorted(raw) == sorted(t.trial_id for t in cfg.trials()), "every trial exactly once"
    if config == "demo":
        _the_demo_shows_both_laws(results, proc.stdout)


def _the_demo_shows_both_laws(results, summary: str):
    """What make demo promises: the summary and `scaling fit` agree on one falling learning curve
    whose exponent's CI lies below 0, with every bootstrap replicate converged, and B_opt is
    inside the batch grid for at least 70% of the groups."""
    import json
    import re

    fitted = run_cli_here("fit", str(results), "--json")
    assert fitted.returncode == 0, fitted.stderr
    out = json.loads(fitted.stdout)
    fit = out["curves"][0]["fit"]
    b = fit["params"]["b"]
    assert out["metric"] == "error" and fit["monotone"] == "falling"
    assert b["ci_high"] < 0, b
    assert fit["n_boot_converged"] == fit["n_boot"] and fit["n_boot_failed"] == 0
    said = re.search(r"learning curve: (\w+) ~ a\*N\^b \+ c, b = (\S+) \(95% CI (\S+) to (\S+);",
                     summary)
    assert said, summary
    assert said.group(1) == "error"
    assert [float(v) for v in said.groups()[1:]] == [round(b[k], 3) for k in ("value", "ci_low", "ci_high")]
    bopt = run_cli_here("bopt", str(results), "--json")
    assert bopt.returncode == 0, bopt.stderr
    groups = json.loads(bopt.stdout)["groups"]
    interior = sum(g["status"] == "ok" for g in groups)
    assert interior >= 0.7 * len(groups), (interior, len(groups))
    assert re.search(r"B_opt rule .*: (consistent|inconsistent|inconclusive)", summary)
    assert "meaning: here B_opt ~ lr^" in summary


FIVE_THOUSAND = """
name: five_thousand
task: {name: digits}
model: {name: mlp, width: 8, depth: 1}
axes:
  n_train: {log: [20, 1000], num: 10}
  batch_size: [8]
  lr: {log: [0.01, 0.5], num: 10}
  momentum: [0.0, 0.9]
  seed: {linear: [0, 24], num: 25}
budget: {steps: 2}
eval: {points: 2}
"""


KILL_SWEEP = """
name: killed
task: {name: digits}
model: {name: mlp, width: 32, depth: 1}
axes:
  n_train: [100, 400, 1000]
  batch_size: [8, 16]
  lr: [0.05, 0.1]
  seed: [0, 1]
budget: {epochs: EPOCHS}
eval: {points: 5}
resources: {cpu: 1}
retries: 30
packing: {max_members: 3}
"""

# the kill classes, each hit by a trigger rather than by chance: the driver while Ray starts or its
# first packs train (nothing stored), a busy worker (its pack's members retried), the driver once
# trials are stored and others are in flight (the resume skips the stored, reruns the rest), a busy
# worker of the resumed driver (retries after a resume)
KILL_PLAN = (("driver", "starting"), ("worker", "busy"), ("driver", "stored"), ("worker", "busy"))


@pytest.mark.slow
def test_sigkills_of_the_driver_and_workers_at_random_points_lose_and_double_nothing(tmp_path):
    """SIGKILLs of the driver or of a busy worker, at random times (a fixed seed) within each kill
    class of KILL_PLAN; the driver is started again after each of its deaths. No other writer is
    alive, and nothing is compacted, so the raw rows show every run ever committed: each trial
    exactly one, with every one of its curve rows.

    Each class is hit by its trigger, not by chance, so one kill of each is what the exactly-once
    claim needs here (4 kills; 18-19 s on an idle machine). A worker is killed only while it trains
    (conftest.kill_a_busy_worker), and the sweep is long enough for that on an idle machine too:
    with 40 epochs its trials lasted about 1 s in all there, and the sweep ended before kill 2.
    Ten kills at uniform 2-7 s intervals (what this test did before, 71-166 s) hit one driver
    class only: at each of its driver kills nothing was stored yet (600 epochs a trial), so a
    resume past stored trials was never tested there. The long random stress run is this test
    with SCALING_SIGKILL_STRESS=N: N more kills of a random class (a worker with p=0.6) at
    uniform 2-7 s intervals, on a sweep 80*N epochs long."""
    import random

    from scaling.training.loop import eval_steps

    rng = random.Random(1313)
    extra = int(os.environ.get("SCALING_SIGKILL_STRESS", "0"))
    plan = list(KILL_PLAN) + [("worker" if rng.random() < 0.6 else "driver", "random") for _ in range(extra)]
    path = write_config(tmp_path, KILL_SWEEP.replace("EPOCHS", str(80 * max(1, extra))))
    total = len(load_config(path).trials())
    results = tmp_path / "r"
    cmd = [sys.executable, "-m", "cluster.cli", "sweep", str(path), "--results", str(results), "--quiet",
           "--no-compact"]

    def stored() -> int:
        parts = results / "killed" / "trials"
        return len(Store(str(results)).raw_table("trials")) if parts.exists() else 0

    def wait(driver, until, timeout=120.0):
        deadline = time.monotonic() + timeout
        while driver.poll() is None and not until() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert driver.poll() is None, f"the sweep finished before kill {len(kills) + 1} of {plan}; make it longer"

    kills, driver = [], None
    for kind, when in plan:
        if driver is None:
            driver = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            started = time.monotonic()
        if when == "starting":
            pause = rng.uniform(0.5, 3.0)
            wait(driver, lambda: time.monotonic() > started + pause)  # noqa: B023
        elif when == "stored":
            wait(driver, lambda: any((results / "killed" / "trials").glob("*.parquet")))
            pause = time.monotonic() + rng.uniform(0.0, 0.5)
            wait(driver, lambda: time.monotonic() > pause)  # noqa: B023
        elif when == "random":
            pause = time.monotonic() + rng.uniform(2.0, 7.0)
            wait(driver, lambda: time.monotonic() > pause)  # noqa: B023
        if kind == "worker":  # never a driver kill instead: one of this driver's workers, some way into a pack
            after = rng.uniform(0.1, 0.5) if when == "busy" else 0.0
            assert kill_a_busy_worker(driver, after_s=after, timeout_s=60), \
                f"no worker trained {after:.2f} s (the sweep ended, or 60 s passed) before kill {len(kills) + 1} " \
                f"of {plan}; make it longer"
            kills.append(("worker", None))
            continue
        os.kill(driver.pid, signal.SIGKILL)
        driver.communicate(timeout=60)
        time.sleep(0.5)
        reap_orphaned_ray_processes()
        kills.append(("driver", stored()))
        driver = None
    if driver is None:
        driver = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err[-3000:]
    assert len(kills) == len(plan) and {k for k, _ in kills} == {"driver", "worker"}, kills
    assert any(0 < n < total for k, n in kills if k == "driver"), \
        f"a driver kill with some trials stored and others not: {kills}"
    cfg = load_config(path)
    store = Store(str(results))
    raw = store.raw_table("trials").to_pylist()
    assert sorted(r["trial_id"] for r in raw) == sorted(t.trial_id for t in cfg.trials()), \
        "each trial_id has exactly one committed run"
    assert {r["status"] for r in raw} == {"ok"}
    curves = store.raw_table("curves")
    per_run = {}
    for run in curves.column("run_id").to_pylist():
        per_run[run] = per_run.get(run, 0) + 1
    by_id = {t.trial_id: t for t in cfg.trials()}
    for r in raw:
        assert per_run.get(r["run_id"]) == len(eval_steps(by_id[r["trial_id"]], r["steps"])), r["trial_id"]
    assert "compacted" in run_cli_here("compact", str(results)).stdout
    assert sorted(store.raw_table("trials").column("run_id").to_pylist()) == sorted(r["run_id"] for r in raw)
