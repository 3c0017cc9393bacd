"""What the dashboard reads from a results store: its sweeps, a cheap version of each sweep, and
each sweep's tables and computed results, cached per content.

A sweep's *version* is a digest of its part files' names, sizes and modification times
(``trials/`` and ``curves/``; hidden temporary files left out). Listing two folders costs a
few milliseconds however many trials the parts hold, so a page polls it every few seconds
and asks for data only when it changed. When it changed and every part read before is still
there unchanged, only the new parts are read (:func:`analysis.tables.load.load_parts` with the
store views' ``keep``) and merged into the tables by the store's rule of which run is kept
(:func:`analysis.tables.load.merge_runs`); when a part read before changed or vanished (a
compaction, a repair), everything is read again. The version is taken *before* the read: a
part committed during the read makes the next poll see a change, never a stale cache that
claims to be current.

Everything computed from a sweep (its frame, the panels, the laws) is cached under the
sweep's *content*, a digest of the runs its tables keep: a refresh after nothing changed
computes nothing, and neither does one after a compaction or after a part whose runs all
lose. The laws are computed by :meth:`Source.slow_result` in the background (in a process of
their own when a :class:`~analysis.serve.fitter.Fitter` is given), so a page never waits for a
fit: it shows the last one, marked stale, until the new one is ready.

The tables are read through :mod:`analysis.tables` (the store's views, their rule of which run
is kept, skipped corrupt parts), the readers of every analysis command; this module only lists
folders, with the same ``pyarrow.fs`` filesystems the store uses.
"""

from __future__ import annotations

import hashlib
import os
import sys
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
RUNNING_SHARE = 0.03
"""While a sweep still has trials to come (fewer stored than its config expands to), following it
takes at most this share of one core instead, for its reads and for its laws' fits each (a read
waits 32 times what the last cost before the next, and so does a round of fits): on a machine whose
cores the sweep keeps busy, whatever CPU the page takes comes out of the sweep (measured: a
followed 720-trial sweep took 8-10 % longer at :data:`REFRESH_SHARE`). The page shows the
version it has, and the laws last fitted with the trials they are as of; once the last trial is
in, and :data:`ENDING_S` more, it follows at :data:`REFRESH_SHARE` again (a waiting round of fits
looks at the share each second, so the sweep's end starts it)."""
ENDING_S = 3.0
"""A sweep seen running keeps :data:`RUNNING_SHARE` this long after its last trial is read: its
driver is still at work (the last compaction, Ray's stop: 0.3-1 s on the 2-core machine), and the
last round of fits, 0.3-0.5 s of CPU for the demo sweep, slowed that end when it started at once."""


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
    parts: dict = field(default_factory=dict, repr=False)
    """``{(table, name): (size, mtime_ns)}`` of every part."""


@dataclass
class _Entry:
    version: str = ""
    parts: dict = field(default_factory=dict)
    """The parts the tables were read from (:attr:`Version.parts`)."""
    tables: tuple | None = None
    error: str = ""
    content: str = ""
    """Digest of what the tables hold (every kept run's id, and whether the curves were read):
    what every result is cached under. A compaction, or a part whose runs all lose, changes the
    version but not the content: nothing is computed again."""
    results: dict = field(default_factory=dict)
    """``{key: (content, value)}``."""
    loaded_at: float = 0.0
    cost_s: float = 0.0
    """Seconds spent reading this version and computing from it."""
    lock: threading.RLock = field(default_factory=threading.RLock)
    queue: dict = field(default_factory=dict)
    """Background results asked for and not yet computed: ``{key: compute}``."""
    appended: tuple | None = None
    """(content before, rows before) when the last read only appended rows to the tables."""
    worker: threading.Thread | None = None
    slow_done_at: float = 0.0
    slow_cost_s: float = 0.0
    """When the background worker last finished, and what its last round cost."""
    expected: tuple = ("", None)
    """(version, trials the stored config expands to) as last read."""
    seen_running: bool = False
    ended_at: float | None = None
    """Whether the sweep was seen :meth:`Source.running`, and when it was first seen with every
    trial in after that (None while it runs)."""


class Source:
    """A results root (a store of sweeps, or one sweep folder) and the cache of its sweeps."""

    def __init__(self, root: str, refresh_share: float = REFRESH_SHARE,
                 curves_whole_bytes: int = CURVES_WHOLE_BYTES, fitter=None,
                 running_share: float = RUNNING_SHARE, ending_s: float = ENDING_S):
        self.root = str(root)
        self.fitter = fitter
        """Where the laws are fitted: an :class:`analysis.serve.fitter.Fitter` (a process of
        their own; what ``scaling serve`` uses), or None: a thread of this process."""
        self.refresh_share = refresh_share
        self.running_share = running_share
        self.ending_s = ending_s
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
        self._closed = False
        self.loads = 0
        """How many times a sweep's tables were read (tests and the benchmark count them)."""
        self.delta_loads = 0
        """How many of those read only the new parts."""

    def close(self, wait_s: float = 0.0) -> None:
        """Stop the background fits (a round under way ends with its current fit; none starts
        after) and the fitting process, if one was started; wait up to ``wait_s`` for the fits'
        threads to end (the benchmark does, so that a served sweep's last fits do not run into the
        next sweep it times)."""
        self._closed = True
        deadline = time.monotonic() + wait_s
        with self._lock:
            workers = [e.worker for e in self._entries.values() if e.worker is not None]
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        if self.fitter is not None:
            self.fitter.close()

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
        counts, latest, sizes, found = [], 0, {}, {}
        for table in TABLES:
            sel = pafs.FileSelector(self._path(sweep, table), allow_not_found=True)
            parts = sorted((e.base_name, e.size or 0, e.mtime_ns or 0)
                           for e in self.fs.get_file_info(sel)
                           if e.type == pafs.FileType.File and e.base_name.endswith(".parquet")
                           and not e.base_name.startswith((".", "_")))
            for name, size, mtime in parts:
                h.update(f"{table}/{name}:{size}:{mtime}\n".encode())
                latest = max(latest, mtime)
                found[(table, name)] = (size, mtime)
            counts.append(len(parts))
            sizes[table] = sum(size for _, size, _ in parts)
        return Version(h.hexdigest()[:16], *counts, latest_ns=latest, curve_bytes=sizes["curves"],
                       parts=found)

    # ---- reading and caching -------------------------------------------------------------

    def location(self, sweep: str) -> str:
        """What :func:`analysis.tables.load_sweep` is given for one sweep: its folder (a URI keeps
        its scheme and query)."""
        if "://" not in self.root:
            return self._path(sweep)
        uri, _, query = self.root.partition("?")
        path = uri.rstrip("/") + (f"/{sweep}" if sweep else "")
        return path + (f"?{query}" if query else "")

    def expected(self, sweep: str) -> int | None:
        """Trials the sweep's stored config expands to (what ``scaling status`` prints as
        in_config), or None when the store has no readable sweep.yaml; read again only when the
        sweep's version changed since (a sweep extended with more values stores a new config)."""
        import warnings

        from scaling.status import expected_trials
        from scaling.store.writer import Store

        entry = self._entry(sweep)
        version = entry.version
        if entry.expected[0] == version and version:
            return entry.expected[1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                n = expected_trials(Store(self.location("")), sweep)
            except Exception:  # noqa: BLE001 - the ETA is then unknown, and says why
                n = None
        entry.expected = (version, n)
        return n

    def running(self, sweep: str) -> bool:
        """Whether the trials last read are fewer than the sweep's config expands to: it is still
        running (or was stopped before its end)."""
        entry = self._entry(sweep)
        if entry.tables is None:
            return False
        expected = self.expected(sweep)
        return expected is not None and entry.tables[0].num_rows < expected

    def share(self, sweep: str) -> float:
        """Share of one core that following the sweep may take now, for its reads and for its
        background results each: :attr:`refresh_share`, or :attr:`running_share` while the sweep
        is :meth:`running` and for :attr:`ending_s` after it was first seen with every trial in
        (when it was seen running before: a finished sweep opened is followed at once)."""
        if self.refresh_share >= 1:
            return self.refresh_share
        entry, now = self._entry(sweep), time.monotonic()
        if self.running(sweep):
            entry.seen_running, entry.ended_at = True, None
        elif entry.seen_running and entry.ended_at is None:
            entry.ended_at = now
        if not entry.seen_running or entry.ended_at is not None and now - entry.ended_at >= self.ending_s:
            return self.refresh_share
        return min(self.refresh_share, self.running_share)

    def _entry(self, sweep: str) -> _Entry:
        with self._lock:
            return self._entries.setdefault(sweep, _Entry())

    def tables(self, sweep: str) -> tuple[str, pa.Table | None, pa.Table | None, str]:
        """(version, trials, curves, why there are none) of a sweep, read again only when its
        version changed, and then only its new parts when no part it read before changed (a
        compaction, a repair: everything is read again). A sweep with no committed trial yet
        gives ``None`` tables and the reason. A read that fails (the store did not answer,
        parts vanished under it) keeps the version that was read before, so the next call
        tries again."""
        entry = self._entry(sweep)
        with entry.lock:
            version = self.version(sweep)
            stale = version.digest != entry.version or (entry.tables is None and not entry.error)
            if stale and not self._too_soon(sweep, entry):
                start = time.monotonic()
                tables, error, appended = None, "", False
                if version.trial_parts == 0:
                    error = "no trial has finished yet"
                else:
                    try:
                        tables, appended = self._read(sweep, entry, version)
                    except AnalysisError as e:
                        error = str(e)
                    except Exception as e:  # noqa: BLE001 - the store failed to answer this once
                        if entry.tables is None:
                            entry.error = (f"the store could not be read just now "
                                           f"({type(e).__name__}: {str(e).splitlines()[0]}); "
                                           "trying again at the next poll")
                        trials, curves = entry.tables or (None, None)
                        return entry.version, trials, curves, entry.error  # version kept: retried
                    if tables is not None and tables[0].num_rows == 0:
                        tables, error = None, "no trial has finished yet"
                before, rows = entry.content, entry.tables[0].num_rows if entry.tables else 0
                same_start = tables is not None and entry.tables is not None and \
                    tables[0].num_rows >= rows and tables[0].schema == entry.tables[0].schema
                entry.version, entry.parts, entry.tables, entry.error = \
                    version.digest, version.parts, tables, error
                entry.content = _content(tables, error)
                entry.appended = (before, rows) if same_start and appended else None
                entry.loaded_at = time.monotonic()
                entry.cost_s = entry.loaded_at - start
            trials, curves = entry.tables if entry.tables is not None else (None, None)
            return entry.version, trials, curves, entry.error

    def _read(self, sweep: str, entry: _Entry, version: Version):
        """((trials, curves), whether rows were only appended) of a sweep at ``version``: the new
        parts merged into the tables read before when every part read before is still there
        unchanged, else everything; curves
        None when they hold more than :attr:`curves_whole_bytes`. A read that fails while parts
        change under it (a compaction deleting the parts it merged) is tried again, three times
        at most."""
        from analysis.tables import load
        with_curves = version.curve_bytes <= self.curves_whole_bytes
        where = self.location(sweep)
        old = entry.tables
        grown = (old is not None and not entry.error and (old[1] is not None) == with_curves
                 and all(version.parts.get(k) == v for k, v in entry.parts.items()))
        if grown:
            stems = {name[:-len(".parquet")] for (table, name) in version.parts
                     if table == "trials" and (table, name) not in entry.parts}
            if not stems:  # a curves part before its trials part: nothing is committed yet
                return old, False
            read = lambda: load.load_parts(where, stems, curves=with_curves, config=with_curves)
        else:
            read = lambda: load.load_parts(where, curves=with_curves, config=with_curves)

        for _ in range(2):
            try:
                new = read()
                break
            except AnalysisError:
                raise
            except Exception:  # noqa: BLE001 - tried again below; the last failure is raised
                time.sleep(0.2)
        else:
            new = read()
        self.loads += 1
        if not grown:
            return new, False
        if new is None:  # a part of the legacy layout among the new ones: read everything
            self.loads += 1
            return load.load_parts(where, curves=with_curves, config=with_curves), False
        self.delta_loads += 1
        trials, curves = load.merge_runs(old[0], new[0], old[1], new[1], sort=False)
        # no old run lost: the old rows come first, as they were (see :meth:`appended`)
        return (trials, curves), trials.num_rows == old[0].num_rows + new[0].num_rows

    def _too_soon(self, sweep: str, entry: _Entry) -> bool:
        """Whether reading a sweep again now would spend more than its :meth:`share` of a core."""
        share = self.share(sweep)
        if entry.tables is None or share >= 1:
            return False
        wait = entry.cost_s * (1 / max(share, 1e-3) - 1)
        return time.monotonic() - entry.loaded_at < wait

    def appended(self, sweep: str, key):
        """(value, rows) of result ``key`` computed from the tables before the last read, when
        that read only appended rows to them (its first ``rows`` rows are the old ones, as they
        were): a result that can be extended rather than computed again; else None."""
        entry = self._entry(sweep)
        with entry.lock:
            if entry.appended is None:
                return None
            before, rows = entry.appended
            hit = entry.results.get(key)
            return (hit[1], rows) if hit is not None and hit[0] == before else None

    def result(self, sweep: str, key, compute):
        """``compute(trials, curves)`` for the sweep's current content, cached under ``key``.

        ``compute`` may ask for other results of the same sweep (the lock is reentrant).
        An :class:`AnalysisError` is cached too (degenerate data stay degenerate until a new
        part arrives) and raised again.
        """
        _, trials, curves, error = self.tables(sweep)
        entry = self._entry(sweep)
        with entry.lock:
            content = entry.content
            hit = entry.results.get(key)
            if hit is not None and hit[0] == content:
                value = hit[1]
            else:
                start = time.monotonic()
                value = _compute(compute, trials, curves, error)
                entry.cost_s += time.monotonic() - start
                entry.results[key] = (content, value)
        if isinstance(value, AnalysisError):
            raise value
        return value

    def slow_result(self, sweep: str, key, compute) -> tuple[object, bool, dict]:
        """(value, current, as of) of a result too slow to compute while a page waits (the
        laws): computed in a background thread, one result at a time, from the sweep's tables
        as they stand then, and cached under their content like :meth:`result`. Until the
        current content's value is ready this gives the last value computed (None before the
        first) with ``current`` False; a value may be an :class:`AnalysisError`. The background
        thread, too, spends at most a share of a core (:meth:`share`: less while the sweep
        runs): after a round of results it waits ``(1 / share - 1)`` times what the round cost
        before it starts the next. ``as of``: the trials the value was computed from, and when."""
        _, trials, _, error = self.tables(sweep)
        entry = self._entry(sweep)
        with entry.lock:
            content = entry.content
            hit = entry.results.get(key)
            if hit is not None and hit[0] == content:
                return hit[1], True, hit[2] if len(hit) > 2 else {}
            if trials is None:
                return AnalysisError(error), True, {}
            entry.queue[key] = compute
            if entry.worker is None or not entry.worker.is_alive():
                entry.worker = threading.Thread(target=self._work, args=(sweep, entry),
                                                daemon=True, name="scaling-serve-laws")
                entry.worker.start()
            return (hit[1], False, hit[2] if len(hit) > 2 else {}) if hit is not None else (None, False, {})

    def _work(self, sweep: str, entry: _Entry) -> None:
        while True:  # the share is looked at again each second: a sweep's last trial ends the long wait
            share = self.share(sweep)
            wait = entry.slow_cost_s * (1 / max(share, 1e-3) - 1) if share < 1 else 0.0
            delay = entry.slow_done_at + wait - time.monotonic()
            if self._closed:
                return
            if delay <= 0:
                break
            time.sleep(min(delay, 1.0))
        spent, done = 0.0, set()
        while not self._closed:
            _, trials, curves, error = self.tables(sweep)
            with entry.lock:
                content = entry.content
                pending = [k for k in entry.queue if k not in done
                           and entry.results.get(k, ("",))[0] != content]
                if not pending:  # a result whose trials changed meanwhile waits for the next round
                    entry.queue = {k: c for k, c in entry.queue.items()
                                   if entry.results.get(k, ("",))[0] != content}
                    entry.slow_done_at, entry.slow_cost_s = time.monotonic(), spent
                    return
                key = pending[0]
                compute = entry.queue[key]
                done.add(key)
            start = time.monotonic()
            value = _compute(compute, trials, curves, error)
            spent += time.monotonic() - start
            as_of = {"trials": int(trials.num_rows) if trials is not None else 0,
                     "at": time.strftime("%H:%M:%S"), "seconds": round(time.monotonic() - start, 2)}
            with entry.lock:
                entry.results[key] = (content, value, as_of)


def _compute(compute, trials, curves, error: str):
    """``compute(trials, curves)``, or the :class:`AnalysisError` it raised (or that there are no
    tables); an unexpected failure is one line too (printed on stderr)."""
    if trials is None:
        return AnalysisError(error)
    try:
        return compute(trials, curves)
    except AnalysisError as e:
        return e
    except Exception as e:  # noqa: BLE001 - a bug or degenerate data: the panel says it, one line
        text = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        print(f"scaling serve: {text}", file=sys.stderr)
        return AnalysisError(text)


def _content(tables, error: str) -> str:
    """Digest of what a read holds: the kept runs' (trial id, run id), sorted, and whether the
    curves were read; or the reason there is nothing."""
    if tables is None:
        return "none:" + error
    import pyarrow.compute as pc

    trials, curves = tables
    joined = pc.binary_join_element_wise(trials["sweep"], trials["trial_id"],
                                         pc.fill_null(trials["run_id"], ""), "\x00").combine_chunks()
    joined = joined.take(pc.sort_indices(joined))  # a merged read is not in the views' order
    h = hashlib.sha1(b"curves" if curves is not None else b"trials")
    for buf in joined.buffers()[1:]:
        if buf is not None:
            h.update(memoryview(buf))
    return h.hexdigest()[:16]
