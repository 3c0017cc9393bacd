"""A local sweep's Ray, attacked and interrupted through the real command line.

- every listening TCP port of the processes a sweep starts refuses a client without the
  sweep's fresh token (in the private network namespace and on the host network);
- RAY_AUTH_MODE=disabled needs --insecure-ray;
- SIGTERM and SIGINT stop a sweep in one line (exit 143, 130), keep what finished and leave
  no process of its Ray behind; the next sweep reaps what a SIGKILLed driver left, and only that;
- a bad --num-cpus is one line; a trial that crashes in its worker is one line, not three
  Ray tracebacks.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, write_config
from ray_ports import HEALTH, connect_host, descendants, listening_sockets
from scaling.config.sweep import load_config
from scaling.spec.schema import trial_id
from scaling.store.writer import Store

pytestmark = pytest.mark.slow

SWEEP = """
name: {name}
task: {{name: digits}}
model: {{name: mlp, width: 64, depth: 1}}
axes:
  n_train: {n_train}
  batch_size: [8]
  lr: [0.05]
  seed: {seeds}
budget: {{epochs: {epochs}}}
eval: {{points: 5}}
resources: {{cpu: 1}}
engine: single
"""
PLUGINS = ROOT / "tests" / "plugin_example"
HARMLESS_READS = ["/ray.rpc.NodeInfoGcsService/GetAllNodeInfo", "/ray.rpc.NodeManagerService/GetNodeStats",
                  "/ray.rpc.CoreWorkerService/GetCoreWorkerStats"]


def sweep_cmd(config: Path, results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cluster.cli", "sweep", str(config), "--results", str(results), "--quiet",
            *extra]


def start(config: Path, results: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(sweep_cmd(config, results, *extra), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def start_time(pid: int) -> int | None:
    """Start time of a live process; None when gone or a zombie (dead, waiting to be reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in (b"Z", b"X") else int(fields[19])


def snapshot(driver: int) -> dict[int, int]:
    """pid -> start time of the driver and every process below it."""
    return {pid: t for pid in descendants(driver) if (t := start_time(pid)) is not None}


def alive(procs: dict[int, int]) -> list[int]:
    return [pid for pid, t in procs.items() if start_time(pid) == t]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


def wait_for(predicate, timeout_s: float, what: str, driver: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if driver is not None and driver.poll() is not None:
            pytest.fail(f"the sweep ended before {what}: {driver.communicate()[1][-2000:]}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def trials_running(driver: subprocess.Popen, n: int = 1):
    """The sweep's processes once ``n`` trial workers run and listen."""
    def ready():
        procs = snapshot(driver.pid)
        workers = [p for p in procs if cmdline(p).startswith("ray::scaling-trial")]
        listening = {s["pid"] for s in listening_sockets(list(procs))}
        return procs if len(workers) >= n and set(workers) <= listening else None
    return wait_for(ready, 180, f"{n} running trials", driver)


def stored_ids(results: Path, sweep: str) -> list[str]:
    folder = results / sweep / "trials"
    return [p.stem for p in folder.glob("*.parquet")] if folder.exists() else []


def assert_stored_once(results: Path, config: Path, complete: bool) -> None:
    expected = {trial_id(t) for t in load_config(config).trials()}
    raw = Store(str(results)).raw_table("trials").column("trial_id").to_pylist()
    assert len(raw) == len(set(raw)), "no trial stored twice"
    assert set(raw) == expected if complete else set(raw) <= expected


def env_token(pid: int) -> str | None:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    values = [v.split(b"=", 1)[1].decode() for v in env if v.startswith(b"RAY_AUTH_TOKEN=")]
    return values[0] if values else None


# ---- every port refuses a client without the token ------------------------------------------

def run_probes(driver_pid: int, private: bool, probes: list, controls: list) -> dict:
    """Run tests/ray_ports.py in the sweep's network namespace (or here, on the host network)."""
    cmd = [sys.executable, str(ROOT / "tests" / "ray_ports.py"), json.dumps(probes), json.dumps(controls)]
    if private:
        if shutil.which("nsenter") is None:
            pytest.skip("nsenter (util-linux) is needed to probe from inside the private network")
        enter = ["-n"] if os.geteuid() == 0 else ["-U", "-n", "--preserve-credentials"]
        cmd = ["nsenter", "-t", str(driver_pid), *enter, "--", *cmd]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def control_for(result: dict) -> str | None:
    """A harmless read the port serves (to show the right token gets through), if it has one."""
    if result["kind"] == "http":
        return "GET /"
    served = {m for m, code in result["statuses"].items() if code == "UNAUTHENTICATED"}
    return next((m for m in HARMLESS_READS if m in served), None)


@pytest.mark.parametrize("network", ["private", "host"])
def test_every_port_of_a_local_sweep_refuses_a_client_without_the_token(tmp_path, network):
    config = write_config(tmp_path, SWEEP.format(name="ports", n_train=[800], seeds=[0, 1], epochs=200))
    driver = start(config, tmp_path / "r", "--ray-network", network)
    try:
        procs = trials_running(driver, n=2)
        sockets = listening_sockets(list(procs))
        by_process = {s["process"] for s in sockets}
        assert {"gcs_server", "raylet", "ray::scaling-trial", "ray::RuntimeEnvAgent"} <= by_process, sockets
        assert any(s["pid"] == driver.pid for s in sockets), "the driver's own port is probed too"

        # a fresh token for this cluster, not the per-user one Ray would reuse
        gcs = next(s["pid"] for s in sockets if s["process"] == "gcs_server")
        token = env_token(gcs)
        assert token and re.fullmatch(r"[0-9a-f]{64}", token)
        user_token = Path.home() / ".ray" / "auth_token"
        assert not user_token.exists() or user_token.read_text().strip() != token

        private = os.readlink(f"/proc/{driver.pid}/ns/net") != os.readlink("/proc/self/ns/net")
        if network == "private" and not private:
            pytest.skip("this kernel refuses a private network namespace; the host-network case still runs")
        assert private == (network == "private")
        if private:
            here = os.readlink("/proc/self/ns/net")
            assert all(os.readlink(f"/proc/{s['pid']}/ns/net") != here for s in sockets), "own namespace"
            interfaces = [line.split(":")[0].strip() for line in
                          Path(f"/proc/{driver.pid}/net/dev").read_text().splitlines()[2:]]
            assert interfaces == ["lo"]
            for s in sockets:
                address = ipaddress.ip_address(s["address"])
                address = getattr(address, "ipv4_mapped", None) or address
                assert address.is_loopback, s

        targets = [(connect_host(s), s["port"]) for s in sockets]
        first = run_probes(driver.pid, private, [[h, p, None] for h, p in targets]
                           + [[h, p, "0" * 64] for h, p in targets], [])["probes"]
        no_token, wrong_token = first[:len(targets)], first[len(targets):]
        controls = [control_for(r) if r["kind"] != "closed" else None for r in no_token]
        asked = [[h, p, m, token] for (h, p), m in zip(targets, controls) if m]
        answers = iter(run_probes(driver.pid, private, [], asked)["controls"])
        right = [next(answers) if m else None for m in controls]

        report = []
        for s, bare, wrong, control, answer in zip(sockets, no_token, wrong_token, controls, right):
            where = f"{s['process']} (pid {s['pid']}) {s['family']} {s['address']}:{s['port']}"
            gone = start_time(s["pid"]) != procs.get(s["pid"])  # Ray starts and retires idle workers
            if bare["kind"] == "closed" or wrong["kind"] == "closed":
                assert gone, (where, bare, wrong)
                continue
            if bare["kind"] == "http":
                assert set(bare["statuses"].values()) == {401}, (where, bare)
                assert set(wrong["statuses"].values()) == {403}, (where, wrong)
                assert answer == 404 or gone, (where, "the right token gets through", answer)
                report.append(f"{where}: HTTP, 401 without the token, 403 with a wrong one")
                continue
            assert bare["kind"] == "grpc", (where, bare)
            for result in (bare, wrong):
                answered = {m: c for m, c in result["statuses"].items()
                            if c not in ("UNAUTHENTICATED", "UNIMPLEMENTED")}
                assert set(answered.items()) <= {(HEALTH, "OK")} or gone, (where, answered)
            refused = sorted(m for m, c in bare["statuses"].items() if c == "UNAUTHENTICATED")
            assert refused and refused == sorted(m for m, c in wrong["statuses"].items()
                                                 if c == "UNAUTHENTICATED"), where
            if control:
                assert answer == "OK" or gone, (where, control, answer)
            services = sorted({m.split("/")[1].rsplit(".", 1)[-1] for m in refused})
            report.append(f"{where}: gRPC, {len(refused)} methods of {', '.join(services)} "
                          f"UNAUTHENTICATED; only gRPC's health check answers"
                          f"{'; ' + control.rsplit('/', 1)[1] + ' with the token: OK' if control else ''}")
        assert report
        print("\n".join(report))
    finally:
        driver.send_signal(signal.SIGTERM)
        out, err = driver.communicate(timeout=120)
    assert driver.returncode == 143, err
    assert alive(procs) == [], [cmdline(p) for p in alive(procs)]


def test_disabled_token_auth_needs_insecure_ray(tmp_path):
    config = write_config(tmp_path, SWEEP.format(name="insecure", n_train=[50], seeds=[0], epochs=1))
    for mode, words in (("disabled", "--insecure-ray"), ("bogus", "is not a Ray auth mode")):
        proc = subprocess.run(sweep_cmd(config, tmp_path / "r"), cwd=ROOT, capture_output=True, text=True,
                              timeout=60, env={**os.environ, "RAY_AUTH_MODE": mode})
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
        assert not (tmp_path / "r").exists(), "refused before anything was written"
    ok = subprocess.run(sweep_cmd(config, tmp_path / "r", "--insecure-ray"), cwd=ROOT, capture_output=True,
                        text=True, timeout=300, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert ok.returncode == 0 and "ran 1 trials" in ok.stdout, ok.stderr


# ---- stopping, and what is left behind --------------------------------------------------------

@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_sweep_in_one_line_keeps_finished_trials_and_reaps_ray(tmp_path, sig, code):
    config = write_config(tmp_path, SWEEP.format(name="stop", n_train=[50, 1200], seeds=[0, 1], epochs=400))
    results = tmp_path / "r"
    driver = start(config, results)
    wait_for(lambda: stored_ids(results, "stop"), 180, "a finished trial", driver)
    procs = trials_running(driver)
    driver.send_signal(sig)
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == code, err
    assert err.strip().endswith("finished trials are stored; run the same command again to resume")
    assert len(err.strip().splitlines()) == 1, err  # no C++ stack dump, no Ray log lines
    assert "raylet" not in out and "Traceback" not in out, out
    assert alive(procs) == [], [cmdline(p) for p in alive(procs)]
    assert not any(json.loads(p.read_text()).get("driver_pid") == driver.pid
                   for p in state_records()), "its record is removed"
    assert 0 < len(stored_ids(results, "stop")) < 4
    assert_stored_once(results, config, complete=False)


def state_records() -> list[Path]:
    from cluster.launch.reaper import state_dir

    folder = state_dir()
    return list(folder.glob("*.json")) if folder else []


def test_next_sweep_reaps_what_a_sigkilled_driver_left_and_nothing_else(tmp_path):
    config = write_config(tmp_path, SWEEP.format(name="killed", n_train=[50, 400], seeds=[0, 1, 2], epochs=40))
    results = tmp_path / "r"
    decoy = subprocess.Popen(["bash", "-c", "exec -a ray::Decoy sleep 600"],
                             env={**os.environ, "SCALING_RAY_CLUSTER": "someone-else"})
    try:
        driver = start(config, results)
        wait_for(lambda: stored_ids(results, "killed"), 180, "a finished trial", driver)
        procs = trials_running(driver)
        driver.kill()
        driver.wait()
        time.sleep(1.0)
        left = alive(procs)
        assert left, "Ray 2.60 leaves its agents running after a SIGKILLed driver (else nothing to test)"

        rerun = subprocess.run(sweep_cmd(config, results), cwd=ROOT, capture_output=True, text=True,
                               timeout=400)
        assert rerun.returncode == 0, rerun.stderr
        assert re.search(r"stopped \d+ processes of a local Ray left by a killed sweep", rerun.stdout)
        assert alive(procs) == [], [cmdline(p) for p in alive(procs)]
        assert decoy.poll() is None, "a process of another cluster is not touched"
        assert rerun.stderr == ""
        assert_stored_once(results, config, complete=True)
    finally:
        decoy.kill()
        decoy.wait()


# ---- user mistakes and crashes: one line ---------------------------------------------------------

@pytest.mark.parametrize("extra, words", [
    (["--num-cpus", "0"], "--num-cpus 0 is out of range"),
    (["--num-cpus", "-1"], "--num-cpus -1 is out of range"),
    (["--num-cpus", "100000"], "--num-cpus 100000 is out of range"),
    (["--num-cpus", "2", "--address", "127.0.0.1:1"], "--num-cpus sizes a local Ray"),
])
def test_a_bad_num_cpus_is_one_line(tmp_path, extra, words):
    config = write_config(tmp_path, SWEEP.format(name="cpus", n_train=[50], seeds=[0], epochs=1))
    proc = subprocess.run(sweep_cmd(config, tmp_path / "r", *extra), cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


def test_a_trial_that_crashes_in_its_worker_is_one_line_and_a_failed_row(tmp_path):
    config = write_config(tmp_path, """
        name: crash
        task: {name: "toy_tasks.crashing:model_cannot_be_built"}
        model: {name: task, width: 8, depth: 1}
        axes: {n_train: 50, batch_size: [8, 16, 32], lr: 0.1}
        budget: {steps: 5}
        eval: {points: 2}
        retries: 2
        """)
    python_path = os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(sweep_cmd(config, tmp_path / "r"), cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": python_path})
    assert proc.returncode == 0, proc.stderr
    failed = [line for line in proc.stdout.splitlines() if " failed: " in line]
    assert len(failed) == 3 and all("RuntimeError: this model cannot be built" in line for line in failed)
    assert "Traceback" not in proc.stdout + proc.stderr and "retries remaining" not in proc.stdout + proc.stderr
    assert proc.stderr == ""
    rows = Store(str(tmp_path / "r")).raw_table("trials").to_pylist()
    assert len(rows) == 3 and {r["status"] for r in rows} == {"failed"}
    assert all("this model cannot be built" in r["error"] for r in rows)


def test_a_ray_start_up_mistake_is_one_line(tmp_path):
    config = write_config(tmp_path, SWEEP.format(name="tmpdir", n_train=[50], seeds=[0], epochs=1))
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    proc = subprocess.run(sweep_cmd(config, tmp_path / "r"), cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "RAY_TMPDIR": str(not_a_folder)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: cannot start a local Ray: [Errno 20] Not a directory"), proc.stderr
    assert "RAY_TMPDIR" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


# ---- the private network, where the kernel says no ------------------------------------------------

def test_the_namespace_is_tried_in_a_child_and_a_refusal_leaves_this_process_on_the_host(monkeypatch):
    import cluster.launch.netns as netns

    script = ("import json, os; from cluster.launch import netns; here = os.readlink('/proc/self/ns/net'); "
              "reason = netns._in_child(netns._unshare); "
              "print(json.dumps([reason, here == os.readlink('/proc/self/ns/net')]))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    reason, stayed = json.loads(proc.stdout)
    assert stayed, "the try runs in a forked child, never in the process itself"
    assert reason is None or reason.startswith(("the kernel refused", "cannot")), reason

    here = os.readlink("/proc/self/ns/net")
    monkeypatch.setattr(netns, "_state", None)
    monkeypatch.setattr(netns, "_in_child", lambda step: "the kernel refused a user and network namespace (x)")
    for inherited in ("enter", "private", "enter 1 1"):  # not a request of this process: ignored, removed
        monkeypatch.setenv(netns.ENV, inherited)
        netns.enter()
        assert netns.state() is None and netns.ENV not in os.environ
    monkeypatch.setenv(netns.ENV, netns._request())
    netns.enter()
    assert netns.state() == "unavailable: the kernel refused a user and network namespace (x)"
    assert netns.ENV not in os.environ, "Ray's processes do not inherit it"
    assert os.readlink("/proc/self/ns/net") == here


# ---- hostile neighbours: another user, the folder a sweep runs in, an inherited environment -----

LAUNCH = [sys.executable, "-P", "-c", "import sys; from cluster.cli import main; sys.exit(main())"]
"""How the installed `scaling` script starts: the current folder is not on the import path."""


def test_a_neighbour_cannot_move_the_session_the_folder_runs_no_code_and_an_inherited_network_setting_is_ignored(
        tmp_path):
    """Issue 26, items 1, 2 and 13, through one real sweep started as the `scaling` script starts:
    - in a folder holding secrets.py, yaml.py, json.py and torch.py that would leave a file if
      imported (neither the re-run for the private network nor Ray's workers import from there);
    - with SCALING_RAY_NETWORK=private preset, as every Ray worker of a sweep carries it: the
      sweep still gets its own network, and nothing of it listens beyond 127.0.0.1;
    - as root, where another uid (nobody) then tries to rename the running session folder."""
    work = tmp_path / "work"
    work.mkdir()
    # the driver imports secrets, yaml and json; a Ray worker imports torch after Ray has put the
    # driver's current folder first on its import path
    markers = {name: tmp_path / f"ran-{name}" for name in ("secrets", "yaml", "json", "torch")}
    for name, marker in markers.items():
        (work / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    # resources.cpu 0.001 (issue 26, item 14): 2,000 trials at once on 2 CPUs unless bounded
    write_config(work, SWEEP.format(name="neighbour", n_train=[800], seeds=[0, 1], epochs=25)
                 .replace("resources: {cpu: 1}", "resources: {cpu: 0.001}"))
    env = {**os.environ, "SCALING_RAY_NETWORK": "private",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    driver = subprocess.Popen([*LAUNCH, "sweep", "sweep.yaml", "--results", "r", "--quiet"], cwd=work,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        procs = trials_running(driver, n=2)
        sockets = listening_sockets(list(procs))
        assert {"gcs_server", "raylet"} <= {s["process"] for s in sockets}, sockets
        if os.readlink(f"/proc/{driver.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            assert "private network unavailable" in driver.stdout.readline()  # the kernel said no
        else:  # item 13: its own network although the environment said "private" already
            for s in sockets:
                address = ipaddress.ip_address(s["address"])
                assert (getattr(address, "ipv4_mapped", None) or address).is_loopback, s
        gcs = next(s["pid"] for s in sockets if s["process"] == "gcs_server")
        assert b"SCALING_RAY_NETWORK=" not in Path(f"/proc/{gcs}/environ").read_bytes(), "not inherited"

        # item 1: the session folder sits in a folder only this user can enter
        args = Path(f"/proc/{gcs}/cmdline").read_bytes().split(b"\0")
        session = Path(next(a.split(b"=", 1)[1] for a in args if a.startswith(b"--session-dir=")).decode())
        root = session.parent.parent
        assert root.name == f"scaling-ray-{os.getuid()}", session
        st = root.lstat()
        assert st.st_uid == os.getuid() and (st.st_mode & 0o777) == 0o700, oct(st.st_mode)
        if os.geteuid() == 0 and shutil.which("setpriv"):
            as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
            attack = subprocess.run([*as_nobody, "mv", str(session), f"{session}.x"], capture_output=True,
                                    text=True, timeout=30)
            assert attack.returncode != 0 and "Permission denied" in attack.stderr, attack
            assert session.is_dir() and not Path(f"{session}.x").exists()
    finally:
        out, err = driver.communicate(timeout=400)
    assert driver.returncode == 0, err
    assert "(2 ok, 0 diverged, 0 failed)" in out, out
    said = " ".join(out.split())  # the line wraps at the terminal's width
    assert re.search(r"resources: cpu 0.001 per trial would run [\d,]+ trials at once on \d+ CPUs; "
                     r"running at most \d+ ", said), out
    assert [name for name, marker in markers.items() if marker.exists()] == [], "code ran from the folder"


@pytest.mark.alone  # a signal at 1 s into the start: the moment means what it says only unloaded
@pytest.mark.parametrize("sig, at_s, at_process", [(signal.SIGINT, 1.0, None), (signal.SIGTERM, 0, "gcs_server")],
                         ids=["SIGINT-at-1s", "SIGTERM-as-ray-starts"])
def test_a_signal_while_the_sweep_starts_is_one_line_and_leaves_nothing(tmp_path, sig, at_s, at_process):
    """Issue 26, item 6: at 1 s (imports: a traceback or a silent exit before) and the moment Ray's
    GCS runs (inside ray.init, where Ray's own SIGTERM handler exited 15 with no line). The
    20-random-moments stress is `python -m cluster.bench.signals`."""
    from cluster.bench.signals import one_run

    r = one_run(sig, at_s, tmp_path, at_process=at_process)
    assert r["sent"], f"no {at_process or 'moment'} seen before the sweep ended, so no signal was sent: {r}"
    assert r["rc"] == 128 + sig and r["stderr_lines"] == 1, r
    assert r["left_running"] == [] and not r["record_left"], r
    assert r["ok"], r
    if at_process:
        assert r["processes_seen"] >= 2, "the signal came while Ray was starting"


def test_joining_a_token_cluster_with_the_token_only_in_the_users_file(tmp_path):
    """Issue 26, item 9: a head started with token auth, and the driver's only token in
    ~/.ray/auth_token (no RAY_AUTH_MODE, no RAY_AUTH_TOKEN). `import ray` reads and caches the auth
    mode before the sweep sees the file, so the join used to fail, telling the user to put the
    token where it already was."""
    token = "ab" * 32
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(token)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    short = tempfile.mkdtemp(prefix="sr-")  # Ray's socket paths must stay under 108 bytes
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
         "--node-ip-address=127.0.0.1", "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={short}"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env={**clean, "HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    try:
        wait_for(lambda: _listens(port), 180, "the head's GCS", head)
        config = write_config(tmp_path, SWEEP.format(name="joined", n_train=[50], seeds=[0], epochs=1))
        proc = subprocess.run(sweep_cmd(config, tmp_path / "r", "--address", f"127.0.0.1:{port}"), cwd=ROOT,
                              capture_output=True, text=True, timeout=400, env={**clean, "HOME": str(home)})
        assert proc.returncode == 0, proc.stderr
        assert "(1 ok, 0 diverged, 0 failed)" in proc.stdout, proc.stdout
    finally:
        procs = snapshot(head.pid)
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started; never `ray stop`
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        time.sleep(1.0)
        for pid in alive(procs):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(short, ignore_errors=True)


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        return True
    except OSError:
        return False
