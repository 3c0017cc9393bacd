"""Compaction: merge a sweep's parts into few, keeping only each trial's winning run and its curves.

A sweep writes two parts per commit event (:mod:`scaling.store.parts`); the driver compacts
its sweep whenever about :data:`COMPACT_EVERY` new parts have accumulated and once at
the end, and ``scaling compact`` does the same for any store. One merge takes a batch of
committed trials parts (small ones first, each with its curves) and:

1. reads the batch's rows that are the winners of their trial among *all* the sweep's
   committed runs (:data:`scaling.store.views.WINNER_ORDER`), and the curve rows of exactly those
   runs: curves of runs that lost, and duplicate copies, are dropped;
2. writes them as a new pair, the curves part ``merged-<id>`` first, then the trials part
   of that name (which commits it, as a commit event does);
3. writes an intent ``.compact-<id>.json`` naming the batch, deletes the batch's trials
   parts, then their curves parts, then the intent.

Why readers never see a row lost or doubled, whatever runs at the same time:

- Between 2 and 3 the batch's runs are committed twice (old part and merged part). Readers
  keep one copy per trial by the rule (copies of one run differ only by part path) and take
  curves only from the pair of the copy they keep, so nothing is counted twice.
- A part is deleted only after its winning rows are committed in the merged pair; its other
  rows lost to a run committed elsewhere. The rule is a total order, so the best run of a
  trial is never deleted without being copied first, whichever compactions run at once.
- Writers only add parts with fresh names, and a merge deletes only parts it listed before it
  started, so a commit made meanwhile is never deleted (a part of an earlier release, whose
  name a rerun reuses, is deleted only if its size and mtime are unchanged).
- Killed anywhere, the store reads the same: before the merged trials part exists the
  merged curves part is an uncommitted orphan; after, the leftovers are duplicates or losers.
  The next compaction (or ``verify --repair``) finishes the intent; a leftover without one
  is merged again like any small part.

Parts of an earlier release (legacy names, curves found by run_id) are merged the same way,
all of a sweep's together, so compaction also converts an old store to pairs.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs

import scaling.store.parts as parts_mod
from scaling.errors import StoreError
from scaling.spec.schema import CURVES_SCHEMA, TRIALS_SCHEMA
from scaling.store.lease import WAIT_S, Busy, Lease
from scaling.store.views import WINNER_ORDER, create_source

TARGET_ROWS = 100_000
"""Trials parts with fewer trial rows are merged, into parts of about this many (more when a
sweep is so large that this would make over MAX_PARTS/2 parts)."""
MAX_PARTS = 16
"""A compacted sweep has at most this many parts per table (plus any that cannot be read)."""
COMPACT_EVERY = 10_000
"""The driver compacts during a sweep whenever about this many new parts have been written."""
ORPHAN_S = 600.0
"""A curves part of a commit event whose trials part never came, older than this, is removed."""


@dataclass(frozen=True)
class Merge:
    """One batch of parts that :func:`compact` replaced by one pair."""

    sweep: str
    table: str
    part: str
    replaced: tuple[str, ...]
    rows_in: int
    rows_out: int


@dataclass(frozen=True)
class CompactReport:
    merges: tuple[Merge, ...]
    finished: tuple[str, ...]
    """Intents of interrupted compactions that this run finished or dropped."""
    skipped: tuple
    """Findings (path, kind, message) of parts left alone: unreadable or clashing."""
    removed: tuple[str, ...] = ()
    """Stale orphan curves parts and superseded parts removed."""


def compact(store, sweep: str | None = None, *, target_rows: int = TARGET_ROWS, max_parts: int = MAX_PARTS,
            stale_s: float = ORPHAN_S, everything: bool = True, lease_wait_s: float = WAIT_S) -> CompactReport:
    """Merge the small parts of each sweep (or of ``sweep``) as the module docstring says.
    ``everything=False`` (during a sweep) merges only the small parts, leaving the tiers alone.
    Intents and orphan curves of other compactions and writers are finished or removed once
    older than ``stale_s`` (they might still be at work until then).

    One compaction at a time per sweep (:mod:`scaling.store.lease`): a sweep whose lease another
    compaction holds is waited for up to ``lease_wait_s`` (not at all during a sweep, with
    ``everything=False``), then left to it, reported in ``skipped`` as ``busy``."""
    from scaling.store.parts import Finding

    if isinstance(target_rows, bool) or not isinstance(target_rows, int) or target_rows < 2:
        raise StoreError(f"target_rows must be an integer >= 2, got {target_rows!r}")
    names = store.sweeps()
    if sweep is not None:
        if sweep not in names:
            raise StoreError(f"no sweep {sweep!r} in {store.uri!r}; it has {names}")
        names = [sweep]
    merges, finished, skipped, removed = [], [], [], []
    for name in names:
        try:
            lease = Lease(store, name, wait_s=lease_wait_s if everything else 0.0)
            lease.acquire()
        except Busy as busy:
            skipped.append(Finding(store.sweep_dir(name) or store.root, "busy", f"another compaction "
                                   f"({busy.holder}) holds this sweep's lease; left to it"))
            continue
        try:
            _compact_sweep(store, name, lease, target_rows, max_parts, stale_s, everything,
                           merges, finished, skipped, removed)
        finally:
            lease.release()
    return CompactReport(tuple(merges), tuple(finished), tuple(skipped), tuple(removed))


def _compact_sweep(store, name, lease, target_rows, max_parts, stale_s, everything,
                   merges, finished, skipped, removed) -> None:
    """Compact one sweep while holding its lease; appends to the report's lists."""
    from scaling.store.parts import Finding

    finished += finish_intents(store, name, stale_s)
    sp = parts_mod.readable_parts(store, name)
    if _quarantine_oversize(store, sp, skipped):
        sp = parts_mod.readable_parts(store, name)
    skipped += [Finding(path, "unreadable", f"{why}; left alone") for path, why in sp.skipped]
    removed += _remove_orphans(store, sp, stale_s)
    for i, batch in enumerate(plan_batches(sp, target_rows, max_parts, everything)):
        for attempt in range(5):
            if i or attempt or sp.vanished:  # earlier merges (or someone else) changed the parts: list again
                sp = parts_mod.readable_parts(store, name)
                present = {e.path for e, _ in sp.trials}
                batch = [(e, f) for e, f in batch if e.path in present]
                if len(batch) < 2 and all(parts_mod.paired(e.stem) for e, _ in batch):
                    break
            if not lease.check():
                skipped.append(Finding(store.sweep_dir(name) or store.root, "busy", "this compaction's lease "
                                       "expired (the store was too slow to renew it); the rest is left"))
                return
            try:
                merge = _merge(store, name, sp, batch)
            except duckdb.IOException as e:
                if not _vanished(e):
                    raise
                continue  # a part vanished between listing and reading (a repair moved it): list again
            if merge is not None:
                merges.append(merge)
            break
        else:
            skipped.append(Finding(batch[0][0].path, "raced", "parts of this batch kept vanishing while "
                                   "being read; left for the next compaction"))


def _quarantine_oversize(store, sp, skipped: list) -> bool:
    """Move each part with a column over the size bound (:func:`scaling.store.parts.max_column_bytes`),
    with the other part of its pair, to ``<sweep>/quarantine/<table>/``: reading it would exhaust
    memory. Its trials count as not run. Returns whether any was moved."""
    from scaling.store.parts import Finding
    from scaling.store.writer import QUARANTINE

    heads = {}
    for table in ("trials", "curves"):
        entries = list(sp.listing.parts[table].values())
        found = parts_mod.footers(store, entries, table)
        heads.update({(table, e.stem): (e, found[e.path]) for e in entries})
    moved = False
    for (table, stem), (e, f) in heads.items():
        if f.kind != "oversize":
            continue
        partners = [heads[(t, stem)][0] for t in ("trials", "curves") if t != table and (t, stem) in heads
                    and parts_mod.paired(stem)]
        for victim, folder in [(e, table)] + [(p, "curves" if table == "trials" else "trials") for p in partners]:
            target = f"{sp.listing.base}/{QUARANTINE}/{folder}/{victim.name}"
            try:
                store.fs.create_dir(f"{sp.listing.base}/{QUARANTINE}/{folder}", recursive=True)
                if store.fs.get_file_info(target).type != pafs.FileType.NotFound:
                    target = f"{sp.listing.base}/{QUARANTINE}/{folder}/{uuid.uuid4().hex[:8]}-{victim.name}"
                store.fs.move(victim.path, target)
            except FileNotFoundError:
                continue
            moved = True
        skipped.append(Finding(e.path, "oversize", f"{f.problem.split('; readers')[0]}; moved to "
                               f"{sp.listing.base}/{QUARANTINE}/ with its pair, its trials count as not run"))
    return moved


def _vanished(e: Exception) -> bool:
    """Whether DuckDB failed because a listed part no longer exists."""
    text = str(e).lower()
    return any(w in text for w in ("no such file", "not found", "does not exist", "no files found"))


# ---- choosing batches ------------------------------------------------------------------------

def plan_batches(sp, target_rows: int, max_parts: int, everything: bool) -> list[list]:
    """Batches of committed trials parts (Entry, Footer) to merge: every legacy part in one batch;
    the small paired parts in batches of about ``target`` rows (``target`` grows with the sweep so
    that it needs at most ``max_parts / 2`` full parts); then, with ``everything``, while the sweep
    would keep over ``max_parts`` parts, the smallest of the rest together."""
    parts = sorted(sp.trials, key=lambda ef: (ef[1].rows, ef[0].name))
    legacy = [p for p in parts if not parts_mod.paired(p[0].stem)]
    paired = [p for p in parts if parts_mod.paired(p[0].stem)]
    total = sum(f.rows for _, f in parts)
    target = max(target_rows, -(-total // max(1, max_parts // 2)))
    batches = []
    small = [p for p in paired if p[1].rows < target]
    big = [p for p in paired if p[1].rows >= target]
    current, rows = list(legacy), sum(f.rows for _, f in legacy)  # every legacy part in the first batch
    for p in small:
        if current and rows + p[1].rows > target:
            batches.append(current)
            current, rows = [], 0
        current.append(p)
        rows += p[1].rows
    if current:
        batches.append(current)
    batches = [b for b in batches if len(b) > 1 or not parts_mod.paired(b[0][0].stem)]
    if everything:
        batched = {id(p) for b in batches for p in b}
        kept = len(big) + len(batches) + sum(id(p) not in batched for p in small)
        while kept > max_parts and len(big) >= 2:
            take = big[:kept - max_parts + 1]
            big = big[len(take):]
            batches.append(take)
            kept -= len(take) - 1
    return batches


# ---- one merge ---------------------------------------------------------------------------------

def _merge(store, sweep: str, sp, batch: list) -> Merge | None:
    local = isinstance(store.fs, pafs.LocalFileSystem)
    ident = uuid.uuid4().hex
    name = f"merged-{ident}"
    legacy_curves = [e for e, _ in sp.legacy_curves] if any(not parts_mod.paired(e.stem) for e, _ in batch) else []
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        create_source(con, store, "_t_src", TRIALS_SCHEMA, [(e.path, f.schema.names) for e, f in sp.trials],
                      local, part=True)
        paths = [e.path for e, _ in batch]
        con.execute("CREATE TEMP TABLE _batch AS SELECT unnest($1::VARCHAR[]) AS _part", [paths])
        con.execute(f"CREATE TEMP TABLE _win AS SELECT sweep, trial_id, run_id, _part FROM (SELECT sweep, "
                    f"trial_id, run_id, _part, row_number() OVER (PARTITION BY sweep, trial_id ORDER BY "
                    f"{WINNER_ORDER}) = 1 AS won FROM _t_src) WHERE won AND _part IN (SELECT _part FROM _batch)")
        cols = ", ".join(f't."{f.name}"' for f in TRIALS_SCHEMA)
        trials_sql = (f"SELECT {cols} FROM _t_src t SEMI JOIN _win w ON t.run_id IS NOT DISTINCT FROM w.run_id "
                      "AND t._part = w._part AND t.trial_id = w.trial_id ORDER BY t.sweep, t.trial_id")
        curves_sql = _curves_sql(con, store, sp, batch, local)
        rows_out = con.sql("SELECT count(*) FROM _win").fetchall()[0][0]
        intent = {"layout": 2, "merged": name if rows_out else None,
                  "trials": [e.name for e, _ in batch],
                  "curves": [e.name for e, _ in batch if parts_mod.paired(e.stem)] + [e.name for e in legacy_curves],
                  "legacy": {**{f"trials/{e.name}": [e.size, e.mtime_ns] for e, _ in batch
                                if not parts_mod.paired(e.stem)},
                             **{f"curves/{e.name}": [e.size, e.mtime_ns] for e in legacy_curves}}}
        path = f"{store.table_dir(sweep, 'trials')}/{parts_mod.INTENT_PREFIX}{ident}.json"
        store.write_bytes(path, json.dumps(intent, indent=1).encode())
        if rows_out:
            store.write_stream(f"{store.table_dir(sweep, 'curves')}/{name}.parquet", CURVES_SCHEMA,
                               con.sql(curves_sql).to_arrow_reader(parts_mod.ROW_GROUP_ROWS))
            store.write_stream(f"{store.table_dir(sweep, 'trials')}/{name}.parquet", TRIALS_SCHEMA,
                               con.sql(trials_sql).to_arrow_reader(parts_mod.ROW_GROUP_ROWS))
    finally:
        con.close()
    _finish(store, sweep, path, intent, own=True)
    merged = f"{store.table_dir(sweep, 'trials')}/{name}.parquet" if rows_out else ""
    return Merge(sweep, "trials", merged, tuple(e.path for e, _ in batch), sum(f.rows for _, f in batch), rows_out)


def _curves_sql(con, store, sp, batch, local: bool) -> str:
    """SQL for the curve rows of the batch's winning runs (from each paired part's own curves, and
    from the legacy curves parts for legacy parts), each once."""
    pairs = {e.stem: c for e, _ in batch if parts_mod.paired(e.stem) for c, _ in [sp.curves[e.stem]]}
    ccols = ", ".join(f'c."{f.name}"' for f in CURVES_SCHEMA)
    unions = []
    if pairs:
        files = [(c.path, sp.curves[stem][1].schema.names) for stem, c in pairs.items()]
        create_source(con, store, "_c_pairs", CURVES_SCHEMA, files, local, part=True)
        trials_of = {c.path: e.path for e, _ in batch if e.stem in pairs for c in [pairs[e.stem]]}
        con.execute("CREATE TEMP TABLE _pairmap AS SELECT unnest($1::VARCHAR[]) AS _cpart, "
                    "unnest($2::VARCHAR[]) AS _part", [list(trials_of), list(trials_of.values())])
        unions.append(f"SELECT {ccols} FROM _c_pairs c SEMI JOIN (SELECT w.run_id, m._cpart FROM _win w "
                      "JOIN _pairmap m USING (_part)) w ON c.run_id = w.run_id AND c._part = w._cpart "
                      "QUALIFY row_number() OVER (PARTITION BY c._part, c.trial_id, c.run_id, c.step) = 1")
    if any(not parts_mod.paired(e.stem) for e, _ in batch) and sp.legacy_curves:
        files = [(e.path, f.schema.names) for e, f in sp.legacy_curves]
        create_source(con, store, "_c_legacy", CURVES_SCHEMA, files, local)
        unions.append(f"SELECT {ccols} FROM _c_legacy c SEMI JOIN _win w ON c.sweep = w.sweep AND "
                      "c.trial_id = w.trial_id AND c.run_id = w.run_id QUALIFY row_number() OVER "
                      "(PARTITION BY c.sweep, c.trial_id, c.run_id, c.step) = 1")
    if not unions:
        return f"SELECT {', '.join(f'CAST(NULL AS VARCHAR) AS {f.name}' for f in CURVES_SCHEMA)} WHERE false"
    return " UNION ALL ".join(unions)


# ---- finishing ----------------------------------------------------------------------------------

def finish_intents(store, sweep: str, stale_s: float = ORPHAN_S) -> list[str]:
    """Finish (or drop) the intents of interrupted compactions in a sweep; returns their paths."""
    done = []
    for table in ("trials", "curves"):
        for e in parts_mod.list_dir(store, store.table_dir(sweep, table)):
            if e.name.startswith(parts_mod.INTENT_PREFIX) and e.name.endswith(".json"):
                intent = read_intent(store, e.path)
                if intent is not None and _finish(store, sweep, e.path, intent, mtime_ns=e.mtime_ns,
                                                  stale_s=stale_s):
                    done.append(e.path)
    return done


def _finish(store, sweep: str, path: str, intent: dict, *, own: bool = False,
            stale_s: float = ORPHAN_S, mtime_ns: int | None = None) -> bool:
    """Finish an intent: once its merged pair is committed, delete the parts it names (trials
    parts first, so a pair never loses its curves while its trials still count), then the
    intent. An intent whose merged pair is incomplete is dropped (with the merged part written
    so far) only by its own compaction or once older than ``stale_s``: until then the compaction
    may still be running. Returns whether the intent is gone."""
    if intent.get("layout") != 2:
        return _finish_old(store, path, intent)
    merged = intent.get("merged")
    tdir, cdir = store.table_dir(sweep, "trials"), store.table_dir(sweep, "curves")
    if merged:
        t, c = (f"{tdir}/{merged}.parquet", f"{cdir}/{merged}.parquet")
        t_info, c_info = store.fs.get_file_info([t, c])
        if t_info.type != pafs.FileType.File or c_info.type != pafs.FileType.File:
            fresh = mtime_ns is not None and (time.time_ns() - mtime_ns) / 1e9 <= stale_s
            if not own and (mtime_ns is None or fresh):
                return False
            for target in (t, c):
                _delete(store, target)
            _delete(store, path)
            return True
    legacy = intent.get("legacy") or {}
    for folder, key in ((tdir, "trials"), (cdir, "curves")):
        for name in _names(intent.get(key)):
            target = f"{folder}/{name}"
            stamp = legacy.get(f"{key}/{name}")
            if stamp is not None and not _unchanged(store, target, stamp):
                continue
            _delete(store, target)
    _delete(store, path)
    return True


def _delete(store, path: str) -> None:
    try:
        store.fs.delete_file(path)
    except FileNotFoundError:
        pass
    except OSError:
        if store.fs.get_file_info(path).type != pafs.FileType.NotFound:
            raise


def _finish_old(store, path: str, intent: dict) -> bool:
    """An intent of an earlier release (a merged part and the SHA-256 of each part it replaced)."""
    import hashlib

    import pyarrow.parquet as pq

    folder = path.rsplit("/", 1)[0]
    merged = f"{folder}/{intent.get('merged')}"
    replaces = intent.get("replaces")
    replaces = {n: d for n, d in replaces.items() if n in _names([n]) and isinstance(d, str)} \
        if isinstance(replaces, dict) else {}
    try:
        if store.fs.get_file_info(merged).type == pafs.FileType.File:
            if pq.read_metadata(merged, filesystem=store.fs).num_rows != intent.get("rows"):
                return False
            for name, digest in replaces.items():
                try:
                    with store.fs.open_input_stream(f"{folder}/{name}") as f:
                        same = hashlib.sha256(f.read()).hexdigest() == digest
                except OSError:
                    same = False
                if same:  # not replaced by a newer write
                    _delete(store, f"{folder}/{name}")
        _delete(store, path)
    except (OSError, pa.ArrowException):
        return False
    return True


def _unchanged(store, path: str, stamp) -> bool:
    info = store.fs.get_file_info(path)
    return info.type == pafs.FileType.File and [info.size, info.mtime_ns] == list(stamp)


def _names(value) -> list[str]:
    """Plain part names from an intent (never paths)."""
    if not isinstance(value, list):
        return []
    return [n for n in value if isinstance(n, str) and n.endswith(".parquet") and "/" not in n
            and not n.startswith(".")]


def read_intent(store, path: str) -> dict | None:
    try:
        with store.fs.open_input_stream(path) as f:
            intent = json.loads(f.read())
        return intent if isinstance(intent, dict) else None
    except (OSError, ValueError):
        return None


def _remove_orphans(store, sp, stale_s: float) -> list[str]:
    """Curves parts of commit events whose trials part never came (a writer killed between the
    two), and merged curves parts without their trials part, once older than ``stale_s``."""
    trials = sp.listing.parts["trials"]
    now = time.time_ns()
    removed = []
    for stem, e in sp.listing.parts["curves"].items():
        if parts_mod.paired(stem) and stem not in trials and e.mtime_ns is not None \
                and (now - e.mtime_ns) / 1e9 > stale_s:
            try:
                store.fs.delete_file(e.path)
                removed.append(e.path)
            except OSError:
                pass
    return removed


def file_counts(store, sweep: str) -> dict[str, int]:
    """Visible parts per table of one sweep."""
    listing = parts_mod.list_sweep(store, sweep)
    return {t: len(p) for t, p in listing.parts.items()}


__all__ = ["compact", "CompactReport", "Merge", "TARGET_ROWS", "MAX_PARTS", "COMPACT_EVERY", "file_counts"]
