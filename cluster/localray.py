"""The local Ray a sweep starts: a fresh token, quiet output, clean stops, no orphans.

- **Token.** Each local Ray gets its own random token (``RAY_AUTH_TOKEN``, 256 bits),
  never the per-user ``~/.ray/auth_token``, so every gRPC method on every port it
  opens refuses a client without it. ``RAY_AUTH_MODE=disabled`` needs ``--insecure-ray``.
- **Stops.** SIGTERM (Kubernetes, ``timeout``) and SIGINT raise ``Stopped`` in the
  driver, which unwinds like Ctrl-C: finished trials are stored, Ray is shut down.
- **No orphans.** Every process of the cluster inherits a marker
  (``SCALING_RAY_CLUSTER=<id>``), and a record of the cluster (driver pid and start
  time, session dir) sits in the user's state dir while it runs. ``stop`` kills what
  ``ray.shutdown`` leaves; ``reap_orphans`` (the next sweep) kills the processes of a
  cluster whose driver was SIGKILLed. A process is killed only if it carries that
  cluster's marker or holds a file open in that cluster's session dir, so a recycled
  pid or another user's Ray is never touched.
- **Quiet.** What Ray writes to the driver's stderr (C++ log lines, retry notices) goes
  to ``<session>/logs/scaling-driver.err`` instead of the terminal.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from scaling.errors import UserError

MARKER = "SCALING_RAY_CLUSTER"
_session: dict | None = None  # the local Ray this process started
_armed = 0  # how many stop_on_signals blocks are open


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGINT in the driver: stop like Ctrl-C; the command exits 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ---- checks, before anything starts -----------------------------------------------------

def check_auth_mode(insecure: bool) -> bool:
    """True if Ray will use a token. ``RAY_AUTH_MODE=disabled`` is refused without ``insecure``."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is None or mode.strip().lower() == "token":
        return True
    if mode.strip().lower() != "disabled":
        raise UserError(f"RAY_AUTH_MODE={mode!r} is not a Ray auth mode; unset it (a local Ray then "
                        "gets a fresh token) or set token")
    if not insecure:
        raise UserError("RAY_AUTH_MODE=disabled turns off Ray's token check, and anyone who reaches a Ray "
                        "port can then run code here (Ray unpickles what it is sent); unset it, or pass "
                        "--insecure-ray if every machine that can reach this one is trusted")
    return False


def check_num_cpus(num_cpus: int | None, address: str | None = None) -> None:
    """``--num-cpus`` sizes a local Ray: a whole number of CPUs, at least 1, at most 4x this machine's."""
    if num_cpus is None:
        return
    if address or os.environ.get("RAY_ADDRESS"):
        raise UserError("--num-cpus sizes a local Ray; a cluster joined with --address (or RAY_ADDRESS) "
                        "has its own CPUs, so leave --num-cpus out")
    most = 4 * (os.cpu_count() or 1)
    if not 1 <= num_cpus <= most:
        raise UserError(f"--num-cpus {num_cpus} is out of range; expected 1 to {most} (4x this machine's "
                        f"{os.cpu_count()} CPUs: each CPU of a local Ray runs a worker process)")


# ---- signals ------------------------------------------------------------------------------

_stopped_by: int | None = None


def _on_signal(signum, frame):
    global _stopped_by
    _stopped_by = signum
    raise Stopped(signum)


def stopped_by(exc: BaseException) -> int:
    """The signal behind a ``KeyboardInterrupt``: Ray turns any it sees inside ``ray.get`` or
    ``ray.wait`` into a plain one, so the number is also kept here."""
    return getattr(exc, "signum", None) or _stopped_by or signal.SIGINT


@contextlib.contextmanager
def stop_on_signals():
    """SIGTERM and SIGINT raise ``Stopped`` in the main thread while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _armed
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in before:
        signal.signal(s, _on_signal)
    _armed += 1
    try:
        yield
    finally:
        _armed -= 1
        for s, handler in before.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def rearm_signals() -> None:
    """Take SIGTERM back after ``ray.init``, which installs a handler of its own (``sys.exit``)
    under a C++ one that prints a stack dump first."""
    if _armed and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_signal)


@contextlib.contextmanager
def _signals_held():
    """Let a clean-up finish: a second Ctrl-C or SIGTERM waits until the block is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got = []
    before = {s: signal.signal(s, lambda signum, frame: got.append(signum))
              for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


# ---- the driver's stderr ------------------------------------------------------------------

@contextlib.contextmanager
def ray_output_to_log():
    """Send what Ray writes to this process's stderr (fd 2) and its retry notices to a log file.

    ``sys.stderr`` keeps pointing at the terminal, so the progress bar and error lines still
    show. Yields a dict; put ``session_dir`` in it and the log is moved to that session's logs.
    """
    state = {"session_dir": None}
    folder = state_dir()
    try:
        real = os.dup(2)
    except OSError:
        yield state
        return
    path = (folder or Path("/tmp")) / f"driver-{os.getpid()}-{secrets.token_hex(4)}.err"
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    saved = sys.stderr
    with contextlib.suppress(Exception):
        saved.flush()
    sys.stderr = open(real, "w", buffering=1, encoding=getattr(saved, "encoding", None) or "utf-8",
                      errors="backslashreplace", closefd=False)
    os.dup2(log_fd, 2)
    unpatch = _route_ray_notices(log_fd)
    try:
        yield state
    finally:
        unpatch()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(real, 2)
        sys.stderr = saved
        os.close(real)
        os.close(log_fd)
        _keep_log(path, state["session_dir"])


def _route_ray_notices(log_fd: int):
    """Ray prints task-retry notices (a traceback each) on the driver's stdout; log them instead."""
    try:
        import ray._private.worker as ray_worker
    except ImportError:
        return lambda: None
    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None:
        return lambda: None

    def to_log(data, ignore_prefix=False):
        text = "\n".join(str(line) for line in data.get("lines", []))
        with contextlib.suppress(OSError):
            os.write(log_fd, f"({data.get('pid', 'ray')}) {text}\n".encode(errors="backslashreplace"))

    ray_worker.print_to_stdstream = to_log
    return lambda: setattr(ray_worker, "print_to_stdstream", original)


def _keep_log(path: Path, session_dir: str | None) -> None:
    """Move a captured stderr into the session's logs (kept only if something was written)."""
    with contextlib.suppress(OSError):
        if session_dir and path.stat().st_size and os.path.isdir(os.path.join(session_dir, "logs")):
            shutil.move(path, os.path.join(session_dir, "logs", "scaling-driver.err"))
        path.unlink(missing_ok=True)


# ---- processes ----------------------------------------------------------------------------

def _start_time(pid: int) -> int | None:
    """The start time of a live process (clock ticks after boot), None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = stat.rsplit(b")", 1)[1].split()
    return None if fields[0] in (b"Z", b"X") else int(fields[19])


def _boot_id() -> str:
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
        start = _start_time(int(name)) if ours else None
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
    """SIGTERM, then SIGKILL after ``grace_s``; a pid is signalled only while it has its start time."""
    def alive() -> list[int]:
        return [p for p, t in procs.items() if _start_time(p) == t]

    def send(sig: int, pids: list[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        left = alive()
        send(sig, left)
        deadline = time.monotonic() + wait_s
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
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


def _write_record(record: dict) -> Path | None:
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
    killed, host, boot = 0, socket.gethostname(), _boot_id()
    for path in folder.glob("*.json"):
        try:
            record = json.loads(path.read_text())
            cluster, pid, start = record["cluster"], int(record["driver_pid"]), record["driver_start"]
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if record.get("host") != host:
            continue  # a home folder shared by several machines
        if record.get("boot") == boot and _start_time(pid) == start:
            continue  # its driver still runs
        procs = processes_of(cluster) if record.get("boot") == boot else {}
        sessions = _session_dirs_of(procs) | ({record["session_dir"]} if record.get("session_dir") else set())
        for session in sessions:
            procs.update(processes_of(cluster, session))
        if procs:
            killed += kill(procs, grace_s=1.0)
            if log:
                log(f"stopped {len(procs)} processes of a local Ray left by a killed sweep "
                    f"(driver pid {pid}, {', '.join(sorted(sessions)) or 'session unknown'})")
        for capture in folder.glob(f"driver-{pid}-*.err"):
            _keep_log(capture, record.get("session_dir"))
        path.unlink(missing_ok=True)
    for capture in folder.glob("driver-*.err"):  # of drivers that joined a cluster, then were killed
        with contextlib.suppress(ValueError, OSError):
            if _start_time(int(capture.name.split("-")[1])) is None:
                capture.unlink()
    return killed


# ---- the local Ray ------------------------------------------------------------------------

def start(num_cpus: int | None, *, insecure: bool = False, **init_kw) -> None:
    """Start a local Ray with a fresh token, recorded so that nothing of it outlives the sweep."""
    global _session
    import ray

    token = check_auth_mode(insecure)
    check_num_cpus(num_cpus)
    cluster = secrets.token_hex(8)
    env = {MARKER: cluster}
    if token:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _reload_auth()
    record = {"cluster": cluster, "driver_pid": os.getpid(), "driver_start": _start_time(os.getpid()),
              "host": socket.gethostname(), "boot": _boot_id(), "session_dir": None}
    _session = {"cluster": cluster, "saved_env": saved, "record": _write_record(record), "session_dir": None}
    try:
        info = ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                        dashboard_host="127.0.0.1", **init_kw)
    except BaseException as e:
        stop()
        if isinstance(e, (ValueError, OSError)):  # a bad setting or folder, not a bug
            text = (str(e).strip().splitlines() or [type(e).__name__])[0]
            hint = (" (Ray keeps its sessions and sockets under RAY_TMPDIR, else TMPDIR, else /tmp: "
                    "it needs a writable folder with a short path)" if isinstance(e, OSError) else "")
            raise UserError(f"cannot start a local Ray: {text}{hint}") from None
        raise
    rearm_signals()
    session_dir = info.address_info.get("session_dir")
    _session["session_dir"] = session_dir
    if _session["record"] is not None:
        _write_record({**record, "session_dir": session_dir})
    with contextlib.suppress(OSError, TypeError):
        os.chmod(session_dir, 0o700)  # Ray makes it world-writable; its logs and sockets are ours


def stop() -> None:
    """Shut down the local Ray this process started and kill whatever of it still runs."""
    global _session
    import ray

    if _session is None:
        return
    session, _session = _session, None
    with _signals_held():
        try:
            ray.shutdown()
        finally:
            kill(processes_of(session["cluster"], session["session_dir"]))
            for key, value in session["saved_env"].items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            _reload_auth()
            if session["record"] is not None:
                session["record"].unlink(missing_ok=True)


def _reload_auth() -> None:
    """Make this process's Ray read RAY_AUTH_MODE and the token again (both are cached)."""
    with contextlib.suppress(ImportError, AttributeError):
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def session(connect):
    """Ray for one sweep. ``connect()`` joins a cluster or calls ``start``, and returns True if it
    started a local Ray; on the way out that Ray is stopped and reaped, a joined one left."""
    import ray

    existing = ray.is_initialized()
    with stop_on_signals(), ray_output_to_log() as output:
        started = connect()
        output["session_dir"] = _session_dir()
        try:
            yield
        finally:
            if started:
                stop()
            elif not existing and ray.is_initialized():
                with _signals_held():
                    ray.shutdown()  # disconnects from a joined cluster; stops nothing there


def _session_dir() -> str | None:
    """The session dir of the Ray this driver is connected to (its own logs are there)."""
    with contextlib.suppress(Exception):
        import ray._private.worker as ray_worker

        return ray_worker._global_node.get_session_dir_path()
    return None
