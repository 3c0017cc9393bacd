"""The results store: Parquet parts under ``ROOT/<sweep>/{trials,curves}/``.

Layout::

    ROOT/<sweep>/_sweep.json                  marks the folder as a sweep (written by this product)
    ROOT/<sweep>/sweep.yaml                   the sweep config as last run
    ROOT/<sweep>/trials/<unit>-<run>.parquet  one commit event: the trial rows of one trial, or of the
                                              members of a pack that finished together
    ROOT/<sweep>/curves/<unit>-<run>.parquet  their eval points (keyed by trial_id, run_id), written first
    ROOT/<sweep>/{trials,curves}/merged-<id>.parquet   a compaction's output pair

ROOT is a local path or a URI (:mod:`scaling.store.uri`). Each part is written whole: on a
local disk to a hidden temporary name and then renamed, on an object store as one object
at its final key, so a reader never sees half a file. A commit event writes its curves
part first and then the trials part of the same name, which commits it; names carry a
fresh run id, so nothing is ever overwritten (:mod:`scaling.store.parts`).

**Which run readers keep.** A trial may have several committed runs (a retry, a second
driver, ``--retry-failed``, ``--rerun-stale``). Readers keep one, by a rule that needs no
clock: ``ok`` and ``diverged`` beat ``failed``; then the newer ``code_version``, then the
newer ``data_version`` (compared as integers when both are, else as text; a null is
version "1"); then the smallest ``run_id``, then the smallest part name (copies of one
run). The curve rows readers show are those of that run, each once. The rule is in
:data:`scaling.store.views.WINNER_ORDER`; verify, repair, compaction and the sweep driver use it.

A sweep folder is one that holds ``_sweep.json`` (or, written by an earlier release, its
``sweep.yaml``), never one picked by a subfolder's name; sweep names the layout uses
(``trials``, ``curves``, ...) are refused.

Readers go through :mod:`scaling.store.views` (DuckDB over the parts, lazily).
No torch and no ray here: analysis imports this module.
"""

from __future__ import annotations

import json
import threading
import uuid
import warnings

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

import scaling.store.parts as parts_mod
from scaling.errors import StorageError, StoreError, one_line
from scaling.spec.schema import CURVES_SCHEMA, TABLES, TRIALS_SCHEMA  # noqa: F401 (re-exported)
from scaling.store.rows import rows_to_table
from scaling.store.uri import open_filesystem, retrying

MARKER = "_sweep.json"

CONFIG = "sweep.yaml"

QUARANTINE = "quarantine"

LAYOUT = (*TABLES, QUARANTINE, CONFIG, MARKER)
"""Names a sweep folder uses for itself: a sweep may not be called any of these."""

_ensured: set = set()

_ensured_lock = threading.Lock()


def reserved_name(name: str) -> str | None:
    """Why ``name`` cannot name a sweep (None when it can)."""
    if not isinstance(name, str) or not name or name.startswith((".", "_")) or "/" in name or "\\" in name:
        return "a sweep name is a folder name: no '/', and not starting with '.' or '_'"
    if name.lower() in LAYOUT:
        return (f"{name!r} is a name the store's layout uses inside every sweep ({', '.join(LAYOUT)}); "
                "a sweep of that name would be mistaken for part of another; choose another name")
    return None


class Store:
    """One results root (local path or URI) and the sweeps under it.

    ``retry_s``: how long a failing storage call is retried (with backoff) before it raises
    :class:`~scaling.errors.StorageError`; None (read-only commands): no retry."""

    def __init__(self, root: str, *, retry_s: float | None = None):
        self.fs, self.root, self.local = open_filesystem(root)
        self.root = self.root or "/"
        self.uri = str(root)
        self.retry_s = retry_s

    # ---- layout --------------------------------------------------------------

    def _join(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def sweep_dir(self, sweep: str) -> str:
        return self._join(sweep) if sweep else self.root

    def table_dir(self, sweep: str, table: str) -> str:
        return f"{self.sweep_dir(sweep)}/{table}"

    @property
    def location(self) -> str:
        """What workers are given to open the same store: the URI, or the absolute local path."""
        return self.root if self.local and "://" not in self.uri else self.uri

    # ---- writing -------------------------------------------------------------

    def write_bytes(self, path: str, data: bytes, what: str | None = None) -> None:
        """Write a whole file so that readers see all of it or nothing (retried within ``retry_s``)."""
        retrying(lambda: self._write_once(path, data), what or f"write {path}", self.retry_s)

    def _write_once(self, path: str, data: bytes) -> None:
        parent, name = path.rsplit("/", 1)
        self.fs.create_dir(parent, recursive=True)
        if not self.local:  # object stores have no rename: one PUT to the final key
            with self.fs.open_output_stream(path) as out:
                out.write(data)
            return
        tmp = f"{parent}/{parts_mod.TMP_PREFIX}{uuid.uuid4().hex}-{name}"
        try:
            with self.fs.open_output_stream(tmp) as out:
                out.write(data)
            self.fs.move(tmp, path)
        finally:
            try:
                if self.fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                    self.fs.delete_file(tmp)
            except OSError:
                pass

    def write_stream(self, path: str, schema: pa.Schema, batches) -> int:
        """Write record batches as one Parquet file, atomically like :meth:`write_bytes` but without
        holding it in memory; returns the rows written. Not retried (the caller retries the whole)."""
        parent, name = path.rsplit("/", 1)
        self.fs.create_dir(parent, recursive=True)
        target = path if not self.local else f"{parent}/{parts_mod.TMP_PREFIX}{uuid.uuid4().hex}-{name}"
        rows = 0
        try:
            with self.fs.open_output_stream(target) as out, \
                    pq.ParquetWriter(out, schema, compression="zstd") as writer:
                for batch in batches:
                    if batch.num_rows:
                        writer.write_table(pa.Table.from_batches([batch]).cast(schema),
                                           row_group_size=parts_mod.ROW_GROUP_ROWS)
                        rows += batch.num_rows
            if self.local:
                self.fs.move(target, path)
        finally:
            if self.local:
                try:
                    if self.fs.get_file_info(target).type != pafs.FileType.NotFound:
                        self.fs.delete_file(target)
                except OSError:
                    pass
        return rows

    def write_arrow(self, path: str, table: pa.Table, metadata: dict | None = None) -> None:
        if metadata:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        self.write_bytes(path, sink.getvalue().to_pybytes())

    def write_table(self, sweep: str, table: str, name: str, rows: list[dict]) -> None:
        """Write rows as the part ``<sweep>/<table>/<name>.parquet``, atomically."""
        self.ensure_sweep(sweep)
        data = rows_to_table([{**r, "sweep": sweep} for r in rows], TABLES[table])
        self.write_arrow(f"{self.table_dir(sweep, table)}/{name}.parquet", data)

    def commit(self, sweep: str, unit: str, results: list[dict]) -> str:
        """Store finished runs as one commit event: their curves part, then the trials part of the
        same name that commits them. Returns the part name ``<unit>-<run_id>``."""
        if not results:
            return ""
        name = parts_mod.commit_name(unit, results[0]["trial"].get("run_id"))
        curves = [{**c, "trial_id": r["trial"]["trial_id"], "run_id": r["trial"]["run_id"]}
                  for r in results for c in r["curves"]]
        self.write_table(sweep, "curves", name, curves)
        self.write_table(sweep, "trials", name, [r["trial"] for r in results])
        return name

    def write_result(self, sweep: str, result: dict, part: str | None = None) -> None:
        """Store one trial's rows as a commit event of its own (``part`` names the parts instead,
        as an earlier release did: curves first, then the trial row)."""
        if part is None:
            self.commit(sweep, parts_mod.unit_id([result["trial"]["trial_id"]]), [result])
            return
        row = result["trial"]
        curves = [{**c, "trial_id": row["trial_id"], "run_id": row["run_id"]} for c in result["curves"]]
        if curves:
            self.write_table(sweep, "curves", part, curves)
        self.write_table(sweep, "trials", part, [row])

    def save_config(self, sweep: str, text: str) -> None:
        self.ensure_sweep(sweep)
        self.write_bytes(f"{self.sweep_dir(sweep)}/{CONFIG}", text.encode(), f"save the config of {sweep!r}")

    def ensure_sweep(self, sweep: str) -> None:
        """Write the sweep's marker once (per process), refusing names the layout uses."""
        if sweep:
            why = reserved_name(sweep)
            if why:
                raise StoreError(f"sweep name {sweep!r}: {why}")
        key = (self.uri, sweep)
        if key in _ensured:
            return
        path = f"{self.sweep_dir(sweep)}/{MARKER}"
        exists = retrying(lambda: self.fs.get_file_info(path).type == pafs.FileType.File,
                          f"read {path}", self.retry_s)
        if not exists:
            self.write_bytes(path, json.dumps({"sweep": sweep, "layout": 2}).encode())
        with _ensured_lock:
            _ensured.add(key)

    # ---- finding sweeps ------------------------------------------------------

    def sweeps(self) -> list[str]:
        """Sweep names under the root; a root that is itself a sweep folder gives ['']."""
        info = self._info(self.root)
        if info.type == pafs.FileType.NotFound:
            raise StoreError(f"no results store at {self.uri!r}")
        if info.type != pafs.FileType.Directory:
            raise StoreError(f"{self.uri!r} is not a directory")
        if self.is_sweep(""):
            return [""]
        try:
            entries = self.fs.get_file_info(pafs.FileSelector(self.root))
        except (OSError, pa.ArrowException) as e:
            raise StorageError(one_line(f"cannot list the results store {self.uri!r}: {parts_mod.first_line(e)}",
                                        400)) from None
        names = sorted(e.base_name for e in entries if e.type == pafs.FileType.Directory
                       and not e.base_name.startswith((".", "_")))
        if not names:
            return []
        probes = [f"{self._join(n)}/{p}" for n in names for p in (MARKER, CONFIG)]
        infos = self._infos(probes)
        return [n for i, n in enumerate(names)
                if infos[2 * i].type == pafs.FileType.File or infos[2 * i + 1].type == pafs.FileType.File]

    def enclosing_sweep(self) -> str | None:
        """The sweep folder the root is, or lies inside (the nearest folder from the root up that holds
        a sweep marker; the root itself also when it holds a sweep.yaml and a trials folder), or None.
        A sweep writing there would nest its folder inside another sweep's, where readers of either
        path never see it."""
        path = self.root.rstrip("/")
        first = True
        while path:
            marker, config, trials = self._infos([f"{path}/{MARKER}", f"{path}/{CONFIG}", f"{path}/trials"])
            if marker.type == pafs.FileType.File or (first and config.type == pafs.FileType.File
                                                      and trials.type == pafs.FileType.Directory):
                return path
            parent = path.rsplit("/", 1)[0] if "/" in path else ""
            if parent == path or (not self.local and "/" not in path):
                break  # the filesystem's root, or an object store's bucket
            path, first = parent, False
        return None

    def marker_name(self, sweep: str) -> str | None:
        """The sweep name a folder's marker records (None if it has none or it cannot be read)."""
        try:
            with self.fs.open_input_stream(f"{self.sweep_dir(sweep)}/{MARKER}") as f:
                name = json.loads(f.read(65536)).get("sweep")
            return name if isinstance(name, str) else None
        except (OSError, ValueError, AttributeError):
            return None

    def check_for_sweep(self, name: str) -> list[str]:
        """Before a sweep ``name`` writes here: refuse (StoreError) a root that is a sweep folder or lies
        inside one; return warnings when the sweep's folder is missing but another folder's marker
        names it (a renamed folder: this run would start afresh). Retried within ``retry_s``."""
        return retrying(lambda: self._check_for_sweep(name), f"read the results store {self.uri!r}", self.retry_s,
                        retry_on=(OSError, StorageError))

    def _check_for_sweep(self, name: str) -> list[str]:
        inside = self.enclosing_sweep()
        if inside is not None:
            parent = inside.rsplit("/", 1)[0] or "/"
            raise StoreError(one_line(
                f"--results {self.uri!r} is {'a sweep folder' if inside == self.root.rstrip('/') else 'inside the sweep folder ' + repr(inside)} "
                f"(it holds {MARKER}), not a results store; a sweep written there would nest inside another sweep, where readers of neither path see it; "
                f"give the store that holds it, e.g. --results {parent}", 600))
        if self.is_sweep(name):
            return []
        try:
            others = [s for s in self.sweeps() if s and s != name and self.marker_name(s) == name]
        except StoreError:
            return []
        return [one_line(f"warning: sweep {name!r} has no folder here, but folder {o!r} holds sweep {name!r} "
                         f"(its {MARKER}): was it renamed? This run starts {name!r} afresh in "
                         f"{self.sweep_dir(name)}; to resume the stored trials instead, stop it and rename "
                         f"{o!r} back to {name!r}", 600) for o in others]

    def is_sweep(self, sweep: str) -> bool:
        """A sweep folder holds the marker this product writes, or (written by an earlier release,
        which had no marker) the sweep's config ``sweep.yaml``; never decided by a folder's name."""
        base = self.sweep_dir(sweep)
        marker, config = self._infos([f"{base}/{MARKER}", f"{base}/{CONFIG}"])
        return marker.type == pafs.FileType.File or config.type == pafs.FileType.File

    def _info(self, path: str):
        return self._infos([path])[0]

    def _infos(self, paths: list[str]):
        try:
            return self.fs.get_file_info(paths)
        except (OSError, pa.ArrowException) as e:
            raise StorageError(one_line(f"cannot reach the results store {self.uri!r}: {parts_mod.first_line(e)}",
                                        400)) from None

    # ---- plain reads (tests, verify) -------------------------------------------

    def parts(self, sweep: str, table: str) -> list[str]:
        """Visible part files of one table (temporary files and symlinks are left out)."""
        return [e.path for e in parts_mod.list_sweep(self, sweep).parts[table].values()]

    def raw_table(self, table: str) -> pa.Table:
        """Every row of every readable part of a table across sweeps, as stored (duplicates and
        uncommitted rows included): what exactly-once tests count."""
        schema, tables = TABLES[table], []
        for sweep in self.sweeps():
            for path in self.parts(sweep, table):
                try:
                    t = pq.read_table(path, filesystem=self.fs)
                except FileNotFoundError:
                    continue
                except (OSError, pa.ArrowException) as e:
                    warnings.warn(f"skipping unreadable part {path}: {parts_mod.first_line(e)}", stacklevel=2)
                    continue
                problem = parts_mod.check_schema(t.schema, table)[0]
                if problem:
                    warnings.warn(f"skipping part {path}: {problem}", stacklevel=2)
                    continue
                tables.append(_conform(t, schema))
        return pa.concat_tables(tables) if tables else schema.empty_table()


def _conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    cols = [data.column(f.name).cast(f.type) if f.name in data.column_names else pa.nulls(len(data), f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


__all__ = ["Store", "StoreError", "reserved_name", "TRIALS_SCHEMA", "CURVES_SCHEMA"]
