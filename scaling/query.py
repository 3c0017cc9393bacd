"""SQL over a results store with DuckDB, read-only.

The tables ``trials`` and ``curves`` (de-duplicated, see scaling.store) are
loaded into an in-memory database, then file access, extension loading and
configuration changes are switched off before the user's SQL runs, so a query
cannot write, attach, copy out or load anything.
"""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import datetime

import duckdb
import pyarrow as pa

from scaling.errors import UserError
from scaling.store import load_tables


def run_query(root: str, sql: str, tables: tuple[pa.Table, pa.Table] | None = None) -> pa.Table:
    """Run ``sql`` over the store at ``root`` and return the result as an Arrow table.

    ``tables`` is ``load_tables(root)`` when the caller already has it (several queries, one read)."""
    trials, curves = tables if tables is not None else load_tables(root)
    con = duckdb.connect(":memory:")
    try:
        con.register("trials", trials)
        con.register("curves", curves)
        con.execute("SET enable_external_access = false")
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute("SET lock_configuration = true")
        try:
            rel = con.sql(sql)
        except duckdb.Error as e:
            raise UserError(f"SQL: {_first_line(e)}") from None
        if rel is None:
            raise UserError("SQL: the statement returned no rows; only queries (SELECT ...) print results")
        try:
            return rel.to_arrow_table()
        except duckdb.Error as e:
            raise UserError(f"SQL: {_first_line(e)}") from None
    finally:
        con.close()


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


def format_table(table: pa.Table, fmt: str = "table") -> str:
    """Render a result as an aligned text table, CSV or JSON lines."""
    rows = table.to_pylist()
    cols = table.column_names
    if fmt == "json":
        return "\n".join(json.dumps(r, default=str, allow_nan=True) for r in rows)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(cols)
        writer.writerows([[_cell(r[c]) for c in cols] for r in rows])
        return buf.getvalue().rstrip("\n")
    cells = [[_cell(r[c]) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    numeric = [pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
               for f in table.schema]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(cols), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)
