"""The local Ray a sweep starts: a fresh token, quiet output, clean stops, no orphans.

- **Token.** Each local Ray gets its own random token (``RAY_AUTH_TOKEN``, 256 bits),
  never the per-user ``~/.ray/auth_token``, so every gRPC method on every port it
  opens refuses a client without it. ``RAY_AUTH_MODE=disabled`` needs ``--insecure-ray``.
- **Stops.** SIGTERM (Kubernetes, ``timeout``) and SIGINT raise ``Stopped`` in the
  driver, which unwinds like Ctrl-C: finished trials are stored, Ray is shut down.
- **No orphans.** Every process of the cluster inherits a marker and the cluster is
  recorded while it runs (``cluster.launch.reaper``). ``stop`` kills what ``ray.shutdown``
  leaves; ``reap_orphans`` (the next sweep) kills what a SIGKILLed driver left.
- **Quiet.** What Ray writes to the driver's stderr (C++ log lines, retry notices) goes
  to ``<session>/logs/scaling-driver.err`` instead of the terminal.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import stat
import sys
import tempfile
import threading
from pathlib import Path

import cluster.launch.reaper as reaper
from cluster.launch.reaper import MARKER, reap_orphans  # noqa: F401  (the next sweep calls reap_orphans)
from scaling.errors import UserError

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

HELD = {signal.SIGTERM, signal.SIGINT}
_stopped_by: int | None = None
_defer = 0  # while > 0, a signal is noted in _pending and raised when the last deferral ends
_pending: int | None = None
_startup = False  # hold_signals' deferral is open (ends in stop_on_signals or end_startup)


def _on_signal(signum, frame):
    global _stopped_by, _pending
    _stopped_by = signum
    if _defer:
        _pending = _pending or signum
        return
    raise Stopped(signum)


def stopped_by(exc: BaseException) -> int:
    """The signal behind a ``KeyboardInterrupt``: Ray turns any it sees inside ``ray.get`` or
    ``ray.wait`` into a plain one, so the number is also kept here."""
    return getattr(exc, "signum", None) or _stopped_by or signal.SIGINT


def pending_signal() -> int | None:
    """A SIGTERM or SIGINT noted while deferred and not raised yet."""
    return _pending


def hold_signals(noted: int | None = None) -> None:
    """The first thing ``scaling sweep`` does: from here SIGTERM and SIGINT never kill it half-way
    (the default SIGTERM, Ray's ``sys.exit``, a KeyboardInterrupt inside an import): they are noted
    and raised as ``Stopped`` once the sweep can stop cleanly (``stop_on_signals``). Unblocks the
    two signals, which ``netns.reexec`` blocks across its ``exec``: one sent in between is delivered
    here. ``noted``: a signal that came before (cluster.cli notes them from its first line)."""
    global _defer, _startup, _pending, _stopped_by
    if threading.current_thread() is not threading.main_thread() or _startup:
        return
    for s in HELD:
        signal.signal(s, _on_signal)
    _defer += 1
    _startup = True
    if noted is not None:
        _pending = _stopped_by = noted
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)


def end_startup() -> None:
    """Close ``hold_signals``' deferral: a signal noted during it is raised here as ``Stopped``."""
    global _defer, _startup
    if _startup:
        _startup = False
        _defer -= 1
        _raise_pending()


def _raise_pending() -> None:
    global _pending
    if not _defer and _pending is not None:
        signum, _pending = _pending, None
        raise Stopped(signum)


@contextlib.contextmanager
def signals_deferred():
    """A SIGTERM or SIGINT during the block (Ray starting its processes and connecting) is noted
    and raised as ``Stopped`` right after it, once what started is recorded and can be stopped."""
    global _defer
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _defer += 1
    try:
        yield
    except BaseException:
        _defer -= 1
        raise
    _defer -= 1
    _raise_pending()


@contextlib.contextmanager
def stop_on_signals():
    """SIGTERM and SIGINT raise ``Stopped`` in the main thread while the block runs (one that came
    during ``hold_signals``' start-up is raised on entering)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _armed, _stopped_by
    if not _armed and not _startup:
        _stopped_by = None
    before = {s: signal.getsignal(s) for s in HELD}
    for s in before:
        signal.signal(s, _on_signal)
    _armed += 1
    try:
        end_startup()
        yield
    finally:
        _armed -= 1
        for s, handler in before.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def rearm_signals() -> None:
    """Take SIGTERM and SIGINT back after ``ray.init``, which may install handlers of its own
    (``sys.exit``, under a C++ one that prints a stack dump first)."""
    if _armed and threading.current_thread() is threading.main_thread():
        for s in HELD:
            signal.signal(s, _on_signal)


@contextlib.contextmanager
def _ray_keeps_its_hands_off_sigterm():
    """``ray.init`` installs a SIGTERM handler that calls ``sys.exit(15)`` wherever it lands (rc 15,
    no message, Ray half-started); while it runs, ours stays installed instead."""
    try:
        import ray._private.utils as ray_utils
    except ImportError:
        yield
        return
    original = ray_utils.set_sigterm_handler
    ray_utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler = original


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
    path = (reaper.state_dir() or Path(tempfile.gettempdir())) / f"driver-{os.getpid()}-{secrets.token_hex(4)}.err"
    try:
        log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        real = os.dup(2)
    except OSError:
        yield state  # nowhere to write: Ray's lines stay on stderr
        return
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
        reaper.keep_log(path, state["session_dir"])


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


# ---- the local Ray ------------------------------------------------------------------------

def start(num_cpus: int | None, *, insecure: bool = False, worker_imports: tuple[str, ...] = (), **init_kw) -> None:
    """Start a local Ray with a fresh token, recorded so that nothing of it outlives the sweep.

    Its head runs no process that a sweep does not use (:func:`_lean_head`), and its raylet starts
    one worker per CPU as it starts, each importing ``worker_imports`` before it takes a task
    (Ray's ``enable_worker_prestart`` and ``preload_python_modules``): a sweep's modules (torch)
    load while ``ray.init`` still connects, not after it. A module that fails to import there is
    imported again by the task that needs it (and fails there, with its error)."""
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
    record = {"cluster": cluster, "driver_pid": os.getpid(), "driver_start": reaper.start_time(os.getpid()),
              "host": socket.gethostname(), "boot": reaper.boot_id(), "session_dir": None}
    _session = {"cluster": cluster, "saved_env": saved, "record": reaper.write_record(record), "session_dir": None}
    try:
        temp_dir = private_temp_root()
        system = {**LOCAL_SYSTEM_CONFIG, **({"preload_python_modules": list(worker_imports)}
                                            if worker_imports else {})}
        with _ray_keeps_its_hands_off_sigterm(), _working_dir(os.path.dirname(temp_dir)), _lean_head():
            info = ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                            dashboard_host="127.0.0.1", _temp_dir=temp_dir, _system_config=system, **init_kw)
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
        reaper.write_record({**record, "session_dir": session_dir})
    with contextlib.suppress(OSError, TypeError):
        os.chmod(session_dir, 0o700)  # inside a private root already; Ray makes it world-writable


LOCAL_SYSTEM_CONFIG = {"enable_worker_prestart": True, "task_events_report_interval_ms": 0}
"""Ray settings of a local Ray (``_system_config``). Workers start with the raylet (prestart). Task
events are off: they feed Ray's dashboard and state API (``ray list tasks``, ``ray timeline``), which
a local Ray started here runs without (no dashboard; the token is the sweep's own), and with them on
the driver's disconnect at ``ray.shutdown`` waited 0.25 s for the last report in most runs (7 of 8
measured), a fifth of a small sweep's fixed cost. A sweep on a cluster (``--address``) leaves the
cluster's settings alone."""

IDLE_HEAD_PROCESSES = ("start_api_server", "start_monitor", "start_log_monitor")
"""What ``ray.init`` starts on a local head that a sweep never uses (methods of Ray's ``Node``): the
dashboard's head process (with the dashboard off it still runs, for Ray's usage statistics, which
``ray.init`` turns off anyway; ``ray.init`` waits until it has published an address), the
autoscaler's monitor (a single local node has nothing to scale) and the log monitor (it forwards
workers' output to a driver started with ``log_to_driver=False``, which drops it). Each is a Python
process importing Ray: about 0.5 s of CPU each, and the dashboard's start on ``ray.init``'s path."""


@contextlib.contextmanager
def _lean_head():
    """While ``ray.init`` starts a local Ray, IDLE_HEAD_PROCESSES are not started. With another Ray
    that lacks one of them, Ray starts what it starts, as before."""
    try:
        from ray._private.node import Node
    except ImportError:
        yield
        return
    saved = {name: Node.__dict__.get(name) for name in IDLE_HEAD_PROCESSES}
    if not all(callable(f) for f in saved.values()):
        yield
        return
    for name in saved:
        setattr(Node, name, _not_started)
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(Node, name, method)


def _not_started(self, *args, **kwargs) -> None:
    """Stands in for a Node method of IDLE_HEAD_PROCESSES while a local Ray starts."""


@contextlib.contextmanager
def _working_dir(folder: str):
    """Start Ray from ``folder``: Ray puts the driver's current folder first on every worker's
    import path (and its processes inherit it as their own), so a ``torch.py`` or ``numpy.py``
    where the user runs a sweep would run in every worker. Paths in a sweep are absolute by then
    (results, task files); the driver's own folder is back when ``ray.init`` returns."""
    try:
        before = os.getcwd()
    except OSError:
        before = None
    os.chdir(folder)
    try:
        yield
    finally:
        if before is not None:
            os.chdir(before)


def private_temp_root() -> str:
    """The folder a local Ray keeps its sessions in: ``scaling-ray-<uid>/ray`` under RAY_TMPDIR,
    else TMPDIR, else /tmp, inside a directory of this user's with mode 0700.

    Ray's own default (``/tmp/ray``) is one folder for every user of the machine, and Ray makes
    each folder it creates mode 0777 without the sticky bit, so another user could rename a
    running sweep's session folder and put one of theirs in its place (its logs, its sockets'
    folder). Nobody else can enter the 0700 folder around Ray's, whatever Ray does inside it. A
    path there that is not this user's own directory (a symlink, another user's folder) is left
    alone, and a fresh private folder (``mkdtemp``) is used instead."""
    base = os.path.abspath(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir())
    path = os.path.join(base, f"scaling-ray-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        path = tempfile.mkdtemp(prefix=f"scaling-ray-{os.getuid()}-", dir=base)
    elif stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return os.path.join(path, "ray")


def stop(done: bool = False) -> None:
    """Shut down the local Ray this process started and kill whatever of it still runs.

    ``done``: the sweep ended with every task returned (nothing of it is still writing), so the GCS
    is killed before the driver disconnects (:func:`_stop_gcs_first`) and the rest of Ray's
    processes once it has (SIGKILL: :func:`_kill_at_once`), instead of asked to stop one after the
    other (Ray's raylet, then its GCS, each given up to a second). Otherwise (a signal, an error: a
    worker may be committing) they are asked as before."""
    global _session
    import ray

    if _session is None:
        return
    session, _session = _session, None
    with _signals_held():
        try:
            _stop_autoscaler_monitor()
            if done:
                _stop_gcs_first()
            with _kill_at_once() if done else contextlib.nullcontext():
                ray.shutdown()
        finally:
            left = reaper.processes_of(session["cluster"], session["session_dir"])
            reaper.kill(left, grace_s=0.0 if done else 3.0)
            for key, value in session["saved_env"].items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            _reload_auth()
            if session["record"] is not None:
                session["record"].unlink(missing_ok=True)


@contextlib.contextmanager
def _kill_at_once():
    """While ``ray.shutdown`` runs, its last step (Ray's ``Node.kill_all_processes``: SIGTERM to the
    raylet, wait up to a second, then the same for the GCS, 0.06-0.14 s in all) SIGKILLs every
    process Ray started at once and waits for each. The raylet's workers and agents, which then
    exit by themselves, are killed by ``stop`` (the cluster's marker). With another Ray that lacks
    the method, Ray stops them its own way."""
    try:
        from ray._private.node import Node
    except ImportError:
        yield
        return
    original = Node.__dict__.get("kill_all_processes")
    if not callable(original):
        yield
        return
    Node.kill_all_processes = _sigkill_all
    try:
        yield
    finally:
        Node.kill_all_processes = original


def _sigkill_all(self, *args, **kwargs) -> None:
    """Stands in for Ray's ``Node.kill_all_processes`` in :func:`_kill_at_once`."""
    procs = [info.process for infos in self.all_processes.values() for info in infos]
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.wait(timeout=5.0)
    self.all_processes.clear()


def _stop_gcs_first() -> None:
    """Kill the local Ray's GCS before the driver disconnects, in a sweep that ended with every task
    returned (``stop(done=True)``: all of Ray is killed a moment later anyway).

    The disconnect (``ray.shutdown``: Ray's core worker destroying its GCS client) joins the gRPC
    thread that polls that client's calls; the thread ends once no call is in flight, else at its
    next wake-up, every 250 ms. A call was still in flight in 2 sweeps of 10 measured (the
    disconnect took 0.28-0.29 s instead of 0.03-0.05 s); with the GCS gone its calls end at once.
    Nothing of the disconnect needs the GCS: the driver tells its raylet (a local socket); Ray's
    Python subscribers, which unsubscribe from it, log a warning in the session's driver log
    (``python-core-driver-*.log``) and go on. A driver that later starts another local Ray in the
    same process connects to that one."""
    _kill_node_processes("gcs_server", wait_s=5.0)


def _stop_autoscaler_monitor() -> None:
    """Kill the local Ray's autoscaler monitor before ``ray.shutdown``, which would SIGTERM it and
    then wait a full second for it (it does not exit on SIGTERM) before killing it anyway: a
    local Ray has nothing to autoscale, and that second was a third of a small sweep's fixed cost.
    (A Ray whose monitor :func:`_lean_head` left out has none to kill.)"""
    _kill_node_processes("monitor", wait_s=1.0)


def _kill_node_processes(kind: str, wait_s: float) -> None:
    """SIGKILL the running processes of ``kind`` (a key of Ray's ``Node.all_processes``:
    ``gcs_server``, ``monitor``, ...) of the local Ray this driver started, each waited for up to
    ``wait_s``. None where there are none, or with a Ray that keeps no such record."""
    with contextlib.suppress(Exception):
        import ray._private.worker as ray_worker

        node = ray_worker._global_node
        for info in (node.all_processes.get(kind, []) if node is not None else []):
            if info.process.poll() is None:
                info.process.kill()
                info.process.wait(timeout=wait_s)


def _reload_auth() -> None:
    """Make this process's Ray read RAY_AUTH_MODE and the token again (both are cached)."""
    with contextlib.suppress(ImportError, AttributeError):
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


RAY_FIRST_TASK_MODULES = ("ray._common.pydantic_compat",)
"""What Ray imports in the driver as it serializes its first task (its serialization context loads
pydantic through this module): 0.06 s of CPU on a quiet machine, on the path to a sweep's warm-up
tasks; :func:`session` has them imported while Ray starts instead (the first task's submission
then takes 0.02 s)."""


def _import_while_ray_starts() -> None:
    """Import RAY_FIRST_TASK_MODULES on a thread: ``ray.init`` mostly waits for Ray's processes, so
    by the time it returns they are loaded. ``ray`` itself is imported by the caller first, so
    the thread loads only pydantic and a module of Ray's that imports nothing of Ray; one Ray no
    longer has is skipped (Ray then imports what it needs itself, as before)."""
    import importlib

    def work():
        for name in RAY_FIRST_TASK_MODULES:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001, S112 (another Ray: it imports its own, as before)
                continue

    if not all(name in sys.modules for name in RAY_FIRST_TASK_MODULES):
        threading.Thread(target=work, name="scaling-ray-imports", daemon=True).start()


@contextlib.contextmanager
def session(connect):
    """Ray for one sweep. ``connect()`` joins a cluster or calls ``start``, and returns True if it
    started a local Ray; on the way out that Ray is stopped and reaped (killed at once when the
    block ended without an error: ``stop(done=True)``), a joined one left. What Ray's first task
    would import is imported while ``connect()`` waits for Ray."""
    import ray

    _import_while_ray_starts()
    existing = ray.is_initialized()
    with stop_on_signals(), ray_output_to_log() as output:
        started = done = False
        try:
            with signals_deferred():  # a signal while Ray starts stops it once it is up and recorded
                started = connect()
            output["session_dir"] = _session_dir()
            yield
            done = True
        finally:
            if started:
                stop(done)
            elif not existing and ray.is_initialized():
                with _signals_held():
                    ray.shutdown()  # disconnects from a joined cluster; stops nothing there


def _session_dir() -> str | None:
    """The session dir of the Ray this driver is connected to (its own logs are there)."""
    with contextlib.suppress(Exception):
        import ray._private.worker as ray_worker

        return ray_worker._global_node.get_session_dir_path()
    return None
