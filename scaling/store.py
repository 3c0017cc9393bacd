"""The results store: Parquet parts under ``ROOT/<sweep>/{trials,curves}/``.

Layout::

    ROOT/<sweep>/sweep.yaml              the sweep config as last run
    ROOT/<sweep>/trials/<part>.parquet   one row per trial (the commit record)
    ROOT/<sweep>/curves/<part>.parquet   one row per eval point, keyed by trial_id, run_id

ROOT is a local path or any URI that ``pyarrow.fs`` understands. Each part is
written whole: on a local disk to a hidden temporary name and then renamed, on
an object store as one object at its final key, so a reader never sees half a
file. A trial is stored once its ``trials`` part exists; its curves are written
first. Parts are named after the trial, so a rerun replaces rather than adds.
Readers also keep one row per trial_id (the latest) and only the curve rows of
that run, so even two drivers racing on one sweep leave a correct view.

No torch and no ray here: analysis imports this module.
"""

from __future__ import annotations

import uuid
import warnings
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from scaling.errors import StoreError
from scaling.schema import CURVES_SCHEMA, TABLES, TRIALS_SCHEMA  # noqa: F401 (re-exported)

class Store:
    """One results root (local path or URI) and the sweeps under it."""

    def __init__(self, root: str):
        try:
            self.fs, path = pafs.FileSystem.from_uri(root)
        except (pa.ArrowInvalid, ValueError):
            self.fs, path = pafs.LocalFileSystem(), str(PurePosixPath(_abspath(root)))
        self.root = path.rstrip("/") or "/"
        self.uri = root
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    # ---- writing -------------------------------------------------------------

    def _join(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a whole file so that readers see all of it or nothing."""
        parent = path.rsplit("/", 1)[0]
        try:
            self.fs.create_dir(parent, recursive=True)
            if self.local:
                tmp = f"{parent}/.tmp-{uuid.uuid4().hex}-{path.rsplit('/', 1)[1]}"
                try:
                    with self.fs.open_output_stream(tmp) as out:
                        out.write(data)
                    self.fs.move(tmp, path)
                finally:
                    if self.fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                        self.fs.delete_file(tmp)
            else:  # object stores have no rename: one PUT to the final key
                with self.fs.open_output_stream(path) as out:
                    out.write(data)
        except OSError as e:
            raise StoreError(f"cannot write {path!r}: {e}") from None

    def write_table(self, sweep: str, table: str, name: str, rows: list[dict]) -> None:
        """Write rows as the part ``<sweep>/<table>/<name>.parquet``, atomically."""
        schema = TABLES[table]
        rows = [{**r, "sweep": sweep} for r in rows]
        data = pa.Table.from_pylist(rows, schema=schema)
        sink = pa.BufferOutputStream()
        pq.write_table(data, sink, compression="zstd")
        self.write_bytes(self._join(sweep, table, f"{name}.parquet"), sink.getvalue().to_pybytes())

    def write_result(self, sweep: str, result: dict, part: str | None = None) -> None:
        """Store one trial's rows: curves first, then the trial row that commits it."""
        row = result["trial"]
        name = part or row["trial_id"]
        curves = [{**c, "trial_id": row["trial_id"], "run_id": row["run_id"]} for c in result["curves"]]
        if curves:
            self.write_table(sweep, "curves", name, curves)
        self.write_table(sweep, "trials", name, [row])

    def save_config(self, sweep: str, text: str) -> None:
        self.write_bytes(self._join(sweep, "sweep.yaml"), text.encode())

    # ---- reading -------------------------------------------------------------

    def sweeps(self) -> list[str]:
        """Sweep names under the root. A root that is itself a sweep folder gives ['']."""
        info = self.fs.get_file_info(self.root)
        if info.type == pafs.FileType.NotFound:
            raise StoreError(f"no results store at {self.uri!r}")
        if info.type != pafs.FileType.Directory:
            raise StoreError(f"{self.uri!r} is not a directory")
        if self._is_dir(self._join("trials")):
            return [""]
        entries = self.fs.get_file_info(pafs.FileSelector(self.root))
        return sorted(e.base_name for e in entries if e.type == pafs.FileType.Directory
                      and not e.base_name.startswith(".") and self._is_dir(e.path + "/trials"))

    def _is_dir(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.Directory

    def parts(self, sweep: str, table: str) -> list[str]:
        """Visible part files of one table (temporary files are hidden)."""
        base = self._join(sweep, table) if sweep else self._join(table)
        if not self._is_dir(base):
            return []
        entries = self.fs.get_file_info(pafs.FileSelector(base))
        return sorted(e.path for e in entries if e.type == pafs.FileType.File
                      and e.base_name.endswith(".parquet") and not e.base_name.startswith("."))

    def read_parts(self, paths: list[str], columns: list[str] | None = None, *,
                   table: str | None = None, vanished: list[str] | None = None) -> list[pa.Table]:
        """Read parts, skipping (with one warning each) any that is corrupt or truncated or,
        given ``table``, whose columns clash with its schema. Given ``vanished``, a part
        deleted since it was listed (a compaction replaced it) goes there instead."""
        tables = []
        for path in paths:
            try:
                t = pq.read_table(path, filesystem=self.fs, columns=columns)
            except (OSError, pa.ArrowException) as e:
                if vanished is not None and self.fs.get_file_info(path).type == pafs.FileType.NotFound:
                    vanished.append(path)
                    continue
                warnings.warn(f"skipping unreadable part {path}: {_first_line(e)}", stacklevel=2)
                continue
            clash = _clash(t.schema, TABLES[table]) if table and columns is None else None
            if clash:
                warnings.warn(f"skipping part {path}: {clash}", stacklevel=2)
                continue
            tables.append(t)
        return tables

    def read_table_parts(self, sweeps: list[str], table: str, columns: list[str] | None = None) -> list[pa.Table]:
        """The parts of ``table`` in ``sweeps``, listed again if one vanished while being read,
        so a reader sees the parts from before a compaction or those after it, never neither."""
        for _ in range(20):
            vanished: list[str] = []
            tables = [t for sweep in sweeps for t in self.read_parts(
                self.parts(sweep, table), columns, table=table, vanished=vanished)]
            if not vanished:
                return tables
        raise StoreError(f"parts of {self.uri!r} keep vanishing while being read; is a compaction looping?")

    def finished(self, sweep: str, statuses=("ok", "diverged", "failed")) -> dict[str, tuple]:
        """{trial_id: (status, code_version, data_version)} of the stored trials of a sweep whose
        status is in ``statuses`` (versions None in parts of the first release)."""
        found = _status_map(self.read_table_parts([sweep], "trials"))
        return {tid: v for tid, v in found.items() if v[0] in statuses}

    def stored(self, sweep: str, trial_ids: list[str]) -> set[str]:
        """Which of ``trial_ids`` have a trials part of their own (one listing call)."""
        paths = [self._join(sweep, "trials", f"{tid}.parquet") for tid in trial_ids]
        infos = self.fs.get_file_info(paths)
        return {tid for tid, info in zip(trial_ids, infos) if info.type == pafs.FileType.File}

    def statuses(self, sweep: str, trial_ids: list[str]) -> dict[str, tuple]:
        """{trial_id: (status, code_version, data_version)} of those of ``trial_ids`` stored in
        parts of their own."""
        have = self.stored(sweep, trial_ids)
        paths = [self._join(sweep, "trials", f"{tid}.parquet") for tid in trial_ids if tid in have]
        return _status_map(self.read_parts(paths))

    def raw_table(self, table: str) -> pa.Table:
        """Every row of a table across sweeps, as stored (duplicates included)."""
        schema = TABLES[table]
        tables = self.read_table_parts(self.sweeps(), table)
        if not tables:
            return schema.empty_table()
        merged = pa.concat_tables(tables, promote_options="permissive")
        for field in schema:  # parts from older versions may lack newer columns
            if field.name not in merged.column_names:
                merged = merged.append_column(field, pa.nulls(len(merged), field.type))
        return merged


def _status_map(tables: list[pa.Table]) -> dict[str, tuple]:
    """{trial_id: (status, code_version, data_version)} of trials parts (versions None where a
    part of the first release has no such column)."""
    out: dict[str, tuple] = {}
    names = ("trial_id", "status", "code_version", "data_version")
    for t in tables:
        cols = [t.column(n).to_pylist() if n in t.column_names else [None] * len(t) for n in names]
        for tid, status, code, data in zip(*cols):
            out[tid] = (status, code, data)
    return out


def load_tables(root: str) -> tuple[pa.Table, pa.Table]:
    """(trials, curves) of every sweep under ``root``: one row per trial, the latest
    run of each, and the curve rows of exactly that run, each once (a compaction in
    progress may hold a row in an old part and in the merged one)."""
    import duckdb

    store = Store(root)
    raw_trials, raw_curves = store.raw_table("trials"), store.raw_table("curves")
    con = duckdb.connect(":memory:")
    con.register("raw_trials", raw_trials)
    con.register("raw_curves", raw_curves)
    trials = con.sql(
        "SELECT * FROM raw_trials QUALIFY row_number() OVER "
        "(PARTITION BY sweep, trial_id ORDER BY end_time DESC NULLS LAST, run_id) = 1 "
        "ORDER BY sweep, trial_id").to_arrow_table()
    con.register("trials", trials)
    curves = con.sql(
        "SELECT c.* FROM raw_curves c SEMI JOIN trials t "
        "ON c.sweep = t.sweep AND c.trial_id = t.trial_id AND c.run_id = t.run_id "
        "QUALIFY row_number() OVER (PARTITION BY c.sweep, c.trial_id, c.run_id, c.step) = 1 "
        "ORDER BY c.sweep, c.trial_id, c.step").to_arrow_table()
    con.close()
    return trials, curves


def _clash(schema: pa.Schema, expected: pa.Schema) -> str | None:
    """Why a part with ``schema`` cannot be merged with the others, or None. Parts of an
    older version may lack columns, but not the keys that say whose rows they are."""
    keys = [k for k in ("sweep", "trial_id", "run_id") if k not in schema.names]
    if keys:
        return f"it has no key column(s) {keys}"
    try:
        pa.unify_schemas([expected, schema], promote_options="permissive")
    except pa.ArrowException as e:
        return f"its columns clash with the current schema ({_first_line(e)})"
    return None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _abspath(path: str) -> str:
    import os

    return os.path.abspath(os.path.expanduser(path))


__all__ = ["Store", "StoreError", "load_tables", "TRIALS_SCHEMA", "CURVES_SCHEMA"]
