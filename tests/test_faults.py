"""Fault injection: killed workers, removed nodes, killed drivers, raising trials, racing
drivers, and an S3-compatible store. Each case ends with exactly the expected trial_ids."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401
import pytest

from conftest import NO_CLOUD, ROOT, SMALL_SWEEP, kill_a_busy_worker, run_cli_here, write_config
from scaling.config.sweep import load_config
from scaling.spec.schema import trial_id
from scaling.store.writer import Store
from scaling.store.views import load_tables

pytestmark = pytest.mark.slow

LONG_TRIALS = """
name: {name}
task: {{name: digits}}
model: {{name: mlp, width: 64, depth: 1}}
axes:
  n_train: [800]
  batch_size: [8]
  lr: [0.05]
  seed: {seeds}
budget: {{epochs: {epochs}}}
eval: {{points: 5}}
resources: {{cpu: 1, gpu: {gpu}}}
retries: 2
"""


def cli(config, results, **kw):
    return [sys.executable, "-m", "cluster.cli", "sweep", str(config), "--results", str(results), "--quiet"]


def assert_exactly_once(results, config, statuses=("ok",)):
    cfg = load_config(config)
    expected = {trial_id(t) for t in cfg.trials()}
    raw = Store(str(results)).raw_table("trials").to_pylist()
    raw_ids = [r["trial_id"] for r in raw if r["sweep"] == cfg.name]
    assert sorted(raw_ids) == sorted(expected), "every trial stored exactly once"
    trials, curves = load_tables(str(results))
    trials = trials.filter(pa.compute.equal(trials.column("sweep"), cfg.name))
    assert set(trials.column("status").to_pylist()) <= set(statuses)
    curves = curves.filter(pa.compute.equal(curves.column("sweep"), cfg.name))
    assert set(curves.column("trial_id").to_pylist()) <= expected
    return trials


def test_killed_worker_is_retried(tmp_path):
    """A worker SIGKILLed 0.2 s into its pack (two trials of 4,000 steps: 0.5 s on an idle machine),
    still training as it is killed: Ray runs the pack again, and every trial is stored once."""
    config = write_config(tmp_path, LONG_TRIALS.format(name="kw", seeds="[0, 1, 2, 3]", epochs=40, gpu=0))
    driver = subprocess.Popen(cli(config, tmp_path / "r"), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    killed = kill_a_busy_worker(driver, after_s=0.2)
    out, err = driver.communicate(timeout=300)
    assert killed is not None, f"no worker was seen 0.2 s into a pack: {err[-2000:]}"
    assert driver.returncode == 0, err
    assert "4 ok" in out
    assert_exactly_once(tmp_path / "r", config)


PRUNED_TRIALS = """
name: {name}
task: {{name: digits}}
model: {{name: mlp, width: 64, depth: 1}}
axes:
  n_train: [800]
  batch_size: [8, 32]
  lr: [0.001, 0.003, 0.01, 0.03, 0.1, 0.3]
  seed: [0, 1]
budget: {{epochs: 72}}
eval: {{points: 3}}
search: {{prune: {{rungs: [0.2, 0.5], keep: 0.34, bowl: 1}}}}
resources: {{cpu: 1, gpu: 0}}
retries: 2
"""


def test_killed_worker_with_pruning_on_stores_each_trial_once(tmp_path):
    """Issue 28: a worker killed mid-pack while members are being pruned; the retry resumes the
    pack, and every trial has one raw row across every part, ok or pruned. Each pack holds three
    configurations (six lrs, two seeds, two packs a batch size), enough to rank without the
    store: lr 0.001 stops whichever pack finishes first."""
    config = write_config(tmp_path, PRUNED_TRIALS.format(name="kp"))
    driver = subprocess.Popen(cli(config, tmp_path / "r"), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    killed = kill_a_busy_worker(driver, after_s=0.3)  # a 7,200-step pack (1 s idle) past its first rung
    out, err = driver.communicate(timeout=300)
    assert killed is not None, f"no worker was seen 0.3 s into a pack: {err[-2000:]}"
    assert driver.returncode == 0, err
    trials = assert_exactly_once(tmp_path / "r", config, statuses=("ok", "pruned"))
    statuses = trials.column("status").to_pylist()
    assert "pruned" in statuses and "ok" in statuses, statuses
    rerun = subprocess.run(cli(config, tmp_path / "r"), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert_exactly_once(tmp_path / "r", config, statuses=("ok", "pruned"))  # a pruned row is settled


def test_removed_node_and_raising_trial(tmp_path):
    node_loss = write_config(tmp_path, LONG_TRIALS.format(name="nodes", seeds="[0, 1, 2, 3, 4, 5]",
                                                          epochs=6, gpu=0), "nodes.yaml")
    raising = write_config(tmp_path, LONG_TRIALS.format(name="raising", seeds="[0]", epochs=1, gpu=1),
                           "raising.yaml")
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "scenarios" / "node_loss.py"),
                           str(tmp_path / "r"), str(node_loss), str(raising)],
                          cwd=ROOT, capture_output=True, text=True, timeout=400,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    assert out["stored_before_removal"] < 6, "the node was removed mid-sweep"
    assert out["summary"] == {"ok": 6, "diverged": 0, "failed": 0}
    assert_exactly_once(tmp_path / "r", node_loss)
    assert out["raising"] == {"ok": 0, "diverged": 0, "failed": 1}
    trials, _ = load_tables(str(tmp_path / "r"))
    failed = [r for r in trials.to_pylist() if r["sweep"] == "raising"]
    assert len(failed) == 1 and failed[0]["status"] == "failed"
    assert "CUDA" in failed[0]["error"] or "cuda" in failed[0]["error"], failed[0]["error"]


def test_two_drivers_racing_on_one_sweep(tmp_path):
    config = write_config(tmp_path, SMALL_SWEEP)
    procs = [subprocess.Popen(cli(config, tmp_path / "r"), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    # Both drivers may train a trial and both runs may commit (README: "Which run readers keep"), but
    # their end-of-sweep compactions take the sweep's lease in turn and the last one sees every part:
    # the raw rows then hold each trial exactly once, and readers keep that run with all its curves.
    cfg = load_config(config)
    expected = {trial_id(t) for t in cfg.trials()}
    raw_ids = [r["trial_id"] for r in Store(str(tmp_path / "r")).raw_table("trials").to_pylist()]
    assert sorted(raw_ids) == sorted(expected), "each trial once after the last driver's compaction"
    trials, curves = load_tables(str(tmp_path / "r"))
    assert trials.num_rows == 16
    kept = dict(zip(trials.column("trial_id").to_pylist(), trials.column("run_id").to_pylist()))
    runs_per_trial = {}
    for tid, run in zip(curves.column("trial_id").to_pylist(), curves.column("run_id").to_pylist()):
        runs_per_trial.setdefault(tid, set()).add(run)
    assert runs_per_trial == {t: {kept[t]} for t in expected}
    points = {t: n for t, n in zip(*np.unique(curves.column("trial_id").to_numpy(zero_copy_only=False),
                                              return_counts=True))}
    assert len(set(points.values())) == 1  # every kept run has all its curve rows
    # a compaction after both keeps only each trial's winning run: then the raw rows are exactly once
    from scaling.store.compaction import compact

    compact(Store(str(tmp_path / "r")), cfg.name)
    assert_exactly_once(tmp_path / "r", config)
    after = load_tables(str(tmp_path / "r"))[0]
    assert dict(zip(after.column("trial_id").to_pylist(), after.column("run_id").to_pylist())) == kept


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    """A real S3-compatible server (moto) on loopback, with one bucket."""
    port = _free_port()
    bindir = os.path.dirname(sys.executable)
    server = subprocess.Popen([os.path.join(bindir, "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(NO_CLOUD)
    try:
        import boto3

        deadline = time.monotonic() + 30
        while True:
            try:
                boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                             aws_access_key_id="testing", aws_secret_access_key="testing"
                             ).create_bucket(Bucket="sweeps")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield f"s3://sweeps/results?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1", env
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_sweep_resume_compaction_and_query_against_s3(tmp_path, s3_server, monkeypatch):
    """Against a real S3-compatible server: a sweep (parts left as written), a resume, `scaling
    compact`, then a sweep that compacts by itself; queries, status and verify read the bucket
    through pyarrow datasets. Raw rows: every trial exactly once."""
    uri, env = s3_server
    env = {**os.environ, **env}
    config = write_config(tmp_path, SMALL_SWEEP.replace("seed: [0, 1]", "seed: [0]"))
    first = subprocess.run(cli(config, uri) + ["--no-compact"], cwd=ROOT, capture_output=True, text=True,
                           timeout=300, env=env)
    assert first.returncode == 0, first.stderr
    assert "ran 8 trials" in first.stdout
    again = subprocess.run(cli(config, uri) + ["--no-compact"], cwd=ROOT, capture_output=True, text=True,
                           timeout=300, env=env)
    assert again.returncode == 0 and "8 were already stored" in again.stdout, again.stderr
    for key, value in env.items():  # this process reads the bucket too; given back after the test
        monkeypatch.setenv(key, value)
    store = Store(uri)
    assert not store.local
    before = load_tables(uri)
    assert len(store.parts("small", "trials")) > 1, "commit events, not yet compacted"
    for argv in (["compact", uri], ["verify", uri]):  # in this process, its environment set above
        proc = run_cli_here(*argv)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [len(store.parts("small", t)) for t in ("trials", "curves")] == [1, 1]
    after = load_tables(uri)
    assert [t.num_rows for t in after] == [t.num_rows for t in before] and after[0].num_rows == 8
    grown = write_config(tmp_path, SMALL_SWEEP.replace("seed: [0, 1]", "seed: [0, 1]"), "grown.yaml")
    third = subprocess.run(cli(grown, uri), cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert third.returncode == 0 and "8 were already stored" in third.stdout, third.stderr
    raw = store.raw_table("trials").column("trial_id").to_pylist()
    assert sorted(raw) == sorted(trial_id(t) for t in load_config(grown).trials()), "every trial exactly once"
    assert len(store.parts("small", "trials")) <= 2
    query = run_cli_here("query", uri, "SELECT count(*) AS n, count(DISTINCT c.run_id) AS runs FROM curves c "
                         "JOIN trials t USING (trial_id, run_id)", "--format", "csv")
    assert query.returncode == 0, query.stderr
    n, runs = query.stdout.splitlines()[1].split(",")
    assert int(runs) == 16 and int(n) > 16
    status = run_cli_here("status", uri)
    assert status.returncode == 0 and status.stdout.splitlines()[2].split()[:6] == ["small", "16", "0", "0", "0", "16"]


def test_sweep_joins_an_existing_cluster_by_address_client_and_env(tmp_path):
    config = write_config(tmp_path, SMALL_SWEEP.replace("seed: [0, 1]", "seed: [0]"))
    port = _free_port()
    while 10000 <= port < 20000:  # Ray's worker port range
        port = _free_port()
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "scenarios" / "join_cluster.py"),
                           str(config), str(tmp_path / "r"), str(port)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    for mode in ("address", "client", "env"):
        code, tail, err = out[mode]
        assert code == 0, (mode, err)
        assert tail[0].startswith("ran 8 trials"), (mode, tail)
        trials, _ = load_tables(str(tmp_path / "r" / mode))
        assert trials.num_rows == 8 and set(trials.column("status").to_pylist()) == {"ok"}


def test_unreachable_or_malformed_address_is_one_line_not_a_hang(tmp_path):
    config = write_config(tmp_path, SMALL_SWEEP)
    for address, words in ((f"127.0.0.1:{_free_port()}", "cannot reach a Ray cluster"),
                           ("nonsense", "is not HOST:PORT")):
        proc = subprocess.run(cli(config, tmp_path / "r") + ["--address", address], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and words in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
