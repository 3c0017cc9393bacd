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

RAY_MODULES = frozenset({
    # drivers and workers killed or signalled, orphans reaped, memory exhausted
    "test_sweep", "test_security", "test_training_faults",
    # sweeps, clusters, storage outages, a raylet or GCS killed
    "test_faults", "test_storage", "test_versions", "test_ray_failures",
    "test_compaction_safety", "test_status",
    # an ETA timed, plug-ins, a sweep extended, an adaptive sweep's driver killed mid-round
    "test_progress", "test_plugin", "test_expand", "test_adaptive",
    # real sweeps checked for torch in the driver; Ray Tune's ASHA beside the grid; a local Ray's
    # processes and its prestarted workers
    "test_layers", "test_peers", "test_driver_ray_start",
})
"""Modules whose tests start local Rays (in this process or a ``scaling sweep``), bind ports or
signal processes: all in one xdist group, so under ``make check`` they run one at a time on one
worker while the tests that only compute run on the other. On two cores a second Ray beside the
first slows both (the suite took 637-639 s with every Ray test free to run beside another, 618 s
grouped, 2026-12-07)."""
BESIDE_RAY = frozenset({"test_ddp", "test_digits_images", "test_models"})
"""Modules that use the ``ray_local`` fixture but run on the other worker all the same, beside the
group (that worker then starts a ``ray_local`` of its own): the group is the longer side (about
440 of the suite's 840 test-seconds, 2026-12-07), and these tests only run Ray tasks, and gloo on
ports the OS picks; they signal nothing."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Put every test that starts a Ray, binds a port or signals processes in the xdist group
    ``ray``: its module is in :data:`RAY_MODULES`, it uses the ``ray_local`` fixture (unless its
    module is in :data:`BESIDE_RAY`), or it is marked ``serial``. ``make check`` runs
    ``pytest -n 2 --dist loadgroup -m "not alone"``: the group runs in collection order on one
    worker and the other tests fill the other; then the tests marked ``alone`` (they time a sweep's
    first seconds, so they want both cores to themselves) run by themselves. A test in the group
    still acts only on the processes it started (``ray_trial_pids``, the sweep's own cluster
    marker), and each worker records its local Rays in a folder of its own (``XDG_RUNTIME_DIR``
    below), so nothing one worker runs can reap what a test of the other left on purpose. Without
    xdist the marks do nothing. ``tryfirst``: xdist reads the marks in its own hook of this name,
    which otherwise runs first and sees none (checked: the group was then silently ignored)."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if item.module else ""
        uses_ray = "ray_local" in item.fixturenames and module not in BESIDE_RAY
        if module in RAY_MODULES or uses_ray or item.get_closest_marker("serial"):
            item.add_marker(pytest.mark.xdist_group("ray"))


BESIDE_NICE = 10
"""The niceness of the tests outside the Ray group while ``make check`` runs two workers."""


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Under ``make check`` the Ray group is the longer side, and what makes it long is CPU taken
    from it: its sweeps start Rays and drivers in bursts (a dozen processes importing Ray and
    torch), with idle waits between, and on two cores the other worker's tests took half of each
    burst. So the group's tests run at nice 0 and the others at BESIDE_NICE: those fill the CPU the
    group leaves idle, and give it back when the group needs it. Phase 1 took 518 s with both at
    nice 0, 447 s so (2026-12-07, the same tests). Set before the test's fixtures, so a session
    Ray (``ray_local``) the group starts runs at nice 0 whatever ran on its worker before.

    Only where both ways are allowed (root, as CI runs): anyone may raise their niceness, but only
    root may lower it again, and the group must never be left at BESIDE_NICE. Every thread of the
    worker is set, since Linux keeps a niceness per thread (torch's pool threads too)."""
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) < 2 or os.geteuid() != 0:
        return
    nice = 0 if item.get_closest_marker("xdist_group") is not None else BESIDE_NICE
    for tid in os.listdir("/proc/self/task"):
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)
        except (ProcessLookupError, PermissionError):  # a thread that ended meanwhile
            pass


def pytest_xdist_node_collection_finished(node, ids):
    """Under ``--dist loadgroup``, stop at once if xdist did not take the group: it marks a grouped
    test by appending ``@ray`` to its node id, which pytest 9.2 no longer lets it do (pytest-xdist
    issue 1386; ``constraints.txt`` pins pytest 9.1.1). Without the group the Ray tests run beside
    each other, slower, and nothing else would say so."""
    if node.config.getoption("dist", None) != "loadgroup":
        return
    ray_ids = [i for i in ids if Path(i.partition("::")[0]).stem in RAY_MODULES]
    if ray_ids and not any(i.endswith("@ray") for i in ray_ids):
        pytest.exit("pytest-xdist did not group the Ray tests (pytest-xdist issue 1386): install "
                    "the pytest that constraints.txt pins", returncode=3)


def pytest_configure(config):
    """Text is checked at the width a piped command uses (100 columns): ``COLUMNS`` and ``LINES``
    go for the session, so a terminal's exported width or an xdist worker's (which starts with
    COLUMNS=80, wrapping the tables that tests of the commands' output read) changes no result;
    a test that wants a width sets it (monkeypatch.setenv). Under xdist, each worker records its
    local Rays in a folder of its own (the reaper's state dir follows XDG_RUNTIME_DIR),
    inherited by every driver it starts."""
    for key in ("COLUMNS", "LINES"):
        os.environ.pop(key, None)
        os.unsetenv(key)  # readline (loaded before the tests) sets COLUMNS where os.environ cannot see it
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        import tempfile

        os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix=f"scaling-test-{worker}-")


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray with 2 CPUs, started once for the whole session."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _global_state_restored():
    """What a test (or the code it calls in this process) changes of torch's default dtype, its
    thread count and numpy's floating-point error handling is given back after it, so no test
    depends on the ones before it (pytest-xdist reorders them). torch is not imported for this."""
    import numpy as np

    errors = np.geterr()
    torch = sys.modules.get("torch")
    saved = (torch.get_default_dtype(), torch.get_num_threads()) if torch is not None else None
    yield
    np.seterr(**errors)
    torch = sys.modules.get("torch")
    if torch is not None:
        dtype, threads = saved or (torch.float32, None)
        if torch.get_default_dtype() != dtype:
            torch.set_default_dtype(dtype)
        if threads is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


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


def run_cli_here(*args: str) -> subprocess.CompletedProcess:
    """The `scaling` command's ``main()`` in this process, its stdout and stderr captured, as
    ``run_cli`` returns them: for a test of what a command prints and returns, not of its process
    (start-up imports, signals, the environment it inherits). It saves the 0.5-2 s a fresh
    interpreter spends importing pyarrow, duckdb, scipy (per call, on a busy 2-core machine)."""
    import contextlib
    import io
    import warnings

    from cluster.cli import main

    out, err = io.StringIO(), io.StringIO()
    shown = warnings.showwarning  # main() prints warnings in one line; the test process gets its own back
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse's usage errors
                code = e.code if isinstance(e.code, int) else 1
    finally:
        warnings.showwarning = shown
    return subprocess.CompletedProcess(["scaling", *args], code, out.getvalue(), err.getvalue())


_MEASURED = """
import json, resource, subprocess, sys, time
t0 = time.monotonic()
p = subprocess.run([sys.executable, "-m", "cluster.cli", *sys.argv[1:]], capture_output=True, text=True)
print(json.dumps({"rc": p.returncode, "out": p.stdout, "err": p.stderr, "wall_s": time.monotonic() - t0,
                  "rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def run_cli_measured(*args: str, timeout: float = 300, env: dict | None = None) -> dict:
    """The real `scaling` command in a fresh interpreter, under a wrapper that reports its exit code,
    output, wall time and peak resident memory (``getrusage(RUSAGE_CHILDREN)`` of the wrapper, so no
    other test's process counts): ``{"rc", "out", "err", "wall_s", "rss_mb"}``."""
    import json

    proc = subprocess.run([sys.executable, "-c", _MEASURED, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)

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


def kill_a_busy_worker(driver: subprocess.Popen, after_s: float, timeout_s: float = 120.0) -> int | None:
    """SIGKILL a Ray worker of ``driver``'s sweep once it has been training one unit for ``after_s``
    seconds, still busy (titled ``ray::scaling-trial``) as it is killed; its pid, or None if the
    sweep ended (or ``timeout_s`` passed) first. A worker that went idle meanwhile starts again
    from 0 when it takes its next unit."""
    import signal
    import time

    busy_since: dict[int, float] = {}
    deadline = time.monotonic() + timeout_s
    while driver.poll() is None and time.monotonic() < deadline:
        now = time.monotonic()
        pids = ray_trial_pids(driver.pid)
        busy_since = {pid: busy_since.get(pid, now) for pid in pids}
        for pid, since in busy_since.items():
            if now - since >= after_s:
                try:
                    os.kill(pid, signal.SIGKILL)
                    return pid
                except ProcessLookupError:  # its unit ended and its Ray with it
                    pass
        time.sleep(0.05)
    return None


def reap_orphaned_ray_processes() -> int:
    """Stop what a SIGKILLed driver's local Ray left running (its dashboard and runtime-env
    agents, re-parented to init): the reaper a next sweep runs, over the clusters recorded by
    this test process (never a user's `ray start`, nor a Ray another xdist worker runs)."""
    from cluster.launch.reaper import reap_orphans

    return reap_orphans()
