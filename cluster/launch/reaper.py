"""What outlives a local Ray's driver, and how the next sweep finds and stops it.

Every process of a local Ray that ``cluster.launch.localray`` starts inherits a marker in its
environment (``SCALING_RAY_CLUSTER=<id>``), and a record of that cluster (driver pid and
start time, host, boot, session dir) sits in this user's state dir while it runs. After a
SIGKILL of the driver, Ray's dashboard and runtime-env agents keep running (re-parented
to init, still listening); ``reap_orphans`` finds them through the record and kills them.
A process is taken for part of a cluster only if its environment carries the cluster's
marker, or it is a ``ray::`` process holding a file open in the cluster's session dir;
every signal checks the process's start time first, so a recycled pid is never hit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

MARKER = "SCALING_RAY_CLUSTER"


# ---- processes ----------------------------------------------------------------------------

def start_time(pid: int) -> int | None:
    """The start time of a live process (clock ticks after boot), None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = stat.rsplit(b")", 1)[1].split()
    return None if fields[0] in (b"Z", b"X") else int(fields[19])


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def processes_of(cluster: str, session_dir: str | None = None) -> dict[int, int]:
    """pid -> start time of every process but this one that belongs to ``cluster``: its
    environment carries the marker, or it is a ``ray::`` process holding a file open in the
    cluster's session dir (Ray's agents overwrite their environment area with their process
    titles, but keep their logs open). Only this user's processes are readable, so only they match."""
    needle = f"\0{MARKER}={cluster}\0".encode()
    prefix = session_dir.rstrip("/") + "/" if session_dir else None
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            ours = needle in b"\0" + Path(f"/proc/{name}/environ").read_bytes()
            if not ours and prefix and Path(f"/proc/{name}/cmdline").read_bytes().startswith(b"ray::"):
                ours = any(os.readlink(f"/proc/{name}/fd/{fd}").startswith(prefix)
                           for fd in os.listdir(f"/proc/{name}/fd"))
        except OSError:
            continue
        start = start_time(int(name)) if ours else None
        if start is not None:
            found[int(name)] = start
    return found


def _session_dirs_of(procs: dict[int, int]) -> set[str]:
    """Session dirs named on the command lines of ``procs`` (the GCS and raylet carry one)."""
    dirs = set()
    for pid in procs:
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for arg in args:
            if arg.startswith((b"--session-dir=", b"--session_dir=")):
                dirs.add(arg.split(b"=", 1)[1].decode(errors="replace"))
    return dirs


def kill(procs: dict[int, int], grace_s: float = 3.0) -> int:
    """SIGTERM, then SIGKILL after ``grace_s`` (0: SIGKILL alone), and wait until they are gone; a
    pid is signalled only while it has its start time."""
    def alive() -> list[int]:
        return [p for p, t in procs.items() if start_time(p) == t]

    def send(sig: int, pids: list[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    steps = ((signal.SIGTERM, grace_s, 0.05),) if grace_s > 0 else ()
    for sig, wait_s, poll_s in (*steps, (signal.SIGKILL, 5.0, 0.01)):
        left = alive()
        send(sig, left)
        deadline = time.monotonic() + wait_s
        while left and time.monotonic() < deadline:
            time.sleep(poll_s)
            left = alive()
        if not left:
            break
    return len(procs)


# ---- records ------------------------------------------------------------------------------

def state_dir() -> Path | None:
    """Where this user's running local Rays are recorded (created 0700), or None if nowhere."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    candidates = [Path(runtime) / "scaling-ray"] if runtime else []
    candidates.append(Path(os.path.expanduser("~")) / ".cache" / "scaling" / "ray")
    for folder in candidates:
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = folder.lstat()
            if st.st_uid == os.getuid() and not folder.is_symlink() and os.access(folder, os.W_OK):
                return folder
        except OSError:
            continue
    return None


def write_record(record: dict) -> Path | None:
    folder = state_dir()
    if folder is None:
        return None
    path = folder / f"{record['cluster']}.json"
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
    except OSError:
        return None
    return path


def reap_orphans(log=None) -> int:
    """Kill the processes of local Rays whose driver died without stopping them (SIGKILL, OOM).

    Only clusters this user recorded on this machine since its last boot are looked at, and
    only while their driver is gone. Returns how many processes were killed.
    """
    folder = state_dir()
    if folder is None:
        return 0
    killed, host, boot = 0, socket.gethostname(), boot_id()
    for path in folder.glob("*.json"):
        try:
            record = json.loads(path.read_text())
            cluster, pid, start = record["cluster"], int(record["driver_pid"]), record["driver_start"]
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if record.get("host") != host:
            continue  # a home folder shared by several machines
        if record.get("boot") == boot and start_time(pid) == start:
            continue  # its driver still runs
        procs, sessions = {}, set()
        if record.get("boot") == boot:  # else a reboot ended them all
            procs = processes_of(cluster)
            sessions = _session_dirs_of(procs) | ({record["session_dir"]} if record.get("session_dir") else set())
            for session in sessions:
                procs.update(processes_of(cluster, session))
        if procs:
            killed += kill(procs, grace_s=1.0)
            if log:
                log(f"stopped {len(procs)} processes of a local Ray left by a killed sweep "
                    f"(driver pid {pid}, {', '.join(sorted(sessions)) or 'session unknown'})")
        for capture in folder.glob(f"driver-{pid}-*.err"):
            keep_log(capture, record.get("session_dir"))
        path.unlink(missing_ok=True)
    for capture in folder.glob("driver-*.err"):  # of drivers that joined a cluster, then were killed
        with contextlib.suppress(ValueError, OSError):
            if start_time(int(capture.name.split("-")[1])) is None:
                capture.unlink()
    return killed


def keep_log(path: Path, session_dir: str | None) -> None:
    """Move a captured stderr into the session's logs (kept only if something was written)."""
    with contextlib.suppress(OSError):
        if session_dir and path.stat().st_size and os.path.isdir(os.path.join(session_dir, "logs")):
            shutil.move(path, os.path.join(session_dir, "logs", "scaling-driver.err"))
        path.unlink(missing_ok=True)
