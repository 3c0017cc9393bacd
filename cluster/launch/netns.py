"""A private network for a local Ray: a network namespace whose only interface is loopback.

Ray 2.60 has no bind option: its GCS, raylet and every worker listen on all interfaces
(``*``, IPv4 and IPv6), and its runtime-env agent on the machine's address. Inside a new
network namespace the only interface is ``lo``, so Ray binds to 127.0.0.1 there and nothing
outside the sweep's own processes can reach its ports: not other machines, not other
users of this one.

``scaling sweep`` asks for it with ``reexec``: the same process (same pid, so signals and
SIGKILL reach the real driver) runs the command again, as ``python -P -m cluster.cli`` (the
current folder is never on its import path, so a ``secrets.py`` or ``yaml.py`` there is not
run), with ``SCALING_RAY_NETWORK=enter <pid> <start time>``, and ``enter`` moves the new
program, still single-threaded, into the namespace before it does anything else. The
request names this very process: the variable that every Ray worker of a sweep inherits (or
one set by hand) is dropped, never taken as "already private", so a nested or inherited
environment cannot turn the private network off. SIGTERM and SIGINT are blocked across the
``exec`` (the mask and pending signals survive it) and unblocked once the new program
handles them, so a signal in between is not lost. As root that is a plain network namespace; otherwise an unprivileged
user namespace maps the user to itself (files keep their owner). Where the kernel refuses
(user namespaces disabled, seccomp in a container), the sweep runs on the host network,
still behind its token, and says so.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import socket
import struct
import sys
from pathlib import Path

ENV = "SCALING_RAY_NETWORK"
_state: str | None = None  # this process's own answer; never read from the environment
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000


def state() -> str | None:
    """None (not asked), "private", or "unavailable: <why>": what this process did, never what an
    inherited environment claims."""
    return _state


def _request() -> str:
    """The value of ENV that asks the program ``reexec`` starts (this same process) to enter."""
    return f"enter {os.getpid()} {_start_time()}"


def _start_time() -> str:
    try:
        return Path("/proc/self/stat").read_bytes().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return "?"


def reexec(argv: list[str], go=None) -> None:
    """Run ``scaling argv`` again in this process, moved into a private network first.
    ``-P``: the current folder is not put on the new program's import path. ``go()``, asked once
    SIGTERM and SIGINT are blocked (a Python handler for one that came has run by then), may
    say no (a signal is pending): then nothing is re-run."""
    global _state
    if not sys.platform.startswith("linux"):
        _state = f"unavailable: network namespaces are Linux-only ({sys.platform})"
        return
    os.environ[ENV] = _request()
    root = str(Path(__file__).resolve().parents[2])  # so `-m cluster.cli` imports this tree
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = root if not path else f"{root}{os.pathsep}{path}"
    sys.stdout.flush()
    sys.stderr.flush()
    held = {signal.SIGTERM, signal.SIGINT}
    # the new program unblocks them; call with one thread only: a signal the kernel hands to
    # another thread (which does not block it) between here and exec would be lost
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    if go is not None and not go():
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        os.environ.pop(ENV, None)
        return
    try:
        os.execv(sys.executable, [sys.executable, "-P", "-m", "cluster.cli", *argv])
    except OSError as e:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        os.environ.pop(ENV, None)
        _state = f"unavailable: cannot re-run the command ({e.strerror or e})"


def enter() -> None:
    """If ``reexec`` asked for it, move this process into a new network namespace with loopback
    up. Call before anything starts a thread. Tries in a forked child first, so a kernel that
    refuses half-way never leaves this process half-moved. The variable is removed either way:
    only a request naming this process (``reexec``'s) is acted on, and nothing started from here
    (Ray's processes, a nested sweep) inherits it."""
    global _state
    asked = os.environ.pop(ENV, None)
    if asked is None or asked != _request():
        return
    reason = _in_child(_unshare)
    if reason is None:
        reason = _unshare()
    _state = "private" if reason is None else f"unavailable: {reason}"


def _in_child(step) -> str | None:
    """Run ``step`` in a forked child; its result (None or a reason) comes back through a pipe."""
    if len(os.listdir("/proc/self/task")) > 1:
        return "the process already runs threads"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: single-threaded, as this process is
        os.close(read)
        try:
            os.write(write, (step() or "").encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        reason = pipe.read().decode(errors="replace")
    os.waitpid(pid, 0)
    return reason or None


def _unshare() -> str | None:
    """Enter a new network namespace (and user namespace unless root). None, or why not."""
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    if not (os.geteuid() == 0 and libc.unshare(CLONE_NEWNET) == 0):
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
            return f"the kernel refused a user and network namespace ({os.strerror(ctypes.get_errno())})"
        try:
            Path("/proc/self/setgroups").write_text("deny")
            Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
            Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        except OSError as e:
            return f"cannot map the user into the namespace ({e.strerror or e})"
    try:
        _loopback_up()
    except OSError as e:
        return f"cannot bring up loopback in the namespace ({e.strerror or e})"
    return None


def _loopback_up() -> None:
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, siocgifflags, request))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))
