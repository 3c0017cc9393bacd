"""Shared fixtures: one real local Ray per test session, small sweep configs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NO_CLOUD = {
    # AWS SDK (pyarrow's S3): no instance-metadata lookups, no credential or config files
    "AWS_EC2_METADATA_DISABLED": "true", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    # Google Cloud C++ (pyarrow's GCS) and google-auth: the metadata server is a closed loopback port
    "GCE_METADATA_ROOT": "127.0.0.1:9", "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9",
    "NO_GCE_CHECK": "True", "GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/gcp.json",
    "CLOUDSDK_CONFIG": "/nonexistent/gcloud",
}
"""Environment for tests that touch cloud URIs: nothing the SDKs look up leaves loopback."""


# ---- which tests may run beside others (make check runs two pytest-xdist workers) --------------

SERIAL_MODULES = frozenset({
    "test_sweep", "test_security", "test_faults", "test_storage", "test_ddp", "test_progress",
    "test_plugin", "test_training_faults", "test_expand", "test_versions",
})
"""Modules whose tests start local Rays, kill or signal processes, bind ports or time a sweep."""


def pytest_collection_modifyitems(config, items):
    """Put every test that starts a Ray, binds a port or signals processes in one xdist group.

    ``make check`` runs ``pytest -n 2 --dist loadgroup``: the group runs on one worker, in
    collection order, while the other worker takes the tests that only compute (fits, models,
    stores in temporary folders). So no two Rays or port-binding tests ever run at once, and
    a test that kills processes never meets another test's. A test is in the group when its
    module is in ``SERIAL_MODULES``, it uses the ``ray_local`` fixture, or it is marked
    ``serial``; a new test that starts a sweep belongs there too. Without xdist the marks do
    nothing.
    """
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if item.module else ""
        if module in SERIAL_MODULES or "ray_local" in item.fixturenames or item.get_closest_marker("serial"):
            item.add_marker(pytest.mark.xdist_group("serial"))


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray with 2 CPUs, started once for the whole session."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: tiny models only lose time to thread sync on a shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_config(directory: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `scaling` command in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})


SMALL_SWEEP = """
name: small
task: {name: digits}
model: {name: mlp, width: 32, depth: 1}
axes:
  n_train: [50, 100]
  batch_size: [16, 32]
  lr: [0.1, 0.2]
  momentum: 0.9
  seed: [0, 1]
budget: {epochs: 10}
eval: {points: 5}
resources: {cpu: 1}
"""


def ray_trial_pids(root: int) -> list[int]:
    """Pids of the Ray workers busy training (process title ray::scaling-trial...) that descend
    from ``root`` (a sweep's driver): never those of another test's Ray running beside it."""
    from ray_ports import descendants

    pids = []
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(b"ray::scaling-trial"):
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


def reap_orphaned_ray_processes() -> int:
    """Kill Ray helper processes orphaned by a SIGKILLed driver (re-parented to init).

    A local Ray's raylet and GCS die with their driver, but its dashboard and
    runtime-env agents linger; a test that kills a driver cleans them up.
    """
    import signal

    killed = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if status.get("PPid", "").strip() == "1" and cmd.startswith("ray::"):
            os.kill(int(pid), signal.SIGKILL)
            killed += 1
    return killed
