"""What the dashboard reads from a results store: its sweeps, a cheap version of each sweep, and
each sweep's tables and computed results, cached per version.

A sweep's *version* is a digest of its part files' names, sizes and modification times
(``trials/`` and ``curves/``; hidden temporary files left out). Listing two folders costs a
few milliseconds however many trials the parts hold, so a page polls it every few seconds
and asks for data only when it changed. Everything computed from a sweep (its tables, the
learning-curve fit, B_opt, the figures) is cached under the version it was read at, so a
refresh after nothing changed recomputes nothing, and a refresh after one new part refits
each law once. The version is taken *before* the tables are read: a part committed during
the read makes the next poll see a change, never a stale cache that claims to be current.

The tables are read by :func:`analysis.tables.load_sweep`, the reader of every analysis
command (the store's views, their rule of which run is kept, skipped corrupt parts); this
module only lists folders, with the same ``pyarrow.fs`` filesystems the store uses.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs

from analysis.errors import AnalysisError

MARKERS = ("_sweep.json", "sweep.yaml")
"""A folder holding one of these is a sweep (as :meth:`scaling.store.writer.Store.is_sweep`)."""
TABLES = ("trials", "curves")
CURVES_WHOLE_BYTES = 64 << 20
"""A sweep whose curve parts hold more than this on disk is read without its curves (the
trials alone, through :func:`analysis.tables.load_trials`): its curves, read whole, would
take minutes and gigabytes (the store benchmark's 100k trials: 10M curve rows, 46 s, 4 GB).
The panels that need them say so."""
REFRESH_SHARE = 0.1
"""At most this share of one core goes to following a sweep: after a new part, a sweep is read
again only once ``(1 / share - 1)`` times what its last version cost (reading it and computing
what the page asked of it) has passed since it was read; until then the page shows that version
and says so. A small sweep is followed within a second or two; a 100k-trial one more slowly."""


def _filesystem(root: str) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, base path, query string) of a local path or store URI."""
    root = str(root)
    if "://" not in root:
        return pafs.LocalFileSystem(), os.path.abspath(root), ""
    query = root.partition("?")[2]
    try:
        fs, path = pafs.FileSystem.from_uri(root)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise AnalysisError(f"cannot open the store {root!r}: {str(e).splitlines()[0]}") from None
    return fs, path.rstrip("/"), query


@dataclass
class Version:
    """A sweep's parts at one moment."""

    digest: str
    """Changes whenever a part is added, removed or rewritten."""
    trial_parts: int
    curve_parts: int
    latest_ns: int = 0
    """Modification time of the newest part (ns since the epoch; 0 when there is none)."""
    curve_bytes: int = 0
    """Size of the curve parts on disk."""


@dataclass
class _Entry:
    version: str = ""
    tables: tuple | None = None
    error: str = ""
    results: dict = field(default_factory=dict)
    loaded_at: float = 0.0
    cost_s: float = 0.0
    """Seconds spent reading this version and computing from it."""
    lock: threading.RLock = field(default_factory=threading.RLock)


class Source:
    """A results root (a store of sweeps, or one sweep folder) and the cache of its sweeps."""

    def __init__(self, root: str, refresh_share: float = REFRESH_SHARE,
                 curves_whole_bytes: int = CURVES_WHOLE_BYTES):
        self.root = str(root)
        self.refresh_share = refresh_share
        self.curves_whole_bytes = curves_whole_bytes
        self.fs, self.base, self._query = _filesystem(self.root)
        info = self.fs.get_file_info(self.base)
        if info.type == pafs.FileType.NotFound:
            raise AnalysisError(f"no results directory at {self.root!r}; "
                                "pass the --results folder of a sweep")
        if info.type != pafs.FileType.Directory:
            raise AnalysisError(f"{self.root!r} is not a directory; pass the --results folder of a sweep")
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self.loads = 0
        """How many times a sweep's tables were read (tests and the benchmark count them)."""

    # ---- listing ------------------------------------------------------------------------

    def _path(self, sweep: str, *rest: str) -> str:
        return "/".join([self.base] + ([sweep] if sweep else []) + list(rest))

    def _is_sweep(self, sweep: str) -> bool:
        infos = self.fs.get_file_info([self._path(sweep, m) for m in MARKERS])
        return any(i.type == pafs.FileType.File for i in infos)

    def sweeps(self) -> list[str]:
        """Sweep names under the root, sorted; ``[""]`` when the root is itself a sweep folder."""
        if self._is_sweep(""):
            return [""]
        entries = self.fs.get_file_info(pafs.FileSelector(self.base, allow_not_found=True))
        names = sorted(e.base_name for e in entries if e.type == pafs.FileType.Directory
                       and not e.base_name.startswith((".", "_")))
        return [n for n in names if self._is_sweep(n)]

    def check(self, sweep: str) -> str:
        """``sweep`` if it is one of :meth:`sweeps`, else :class:`AnalysisError` listing them."""
        known = self.sweeps()
        if sweep not in known:
            raise AnalysisError(f"no sweep {sweep!r} here; the sweeps are: "
                                f"{', '.join(repr(s) for s in known) or 'none'}")
        return sweep

    def version(self, sweep: str) -> Version:
        """The sweep's :class:`Version`: one listing of its two part folders."""
        h = hashlib.sha1()
        counts, latest, sizes = [], 0, {}
        for table in TABLES:
            sel = pafs.FileSelector(self._path(sweep, table), allow_not_found=True)
            parts = sorted((e.base_name, e.size or 0, e.mtime_ns or 0)
                           for e in self.fs.get_file_info(sel)
                           if e.type == pafs.FileType.File and e.base_name.endswith(".parquet")
                           and not e.base_name.startswith((".", "_")))
            for name, size, mtime in parts:
                h.update(f"{table}/{name}:{size}:{mtime}\n".encode())
                latest = max(latest, mtime)
            counts.append(len(parts))
            sizes[table] = sum(size for _, size, _ in parts)
        return Version(h.hexdigest()[:16], *counts, latest_ns=latest, curve_bytes=sizes["curves"])

    # ---- reading and caching -------------------------------------------------------------

    def location(self, sweep: str) -> str:
        """What :func:`analysis.tables.load_sweep` is given for one sweep: its folder (a URI keeps
        its scheme and query)."""
        if "://" not in self.root:
            return self._path(sweep)
        uri, _, query = self.root.partition("?")
        path = uri.rstrip("/") + (f"/{sweep}" if sweep else "")
        return path + (f"?{query}" if query else "")

    def _entry(self, sweep: str) -> _Entry:
        with self._lock:
            return self._entries.setdefault(sweep, _Entry())

    def tables(self, sweep: str) -> tuple[str, pa.Table | None, pa.Table | None, str]:
        """(version, trials, curves, why there are none) of a sweep, read again only when its
        version changed. A sweep with no committed trial yet gives ``None`` tables and the reason.
        A read that fails (the store did not answer, parts vanished under it) keeps the version
        that was read before, so the next call tries again."""
        entry = self._entry(sweep)
        with entry.lock:
            version = self.version(sweep)
            stale = version.digest != entry.version or (entry.tables is None and not entry.error)
            if stale and not self._too_soon(entry):
                start = time.monotonic()
                tables, error = None, ""
                if version.trial_parts == 0:
                    error = "no trial has finished yet"
                else:
                    try:
                        tables = self._read(sweep, with_curves=version.curve_bytes <= self.curves_whole_bytes)
                    except AnalysisError as e:
                        error = str(e)
                    except Exception as e:  # noqa: BLE001 - the store failed to answer this once
                        if entry.tables is None:
                            entry.error = (f"the store could not be read just now "
                                           f"({type(e).__name__}: {str(e).splitlines()[0]}); "
                                           "trying again at the next poll")
                        trials, curves = entry.tables or (None, None)
                        return entry.version, trials, curves, entry.error  # version kept: retried
                entry.results = {}
                entry.version, entry.tables, entry.error = version.digest, tables, error
                entry.loaded_at = time.monotonic()
                entry.cost_s = entry.loaded_at - start
            trials, curves = entry.tables if entry.tables is not None else (None, None)
            return entry.version, trials, curves, entry.error

    def _read(self, sweep: str, with_curves: bool = True):
        """(trials, curves) of a sweep, curves None without ``with_curves``; a read that fails
        while parts change under it (a compaction deleting the parts it merged) is tried again,
        three times at most."""
        from analysis.tables import load_sweep, load_trials

        def read():
            if with_curves:
                return load_sweep(self.location(sweep))
            return load_trials(self.location(sweep)), None

        for _ in range(2):
            try:
                tables = read()
                break
            except AnalysisError:
                raise
            except Exception:  # noqa: BLE001 - tried again below; the last failure is raised
                time.sleep(0.2)
        else:
            tables = read()
        self.loads += 1
        return tables

    def _too_soon(self, entry: _Entry) -> bool:
        """Whether reading a sweep again now would spend more than :attr:`refresh_share` of a core."""
        if entry.tables is None or self.refresh_share >= 1:
            return False
        wait = entry.cost_s * (1 / max(self.refresh_share, 1e-3) - 1)
        return time.monotonic() - entry.loaded_at < wait

    def result(self, sweep: str, key, compute):
        """``compute(trials, curves)`` for the sweep's current version, cached under ``key``.

        ``compute`` may ask for other results of the same sweep (the lock is reentrant).
        An :class:`AnalysisError` is cached too (degenerate data stay degenerate until a new
        part arrives) and raised again.
        """
        version, trials, curves, error = self.tables(sweep)
        entry = self._entry(sweep)
        with entry.lock:
            if entry.version == version and key in entry.results:
                value = entry.results[key]
            else:
                start = time.monotonic()
                if trials is None:
                    value = AnalysisError(error)
                else:
                    try:
                        value = compute(trials, curves)
                    except AnalysisError as e:
                        value = e
                if entry.version == version:
                    entry.cost_s += time.monotonic() - start
                if entry.version == version:
                    entry.results[key] = value
        if isinstance(value, AnalysisError):
            raise value
        return value
