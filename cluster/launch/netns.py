"""A private network for a local Ray: a network namespace whose only interface is loopback.

Ray 2.60 has no bind option: its GCS, raylet and every worker listen on all interfaces
(``*``, IPv4 and IPv6), and its runtime-env agent on the machine's address. Inside a new
network namespace the only interface is ``lo``, so Ray binds to 127.0.0.1 there and nothing
outside the sweep's own processes can reach its ports: not other machines, not other
users of this one.

``scaling sweep`` asks for it with ``reexec``: the same process (same pid, so signals and
SIGKILL reach the real driver) runs the command again with ``SCALING_RAY_NETWORK=enter``,
and ``enter`` moves the new program, still single-threaded, into the namespace before it
does anything else. As root that is a plain network namespace; otherwise an unprivileged
user namespace maps the user to itself (files keep their owner). Where the kernel refuses
(user namespaces disabled, seccomp in a container), the sweep runs on the host network,
still behind its token, and says so.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import sys
from pathlib import Path

ENV = "SCALING_RAY_NETWORK"
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000


def state() -> str | None:
    """None (not asked), "private", or "unavailable: <why>"."""
    return os.environ.get(ENV)


def reexec(argv: list[str]) -> None:
    """Run ``scaling argv`` again in this process, moved into a private network first."""
    if not sys.platform.startswith("linux"):
        os.environ[ENV] = f"unavailable: network namespaces are Linux-only ({sys.platform})"
        return
    os.environ[ENV] = "enter"
    root = str(Path(__file__).resolve().parents[2])  # so `-m cluster.cli` imports this tree
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = root if not path else f"{root}{os.pathsep}{path}"
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, [sys.executable, "-m", "cluster.cli", *argv])
    except OSError as e:
        os.environ[ENV] = f"unavailable: cannot re-run the command ({e.strerror or e})"


def enter() -> None:
    """If ``reexec`` asked for it, move this process into a new network namespace with loopback
    up. Call before anything starts a thread. Tries in a forked child first, so a kernel that
    refuses half-way never leaves this process half-moved."""
    if os.environ.get(ENV) != "enter":
        return
    reason = _in_child(_unshare)
    if reason is None:
        reason = _unshare()
    os.environ[ENV] = "private" if reason is None else f"unavailable: {reason}"


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
