"""The laws' fits in a process of their own, so that a fit of a big sweep (12 s for the store
benchmark's 100k trials) never holds the server's interpreter while a page waits for its
other panels.

One child process (``python -m analysis.serve.fitter``), started at the first fit and kept,
takes one job at a time over its stdin and answers on its stdout. Everything it is sent or
sends is a frame: 8 bytes of length, then the bytes. A job is three frames: its key as JSON
(``["fit", x, metric]``, ``["bopt", metric]``, ``["bcrit"]``), the trials and the curves as
Arrow IPC streams (an empty frame: no curves); the answer is one frame of JSON:
``{"value": ...}`` or ``{"error": "one line"}``. No pickle either way. The child computes with
:func:`analysis.serve.panels.compute_law`, the functions ``scaling fit``, ``bopt`` and
``bcrit`` call; it exits when its stdin closes (the server stopped or died). It runs at the
lowest CPU priority it can set (:func:`lower_priority`): a page watching a sweep on the same
machine takes the cores the sweep leaves idle, and a fit waits while the sweep's workers are busy
rather than slowing them.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
import sys
import threading

import pyarrow as pa
from pyarrow import ipc

from analysis.errors import AnalysisError

_LEN = struct.Struct("<Q")
NICE = 19
"""The fitting process's nice value (the lowest priority), for itself and its own session."""


def _write(stream, data: bytes) -> None:
    stream.write(_LEN.pack(len(data)))
    stream.write(data)


def _read(stream) -> bytes:
    head = stream.read(_LEN.size)
    if len(head) < _LEN.size:
        raise EOFError
    n = _LEN.unpack(head)[0]
    data = stream.read(n)
    if len(data) < n:
        raise EOFError
    return data


def _table_bytes(table: pa.Table | None) -> bytes:
    if table is None:
        return b""
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _table(data: bytes) -> pa.Table | None:
    return ipc.open_stream(pa.py_buffer(data)).read_all() if data else None


class Fitter:
    """The parent's end: :meth:`run` sends one job and waits for its answer (other threads keep
    serving: the wait holds no lock of the interpreter)."""

    def __init__(self):
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
            self._proc = subprocess.Popen([sys.executable, "-m", "analysis.serve.fitter"],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                          start_new_session=True)  # its own autogroup: see lower_priority
        return self._proc

    def run(self, key: tuple, trials: pa.Table, curves: pa.Table | None):
        """The law ``key`` of these tables (a dict), or raise its :class:`AnalysisError`."""
        with self._lock:
            proc = self._start()
            try:
                _write(proc.stdin, json.dumps(list(key)).encode())
                _write(proc.stdin, _table_bytes(trials))
                _write(proc.stdin, _table_bytes(curves))
                proc.stdin.flush()
                answer = json.loads(_read(proc.stdout))
            except (OSError, EOFError, ValueError):
                self.close()
                raise AnalysisError("the fitting process stopped; fitted again when new trials arrive") from None
        if "error" in answer:
            raise AnalysisError(answer["error"])
        return answer["value"]

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.stdin.close()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()


def lower_priority() -> None:
    """Take only the CPU nothing else wants: Linux's idle scheduling class (``SCHED_IDLE``) and
    nice 19 for this process, and nice 19 for its session's autogroup. With autogroups (Linux's
    default on desktops and most servers), a nice value orders only processes of one session:
    sessions share the CPU equally, so a fit in the server's session, niced or not, still takes
    its session's half of a core from a sweep started in another terminal. This process is a
    session of its own (``start_new_session``), so the autogroup it lowers holds only itself.
    Each step is skipped where the system does not offer it."""
    with contextlib.suppress(OSError, AttributeError):
        os.nice(NICE - os.nice(0))
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    if os.getsid(0) == os.getpid():  # never the autogroup of a session it shares (a terminal's)
        with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as f:
            f.write(str(NICE))


def main() -> int:
    lower_priority()  # a sweep on this machine comes first
    from analysis.serve.panels import compute_law

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            key = tuple(json.loads(_read(stdin)))
            trials, curves = _table(_read(stdin)), _table(_read(stdin))
        except EOFError:
            return 0
        try:
            text = json.dumps({"value": compute_law(key, trials, curves)}, allow_nan=False, default=str)
        except AnalysisError as e:
            text = json.dumps({"error": str(e).splitlines()[0] if str(e) else "no result"})
        except Exception as e:  # noqa: BLE001 - the page says it in one line
            text = json.dumps({"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
        _write(stdout, text.encode())
        stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
