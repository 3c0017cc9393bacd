"""A sweep's local Ray (issue 29, its fixed cost): no idle head processes, workers that start with
the raylet and import what the sweep's tasks need before the first one arrives, and a clean end
that leaves nothing. A real local Ray, in a child process (the session's own Ray, ``ray_local``,
may be up in this one)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cluster.driver.sweep import worker_imports
from cluster.worker.units import WORKER_IMPORTS
from scaling.config.sweep import parse_config

CHILD = r"""
import json, os, sys
from pathlib import Path
import ray
import cluster.launch.localray as localray
from cluster.launch import reaper
from cluster.launch.connect import connect

def command(pid):
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")

@ray.remote(num_cpus=1)
def probe(wait):
    import time
    time.sleep(wait)  # both tasks at once: one worker each
    return os.getpid(), "colorsys" in sys.modules

with localray.session(lambda: connect(None, 2, worker_imports=("colorsys", "no_such_module_h20"))):
    session = dict(localray._session)
    procs = reaper.processes_of(session["cluster"], session["session_dir"])
    commands = {pid: command(pid) for pid in procs}
    probes = ray.get([probe.remote(0.5) for _ in range(2)])
print(json.dumps({"commands": commands, "probes": probes,
                  "left": list(reaper.processes_of(session["cluster"], session["session_dir"]))}))
"""


@pytest.mark.slow  # a local Ray's start and stop: 4-8 s
@pytest.mark.serial
def test_a_local_rays_workers_start_with_it_preloaded_and_nothing_outlives_a_clean_end(tmp_path):
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=180, check=False,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    commands = " | ".join(r["commands"].values())
    assert "gcs_server" in commands and "raylet" in commands, commands
    for idle in ("dashboard/dashboard.py", "autoscaler/_private/monitor.py", "log_monitor.py"):
        assert idle not in commands, f"{idle} runs: {commands}"
    workers = {int(p) for p, c in r["commands"].items() if c.startswith("ray::")} - {
        int(p) for p, c in r["commands"].items() if "Agent" in c}
    assert len(workers) == 2, f"one worker a CPU, started with the raylet: {commands}"
    pids = {pid for pid, _ in r["probes"]}
    assert pids == workers, "the tasks ran in the workers started with the raylet"
    assert all(preloaded for _, preloaded in r["probes"]), "imported before the first task"
    assert r["left"] == [], "a clean end leaves none of the cluster's processes"


def test_workers_import_torch_as_they_start_only_where_the_warm_up_takes_each_of_them():
    raw = {"name": "w", "task": {"name": "digits"}, "model": {"name": "mlp", "width": 8, "depth": 1},
           "axes": {"n_train": [100], "batch_size": [8], "lr": [0.1, 0.2, 0.3, 0.4]}, "budget": {"steps": 5}}
    cfg = parse_config(raw)
    assert worker_imports(cfg, pending=4, num_cpus=2) == WORKER_IMPORTS
    assert worker_imports(cfg, pending=2, num_cpus=2) == WORKER_IMPORTS
    assert worker_imports(cfg, pending=1, num_cpus=2) == (), "a worker no task takes imports nothing"
    assert worker_imports(cfg, pending=4, num_cpus=8) == ()
    two_cpus = parse_config({**raw, "resources": {"cpu": 2}})
    assert worker_imports(two_cpus, pending=4, num_cpus=2) == (), "one trial takes both CPUs: one worker"
    gpu = parse_config({**raw, "resources": {"cpu": 1, "gpu": 1}})
    assert worker_imports(gpu, pending=4, num_cpus=2) == ()
