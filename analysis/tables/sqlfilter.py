"""``--filter "SQL expression"``: keep the rows of an Arrow table where a DuckDB expression holds.

The expression is a WHERE clause over the table's columns (``"lr <= 0.1 AND
Model LIKE '%Dec%'"``, ``"bs IN (48, 96)"``, ``"\\"train loss\\" < 3"``). It runs
in an in-memory DuckDB connection that is locked down before it sees the
expression: no file or network access, no extension loading or installing,
configuration locked, one thread. Only a single expression is accepted: no
statements, no second clause, no alias, no subquery.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from analysis.errors import AnalysisError

ROW = "__scaling_row__"
"""Row-number column added for the query (and never returned)."""
LOCKED = {"enable_external_access": False, "autoload_known_extensions": False,
          "autoinstall_known_extensions": False, "allow_community_extensions": False,
          "allow_unsigned_extensions": False, "threads": 1, "lock_configuration": True}
"""DuckDB settings of the connection; ``lock_configuration`` comes last: nothing can undo them."""
_SUBQUERY = re.compile(r"\bselect\b|(?<!\bdistinct )\bfrom\b|\bvalues\b|\btable\b", re.I)


def _strip_strings(expr: str) -> str:
    """``expr`` without its string literals and quoted identifiers (for the keyword check)."""
    return " ".join(re.sub(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"", "''", expr).split())


def filter_rows(table: pa.Table, expr: str) -> np.ndarray:
    """Indices of the rows of ``table`` where ``expr`` is true (NULL counts as false).

    Raises
    ------
    AnalysisError
        When ``expr`` is not a single expression, names an unknown column, fails
        to evaluate, or matches no row.
    """
    import duckdb

    text = (expr or "").strip()
    if not text:
        raise AnalysisError("--filter wants an SQL expression, e.g. --filter \"lr <= 0.1\"")
    if ";" in _strip_strings(text) or _SUBQUERY.search(_strip_strings(text)):
        raise AnalysisError(f"--filter takes one SQL expression over the table's columns (no "
                            f"statements, no subqueries), got {text!r}")
    try:
        duckdb.SQLExpression(text)
    except Exception as e:  # duckdb's parser errors have no common importable base here
        raise AnalysisError(f"--filter {text!r} is not a single SQL expression: "
                            f"{_first_line(e)}") from None
    con = duckdb.connect(":memory:", config=dict(LOCKED))
    try:
        con.register("t", table.append_column(ROW, pa.array(np.arange(table.num_rows))))
        try:
            got = con.execute(f"SELECT {ROW} FROM t WHERE ({text})").fetchnumpy()[ROW]
        except Exception as e:
            raise AnalysisError(f"--filter {text!r} failed: {_first_line(e)}; the table has: "
                                f"{', '.join(table.column_names)}") from None
    finally:
        con.close()
    rows = np.sort(np.asarray(got, np.int64))
    if rows.size == 0:
        raise AnalysisError(f"no row matches --filter {text!r}")
    return rows


def apply_filter(table: pa.Table, expr: str | None) -> pa.Table:
    """``table`` restricted to the rows where ``expr`` holds (unchanged for no expression),
    keeping its schema metadata (declared axes)."""
    if expr is None or not str(expr).strip():
        return table
    out = table.take(pa.array(filter_rows(table, expr)))
    return out.replace_schema_metadata(table.schema.metadata)


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]
