"""Lazy SQL over a results store: DuckDB views over the Parquet parts, de-duplicated in SQL.

:func:`open_store` lists the sweeps' parts (:mod:`scaling.store.parts`: which are committed,
which are skipped and why, each skipped part warned about once) and opens an in-memory
DuckDB whose views ``trials`` and ``curves`` read the parts where they lie: on a local
disk with DuckDB's own Parquet reader, on an object store through pyarrow datasets
(the same filesystem the writers use). Nothing is loaded before a query asks for it, and
projections and filters reach the Parquet scans.

The views apply the reading rules of :mod:`scaling.store`:

- ``trials``: one row per (sweep, trial_id), the run :data:`WINNER_ORDER` puts first among
  the committed runs. A store with one run per trial (any compacted store) is read as is;
  the window runs only when some trial has several runs.
- ``curves``: the curve rows of exactly those runs, each once. A paired part whose trial rows
  all won is scanned whole; a paired part with losers is joined with its winning runs; legacy
  curves are joined by (sweep, trial_id, run_id) and de-duplicated.

After the views are built the connection is locked: only the files the views read may be
opened (``allowed_paths``), file access is then switched off, so are extension loading and
configuration changes; :meth:`StoreView.query` runs one ``SELECT`` only, within a time and
memory bound. (DuckDB 2.0.1's ``allowed_directories`` would let ``COPY ... TO`` write inside
the store, so it is not used.)
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

import scaling.store.parts as parts_mod
from scaling.errors import StorageError, StoreError, UserError, one_line
from scaling.spec.schema import (
    CURVES_SCHEMA,
    TABLES,  # noqa: F401 (re-exported)
    TRIALS_SCHEMA,
)

WINNER_ORDER = (
    "CASE WHEN status IN ('ok', 'diverged', 'pruned') THEN 0 WHEN status = 'failed' THEN 1 ELSE 2 END, "
    "TRY_CAST(coalesce(code_version, '1') AS BIGINT) DESC NULLS LAST, coalesce(code_version, '1') DESC, "
    "TRY_CAST(coalesce(data_version, '1') AS BIGINT) DESC NULLS LAST, coalesce(data_version, '1') DESC, "
    "run_id NULLS LAST, _part")
"""The rule that picks the run readers keep among a trial's committed runs (no clocks): ok,
diverged and pruned beat failed (and anything else); then the newer code_version, then the newer
data_version (integers above text, null read as "1"); then the smallest run_id; then the
smallest part path (copies of one run)."""

QUERY_TIMEOUT_S = 300.0

_DUCK = {"int64": "BIGINT", "double": "DOUBLE", "bool": "BOOLEAN", "string": "VARCHAR"}

_warned: set = set()


def winner_key(status, code_version, data_version, run_id, part="") -> tuple:
    """:data:`WINNER_ORDER` in Python: the smallest key wins."""
    def version(v):
        v = v or "1"
        try:
            return (0, -int(v), ())
        except ValueError:
            return (1, 0, _desc(v))
    cls = 0 if status in ("ok", "diverged", "pruned") else 1 if status == "failed" else 2
    return (cls, version(code_version), version(data_version), run_id is None, run_id or "", part)


def _desc(text: str) -> tuple:
    return tuple(-ord(c) for c in text) + (1,)


def duck_type(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ"
    return _DUCK[str(t)]


@dataclass(frozen=True)
class Sources:
    trial_files: tuple
    whole: tuple
    partial: tuple
    legacy: tuple
    legacy_trials: tuple
    skipped: tuple


class StoreView:
    """An open, read-only SQL view of a store (see the module docstring)."""

    def __init__(self, store, sweeps=None, *, keep=None, warn: bool = True,
                 memory_limit: str | None = None, threads: int | None = None):
        self.store = store
        self._sweeps = sweeps
        self.keep = keep
        self.warn = warn
        self.memory_limit = memory_limit
        self.threads = threads
        self._con = None
        self._bad: set = set()
        self.sweeps: list[str] = []
        self.has_duplicates = False

    # ---- building ----------------------------------------------------------------

    def connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            for _ in range(20):
                sources = self._scan()
                if sources is not None:
                    break
            else:
                raise StoreError(f"parts of {self.store.uri!r} keep vanishing while being read; "
                                 "is a compaction looping?")
            self._con = self._build(sources)
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> "StoreView":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _scan(self) -> Sources | None:
        store = self.store
        self.sweeps = list(self._sweeps) if self._sweeps is not None else store.sweeps()
        trial_files, legacy, legacy_trials, skipped, pairs, names = [], [], [], [], {}, {}
        for sweep in self.sweeps:
            sp = parts_mod.readable_parts(store, sweep, keep=self.keep)
            if sp.vanished:
                return None
            skipped += sp.skipped
            for e, f in sp.trials:
                if e.path in self._bad:
                    continue
                stem = e.stem
                if parts_mod.paired(stem):
                    c, cf = sp.curves[stem]
                    if c.path in self._bad:
                        continue
                    pairs[e.path] = c.path
                    names[c.path] = cf.schema.names
                else:
                    legacy_trials.append(e.path)
                trial_files.append((e.path, f.schema.names))
            for e, f in sp.legacy_curves:
                if e.path not in self._bad:
                    legacy.append(e.path)
                    names[e.path] = f.schema.names
        if self.warn:
            for path, why in skipped:
                if (path, why) not in _warned:
                    _warned.add((path, why))
                    warnings.warn(one_line(f"skipping part {path}: {why}"), stacklevel=3)
        self._pairs, self._names = pairs, names
        return Sources(tuple(trial_files), tuple(pairs.values()), (), tuple(legacy), tuple(legacy_trials),
                       tuple(skipped))

    def _build(self, src: Sources) -> duckdb.DuckDBPyConnection:
        self._files = [p for p, _ in src.trial_files] + list(self._pairs.values()) + list(src.legacy)
        con = duckdb.connect(":memory:")
        try:
            self._fill(con, src)
        except BaseException:
            con.close()
            raise
        return con

    def _fill(self, con, src: Sources) -> None:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        if self.threads:
            con.execute(f"SET threads = {int(self.threads)}")
        local = self._native()
        files = [p for p, _ in src.trial_files]
        self._source(con, "_t_src", TRIALS_SCHEMA, src.trial_files, local, part=True)
        cols = ", ".join(f'"{f.name}"' for f in TRIALS_SCHEMA)
        self.has_duplicates = bool(files) and con.sql(
            "SELECT count(*) FROM (SELECT 1 FROM _t_src GROUP BY sweep, trial_id HAVING count(*) > 1)"
        ).fetchall()[0][0] > 0
        if self.has_duplicates:
            con.execute(f"CREATE VIEW _t_ranked AS SELECT *, row_number() OVER (PARTITION BY sweep, trial_id "
                        f"ORDER BY {WINNER_ORDER}) = 1 AS _won FROM _t_src")
            con.execute(f"CREATE VIEW _t_win AS SELECT * EXCLUDE (_won) FROM _t_ranked WHERE _won")
            flags = con.sql("SELECT _part, bool_and(_won), bool_or(_won) FROM _t_ranked GROUP BY _part").fetchall()
            whole = [self._pairs[p] for p, all_won, _ in flags if all_won and p in self._pairs]
            partial = [p for p, all_won, some in flags if some and not all_won and p in self._pairs]
            con.execute("CREATE TEMP TABLE _partial_runs AS SELECT run_id, _part FROM _t_win "
                        "WHERE _part IN (SELECT unnest($1::VARCHAR[]))", [partial])
        else:
            con.execute("CREATE VIEW _t_win AS SELECT * FROM _t_src")
            whole, partial = list(src.whole), []
        con.execute(f"CREATE VIEW trials AS SELECT {cols} FROM _t_win")
        ccols = ", ".join(f'"{f.name}"' for f in CURVES_SCHEMA)
        unions = []
        if whole:
            self._source(con, "_c_whole", CURVES_SCHEMA, [(p, self._names[p]) for p in whole], local)
            unions.append(f"SELECT {ccols} FROM _c_whole")
        if partial:
            paths = [self._pairs[p] for p in partial]
            self._source(con, "_c_partial", CURVES_SCHEMA, [(p, self._names[p]) for p in paths], local, part=True)
            con.execute("CREATE TEMP TABLE _partial_map AS SELECT unnest($1::VARCHAR[]) AS _part, "
                        "unnest($2::VARCHAR[]) AS _cpart", [partial, paths])
            unions.append(f"SELECT {', '.join('c.' + c for c in ccols.split(', '))} FROM _c_partial c "
                          "SEMI JOIN (SELECT r.run_id, m._cpart FROM _partial_runs r JOIN _partial_map m "
                          "USING (_part)) w ON c.run_id = w.run_id AND c._part = w._cpart")
        if src.legacy:
            self._source(con, "_c_legacy", CURVES_SCHEMA, [(p, self._names[p]) for p in src.legacy], local)
            con.execute("CREATE TEMP TABLE _legacy_runs AS SELECT sweep, trial_id, run_id FROM _t_win "
                        "WHERE _part IN (SELECT unnest($1::VARCHAR[]))", [list(src.legacy_trials)])
            unions.append(f"SELECT {', '.join('c.' + c for c in ccols.split(', '))} FROM _c_legacy c "
                          "SEMI JOIN _legacy_runs w ON c.sweep = w.sweep AND c.trial_id = w.trial_id "
                          "AND c.run_id = w.run_id QUALIFY row_number() OVER "
                          "(PARTITION BY c.sweep, c.trial_id, c.run_id, c.step) = 1")
        if not unions:
            unions = [f"SELECT {_nulls(CURVES_SCHEMA)} WHERE false"]
        con.execute("CREATE VIEW curves AS " + " UNION ALL ".join(unions))
        self._lock(con, local)

    def _native(self) -> bool:

        return isinstance(self.store.fs, pafs.LocalFileSystem)

    def _source(self, con, name: str, schema: pa.Schema, files: list, local: bool, part: bool = False) -> None:
        create_source(con, self.store, name, schema, files, local, part)

    def _lock(self, con, local: bool) -> None:
        if self.memory_limit:
            con.execute(f"SET memory_limit = '{self.memory_limit}'")
        con.execute("SET temp_directory = ''")
        if local and self._files:
            con.execute("SET allowed_paths = " + _sql_list(self._files))
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")

    # ---- running -----------------------------------------------------------------------

    def sql(self, sql: str, params=None) -> pa.Table:
        """Run trusted SQL (this package's) over the views; re-lists the store if a part vanished
        (a compaction finished) and skips a part that turns out corrupt."""
        return self._retrying(lambda con: con.sql(sql, params=params).to_arrow_table())

    def _retrying(self, run):
        for _ in range(20):
            try:
                return run(self.connection())
            # a part deleted mid-read (a compaction) is an IOException, or a PermissionException
            # once external access is locked down to the listed files (seen by scaling serve)
            except (duckdb.IOException, duckdb.InvalidInputException, duckdb.PermissionException) as e:
                if not self._recover(str(e)):
                    raise
        raise StoreError(f"parts of {self.store.uri!r} keep vanishing or failing while being read")

    def _recover(self, message: str) -> bool:
        """After a read error naming one of our files: forget the connection so the next try lists
        the store again; a file that is still there is corrupt, and skipped from now on."""

        hit = [p for p in getattr(self, "_files", []) if p in message]
        if not hit:
            return False
        self.close()
        for path in hit:
            if self.store.fs.get_file_info(path).type != pafs.FileType.NotFound:
                self._bad.add(path)
                warnings.warn(one_line(f"skipping unreadable part {path}: {message.splitlines()[0]}"), stacklevel=4)
        return True

    def query(self, sql: str, *, timeout_s: float | None = QUERY_TIMEOUT_S, max_bytes: int | None = None) -> pa.Table:
        """Run the user's SQL: one SELECT over ``trials`` and ``curves``, within ``timeout_s`` and the
        view's memory limit, its result at most ``max_bytes``; a mistake is a one-line UserError."""
        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error as e:
            raise UserError(f"SQL: {_first_line(e)}") from None
        if len(statements) != 1:
            raise UserError(f"SQL: give exactly one statement, got {len(statements)}")
        if statements[0].type != duckdb.StatementType.SELECT:
            raise UserError(f"SQL: only queries (SELECT ...) run here, not {statements[0].type.name}; "
                            "the store is read-only")

        def run(con):
            try:
                rel = con.sql(statements[0].query)
            except (duckdb.IOException, duckdb.InvalidInputException):
                raise
            except duckdb.Error as e:
                raise UserError(f"SQL: {_first_line(e)}") from None
            if rel is None:
                raise UserError("SQL: the statement returned no rows; only queries (SELECT ...) print results")
            check_columns(rel.columns)
            return _with_timeout(con, rel, timeout_s, self.memory_limit, max_bytes)

        return self._retrying(run)

    # ---- what the product asks -------------------------------------------------------------

    def tables(self) -> tuple[pa.Table, pa.Table]:
        """(trials, curves), everything, sorted by sweep, trial_id (and step)."""
        trials = self.sql("SELECT * FROM trials ORDER BY sweep, trial_id")
        curves = self.sql("SELECT * FROM curves ORDER BY sweep, trial_id, step")
        return trials, curves

    def runs(self, sweep: str, trial_ids) -> dict[str, tuple]:
        """{trial_id: (status, code_version, data_version)} of the run readers keep, for these trials."""
        t = self.sql("SELECT trial_id, status, code_version, data_version FROM trials "
                     "WHERE sweep = $1 AND trial_id IN (SELECT unnest($2::VARCHAR[]))",
                     [sweep, list(trial_ids)])
        return {r["trial_id"]: (r["status"], r["code_version"], r["data_version"]) for r in t.to_pylist()}

    def id_array(self, where: str, params=None) -> np.ndarray:
        """Sorted uint64 trial ids (16 hex digits) of the kept runs matching ``where``."""
        t = self.sql(f"SELECT DISTINCT TRY_CAST('0x' || trial_id AS UBIGINT) AS id FROM trials WHERE {where}",
                     params)
        ids = t.column("id").drop_null().to_numpy()
        return np.sort(ids.astype(np.uint64))


def check_columns(names: list[str]) -> None:
    """Refuse a result with two columns of one name: a table would show one of them twice, JSON drop one."""
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"SQL: the result has more than one column named {', '.join(map(repr, twice))}; "
                        f"give each its own name with AS, e.g. SELECT a.{twice[0]} AS a_{twice[0]}, "
                        f"b.{twice[0]} AS b_{twice[0]} ...")


FETCH_ROWS = 2048
"""Rows per batch a query's result is fetched in: the byte bound is checked after each one."""


def _time_error(timeout_s) -> UserError:
    return UserError(f"SQL: the query ran past its time limit of {timeout_s:g} s; narrow it, or raise "
                     "the limit with --timeout")


def _with_timeout(con, rel, timeout_s, memory_limit, max_bytes: int | None = None):
    """The result of ``rel`` as an Arrow table, fetched in batches of :data:`FETCH_ROWS` rows within
    ``timeout_s`` (running and fetching; None or infinity: no limit) and, with ``max_bytes``, refused
    in one line once the batches fetched so far hold more bytes than that."""
    timer = None
    fired = []
    if timeout_s and math.isfinite(timeout_s):
        def stop():
            fired.append(True)
            con.interrupt()
        timer = threading.Timer(timeout_s, stop)
        timer.daemon = True
        timer.start()
    try:
        reader = rel.to_arrow_reader(FETCH_ROWS)
        batches, size, rows = [], 0, 0
        for batch in reader:
            if fired:
                raise _time_error(timeout_s)
            size += batch.get_total_buffer_size()
            rows += batch.num_rows
            if max_bytes is not None and size > max_bytes:
                raise UserError(f"SQL: the result is larger than the memory limit ({memory_limit}): over "
                                f"{size:,} bytes by row {rows:,}; narrow it (a LIMIT, fewer columns, an "
                                "aggregate), write it out with scaling export, or raise the limit with --memory")
            batches.append(batch)
        return pa.Table.from_batches(batches, schema=reader.schema)
    except duckdb.InterruptException:
        raise _time_error(timeout_s) from None
    except duckdb.OutOfMemoryException:
        raise UserError(f"SQL: the query needs more memory than its limit ({memory_limit}); narrow it "
                        "(fewer rows or columns, a LIMIT), or raise the limit with --memory") from None
    except (duckdb.IOException, duckdb.InvalidInputException) as e:
        if fired:
            raise _time_error(timeout_s) from None
        if "string size" in str(e).lower() or "offset" in str(e).lower():
            raise _too_big(e) from None
        raise
    except duckdb.Error as e:
        if fired:
            raise _time_error(timeout_s) from None
        raise UserError(f"SQL: {_first_line(e)}") from None
    except (OSError, pa.ArrowException) as e:  # from the Arrow stream: an interrupt, a read error, a batch
        text = str(e).lower()                   # Arrow cannot hold
        if fired or "interrupt" in text:
            raise _time_error(timeout_s) from None
        if "io error" in text or "no files found" in text or "no such file" in text:
            raise duckdb.IOException(str(e)) from None  # a part vanished: the caller lists the store again
        raise _too_big(e) from None
    finally:
        if timer is not None:
            timer.cancel()
            timer.join()  # so the connection is never released from the timer's thread


def _too_big(e: Exception) -> UserError:
    return UserError(f"SQL: the result cannot be held in memory ({_first_line(e)}); narrow it (a LIMIT, "
                     "shorter strings, fewer columns)")


def create_source(con, store, name: str, schema: pa.Schema, files: list, local: bool, part: bool = False) -> None:
    """A view ``name`` over ``files`` ([(path, column names)]) in ``schema`` (columns a part lacks are
    null), with ``_part`` (the file's path) when ``part``: DuckDB's reader on a local disk, a pyarrow
    dataset on the store's filesystem otherwise."""
    if not files:
        extra = ", CAST(NULL AS VARCHAR) AS _part" if part else ""
        con.execute(f"CREATE VIEW {name} AS SELECT {_nulls(schema)}{extra} WHERE false")
        return
    if local:
        present = set()
        for _, names in files:
            present |= set(names)
        select = ", ".join(f'CAST("{f.name}" AS {duck_type(f.type)}) AS "{f.name}"' if f.name in present
                           else f'CAST(NULL AS {duck_type(f.type)}) AS "{f.name}"' for f in schema)
        paths = [p for p, _ in files]
        con.execute(f"CREATE VIEW {name} AS SELECT {select}{', filename AS _part' if part else ''} "
                    f"FROM read_parquet({_sql_list(paths)}, union_by_name = true"
                    f"{', filename = true' if part else ''})")
        return
    import pyarrow.dataset as ds

    full = schema.append(pa.field("_part", pa.string())) if part else schema
    if isinstance(store.fs, pafs.PyFileSystem):  # a filesystem written in Python (tests' fault injection)
        source = _read_in_thread(store.fs, [p for p, _ in files], full, part)
    else:
        fmt = ds.ParquetFileFormat()
        frags = [fmt.make_fragment(p, filesystem=store.fs,
                                   partition_expression=(ds.field("_part") == p) if part else None)
                 for p, _ in files]
        source = ds.FileSystemDataset(frags, schema=full, format=fmt, filesystem=store.fs)
    con.register(f"{name}_ds", source)
    con.execute(f"CREATE VIEW {name} AS SELECT * FROM {name}_ds")


def _read_in_thread(fs, paths: list[str], schema: pa.Schema, part: bool) -> pa.Table:
    """Parts on a filesystem implemented in Python (the tests' fault injection), read whole in this
    thread: a pyarrow dataset would read them from its I/O threads, which then wait for the GIL that
    DuckDB's caller holds."""

    tables = []
    for path in paths:
        t = pq.read_table(path, filesystem=fs, use_threads=False, pre_buffer=False)
        cols = [t.column(f.name).cast(f.type) if f.name in t.column_names else pa.nulls(len(t), f.type)
                for f in schema if f.name != "_part"]
        if part:
            cols.append(pa.array([path] * len(t), pa.string()))
        tables.append(pa.Table.from_arrays(cols, schema=schema))
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _nulls(schema: pa.Schema) -> str:
    return ", ".join(f'CAST(NULL AS {duck_type(f.type)}) AS "{f.name}"' for f in schema)


def _sql_list(items) -> str:
    return "[" + ", ".join("'" + str(i).replace("'", "''") + "'" for i in items) + "]"


def _first_line(e: Exception) -> str:
    return " ".join(str(e).split("\n")[0].split())


def open_store(root, sweeps=None, **kw) -> StoreView:
    """A :class:`StoreView` of the store at ``root`` (a path, URI or Store)."""
    from scaling.store.writer import Store

    store = root if not isinstance(root, (str, os.PathLike)) else Store(str(root))
    return StoreView(store, sweeps, **kw)


def default_memory_limit() -> str:
    """Half of this machine's memory, as DuckDB writes it."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        total = 8 << 30
    return f"{max(256, total // 2 >> 20)}MB"


__all__ = ["StoreView", "open_store", "WINNER_ORDER", "winner_key", "default_memory_limit", "StorageError"]


def load_tables(root: str) -> tuple[pa.Table, pa.Table]:
    """(trials, curves) of every sweep under ``root``, as Arrow tables: one row per trial (the run
    the rule above keeps) and the curve rows of exactly that run, each once, sorted by sweep,
    trial_id (and step). Kept for callers that want everything in memory; large stores are
    read through :func:`scaling.store.views.open_store` instead."""

    return open_store(root).tables()
