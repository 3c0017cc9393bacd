"""The parts of a sweep folder: names, listing, footers, and which trials parts are committed.

Part names say how a part was written:

- ``<unit>-<run_id>.parquet``: one *commit event* of this release: a single trial, or the
  members of a pack that finished together (``unit`` is the trial id, or ``p`` and a hash
  of the pack's members; ``run_id`` that of the event's first run). Never overwritten.
- ``merged-<id>.parquet``: a compaction's output (:mod:`scaling.store.compaction`).
- anything else (``<trial_id>.parquet``, ``compact-<id>.parquet``, hand-made names): a
  *legacy* part of an earlier release.

Commit events and merged parts come in pairs: the curves part and the trials part of the
same name, the curves written first. Such a trials part is committed only while its
curves part is there and readable, so a lost or corrupt curves part makes its trials
pending again, and a curves part whose trials part is not written yet (a commit in
progress, or killed halfway) is ignored. A legacy trials part is committed when it is
readable and no curves part of its name is broken; its curves are found by run_id in the
legacy curves parts.

No torch and no ray here.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from scaling.spec.schema import TABLES

COMMIT = re.compile(r"[0-9a-z]{16}-[0-9a-f]{32}")

MERGED = re.compile(r"merged-[0-9a-f]{32}")

KEYS = {"trials": ("sweep", "trial_id", "run_id"), "curves": ("sweep", "trial_id", "run_id", "step")}

TMP_PREFIX = ".tmp-"

INTENT_PREFIX = ".compact-"

_HEX16 = re.compile(r"[0-9a-f]{16}")

_HEX32 = re.compile(r"[0-9a-f]{32}")


def paired(name: str) -> bool:
    """Whether a part (name without .parquet) was written in pairs by this release's protocol."""
    return bool(COMMIT.fullmatch(name) or MERGED.fullmatch(name))


def unit_id(trial_ids) -> str:
    """Name prefix of a unit's commit events: the trial id of a single trial (``t`` and a hash
    when it is not 16 hex digits), ``p`` and a hash of the members for a pack."""
    ids = sorted(trial_ids)
    if len(ids) == 1:
        return ids[0] if _HEX16.fullmatch(ids[0]) else "t" + _sha(ids[0])[:15]
    return "p" + _sha(",".join(ids))[:15]


def commit_name(unit: str, run_id: str) -> str:
    """``<unit>-<run_id>`` (a fresh id when ``run_id`` is not 32 hex digits, as in hand-made rows)."""

    return f"{unit}-{run_id if isinstance(run_id, str) and _HEX32.fullmatch(run_id) else uuid.uuid4().hex}"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---- listing ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One file in a sweep folder."""

    path: str
    name: str
    """Base name."""
    size: int | None
    mtime_ns: int | None
    link: bool = False
    """A symbolic link (local stores): readers never follow one."""

    @property
    def stem(self) -> str:
        return self.name[:-len(".parquet")] if self.name.endswith(".parquet") else self.name


@dataclass
class Listing:
    """What one sweep folder holds, by kind."""

    sweep: str
    base: str
    parts: dict = field(default_factory=dict)
    """table -> {stem: Entry} of visible ``.parquet`` files."""
    tmp: list = field(default_factory=list)
    intents: list = field(default_factory=list)
    """(table, Entry) of compaction intents."""
    other: list = field(default_factory=list)
    links: list = field(default_factory=list)
    """Parts that are symbolic links: never read."""


def list_dir(store, folder: str) -> list[Entry]:
    """Files of one folder (none if it does not exist), symlinks flagged on a local disk."""
    if isinstance(store.fs, pafs.LocalFileSystem):
        try:
            with os.scandir(folder) as it:
                out = []
                for e in it:
                    st = e.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                        out.append(Entry(f"{folder}/{e.name}", e.name, st.st_size, st.st_mtime_ns,
                                         stat.S_ISLNK(st.st_mode)))
                return sorted(out, key=lambda x: x.name)
        except (FileNotFoundError, NotADirectoryError):
            return []
    try:
        infos = store.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    except (OSError, pa.ArrowException) as e:
        from scaling.errors import StorageError, one_line

        raise StorageError(one_line(f"cannot list {folder!r}: {first_line(e)}", 400)) from None
    return sorted((Entry(i.path, i.base_name, i.size, i.mtime_ns) for i in infos
                   if i.type == pafs.FileType.File), key=lambda x: x.name)


def list_sweep(store, sweep: str) -> Listing:
    base = store.sweep_dir(sweep)
    out = Listing(sweep, base)
    for e in list_dir(store, base):
        if e.name.startswith(TMP_PREFIX):
            out.tmp.append(e)
    for table in TABLES:
        out.parts[table] = {}
        for e in list_dir(store, f"{base}/{table}"):
            if e.name.startswith(TMP_PREFIX):
                out.tmp.append(e)
            elif e.name.startswith(INTENT_PREFIX) and e.name.endswith(".json"):
                out.intents.append((table, e))
            elif e.name.endswith(".parquet") and not e.name.startswith((".", "_")):
                if e.link:
                    out.links.append(e)
                else:
                    out.parts[table][e.stem] = e
            elif not e.name.startswith("."):
                out.other.append(e)
    return out


# ---- footers ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Footer:
    rows: int = 0
    schema: pa.Schema | None = None
    problem: str = ""
    """Why readers skip the part ('' when it is sound)."""
    kind: str = ""
    """'unreadable', 'schema' or 'oversize' when there is a problem."""
    note: str = ""
    extra: tuple = ()


_cache: dict = {}

_cache_lock = threading.Lock()


def footers(store, entries: list[Entry], table: str) -> dict[str, Footer]:
    """{path: Footer} of parts (footers only; cached by path, size and mtime, since parts are
    replaced, never changed in place)."""
    out, todo = {}, []
    for e in entries:
        key = (type(store.fs).__name__, e.path, e.size, e.mtime_ns)
        hit = _cache.get(key) if e.mtime_ns is not None else None
        if hit is not None:
            out[e.path] = hit
        else:
            todo.append((key, e))

    def read(item):
        key, e = item
        return key, e, read_footer(store, e.path, table)

    if todo:
        workers = min(16, len(todo)) if not isinstance(store.fs, pafs.LocalFileSystem) else min(4, len(todo))
        if workers <= 1:
            results = [read(item) for item in todo]
        else:
            with ThreadPoolExecutor(workers) as pool:
                results = list(pool.map(read, todo))
        with _cache_lock:
            if len(_cache) > 200_000:
                _cache.clear()
            for key, e, f in results:
                if e.mtime_ns is not None and f.kind != "vanished":
                    _cache[key] = f
                out[e.path] = f
    return out


def read_footer(store, path: str, table: str) -> Footer:
    try:
        meta = pq.read_metadata(path, filesystem=store.fs)
        schema = meta.schema.to_arrow_schema()
    except FileNotFoundError:
        return Footer(problem="vanished", kind="vanished")
    except (OSError, pa.ArrowException) as e:
        try:
            gone = store.fs.get_file_info(path).type == pafs.FileType.NotFound
        except (OSError, pa.ArrowException) as e2:
            from scaling.errors import StorageError, one_line

            raise StorageError(one_line(f"cannot read {path!r}: {first_line(e2)}", 400)) from None
        if gone:
            return Footer(problem="vanished", kind="vanished")
        return Footer(problem=f"unreadable ({first_line(e)}); readers skip it", kind="unreadable")
    problem, note, extra = check_schema(schema, table)
    big = _largest_chunk(meta)
    if not problem and big[0] > max_column_bytes():
        return Footer(meta.num_rows, schema, (
            f"column {big[1]!r} holds {big[0]:,} bytes uncompressed in one row group, over the bound of "
            f"{max_column_bytes():,} (no result of this product is that large); readers skip it and "
            "compaction moves it to quarantine"), "oversize")
    return Footer(meta.num_rows, schema, problem, "schema" if problem else "", note, extra)


MAX_COLUMN_BYTES = 256 << 20
"""Most bytes one column of one row group of a part may hold uncompressed (what reading it costs
in memory). This product writes row groups of at most :data:`ROW_GROUP_ROWS` rows, so its own
parts stay far below; a part over it (a huge string compressed to a few kB) is skipped by
readers and quarantined by compaction instead of exhausting memory. ``SCALING_MAX_COLUMN_BYTES``
overrides it."""
ROW_GROUP_ROWS = 16_384
"""Rows per row group of the parts compaction writes."""


def max_column_bytes() -> int:
    try:
        return max(1, int(os.environ.get("SCALING_MAX_COLUMN_BYTES", MAX_COLUMN_BYTES)))
    except ValueError:
        return MAX_COLUMN_BYTES


def _largest_chunk(meta) -> tuple[int, str]:
    """(uncompressed bytes, column) of the largest column chunk of a part, from its footer."""
    best = (0, "")
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        for j in range(rg.num_columns):
            col = rg.column(j)
            if col.total_uncompressed_size > best[0]:
                best = (col.total_uncompressed_size, col.path_in_schema)
    return best


def check_schema(schema: pa.Schema, table: str) -> tuple[str, str, tuple]:
    """(problem, note, unknown columns) of a part's schema against the declared one."""
    expected, names = TABLES[table], schema.names
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        return f"has the column(s) {twice} twice", "", ()
    no_key = [k for k in KEYS[table] if k not in names]
    if no_key:
        return f"has no {', '.join(no_key)} column, so readers cannot tell whose rows these are", "", ()
    clashes = [f"{f.name} is {schema.field(f.name).type}, expected {f.type}" for f in expected
               if f.name in names and not compatible(f.type, schema.field(f.name).type)]
    if clashes:
        return "wrong schema (" + "; ".join(clashes) + "); readers cannot merge it", "", ()
    missing = [f.name for f in expected if f.name not in names]
    extra = tuple(n for n in names if n not in expected.names)
    notes = ([f"an older version's part without {missing}; readers fill them with nulls"] if missing else []) + (
        [f"has columns this version does not know: {list(extra)}"] if extra else [])
    return "", "; ".join(notes), extra


def compatible(expected: pa.DataType, actual: pa.DataType) -> bool:
    """True when readers can read ``actual`` as ``expected`` without changing its kind."""
    if pa.types.is_null(actual):
        return True
    try:
        unified = pa.unify_schemas([pa.schema([("c", expected)]), pa.schema([("c", actual)])],
                                   promote_options="permissive").field("c").type
    except pa.ArrowException:
        return False
    return _kind(unified) == _kind(expected)


def _kind(t: pa.DataType) -> str:
    for kind, test in (("int", pa.types.is_integer), ("float", pa.types.is_floating),
                       ("str", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
                       ("time", pa.types.is_timestamp), ("bool", pa.types.is_boolean)):
        if test(t):
            return kind
    return str(t)


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


# ---- what readers use -----------------------------------------------------------------------

@dataclass
class SweepParts:
    """The parts of one sweep that readers use, and those they skip (with why)."""

    listing: Listing
    trials: list = field(default_factory=list)
    """(Entry, Footer) of committed trials parts."""
    curves: dict = field(default_factory=dict)
    """stem -> (Entry, Footer) of the paired curves part of each committed paired trials part."""
    legacy_curves: list = field(default_factory=list)
    """(Entry, Footer) of readable curves parts with a legacy name."""
    skipped: list = field(default_factory=list)
    """(path, why) of parts readers skip: unreadable, clashing, symlinks, broken pairs."""
    vanished: bool = False
    """A part disappeared between listing and reading (a compaction finished): list again."""


def readable_parts(store, sweep: str, keep=None) -> SweepParts:
    """List one sweep and decide which parts readers use (see the module docstring); ``keep(stem)``
    limits it to some parts (a worker looking up its own unit's commits)."""
    listing = list_sweep(store, sweep)
    if keep is not None:
        listing.parts = {t: {s: e for s, e in ps.items() if keep(s)} for t, ps in listing.parts.items()}
    out = SweepParts(listing)
    heads = {t: footers(store, list(listing.parts[t].values()), t) for t in TABLES}
    out.vanished = any(f.kind == "vanished" for h in heads.values() for f in h.values())
    out.skipped += [(e.path, "a symbolic link; readers never follow one out of the store") for e in listing.links]
    curves = listing.parts["curves"]
    for stem, e in curves.items():
        f = heads["curves"][e.path]
        if f.problem and f.kind != "vanished":
            out.skipped.append((e.path, f.problem))
        elif not f.problem and not paired(stem):
            out.legacy_curves.append((e, f))
    for stem, e in listing.parts["trials"].items():
        f = heads["trials"][e.path]
        if f.problem:
            if f.kind != "vanished":
                out.skipped.append((e.path, f.problem))
            continue
        c = curves.get(stem)
        cf = heads["curves"].get(c.path) if c is not None else None
        if paired(stem):
            if cf is None or cf.problem:
                if c is None or cf.kind != "vanished":
                    out.skipped.append((e.path, "its curves part is missing or unreadable, so its trials "
                                                "count as not run (a resume runs them again)"))
                continue
            out.curves[stem] = (c, cf)
        elif cf is not None and cf.problem and cf.kind != "vanished":
            out.skipped.append((e.path, "its curves part is unreadable, so its trial counts as not run"))
            continue
        out.trials.append((e, f))
    return out


PROBLEMS = {"unreadable", "schema", "oversize", "symlink", "uncommitted", "no-curves", "duplicate",
            "duplicate-curves", "orphan-curves",
            "wrong-sweep", "mixed-versions", "stale-tmp", "compaction"}


@dataclass(frozen=True)
class Finding:
    """One problem (or note) about one file."""

    path: str
    kind: str
    """A problem: one of PROBLEMS. A note: superseded, old-schema, new-columns, fresh-tmp, fresh-orphan,
    fresh-compaction, other-file, symlinked-sweep."""
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"
