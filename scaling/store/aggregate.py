"""Aggregates computed by DuckDB over a store's views, for analyses that need only summaries.

Each function takes a :class:`scaling.store.views.StoreView` (or a results root) and returns a small
Arrow table: only aggregated rows leave DuckDB. Column names are checked against the view
(never pasted into SQL unchecked) and filters are ``{column: value}`` passed as parameters.
A metric is a numeric column or one of :data:`DERIVED`.

- :func:`group_stats`: count, mean, standard deviation, min and max of metrics per group,
  and optionally the values themselves (for a bootstrap over seeds);
- :func:`frontier_points`: at each x, the configuration with the best mean over seeds
  (Hestness et al. 2017 tune at every data size), with that cell's values;
- :func:`curve_summary`: a curve metric per group and step, curves joined with their trials.

Only trials with status ``ok`` and a finite metric are aggregated; :func:`group_stats` also
counts every status, so nothing is dropped unseen.
"""

from __future__ import annotations

import pyarrow as pa

from scaling.errors import UserError
from scaling.spec.schema import AXIS_COLUMNS, REPLICATE

DERIVED = {"error": "1 - {t}test_acc", "gap": "{t}test_loss - {t}train_loss"}
"""Metrics computed from stored columns (as in analysis.tables)."""


def _view(root_or_view):
    from scaling.store.views import StoreView, open_store

    return (root_or_view, False) if isinstance(root_or_view, StoreView) else (open_store(root_or_view), True)


def _columns(view, table: str) -> list[str]:
    return view.sql(f"SELECT * FROM {table} LIMIT 0").column_names


def _col(name: str, known: list[str], what: str, prefix: str = "") -> str:
    if name not in known:
        raise UserError(f"no {what} {name!r}; the table has: {', '.join(sorted(known))}")
    return f'{prefix}"{name}"'


def _metric(name: str, known: list[str], prefix: str = "") -> str:
    if name in DERIVED:
        return "(" + DERIVED[name].format(t=prefix) + ")"
    return _col(name, known, "metric", prefix)


def _where(where: dict | None, known: list[str], prefix: str = "") -> tuple[str, list]:
    clauses, params = [], []
    for key, value in (where or {}).items():
        params.append(value)
        clauses.append(f"{_col(key, known, 'column', prefix)} = ${len(params)}")
    return (" AND " + " AND ".join(clauses) if clauses else ""), params


def group_stats(root_or_view, by, metrics, *, where: dict | None = None, values: bool = False) -> pa.Table:
    """One row per group of ``by`` (trials): ``trials`` (all statuses), ``ok``, ``diverged``,
    ``failed``, and per metric ``<m>_n``, ``<m>_mean``, ``<m>_std``, ``<m>_min``, ``<m>_max`` over the
    ok trials with a finite value (``<m>_values``, ordered by seed, with ``values``)."""
    view, close = _view(root_or_view)
    try:
        known = _columns(view, "trials")
        keys = [_col(c, known, "column") for c in by]
        cond, params = _where(where, known)
        parts = ["count(*) AS trials"] + [f"count(*) FILTER (WHERE status = '{s}') AS {s}"
                                          for s in ("ok", "diverged", "failed")]
        for m in metrics:
            expr = _metric(m, known)
            ok = f"FILTER (WHERE status = 'ok' AND isfinite({expr}))"
            parts += [f"count({expr}) {ok} AS \"{m}_n\"", f"avg({expr}) {ok} AS \"{m}_mean\"",
                      f"stddev_samp({expr}) {ok} AS \"{m}_std\"", f"min({expr}) {ok} AS \"{m}_min\"",
                      f"max({expr}) {ok} AS \"{m}_max\""]
            if values:
                parts.append(f"list({expr} ORDER BY {REPLICATE}) {ok} AS \"{m}_values\"")
        group = f" GROUP BY {', '.join(keys)} ORDER BY {', '.join(keys)}" if keys else ""
        select = ", ".join(keys + parts)
        return view.sql(f"SELECT {select} FROM trials WHERE true{cond}{group}", params or None)
    finally:
        if close:
            view.close()


def frontier_points(root_or_view, x: str, metric: str, *, maximize: bool = False, over=None,
                    where: dict | None = None) -> pa.Table:
    """At each value of ``x``: the cell (values of ``over``, default every axis that varies but x and
    the seed) with the best mean ``metric`` over seeds, its mean, number of seeds, its values (by
    seed) and how many cells were compared."""
    view, close = _view(root_or_view)
    try:
        known = _columns(view, "trials")
        xcol, expr = _col(x, known, "x column"), _metric(metric, known)
        cond, params = _where(where, known)
        if over is None:
            candidates = [a for a in AXIS_COLUMNS if a in known and a not in (x, REPLICATE)]
            distinct = ", ".join(f'count(DISTINCT "{a}") AS "{a}"' for a in candidates)
            counts = view.sql(f"SELECT {distinct} FROM trials WHERE status = 'ok'{cond}",
                              params or None).to_pylist()[0] if candidates else {}
            over = [a for a in candidates if (counts.get(a) or 0) > 1]
        cells = [_col(c, known, "axis") for c in over]
        keys = ", ".join([xcol] + cells)
        order = "DESC" if maximize else "ASC"
        sql = (f"WITH cells AS (SELECT {keys}, avg({expr}) AS mean, count(*) AS n, list({expr} ORDER BY "
               f"{REPLICATE}) AS \"values\" FROM trials WHERE status = 'ok' AND isfinite({expr}){cond} "
               f"GROUP BY {keys}) SELECT *, count(*) OVER (PARTITION BY {xcol}) AS cells FROM cells "
               f"QUALIFY row_number() OVER (PARTITION BY {xcol} ORDER BY mean {order}"
               f"{''.join(', ' + c for c in cells)}) = 1 ORDER BY {xcol}")
        return view.sql(sql, params or None)
    finally:
        if close:
            view.close()


def curve_summary(root_or_view, by, metric: str, *, where: dict | None = None) -> pa.Table:
    """Mean, min, max and count of a curve ``metric`` per group of ``by`` (trial columns) and step,
    over the curves of ok trials."""
    view, close = _view(root_or_view)
    try:
        tknown, cknown = _columns(view, "trials"), _columns(view, "curves")
        keys = [_col(c, tknown, "column", "t.") for c in by]
        expr = _metric(metric, cknown, "c.")
        cond, params = _where(where, tknown, "t.")
        group = ", ".join(keys + ["c.step"])
        sql = (f"SELECT {group}, avg({expr}) AS mean, min({expr}) AS min, max({expr}) AS max, "
               f"count({expr}) AS n FROM curves c JOIN trials t USING (sweep, trial_id, run_id) "
               f"WHERE t.status = 'ok' AND isfinite({expr}){cond} GROUP BY {group} ORDER BY {group}")
        return view.sql(sql, params or None)
    finally:
        if close:
            view.close()
