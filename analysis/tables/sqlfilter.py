"""``--filter "SQL expression"``: keep the rows of an Arrow table where a DuckDB expression holds.

The expression is a WHERE clause over the table's columns (``"lr <= 0.1 AND
Model LIKE '%Dec%'"``, ``"bs IN (48, 96)"``, ``"\\"train loss\\" < 3"``). It runs
in an in-memory DuckDB connection that is locked down before it sees the
expression: no file or network access, no extension loading or installing,
configuration locked, one thread. Only a single expression is accepted: no
statements, no second clause, no alias, no subquery.

A column name that is not a plain identifier (``config.lr``, ``train loss``) may be written
bare: where it matches a column of the table it is double-quoted for DuckDB before the
expression runs, and a column renamed to its role (:mod:`analysis.tables.roles`) may go by
its original name.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from analysis.errors import AnalysisError
from analysis.tables.roles import renamed

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
    text = quote_names(text, table.column_names, renamed(table))
    con = duckdb.connect(":memory:", config=dict(LOCKED))
    try:
        con.register("t", table.append_column(ROW, pa.array(np.arange(table.num_rows))))
        try:
            got = con.execute(f"SELECT {ROW} FROM t WHERE ({text})").fetchnumpy()[ROW]
        except Exception as e:
            raise AnalysisError(f"--filter {text!r} failed: {_first_line(e)}{_quote_hint(e)}; "
                                f"the table has: {', '.join(table.column_names)}") from None
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


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUOTED = re.compile(r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")")


def quote_names(expr: str, columns, renames=None) -> str:
    """``expr`` with every bare mention of a column name that is not a plain identifier
    (``config.lr <= 0.1``) double-quoted, and every bare original name of a renamed column
    (``renames``: ``{original: now}``) replaced by its quoted new name. String literals and
    names already quoted are left alone."""
    renames = {k: v for k, v in (renames or {}).items() if k != v}
    targets = {c: c for c in columns if not _PLAIN.fullmatch(c)}
    targets.update({old: new for old, new in renames.items() if old not in columns})
    if not targets:
        return expr
    names = sorted(targets, key=len, reverse=True)
    bare = re.compile(r"(?<![\w.\"])(" + "|".join(re.escape(n) for n in names) + r")(?![\w\"])")

    def quoted(m):
        return '"' + targets[m.group(1)].replace('"', '""') + '"'

    def part(i, p):
        if not i % 2:
            return bare.sub(quoted, p)
        name = p[1:-1].replace('""', '"')
        return quoted(re.match("(.*)", name, re.S)) if p[0] == '"' and name in renames \
            and name not in columns else p

    return "".join(part(i, p) for i, p in enumerate(_QUOTED.split(expr)))


def _quote_hint(e: Exception) -> str:
    text = _first_line(e)
    if "Referenced table" in text or "not found" in text or "Referenced column" in text:
        return ('; a column name with dots, slashes or spaces goes in double quotes, e.g. '
                '--filter \'"config.lr" <= 0.1\'')
    return ""


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]
