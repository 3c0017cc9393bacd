"""Is Ray itself still there? Telling a broken cluster from a trial that failed.

A trial whose own code raises, or whose worker dies while the cluster is fine (a segfault, an
out-of-memory kill), is the trial's result: a ``failed`` row. A dead raylet or GCS, a session
folder that vanished, or a cluster that cannot start a worker anywhere is not: storing the
trials it took down as ``failed`` would make the next run skip them. :class:`Health` watches
the Ray the driver is connected to and says which it is; the driver stops the sweep with
:class:`ClusterFailure` (one line, exit code 4, see ``cluster.cli``) and writes no row, so the
same command reruns every trial that had not committed.

- A local Ray started by this driver: its GCS and raylet are child processes, so their death is
  seen at once (``poll``); its session folder must still be the same folder.
- A joined cluster: the GCS address must accept a connection; Ray's own client gives up after
  60 s, so the driver stops after ``GCS_GRACE_S`` without one (a GCS that restarts under
  fault tolerance comes back well within it).
- Either: after a task failed for a reason that is not the trial's own exception, a trivial
  task must run within ``PROBE_S`` seconds (``probe``).
"""

from __future__ import annotations

import os
import socket
import time

EXIT_CODE = 4
"""Exit code of a sweep stopped by a Ray failure (2: a user mistake, 3: the results store)."""
GCS_GRACE_S = 30.0
"""Seconds a joined cluster's GCS may refuse connections before the sweep stops."""
GCS_EVERY_S = 5.0
"""Seconds between two connections to a joined cluster's GCS address."""
PROBE_S = 60.0
"""Seconds a trivial task may take to run before the cluster is taken for broken."""


class ClusterFailure(Exception):
    """Ray itself failed under the sweep (not a trial): stop, store nothing as ``failed``."""


def _where(reason: str) -> str:
    return (f"{reason}; the trials that had not finished were not stored (none is marked failed): "
            "run the same command again to run them")


def failure(reason: str) -> ClusterFailure:
    return ClusterFailure(_where(reason))


class Health:
    """What to watch of the Ray this process is connected to (see the module docstring)."""

    def __init__(self, every_s: float = 0.5):
        self.every_s = every_s
        self.last = 0.0
        self.children: dict[str, object] = {}  # "GCS" / "raylet" -> subprocess.Popen (a local Ray)
        self.session: tuple[str, int] | None = None
        self.gcs: tuple[str, int] | None = None  # a joined cluster's GCS (host, port)
        self.gcs_down_since: float | None = None
        self.gcs_checked = 0.0
        try:
            import ray._private.worker as ray_worker

            node = ray_worker._global_node
        except ImportError:
            node = None
        if node is None:  # not connected, or a ray:// client: nothing of it here to watch
            return
        for key, name in (("gcs_server", "GCS"), ("raylet", "raylet")):
            infos = node.all_processes.get(key) or []
            if infos and getattr(infos[0], "process", None) is not None:
                self.children[name] = infos[0].process
        if "GCS" not in self.children:
            host, _, port = str(node.gcs_address).rpartition(":")
            if host and port.isdigit():
                self.gcs = (host.strip("[]"), int(port))
        try:
            path = node.get_session_dir_path()
            self.session = (path, os.stat(path).st_ino)
        except (OSError, TypeError, AttributeError):
            self.session = None

    def check(self, force: bool = False) -> str | None:
        """None while Ray looks healthy, else what broke (one phrase). At most every ``every_s``."""
        now = time.monotonic()
        if not force and now - self.last < self.every_s:
            return None
        self.last = now
        for name, process in self.children.items():
            code = process.poll()
            if code is not None:
                how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                return f"the local Ray's {name} (pid {process.pid}) died ({how})"
        if self.session is not None:
            path, inode = self.session
            try:
                same = os.stat(path).st_ino == inode
            except OSError:
                same = False
            if not same:
                return f"Ray's session folder {path} was removed or replaced"
        if self.gcs is not None and (force or now - self.gcs_checked >= GCS_EVERY_S):
            self.gcs_checked = now
            try:
                socket.create_connection(self.gcs, timeout=2.0).close()
                self.gcs_down_since = None
            except OSError:
                self.gcs_down_since = self.gcs_down_since or now
                if now - self.gcs_down_since >= GCS_GRACE_S:
                    return (f"the Ray cluster's GCS at {self.gcs[0]}:{self.gcs[1]} has refused connections "
                            f"for {GCS_GRACE_S:.0f}s")
        return None

    def probe(self, timeout_s: float = PROBE_S) -> str | None:
        """None if Ray can still run a trivial task (a new worker process) within ``timeout_s``."""
        reason = self.check(force=True)
        if reason:
            return reason
        import ray

        try:
            ray.get(ray.remote(_pid).options(num_cpus=0, max_retries=0, name="scaling-health").remote(),
                    timeout=timeout_s)
        except Exception as e:  # noqa: BLE001 (any failure to run a no-op is the cluster's)
            return self.check(force=True) or (f"Ray could not run a trivial task within {timeout_s:.0f}s "
                                              f"({type(e).__name__})")
        return None


def _pid() -> int:
    return os.getpid()
