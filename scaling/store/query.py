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
              timeout_s: float | None = QUERY_TIMEOUT_S, memory_limit: str | None = None) -> pa.Table:
    """Run ``sql`` over the store at ``root`` (a path, URI or an open :class:`StoreView`) and return
    the result as an Arrow table. ``tables`` (trials, curves) in memory are queried instead when given."""
    if tables is not None:
        return _query_tables(tables, sql, timeout_s, memory_limit or default_memory_limit())
    if isinstance(root, StoreView):
        return root.query(sql, timeout_s=timeout_s)
    with open_store(root, memory_limit=memory_limit or default_memory_limit()) as view:
        return view.query(sql, timeout_s=timeout_s)


def _query_tables(tables, sql: str, timeout_s, memory_limit) -> pa.Table:
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
        return _with_timeout(con, rel, timeout_s, memory_limit)
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


def parse_memory(text: str) -> str:
    """A memory size as DuckDB takes it ('4GB', '512MB'; a bare number is GB)."""
    m = _SIZE.fullmatch(str(text))
    if not m or float(m.group(1)) <= 0:
        raise UserError(f"--memory {text!r} is not a size; write it like 4GB or 512MB")
    return f"{m.group(1)}{(m.group(2) or 'GB').upper()}"


def _first_line(e: Exception) -> str:
    return " ".join(str(e).split("\n")[0].split())


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    if isinstance(v, datetime):
        return v.isoformat(timespec="seconds")
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


def format_table(table: pa.Table, fmt: str = "table", width: int | None = None) -> str:
    """Render a result as a text table that fits ``width`` columns (default: the terminal's, or
    ``$COLUMNS``; :func:`scaling.textout.table`), CSV or JSON lines (NaN as null)."""
    cols = table.column_names
    if fmt == "json":
        return "\n".join(json.dumps(_json_value(r), default=str, allow_nan=False) for r in table.to_pylist())
    rows = table.to_pylist()
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(cols)
        writer.writerows([[_cell(r[c]) for c in cols] for r in rows])
        return buf.getvalue().rstrip("\n")
    cells = [[_cell(v) for v in r.values()] for r in rows]
    numeric = [pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
               for f in table.schema]
    return "\n".join(textout.table(
        cols, cells, numeric=numeric, cols=width, footer=f"({len(rows)} row{'s' if len(rows) != 1 else ''})",
        cut_note=f"(a cell ending in {textout.ELLIPSIS} is cut to fit; --format csv prints every cell whole)"))
