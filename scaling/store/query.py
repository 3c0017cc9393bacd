"""SQL over a results store with DuckDB, read-only and bounded.

The tables ``trials`` and ``curves`` are views over the store's Parquet parts
(:mod:`scaling.store.views`: de-duplicated in SQL, read lazily). Before the user's SQL runs,
the connection may open only the parts the views read, and file access, extension loading
and configuration changes are switched off; the SQL must be one ``SELECT``, so a query
cannot write, copy out, attach or load anything. It runs within a time limit (default
5 minutes) and a memory limit (default half of this machine's memory), and a result with
two columns of one name is refused (a table or JSON would show one of them twice or drop one).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from datetime import datetime

import duckdb
import pyarrow as pa

from scaling import textout
from scaling.errors import UserError
from scaling.store.views import QUERY_TIMEOUT_S, StoreView, check_columns, default_memory_limit, open_store

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(KB|MB|GB|TB|KIB|MIB|GIB|TIB)?\s*", re.IGNORECASE)


def run_query(root, sql: str, tables: tuple[pa.Table, pa.Table] | None = None, *,
              timeout_s: float | None = QUERY_TIMEOUT_S, memory_limit: str | None = None,
              max_bytes: int | None = None) -> pa.Table:
    """Run ``sql`` over the store at ``root`` (a path, URI or an open :class:`StoreView`) and return
    the result as an Arrow table, fetched within ``timeout_s`` and refused in one line past
    ``max_bytes``. ``tables`` (trials, curves) in memory are queried instead when given."""
    if tables is not None:
        return _query_tables(tables, sql, timeout_s, memory_limit or default_memory_limit(), max_bytes)
    if isinstance(root, StoreView):
        return root.query(sql, timeout_s=timeout_s, max_bytes=max_bytes)
    with open_store(root, memory_limit=memory_limit or default_memory_limit()) as view:
        return view.query(sql, timeout_s=timeout_s, max_bytes=max_bytes)


def _query_tables(tables, sql: str, timeout_s, memory_limit, max_bytes=None) -> pa.Table:
    """The same sandbox over two in-memory tables."""
    from scaling.store.views import _with_timeout

    trials, curves = tables
    con = duckdb.connect(":memory:")
    try:
        con.register("trials", trials)
        con.register("curves", curves)
        con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute("SET temp_directory = ''")
        con.execute("SET enable_external_access = false")
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute("SET lock_configuration = true")
        statements = _one_select(sql)
        try:
            rel = con.sql(statements)
        except duckdb.Error as e:
            raise UserError(f"SQL: {_first_line(e)}") from None
        check_columns(rel.columns)
        return _with_timeout(con, rel, timeout_s, memory_limit, max_bytes)
    finally:
        con.close()


def _one_select(sql: str) -> str:
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise UserError(f"SQL: {_first_line(e)}") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise UserError("SQL: only one query (SELECT ...) runs here; the store is read-only")
    return statements[0].query


_UNITS = {"KB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3, "TB": 1000 ** 4,
          "KIB": 1024, "MIB": 1024 ** 2, "GIB": 1024 ** 3, "TIB": 1024 ** 4}


def memory_bytes(size: str) -> int:
    """Bytes of a size as :func:`parse_memory` writes it (KB = 1000 bytes, KiB = 1024, as DuckDB)."""
    m = _SIZE.fullmatch(size)
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "GB").upper()])


def parse_memory(text: str) -> str:
    """A memory size as DuckDB takes it ('4GB', '512MB'; a bare number is GB)."""
    m = _SIZE.fullmatch(str(text))
    if not m or float(m.group(1)) <= 0:
        raise UserError(f"--memory {text!r} is not a size; write it like 4GB or 512MB")
    return f"{m.group(1)}{(m.group(2) or 'GB').upper()}"


def _first_line(e: Exception) -> str:
    return " ".join(str(e).split("\n")[0].split())


def _cell(v, exact: bool = False) -> str:
    """A value as text: rounded to 6 digits for a table on screen, exactly (``exact``: the
    shortest text that reads back as the same float, full timestamps) for CSV."""
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else (repr(v) if exact else f"{v:.6g}")
    if isinstance(v, datetime):
        return v.isoformat() if exact else v.isoformat(timespec="seconds")
    return str(v)


def _json_value(v):
    """JSON has no NaN or infinity: they are written as null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_value(x) for x in v]
    return v


CHUNK_ROWS = 10_000
"""Rows formatted at a time when a result is printed as CSV or JSON lines."""
CELL_BYTES = 250
"""What one cell of a text table costs in memory while it is laid out (its value as a Python
object, its text, the copy the layout makes, and their places in rows), besides its bytes."""
ROW_BYTES = 600
"""What one row of a text table costs besides its cells (a dict, then lists, then its line).
Measured: 20M rows of two integers laid out took 15.7 GB, about 800 bytes a row."""


def write_result(table: pa.Table, fmt: str, out, *, budget: int | None = None,
                 deadline: float | None = None, timeout_s: float | None = None) -> None:
    """Print a query's result to ``out``: CSV and JSON lines a chunk of rows at a time (so their
    text never all sits in memory); a text table only if laying it out fits in ``budget`` bytes.
    Past ``deadline`` (``time.monotonic()``), stops with the time-limit error of ``timeout_s``."""
    import time

    def in_time():
        if deadline is not None and time.monotonic() > deadline:
            raise UserError(f"SQL: the query ran past its time limit of {timeout_s:g} s while its result "
                            "was printed; narrow it, or raise the limit with --timeout")

    if fmt == "table":
        need = table.num_rows * (ROW_BYTES + table.num_columns * CELL_BYTES) + 4 * table.nbytes
        if budget is not None and need > budget:
            raise UserError(f"SQL: the result ({table.num_rows:,} rows) is too large to lay out as a table "
                            f"within the memory limit (about {need:,} bytes needed); --format csv or json "
                            "prints it row by row, or narrow it (a LIMIT), or raise --memory")
        text = format_table(table, fmt, check=in_time)
        in_time()
        out.write(text + "\n")
        return
    for start in range(0, max(table.num_rows, 1), CHUNK_ROWS):
        in_time()
        text = format_table(table.slice(start, CHUNK_ROWS), fmt, header=start == 0)
        if text:
            out.write(text + "\n")
    in_time()


def format_table(table: pa.Table, fmt: str = "table", width: int | None = None, header: bool = True,
                 check=None) -> str:
    """Render a result as a text table that fits ``width`` columns (default: the terminal's, or
    ``$COLUMNS``; :func:`scaling.textout.table`; numbers rounded to 6 digits but an axis
    column's, such as lr, which names a configuration), CSV (every float
    written so that it reads back bit for bit) or JSON lines (NaN as null). ``check()`` is
    called between chunks of rows while a text table's cells are made (a time limit)."""
    cols = table.column_names
    if fmt == "json":
        return "\n".join(json.dumps(_json_value(r), default=str, allow_nan=False) for r in table.to_pylist())
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if header:
            writer.writerow(cols)
        writer.writerows([[_cell(r[c], exact=True) for c in cols] for r in table.to_pylist()])
        return buf.getvalue().rstrip("\n")
    from scaling.spec.schema import AXIS_COLUMNS

    exact = [c in AXIS_COLUMNS for c in cols]  # a configuration's value, copied, must name it
    cells = []
    for start in range(0, table.num_rows, CHUNK_ROWS):
        if check is not None:
            check()
        cells += [[_cell(v, x and not (isinstance(v, float) and v.is_integer())) for v, x in zip(r.values(), exact)]
                  for r in table.slice(start, CHUNK_ROWS).to_pylist()]
    if check is not None:
        check()
    numeric = [pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
               for f in table.schema]
    n = table.num_rows
    return "\n".join(textout.table(
        cols, cells, numeric=numeric, cols=width, footer=f"({n} row{'s' if n != 1 else ''})",
        cut_note=f"(a cell ending in {textout.ELLIPSIS} is cut to fit; --format csv prints every cell whole)"))


EXPORT_FORMATS = (".parquet", ".csv")


def export_paths(out: str, curves: str | None) -> tuple[str, str | None]:
    """(trials file, curves file or None) of ``scaling export``: ``curves`` is the curves file
    the user names, ``""`` for the default ``<OUT stem>.curves.<ext>`` beside ``out``, or None."""
    import os

    ext = os.path.splitext(out)[1].lower()
    if ext not in EXPORT_FORMATS:
        raise UserError(f"scaling export writes .parquet or .csv, got {out!r}; "
                        "name the file e.g. trials.parquet or trials.csv")
    if curves == "":
        curves = out[:len(out) - len(ext)] + ".curves" + ext
    if curves is not None:
        if os.path.splitext(curves)[1].lower() not in EXPORT_FORMATS:
            raise UserError(f"--curves writes .parquet or .csv, got {curves!r}")
        if os.path.abspath(curves) == os.path.abspath(out):
            raise UserError(f"--curves {curves!r} is the trials file; name another file")
    for path in (out, curves):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and not os.path.isdir(folder):
            raise UserError(f"cannot write {path!r}: folder {folder!r} does not exist")
    return out, curves


def export_tables(root, out: str, curves: str | None = None, sweep: str | None = None) -> dict:
    """Write the kept run of every trial of the store at ``root`` (the rows of the ``trials``
    view, every column) to ``out`` (.parquet or .csv) and, with ``curves`` (see
    :func:`export_paths`), the curve rows of those runs to a second file. Each file appears
    whole or not at all (:func:`write_atomic`). Returns ``{path: rows}``."""
    out, curves = export_paths(out, curves)
    where, params = ("WHERE sweep = $1", [sweep]) if sweep else ("", None)
    with open_store(root) as view:
        trials = view.sql(f"SELECT * FROM trials {where} ORDER BY sweep, trial_id", params)
        if sweep and trials.num_rows == 0:
            names = view.sql("SELECT DISTINCT sweep FROM trials ORDER BY sweep").column("sweep").to_pylist()
            raise UserError(f"no sweep {sweep!r} in {root}; it has: {', '.join(map(str, names)) or 'no trials'}")
        rows = {out: trials.num_rows}
        write_atomic(trials, out)
        if curves is not None:
            table = view.sql(f"SELECT * FROM curves {where} ORDER BY sweep, trial_id, step", params)
            write_atomic(table, curves)
            rows[curves] = table.num_rows
    return rows


def write_atomic(table: pa.Table, path: str) -> None:
    """Write ``table`` to ``path`` (.parquet, or .csv with every float in its shortest exact
    form): to a temporary name in the same folder, then renamed, so a reader never sees a
    half-written file and a failure leaves none."""
    import os
    import tempfile

    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)  # a file as open() would make it, not mkstemp's 0600
    try:
        if path.lower().endswith(".csv"):
            pcsv.write_csv(table, tmp)  # Arrow writes floats in their shortest round-trip form
        else:
            pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
