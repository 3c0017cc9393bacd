"""Training curves of chosen configurations: a metric against examples seen, from a store's
``curves`` table (drawn by :func:`analysis.report.figures.training`).

Two selections make lines: the frontier's winner at each ``x`` of a learning curve (the
configuration chosen at each training-set size, :func:`winners`) and a group the user names
(``scaling report --curves``: ``COL=VALUE`` pairs, as ``--where`` takes them, or an SQL
expression, as ``--filter`` does; :func:`group`). Trials and curve rows are joined on
``run_id`` (a curve belongs to one run of its trial). One line per configuration: the mean
over its seeds at each eval point, with the seeds' range shaded, coloured by the axis that
varies between the lines. Nothing here fits anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from analysis import tables
from analysis.errors import AnalysisError
from analysis.tables.sqlfilter import filter_rows

_SQL = re.compile(r"[<>!'\"()]|\b(and|or|not|in|like|ilike|between|is|null)\b", re.I)
"""What makes a ``--curves`` text SQL rather than ``COL=VALUE`` pairs."""


@dataclass(frozen=True, kw_only=True)
class Line:
    """One configuration's curve: the mean over its seeds at each eval point."""

    label: str
    """The configuration in words, e.g. ``n_train=600: batch_size=16, lr=0.1``."""
    value: object
    """Its value of the colouring axis."""
    x: np.ndarray
    """Examples seen at each eval point (> 0)."""
    y: np.ndarray
    """Mean of the metric over the seeds that have the point."""
    low: np.ndarray
    """Smallest seed's value there."""
    high: np.ndarray
    """Largest seed's value there."""
    n_seeds: int
    outcomes: dict
    """This configuration's trials by status."""


@dataclass(frozen=True, kw_only=True)
class TrainingCurves:
    """The lines of one figure."""

    title: str
    metric: str
    axis: str
    """Column the colours follow."""
    lines: tuple[Line, ...]
    notes: tuple[str, ...] = ()


def winners(trials: pa.Table, curves: pa.Table, curve, metric: str) -> TrainingCurves:
    """The training curves of the frontier's winner at each ``x`` of ``curve``
    (a :class:`analysis.fit.curves.CurveFit`), coloured by ``x``."""
    fr = tables.frame(trials)
    keys = []
    for x, chosen in zip(curve.x, curve.chosen):
        keys.append({**curve.group, curve.x_name: x, **chosen})
    if not keys:
        raise AnalysisError(f"the learning curve {curve.label!r} has no winners to draw")
    rows = [_match(fr, k) for k in keys]
    labels = [f"{curve.x_name}={tables.label_value(x)}: "
              + (", ".join(f"{k}={tables.label_value(v)}" for k, v in c.items()) or "fixed")
              for x, c in zip(curve.x, curve.chosen)]
    where = "" if curve.label == "all" else f" ({curve.label})"
    title = f"{metric} while training: the winner at each {curve.x_name}{where}"
    return _build(fr, rows, labels, list(curve.x), curves, metric, curve.x_name, title)


def group(trials: pa.Table, curves: pa.Table, text: str, metric: str) -> TrainingCurves:
    """The training curves of the configurations ``text`` selects (``COL=VALUE`` pairs or an
    SQL expression over the trials' columns), coloured by the axis that varies among them."""
    fr = tables.frame(trials)
    mask = select(trials, text)
    varying = tables.varying(fr, np.flatnonzero(mask), exclude=(fr.replicate or "seed",))
    if not varying:
        keys = [()]
        members = [np.flatnonzero(mask)]
    else:
        found = tables.groups(fr, mask, tuple(varying))
        keys, members = [k for k, _ in found], [idx for _, idx in found]
    axis = _colour_axis(fr, varying, keys)
    pos = varying.index(axis) if axis in varying else None
    labels = [tables.label(varying, k) if varying else "selected trials" for k in keys]
    values = [k[pos] if pos is not None else i for i, k in enumerate(keys)]
    order = sorted(range(len(values)), key=lambda i: _sortable(values[i]))
    pick = lambda seq: [seq[i] for i in order]  # noqa: E731
    title = f"{metric} while training: {text.strip()}"
    return _build(fr, pick(members), pick(labels), pick(values), curves, metric,
                  axis or "configuration", title)


def select(trials: pa.Table, text: str) -> np.ndarray:
    """Boolean mask of the trials ``--curves TEXT`` selects (:class:`AnalysisError` for none)."""
    text = (text or "").strip()
    if not text:
        raise AnalysisError('--curves wants COL=VALUE pairs or an SQL expression, e.g. '
                            '--curves "n_train=600,momentum=0.9"')
    if "=" in text and not _SQL.search(text) and not re.search(r"[<>!]=|==", text):
        where = tables.parse_where(text, trials.column_names)
        return tables.where_mask(tables.frame(trials), where)
    mask = np.zeros(trials.num_rows, bool)
    mask[filter_rows(trials, text)] = True
    return mask


def _sortable(v):
    return (0, float(v), "") if isinstance(v, (int, float, np.number)) else (1, 0.0, str(v))


def _colour_axis(fr, varying, keys) -> str:
    """The varying axis the colours follow: the numeric one with most values, else the first."""
    if not varying:
        return ""
    counts = [(len({k[i] for k in keys}), fr[a].dtype != object, -i) for i, a in enumerate(varying)]
    best = max(range(len(varying)), key=lambda i: (counts[i][1], counts[i][0], counts[i][2]))
    return varying[best]


def _match(fr, key: dict) -> np.ndarray:
    """Row indices whose columns equal ``key`` (numbers to a relative 1e-9)."""
    mask = np.ones(tables.n_rows(fr), bool)
    for col, value in key.items():
        if col not in fr:
            continue
        c = fr[col]
        if value is None or (isinstance(value, float) and np.isnan(value)):
            mask &= np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in c])
        elif c.dtype == object or isinstance(value, str):
            mask &= np.array([str(v) == str(value) for v in c])
        else:
            mask &= np.isclose(c, float(value), rtol=1e-9, atol=0.0)
    return np.flatnonzero(mask)


def _build(fr, members, labels, values, curves, metric, axis, title) -> TrainingCurves:
    if curves is None or curves.num_rows == 0:
        raise AnalysisError("no training curves: the input has no curves table (a trials "
                            "CSV/Parquet file, or a store written without curves)")
    cf = tables.frame(curves)
    try:
        y_all = tables.metric(cf, metric)
    except AnalysisError as e:
        raise AnalysisError(f"the curves table has no {metric!r} ({e})") from None
    x_all = tables.numeric(cf, "examples_seen", "curves column")
    link = "run_id" if "run_id" in cf and "run_id" in fr else "trial_id"
    by_run: dict = {}
    for i, r in enumerate(cf[link]):
        by_run.setdefault(r, []).append(i)
    lines, notes, missing = [], [], 0
    status = tables.status(fr)
    for idx, label, value in zip(members, labels, values):
        runs = [by_run.get(fr[link][i], []) for i in idx]
        missing += sum(1 for r in runs if not r)
        runs = [np.array(r, int) for r in runs if r]
        if not runs:
            continue
        x, y, lo, hi = _mean_curve([(x_all[r], y_all[r]) for r in runs])
        if x.size == 0:
            continue
        lines.append(Line(label=label, value=value, x=x, y=y, low=lo, high=hi,
                          n_seeds=len(runs), outcomes=tables.count_by(status[idx])))
    if missing:
        notes.append(f"{missing} selected trials have no rows in the curves table")
    if not lines:
        raise AnalysisError(f"none of the selected trials has a stored {metric} curve")
    return TrainingCurves(title=title, metric=metric, axis=axis, lines=tuple(lines),
                          notes=tuple(notes))


def _mean_curve(runs):
    """(x, mean, min, max) over the runs at each examples_seen > 0 with a finite value."""
    xs = np.unique(np.concatenate([x for x, _ in runs]))
    xs = xs[np.isfinite(xs) & (xs > 0)]
    table = np.full((len(runs), xs.size), np.nan)
    for k, (x, y) in enumerate(runs):
        ok = np.isfinite(x) & (x > 0) & np.isfinite(y)
        table[k, np.searchsorted(xs, x[ok])] = y[ok]
    seen = np.isfinite(table).any(0)
    table = table[:, seen]
    with np.errstate(all="ignore"):
        return (xs[seen], np.nanmean(table, 0), np.nanmin(table, 0), np.nanmax(table, 0))
