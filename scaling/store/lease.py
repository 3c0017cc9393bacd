"""One compaction at a time per sweep: a lease kept in the store itself.

Two compactions of one sweep that run at once are safe for the rows (neither deletes a run it
has not copied, :mod:`scaling.store.compaction`) but both copy the same runs, so the store
would hold every trial twice until the next compaction. A compaction (and ``verify --repair``)
therefore takes the sweep's lease first.

The lease needs nothing but writing, listing and deleting files, so it works on a local disk,
a shared filesystem and object stores alike (none of which pyarrow gives a conditional create
for). A contender:

1. writes its own lease file ``<sweep>/.lease-compact-<token>.json`` (host, pid, process start);
2. lists the sweep's lease files; if any other live lease is there, it deletes its own and
   tries again after a short random pause (until ``wait_s``), else it holds the lease.

With a store whose listing shows every write that finished before it (a local disk, S3 and GCS
since 2020), two contenders never both hold it: whichever lists second sees the other's file.
Both may back off at once; the random pause breaks the tie.

A lease is live while its holder renews it (a thread rewrites it every ``ttl_s / 4``); one
whose file has not changed for ``ttl_s`` is expired. On the holder's own host a lease whose
process is gone (killed) is expired at once, so a compaction killed with SIGKILL never makes the
next one wait. Expired leases are deleted by whoever finds them.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import uuid

import pyarrow.fs as pafs

import scaling.store.parts as parts_mod
from scaling.errors import StoreError, one_line

PREFIX = ".lease-compact-"
TTL_S = 120.0
"""A lease not renewed for this long is expired (its holder hung or was killed elsewhere)."""
WAIT_S = 600.0
"""How long ``scaling compact`` and a sweep's last compaction wait for another one to finish."""

_held: set = set()
"""Tokens of the leases this process holds or is taking now (from before its file is first written
to after it is deleted): a lease of this pid that is not here was left by a compaction of this
process that was interrupted. Added before the write: two threads of one process contending
(added only once held, each found the other's fresh file "left over", deleted it, and both lost
the lease: neither merged)."""


def _start_time(pid: int) -> str:
    """The process's start time (clock ticks since boot, from /proc), '' where there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return True
    return not start or _start_time(pid) in ("", start)


class Busy(Exception):
    """Another compaction holds the sweep's lease (``holder`` says whose) past the wait."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


class Lease:
    """The compaction lease of one sweep: ``with Lease(store, sweep, wait_s=...):`` holds it (or
    raises :class:`Busy`); :attr:`lost` turns true if it expired while held."""

    def __init__(self, store, sweep: str, *, wait_s: float = WAIT_S, ttl_s: float = TTL_S):
        self.store, self.sweep, self.wait_s, self.ttl_s = store, sweep, wait_s, ttl_s
        self.token = uuid.uuid4().hex
        self.path = f"{store.sweep_dir(sweep)}/{PREFIX}{self.token}.json"
        self._stop = threading.Event()
        self._thread = None
        self.lost = False

    # ---- taking and giving back ----------------------------------------------------------

    def __enter__(self) -> "Lease":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        deadline = time.monotonic() + max(0.0, self.wait_s)
        pause = 0.05
        _held.add(self.token)  # before the file exists: see _held
        try:
            while True:
                try:
                    self._write()
                except OSError as e:
                    raise StoreError(one_line(f"cannot take the compaction lease of sweep {self.sweep or '.'!r}: "
                                              f"cannot write {self.path}: {parts_mod.first_line(e)}", 600)) from None
                other = self._other_live()
                if other is None:
                    self._thread = threading.Thread(target=self._renew, name="scaling-lease", daemon=True)
                    self._thread.start()
                    return
                self._delete(self.path)
                if time.monotonic() + pause > deadline:
                    raise Busy(other)
                time.sleep(pause * (0.5 + random.random()))
                pause = min(2.0, pause * 2)
        except BaseException:
            _held.discard(self.token)
            raise

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        try:
            self._delete(self.path)
        except OSError:  # a store that fails now: the lease expires by itself
            pass
        finally:  # after the delete, and whatever it raised: a file left is then "left over"
            _held.discard(self.token)

    def check(self) -> bool:
        """Whether the lease is still ours (its file is there and the renewals have not failed)."""
        if self.lost:
            return False
        try:
            self.lost = self.store.fs.get_file_info(self.path).type != pafs.FileType.File
        except OSError:
            self.lost = True
        return not self.lost

    # ---- the file ---------------------------------------------------------------------------

    def _write(self) -> None:
        pid = os.getpid()
        body = {"host": socket.gethostname(), "pid": pid, "start": _start_time(pid), "token": self.token,
                "ttl_s": self.ttl_s}
        self.store._write_once(self.path, json.dumps(body).encode())

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                if self.store.fs.get_file_info(self.path).type != pafs.FileType.File:
                    self.lost = True  # someone found it expired and took it: never write it back
                    return
                self._write()
            except Exception:  # noqa: BLE001 (the store failed: the holder finds out with check())
                self.lost = True
                return

    def _delete(self, path: str) -> None:
        try:
            self.store.fs.delete_file(path)
        except FileNotFoundError:
            pass
        except OSError:
            if self.store.fs.get_file_info(path).type != pafs.FileType.NotFound:
                raise

    def _other_live(self) -> str | None:
        """Who holds another live lease of the sweep (None if nobody); expired ones are deleted."""
        now = time.time_ns()
        for e in parts_mod.list_dir(self.store, self.store.sweep_dir(self.sweep)):
            if not (e.name.startswith(PREFIX) and e.name.endswith(".json")) or e.path == self.path:
                continue
            body = _read(self.store, e.path)
            if body is None and e.mtime_ns is not None and (now - e.mtime_ns) / 1e9 < 5.0:
                body = {}  # being written right now: live
            if body is None or _expired(body, e, now, self.ttl_s):
                try:
                    self._delete(e.path)
                except OSError:
                    pass
                continue
            return f"pid {body.get('pid', '?')} on {body.get('host', '?')}"
        return None


def _read(store, path: str) -> dict | None:
    try:
        with store.fs.open_input_stream(path) as f:
            body = json.loads(f.read(65536))
        return body if isinstance(body, dict) else None
    except (OSError, ValueError):
        return None


def _expired(body: dict, e, now_ns: int, ttl_s: float) -> bool:
    if e.mtime_ns is not None and (now_ns - e.mtime_ns) / 1e9 > max(ttl_s, float(body.get("ttl_s") or 0)):
        return True
    pid = body.get("pid")
    if body.get("host") == socket.gethostname() and isinstance(pid, int):
        if pid == os.getpid():
            return body.get("token") not in _held  # left by an interrupted compaction of this process
        return not _alive(pid, str(body.get("start") or ""))
    return False


__all__ = ["Lease", "Busy", "TTL_S", "WAIT_S", "PREFIX"]
