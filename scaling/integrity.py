"""Check, repair and compact a results store (the layout is in :mod:`scaling.store`).

``verify(root)`` reads every part of every sweep and reports each problem on one
line naming the file: a part that cannot be read (readers skip it); a part whose
columns clash with ``TRIALS_SCHEMA``/``CURVES_SCHEMA`` or that lacks a key column
(parts of an older version with fewer columns are fine and only noted); a trial
stored more than once in a sweep; and, once older than ``stale_s``, curve rows
with no trial row, temporary files (``.tmp-*``) and an interrupted compaction.

``repair(root)`` moves files into ``ROOT/<sweep>/quarantine/<table>/`` and never
deletes one: unreadable or clashing parts, stale temporary files, stale parts of
orphan curves, the parts an interrupted compaction had merged (when the merged
part is sound), and the parts that hold only rows readers ignore. For a trial
stored twice, readers keep the row with the latest ``end_time`` (then the smallest
``run_id``), as :func:`scaling.store.load_tables` does; a part that also holds a
row readers keep stays, and ``compact`` later rewrites it without the duplicate.
A file is moved only if its bytes are still those that were checked, so a writer
that replaced a part in the meantime keeps its result.

``compact(root)`` merges parts of fewer than ``target_rows`` rows into
``compact-<id>.parquet`` parts holding exactly the rows readers keep of them (one
trial row per trial; every curve row once, of every run, since a run whose trial
row is not written yet still needs its curves). Per batch of parts it

1. writes an intent ``.compact-<id>.json`` naming the parts and their SHA-256;
2. writes the merged part (atomically, like every part);
3. deletes each named part whose bytes are unchanged, then the intent.

Killed anywhere, the store reads the same rows: before step 2 only the old parts
exist; after it old and new parts hold the same rows, which readers de-duplicate
(trials by (sweep, trial_id), curves by (sweep, trial_id, run_id, step); the
latter, and re-listing when a part vanishes mid-read, need the reader changes to
scaling/store.py described with tests/test_integrity.py).
The next ``compact`` (or ``repair``) finishes an intent whose merged part exists
and drops one whose merged part was never written.

No torch and no ray here: ``scaling verify`` runs wherever pyarrow does.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from scaling.errors import StoreError
from scaling.store import TABLES, Store

STALE_S = 600.0
"""Age (seconds) after which a temporary file or a curves part with no trial row is stale."""
TARGET_ROWS = 100_000
"""Parts with fewer rows are merged by ``compact``, into parts of at most this many rows."""
QUARANTINE = "quarantine"
KEYS = {"trials": ("sweep", "trial_id", "run_id"), "curves": ("sweep", "trial_id", "run_id", "step")}
PROBLEMS = {"unreadable", "schema", "duplicate", "orphan-curves", "wrong-sweep", "stale-tmp", "compaction"}
_INTENT = ".compact-"


@dataclass(frozen=True)
class Finding:
    """One problem (or note) about one file."""

    path: str
    kind: str
    """A problem: one of PROBLEMS. A note: old-schema, new-columns, fresh-tmp, fresh-orphan,
    fresh-compaction, other-file."""
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` found in one store."""

    root: str
    sweeps: tuple[str, ...]
    parts: int
    """Parquet parts checked."""
    problems: tuple[Finding, ...]
    info: tuple[Finding, ...]
    """Harmless findings: parts of an older version, fresh temporary files, other files."""

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Merge:
    """One batch of parts that :func:`compact` replaced by one part."""

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
    skipped: tuple[Finding, ...]
    """Small parts left alone: unreadable, clashing, or with columns this version does not know."""


@dataclass
class _Part:
    path: str
    table: str
    mtime_ns: int | None = None
    digest: str = ""
    data: pa.Table | None = None  # its rows (only the key columns unless read in full)
    problem: str = ""
    kind: str = ""
    note: str = ""
    extra: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]


@dataclass
class _Sweep:
    name: str
    base: str
    parts: dict = field(default_factory=dict)  # table -> [_Part]
    tmp: list = field(default_factory=list)  # (path, mtime_ns)
    other: list = field(default_factory=list)
    intents: list = field(default_factory=list)  # (table, path, intent dict or None, mtime_ns)


# ---- verify -----------------------------------------------------------------

def verify(root: str | Store, *, stale_s: float = STALE_S) -> VerifyReport:
    """Check every part of every sweep under ``root``; see the module docstring."""
    store = _store(root)
    sweeps, problems, info, n = store.sweeps(), [], [], 0
    for name in sweeps:
        sw = _scan(store, name)
        n += sum(len(parts) for parts in sw.parts.values())
        for f in _findings(sw, stale_s):
            (problems if f.kind in PROBLEMS else info).append(f)
    return VerifyReport(root=store.uri, sweeps=tuple(sweeps), parts=n, problems=tuple(problems),
                        info=tuple(info))


def _findings(sw: _Sweep, stale_s: float):
    now = time.time_ns()
    for part in (p for parts in sw.parts.values() for p in parts):
        if part.problem:
            yield Finding(part.path, part.kind, part.problem)
        elif part.note:
            yield Finding(part.path, "new-columns" if part.extra else "old-schema", part.note)
        if part.data is not None and sw.name:
            others = set(part.data.column("sweep").to_pylist()) - {sw.name}
            if others:
                yield Finding(part.path, "wrong-sweep", f"rows name the sweep(s) {sorted(others, key=str)} "
                              f"but the part is in the folder of {sw.name!r}; readers file them there")
    for path, mtime in sw.tmp:
        stale = _age(now, mtime) > stale_s
        yield Finding(path, "stale-tmp" if stale else "fresh-tmp",
                      "temporary file left by a killed writer" if stale else "temporary file of a write in progress")
    for path in sw.other:
        yield Finding(path, "other-file", "not a Parquet part; readers ignore it")
    for table, path, intent, mtime in sw.intents:
        merged, n = intent and intent.get("merged"), len(_replaced(intent))
        if _age(now, mtime) > stale_s:
            yield Finding(path, "compaction", f"interrupted compaction into {merged!r} ({n} part(s) named); "
                          "run `scaling compact` or `scaling verify --repair` to finish it")
        else:
            yield Finding(path, "fresh-compaction", f"a compaction into {merged!r} in progress")
    winners, losers = _duplicates(sw)
    for part, tid, best, same in losers:
        yield Finding(part.path, "duplicate", f"trial {tid} is stored again in {best.name}" + (
            ", identically; readers keep one copy" if same else
            " with a later run; readers keep that one and ignore the row here"))
    bad = {p.name for p in sw.parts["trials"] if p.problem}
    for part, ids, _ in _orphans(sw, winners):
        stale = _age(now, part.mtime_ns) > stale_s
        why = ("its trial part is unreadable or clashing" if part.name in bad else
               "a trial that crashed before committing" if stale else "a trial being written")
        yield Finding(part.path, "orphan-curves" if stale else "fresh-orphan",
                      f"curves of {len(ids)} trial(s) with no trial row (e.g. {sorted(ids, key=str)[0]}): "
                      f"{why}; readers ignore them")


def _age(now_ns: int, mtime_ns: int | None) -> float:
    return float("inf") if mtime_ns is None else (now_ns - mtime_ns) / 1e9


# ---- reading a sweep ----------------------------------------------------------

def _scan(store: Store, name: str) -> _Sweep:
    base = store._join(name) if name else store.root
    sw = _Sweep(name, base)
    for info in _listing(store, base):
        if info.type == pafs.FileType.File and info.base_name.startswith(".tmp-"):
            sw.tmp.append((info.path, info.mtime_ns))
    for table in TABLES:
        sw.parts[table] = []
        for info in _listing(store, f"{base}/{table}"):
            fname = info.base_name
            if info.type != pafs.FileType.File:
                continue
            if fname.startswith(".tmp-"):
                sw.tmp.append((info.path, info.mtime_ns))
            elif fname.startswith(_INTENT) and fname.endswith(".json"):
                sw.intents.append((table, info.path, _read_intent(store, info.path), info.mtime_ns))
            elif fname.endswith(".parquet") and not fname.startswith("."):
                sw.parts[table].append(_read_part(store, info.path, table, False, info.mtime_ns))
            elif not fname.startswith("."):
                sw.other.append(info.path)
    return sw


def _listing(store: Store, folder: str) -> list:
    try:
        infos = store.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    except OSError as e:
        raise StoreError(f"cannot list {folder!r}: {e}") from None
    return sorted(infos, key=lambda i: i.path)


def _read_part(store: Store, path: str, table: str, full: bool, mtime_ns: int | None = None) -> _Part:
    part = _Part(path, table, mtime_ns)
    try:
        with store.fs.open_input_stream(path) as f:
            raw = f.read()
        part.digest = hashlib.sha256(raw).hexdigest()
        data = pq.read_table(pa.BufferReader(raw))
    except (OSError, pa.ArrowException) as e:
        part.kind, part.problem = "unreadable", f"unreadable ({_first_line(e)}); readers skip it"
        return part
    part.problem, part.note, part.extra = _check_schema(data.schema, table)
    if not part.problem:
        try:
            part.data = data if full else _keys(data, table)
        except pa.ArrowException as e:
            part.problem = f"wrong schema ({_first_line(e)}); readers cannot merge it"
    part.kind = "schema" if part.problem else ""
    return part


def _check_schema(schema: pa.Schema, table: str) -> tuple[str, str, tuple]:
    """(problem, note, unknown columns) of a part's schema against the current one."""
    expected, names = TABLES[table], schema.names
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        return f"has the column(s) {twice} twice", "", ()
    no_key = [k for k in KEYS[table] if k not in names]
    if no_key:
        return f"has no {', '.join(no_key)} column, so readers cannot tell whose rows these are", "", ()
    clashes = [f"{f.name} is {schema.field(f.name).type}, expected {f.type}" for f in expected
               if f.name in names and not _compatible(f.type, schema.field(f.name).type)]
    if clashes:
        return "wrong schema (" + "; ".join(clashes) + "); readers cannot merge it", "", ()
    missing = [f.name for f in expected if f.name not in names]
    extra = tuple(n for n in names if n not in expected.names)
    notes = ([f"an older version's part without {missing}; readers fill them with nulls"] if missing else []) + (
        [f"has columns this version does not know: {list(extra)}"] if extra else [])
    return "", "; ".join(notes), extra


def _compatible(expected: pa.DataType, actual: pa.DataType) -> bool:
    """True when readers can merge ``actual`` into ``expected`` without changing its kind."""
    try:
        unified = pa.unify_schemas([pa.schema([("c", expected)]), pa.schema([("c", actual)])],
                                   promote_options="permissive").field("c").type
    except pa.ArrowException:
        return False
    return _kind(unified) == _kind(expected)


def _kind(t: pa.DataType) -> str:
    for kind, test in (("int", pa.types.is_integer), ("float", pa.types.is_floating),
                       ("str", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
                       ("time", pa.types.is_timestamp)):
        if test(t):
            return kind
    return str(t)


def _keys(data: pa.Table, table: str) -> pa.Table:
    """The columns verify and repair need, with the current types (nulls where missing)."""
    names = list(KEYS[table]) + (["end_time"] if table == "trials" else [])
    return _conform(data, pa.schema([TABLES[table].field(n) for n in names]))


def _conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    cols = [data.column(f.name).cast(f.type) if f.name in data.column_names else pa.nulls(len(data), f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


# ---- which rows readers keep ------------------------------------------------------

def _duplicates(sw: _Sweep, skip: frozenset = frozenset()):
    """({(sweep, trial_id): (part, row)} of the rows readers keep, [(part, trial_id, best part)] of the others).

    Readers order by end_time DESC NULLS LAST, run_id; between identical rows this
    prefers the bigger part, then the one named after the trial, so that
    quarantine can take the small copies."""
    best: dict = {}
    rows = []
    for part in sw.parts["trials"]:
        if part.data is None or part.path in skip:
            continue
        d = part.data
        end = pc.cast(d.column("end_time"), pa.int64()).to_pylist()
        for i, (s, tid, run) in enumerate(_rows(part)):
            rank = (end[i] is None, -(end[i] or 0), run is None, run or "", -d.num_rows,
                    part.name != f"{tid}.parquet", part.path)
            rows.append(((s, tid), rank, part, i))
            if (s, tid) not in best or rank < best[(s, tid)][0]:
                best[(s, tid)] = (rank, part, i)
    winners = {key: (part, i) for key, (_, part, i) in best.items()}
    losers = [(part, key[1], winners[key][0], rank[:4] == best[key][0][:4])
              for key, rank, part, i in rows if winners[key] != (part, i)]
    return winners, losers


def _orphans(sw: _Sweep, winners: dict):
    """[(curves part, {trial_id}, all rows orphans)] of curve rows whose trial has no readable trial row."""
    for part in sw.parts["curves"]:
        if part.data is not None:
            keys = list(zip(part.data.column("sweep").to_pylist(), part.data.column("trial_id").to_pylist()))
            ids = {tid for s, tid in keys if (s, tid) not in winners}
            if ids:
                yield part, ids, all(key not in winners for key in keys)


def _dedupe(data: pa.Table, table: str) -> pa.Table:
    """The rows of ``data`` readers keep: one trial row per (sweep, trial_id), each curve row once."""
    cols = [data.column(c).to_pylist() for c in KEYS[table]]
    keep: dict = {}
    if table == "trials":
        end = pc.cast(data.column("end_time"), pa.int64()).to_pylist()
        for i, (s, tid, run) in enumerate(zip(*cols)):
            rank = (end[i] is None, -(end[i] or 0), run is None, run or "")
            if (s, tid) not in keep or rank < keep[(s, tid)][0]:
                keep[(s, tid)] = (rank, i)
        order = [i for _, i in keep.values()]
    else:
        for i, key in enumerate(zip(*cols)):
            keep.setdefault(key, i)
        order = list(keep.values())
    order.sort(key=lambda i: tuple((c[i] is None, c[i] if c[i] is not None else 0) for c in cols))
    return data.take(order)


# ---- repair -------------------------------------------------------------------------

def repair(root: str | Store, *, stale_s: float = STALE_S) -> list[tuple[str, str]]:
    """Move bad parts and leftovers to ``<sweep>/quarantine/``; return the (from, to) of each move."""
    store = _store(root)
    moved = []
    for name in store.sweeps():
        sw = _scan(store, name)
        for path, folder, digest in _repair_plan(sw, stale_s):
            dst = _quarantine(store, sw.base, folder, path, digest)
            if dst:
                moved.append((path, dst))
    return moved


def _repair_plan(sw: _Sweep, stale_s: float) -> list[tuple[str, str, str]]:
    """(path, quarantine folder, sha256 or '' for no check) of each file to move, in order."""
    now, plan = time.time_ns(), []
    parts = {p.path: p for ps in sw.parts.values() for p in ps}
    busy = set()  # parts of a compaction in progress: left to it
    for table, path, intent, mtime in sw.intents:  # finish interrupted compactions first
        folder = path.rsplit("/", 1)[0]
        if _age(now, mtime) <= stale_s:
            busy |= {f"{folder}/{name}" for name in _replaced(intent)}
            continue
        merged = parts.get(f"{folder}/{intent.get('merged')}") if intent else None
        if merged is not None and merged.data is not None and merged.data.num_rows == intent.get("rows"):
            plan += [(f"{folder}/{name}", table, digest) for name, digest in _replaced(intent).items()]
        plan.append((path, table, ""))
    gone = {p for p, _, _ in plan}
    plan += [(p.path, p.table, p.digest) for p in parts.values() if p.problem and p.path not in gone]
    plan += [(path, "tmp", "") for path, mtime in sw.tmp if _age(now, mtime) > stale_s]
    winners, losers = _duplicates(sw, frozenset(gone))
    plan += _redundant_parts(sw, winners, losers, gone)
    for part, _, only_orphans in _orphans(sw, winners):
        if only_orphans and _age(now, part.mtime_ns) > stale_s:
            plan.append((part.path, "curves", part.digest))
    seen = set(busy)
    return [step for step in plan if not (step[0] in seen or seen.add(step[0]))]


def _redundant_parts(sw: _Sweep, winners: dict, losers: list, gone: set) -> list[tuple[str, str, str]]:
    """Trials parts whose every row readers ignore, each with its same-named curves part when
    readers never need a row of it either: a row of a committed run they ignore, or one that
    another curves part (that stays) also holds."""
    keeps = {part.path for part, _ in winners.values()}
    committed = {k for p in sw.parts["trials"] if p.data is not None for k in _rows(p)}
    kept_run = {key: part.data.column("run_id")[i].as_py() for key, (part, i) in winners.items()}
    curves = {p.name: p for p in sw.parts["curves"] if p.data is not None and p.path not in gone}
    held = Counter(k for p in curves.values() for k in _rows(p))
    plan = []
    for trials in {part.path: part for part, *_ in losers if part.path not in keeps}.values():
        plan.append((trials.path, "trials", trials.digest))
        c = curves.get(trials.name)
        if c is None:
            continue
        rows = _rows(c)
        held.subtract(rows)
        if all(held[k] > 0 or (k[:3] in committed and kept_run.get(k[:2]) != k[2]) for k in rows):
            plan.append((c.path, "curves", c.digest))
        else:
            held.update(rows)
    return plan


def _rows(part: _Part) -> list[tuple]:
    return list(zip(*(part.data.column(c).to_pylist() for c in KEYS[part.table])))


def _quarantine(store: Store, base: str, folder: str, path: str, digest: str) -> str | None:
    """Move ``path`` to ``base/quarantine/folder/`` unless its bytes changed; return where it went."""
    if digest and _digest(store, path) != digest:
        return None  # replaced (or moved) since it was checked: leave the newer file alone
    target_dir = f"{base}/{QUARANTINE}/{folder}"
    name = path.rsplit("/", 1)[1]
    target = f"{target_dir}/{name}"
    try:
        store.fs.create_dir(target_dir, recursive=True)
        while store.fs.get_file_info(target).type != pafs.FileType.NotFound:
            target = f"{target_dir}/{uuid.uuid4().hex[:8]}-{name}"
        store.fs.move(path, target)
    except OSError as e:
        raise StoreError(f"cannot move {path!r} to quarantine: {e}") from None
    return target


def _digest(store: Store, path: str) -> str | None:
    try:
        with store.fs.open_input_stream(path) as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


# ---- compact --------------------------------------------------------------------------

def compact(root: str | Store, sweep: str | None = None, *, target_rows: int = TARGET_ROWS) -> CompactReport:
    """Merge small parts into larger ones, safely for readers and for a kill at any point."""
    if isinstance(target_rows, bool) or not isinstance(target_rows, int) or target_rows < 2:
        raise StoreError(f"target_rows must be an integer >= 2, got {target_rows!r}")
    store = _store(root)
    names = store.sweeps()
    if sweep is not None:
        if sweep not in names:
            raise StoreError(f"no sweep {sweep!r} in {store.uri!r}; it has {names}")
        names = [sweep]
    merges, finished, skipped = [], [], []
    for name in names:
        base = store._join(name) if name else store.root
        for table in TABLES:
            finished += _finish_intents(store, f"{base}/{table}")
            rows = _row_counts(store, store.parts(name, table), skipped)
            small = [p for p in sorted(rows) if rows[p] < target_rows]
            for batch in _batches(small, rows, target_rows):
                merge = _merge(store, name, table, batch, skipped)
                if merge:
                    merges.append(merge)
    return CompactReport(tuple(merges), tuple(finished), tuple(skipped))


def _row_counts(store: Store, paths: list[str], skipped: list) -> dict[str, int]:
    rows = {}
    for path in paths:
        try:
            rows[path] = pq.read_metadata(path, filesystem=store.fs).num_rows
        except (OSError, pa.ArrowException) as e:
            skipped.append(Finding(path, "unreadable", f"unreadable ({_first_line(e)}); left alone"))
    return rows


def _batches(paths: list[str], rows: dict, target_rows: int) -> list[list[str]]:
    batches, current, total = [], [], 0
    for path in paths:
        if current and total + rows[path] > target_rows:
            batches.append(current)
            current, total = [], 0
        current.append(path)
        total += rows[path]
    return [b for b in batches + [current] if len(b) > 1]


def _merge(store: Store, sweep: str, table: str, batch: list[str], skipped: list) -> Merge | None:
    good = []
    for path in batch:
        part = _read_part(store, path, table, full=True)
        if part.data is None or part.extra:
            why = part.problem or f"has columns this version does not know: {list(part.extra)}"
            skipped.append(Finding(path, part.kind or "new-columns", f"{why}; left alone"))
            continue
        try:
            good.append((part, _conform(part.data, TABLES[table])))
        except pa.ArrowException as e:
            skipped.append(Finding(path, "schema", f"cannot be cast to the current schema ({_first_line(e)})"))
    if len(good) < 2:
        return None
    merged = _dedupe(pa.concat_tables([data for _, data in good]), table)
    folder, ident = good[0][0].path.rsplit("/", 1)[0], uuid.uuid4().hex[:12]
    intent = {"merged": f"compact-{ident}.parquet", "rows": merged.num_rows,
              "replaces": {part.name: part.digest for part, _ in good}}
    intent_path = f"{folder}/{_INTENT}{ident}.json"
    store.write_bytes(intent_path, json.dumps(intent, indent=1).encode())
    sink = pa.BufferOutputStream()
    pq.write_table(merged, sink, compression="zstd")
    store.write_bytes(f"{folder}/{intent['merged']}", sink.getvalue().to_pybytes())
    _finish_intent(store, intent_path, intent)
    return Merge(sweep, table, f"{folder}/{intent['merged']}", tuple(p.path for p, _ in good),
                 sum(d.num_rows for _, d in good), merged.num_rows)


def _finish_intents(store: Store, folder: str) -> list[str]:
    done = []
    for info in _listing(store, folder):
        if info.base_name.startswith(_INTENT) and info.base_name.endswith(".json"):
            intent = _read_intent(store, info.path)
            if intent is not None and _finish_intent(store, info.path, intent):
                done.append(info.path)
    return done


def _finish_intent(store: Store, path: str, intent: dict) -> bool:
    """Delete the parts an intent names, once its merged part is sound; drop an intent
    whose merged part was never written. False when the merged part is unsound."""
    folder = path.rsplit("/", 1)[0]
    merged = f"{folder}/{intent.get('merged')}"
    try:
        if store.fs.get_file_info(merged).type == pafs.FileType.File:
            if pq.read_metadata(merged, filesystem=store.fs).num_rows != intent.get("rows"):
                return False
            for name, digest in _replaced(intent).items():
                if _digest(store, f"{folder}/{name}") == digest:  # not replaced by a newer write
                    store.fs.delete_file(f"{folder}/{name}")
        store.fs.delete_file(path)
    except (OSError, pa.ArrowException):
        return False
    return True


def _read_intent(store: Store, path: str) -> dict | None:
    try:
        with store.fs.open_input_stream(path) as f:
            intent = json.loads(f.read())
        return intent if isinstance(intent, dict) else None
    except (OSError, ValueError):
        return None


def _replaced(intent: dict | None) -> dict[str, str]:
    """{part name: sha256} an intent names (only plain names, never paths)."""
    replaces = (intent or {}).get("replaces")
    if not isinstance(replaces, dict):
        return {}
    return {n: d for n, d in replaces.items() if isinstance(n, str) and isinstance(d, str)
            and n.endswith(".parquet") and "/" not in n and not n.startswith(".")}


def _store(root: str | Store) -> Store:
    return root if isinstance(root, Store) else Store(str(root))


# ---- command line -------------------------------------------------------------------

def cmd_verify(args) -> int:
    """``scaling verify DIR [--repair]``: 0 when the store is sound, 1 when problems remain."""
    report = verify(args.results)
    for f in report.problems:
        print(f)
    if getattr(args, "repair", False) and not report.ok:
        moved = repair(args.results)
        for src, dst in moved:
            print(f"moved {src} -> {dst}")
        print(f"repair: moved {len(moved)} file(s) to quarantine; nothing was deleted")
        report = verify(args.results)
        for f in report.problems:
            print(f"still: {f}")
    if getattr(args, "verbose", False):
        for f in report.info:
            print(f"note: {f}")
    notes = f", {len(report.info)} note(s)" + ("" if getattr(args, "verbose", False) else " (-v lists them)")
    print(f"{report.parts} part(s) in {len(report.sweeps)} sweep(s): {len(report.problems)} problem(s)"
          f"{notes if report.info else ''}")
    return 0 if report.ok else 1


def cmd_compact(args) -> int:
    """``scaling compact DIR [--sweep NAME]``."""
    report = compact(args.results, args.sweep, target_rows=getattr(args, "target_rows", TARGET_ROWS))
    for path in report.finished:
        print(f"finished an interrupted compaction: {path}")
    for m in report.merges:
        print(f"{m.sweep or '.'}/{m.table}: {len(m.replaced)} parts ({m.rows_in} rows) -> "
              f"{m.part.rsplit('/', 1)[1]} ({m.rows_out} rows)")
    for f in report.skipped:
        print(f"skipped {f}")
    print(f"compacted {sum(len(m.replaced) for m in report.merges)} parts into {len(report.merges)}")
    return 0


def register(subparsers) -> None:
    """Add the ``verify`` and ``compact`` commands to the ``scaling`` command line."""
    p = subparsers.add_parser("verify", help="check every Parquet part of a results store")
    p.add_argument("results", help="results store (path or URI)")
    p.add_argument("--repair", action="store_true",
                   help="move bad parts and leftovers to <sweep>/quarantine/ (never deletes)")
    p.add_argument("-v", "--verbose", action="store_true", help="also list harmless findings")
    p.set_defaults(func=cmd_verify)
    p = subparsers.add_parser("compact", help="merge small parts into larger ones, safely for readers")
    p.add_argument("results", help="results store (path or URI)")
    p.add_argument("--sweep", default=None, help="only this sweep (default: every sweep)")
    p.add_argument("--target-rows", type=int, default=TARGET_ROWS,
                   help=f"rows per merged part (default: {TARGET_ROWS:,})")
    p.set_defaults(func=cmd_compact)


__all__ = ["verify", "repair", "compact", "VerifyReport", "CompactReport", "Finding", "Merge",
           "cmd_verify", "cmd_compact", "register"]
