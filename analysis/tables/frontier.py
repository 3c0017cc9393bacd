r"""The tuning frontier: at each point, the best configuration's mean over seeds.

Hestness et al. (2017) tune hyperparameters at every training-set size and fit
the learning curve to the best results. Here a *point* is one value of the
point columns (e.g. ``n_train``, or ``(N, D)`` for a joint fit); a *cell* is
one configuration of the remaining axes at that point. The frontier value is

.. math:: y^*(x) = \bar y_{\mathrm{test}}\big(x,\ \hat c(x)\big),\qquad
          \hat c(x) = \mathrm{arg\,best}_{c\ \mathrm{eligible}}\ \bar y_{\mathrm{sel}}(x, c)

with means over seeds. Choosing and measuring on the same numbers reports the
luckiest cell's luck as performance (the winner's curse; Cawley & Talbot
2010, "On over-fitting in model selection"), so the winner is chosen on the
validation metric when the table has one and measured on test. Without one,
seeds are split in halves: :math:`\hat c_A` chosen on half A is measured on
half B and vice versa, and the two values are averaged (cross-fitting). With
fewer than 4 seeds neither is possible and the output says the value is
optimistic.

A cell with any diverged or failed trial is not eligible and is listed.
Bootstrap replicates draw one multiset of seeds for every cell and point
(:mod:`analysis.tables.cells`) and choose the winners again, so intervals carry the
variance of the selection. Intervals of a fit to the frontier are the estimate
:math:`\pm\, t_{S-1}` times the bootstrap sd, not rescaled by
:math:`\sqrt{S/(S-1)}`: choosing again adds the variance that a bootstrap of
means lacks. Measured on :mod:`analysis.testing.simulate` (learning_curve.yaml design,
10 seeds, noisy preset) the raw bootstrap sd of the exponent is 0.040 against a
sampling sd of 0.041, and the rescaled one would be 5 % too wide.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

import analysis.tables.cells as cl


@dataclass(frozen=True, kw_only=True)
class Frontier:
    """Best-configuration points of a sweep, ready for a fit."""

    point_cols: tuple[str, ...]
    """Columns that define a point, e.g. ``("n_train",)``."""
    points: np.ndarray
    """Point coordinates, shape ``(P, len(point_cols))``."""
    y: np.ndarray
    """Reported metric of the winning configuration at each point."""
    n_seeds: np.ndarray
    """Seeds with a value in the winning cell at each point."""
    chosen: tuple[dict, ...]
    """Winning configuration (values of ``over``) at each point, chosen on all seeds."""
    over: tuple[str, ...]
    """Axes optimised over; empty for a fixed configuration."""
    n_cells: np.ndarray
    """Configurations at each point."""
    n_eligible: np.ndarray
    """Configurations at each point with no diverged or failed trial."""
    selection: str
    """How winners were chosen, in words."""
    resampling: cl.Resampling | None
    """Small-cluster correction for intervals from ``replicates``."""
    replicates: np.ndarray | None
    """Clustered seed-bootstrap replicates of ``y`` (winners chosen again), shape ``(R, P)``;
    None with a single seed."""
    flagged: tuple[dict, ...] = ()
    """Cells left out of selection: ``{"point", "config", "reason"}``."""
    dropped: tuple[dict, ...] = ()
    """Points without any eligible cell: ``{"point", "reason"}``."""


def frontier(fr: dict, rows: np.ndarray, point_cols, y: np.ndarray, *, outcome: np.ndarray,
             maximize: bool, n_boot: int, rng: np.random.Generator,
             sel: np.ndarray | None = None, sel_name: str = "") -> Frontier:
    """Frontier over ``rows`` (every trial of one group, usable or not) of metric ``y``.

    Parameters
    ----------
    fr : dict of ndarray
        Trials frame (:func:`analysis.tables.columns`).
    rows : ndarray of int
        Trials of the group, infeasible ones included (they disqualify their cell).
    point_cols : sequence of str
        Numeric columns that define a point.
    y : ndarray
        Reported metric for every row of ``fr``.
    outcome : ndarray of str
        ``ok``, ``diverged``, ``failed``, ``nonfinite`` ... per row.
    maximize : bool
        Whether larger is better.
    n_boot : int
        Clustered bootstrap replicates (none with a single seed).
    rng : numpy.random.Generator
    sel, sel_name : optional
        Selection metric per row and its name; ``sel=None`` (with the reason in
        ``sel_name``) to cross-fit over seeds instead.
    """
    point_cols = tuple(point_cols)
    over = tuple(cl.varying(fr, rows, exclude=point_cols + ("seed",)))
    cm = cl.cell_matrix(fr, rows, point_cols + over, y, sel, outcome)
    d = len(point_cols)
    pkeys = sorted({k[:d] for k in cm.keys}, key=lambda k: tuple(
        (v is None, v if v is not None else 0) for v in k))
    pindex = {k: i for i, k in enumerate(pkeys)}
    by_point = [[] for _ in pkeys]
    for c, key in enumerate(cm.keys):
        by_point[pindex[key[:d]]].append(c)
    S = cm.seeds.size
    method = "validation" if sel is not None else ("cross-fit" if S >= 4 else "same seeds")
    flagged = tuple({"point": _named(point_cols, cm.keys[c][:d]),
                     "config": _named(over, cm.keys[c][d:]), "reason": cm.reasons[c]}
                    for c in range(len(cm.keys)) if not cm.eligible[c])
    keep = [p for p, cs in enumerate(by_point) if any(cm.eligible[c] for c in cs)]
    dropped = tuple({"point": _named(point_cols, pkeys[p]),
                     "reason": "every configuration has a trial that is not ok (diverged, "
                               "failed, batch > n_train)"}
                    for p in range(len(pkeys)) if p not in keep)
    index = cl.padded([np.array([c for c in by_point[p] if cm.eligible[c]]) for p in keep])
    ones = np.ones((1, S))
    value = _values(cm, index, ones, method, maximize)[0]
    win = _winners(cm, index, ones, maximize, use_sel=method == "validation")[0]
    reps, res = None, None
    if S >= 2 and n_boot > 0 and keep:
        strata = cl.halves(S) if method == "cross-fit" else None
        reps = _values(cm, index, cl.seed_counts(S, n_boot, rng, strata), method, maximize)
        res = cl.resampling(S, method, rescale=False)
    why = sel_name or "no validation metric"
    name = {"validation": f"chosen on {sel_name}, measured on test",
            "cross-fit": f"cross-fit over seeds ({why}): chosen on one half of the seeds, "
                         "measured on the other, averaged",
            "same seeds": f"chosen and measured on the same seeds ({why}; cross-fitting needs "
                          "4 or more seeds): optimistic"}[method]
    return Frontier(point_cols=point_cols,
                    points=np.array([[float(v) for v in pkeys[p]] for p in keep], float
                                    ).reshape(-1, d),
                    y=value, n_seeds=np.array([int(np.isfinite(cm.y[c]).sum()) for c in win], int),
                    chosen=tuple(_named(over, cm.keys[c][d:]) for c in win), over=over,
                    n_cells=np.array([len(by_point[p]) for p in keep], int),
                    n_eligible=np.array([int(cm.eligible[by_point[p]].sum()) for p in keep], int),
                    selection=name, resampling=res, replicates=reps, flagged=flagged,
                    dropped=dropped)


def _winners(cm, index, weights, maximize, use_sel=True) -> np.ndarray:
    """Winning cell per (replicate, point) under seed ``weights``."""
    scores = cl.gather(cl.weighted_means(cm.sel if use_sel else cm.y, weights), index)
    k = cl.best_index(scores, maximize)
    return np.take_along_axis(np.broadcast_to(index, scores.shape), np.maximum(k, 0)[..., None],
                              -1)[..., 0]


def _values(cm, index, weights, method, maximize) -> np.ndarray:
    """Frontier values ``(R, P)`` for seed ``weights`` ``(R, S)``."""
    if method != "cross-fit":
        win = _winners(cm, index, weights, maximize, use_sel=method == "validation")
        means = cl.weighted_means(cm.y, weights)
        return np.take_along_axis(means, win, 1)
    half = cl.halves(cm.seeds.size)
    out = 0.0
    for a in (0, 1):
        wa, wb = weights * (half == a), weights * (half != a)
        win = _winners(cm, index, wa, maximize, use_sel=False)
        out = out + 0.5 * np.take_along_axis(cl.weighted_means(cm.y, wb), win, 1)
    return out


def _named(cols, values) -> dict:
    return {c: _plain(v) for c, v in zip(cols, values)}


def _plain(v):
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def positive_points(front: Frontier, fr: dict, rows: np.ndarray, metric: str,
                    limit: int = 5) -> tuple[Frontier, str]:
    """``(frontier, warning)`` without the points whose value is <= 0, for a log-scale fit.

    A zero error on a small test set is a result, so the winner is still chosen with it
    (dropping the row first would hand the point to a worse configuration, or bias a mean over
    seeds upwards); only a point whose winning value is <= 0 cannot enter the log residuals.
    It moves to ``dropped``, and the warning (``""`` when nothing is dropped) counts the points
    and names them with their rows (trial ids, or row numbers counted from 1) and values.
    """
    from analysis import tables

    bad = ~(front.y > 0)
    if not bad.any():
        return front, ""
    keep = ~bad
    named, dropped = [], []
    for i in np.flatnonzero(bad):
        point = dict(zip(front.point_cols, front.points[i]))
        cfg = front.chosen[i]
        match = np.ones(len(rows), bool)
        for col, v in {**point, **cfg}.items():
            vals = fr[col][rows]
            match &= np.array([str(a) == str(v) for a in vals]) if vals.dtype == object \
                else np.isclose(vals, float(v), rtol=1e-12, atol=0.0)
        ids = rows[match]
        tid = fr.get("trial_id")
        which = (", ".join(f"trial {tid[j]}" for j in ids[:3]) if tid is not None
                 and tid.dtype == object else "row" + ("s " if ids.size > 1 else " ")
                 + ", ".join(str(j + 1) for j in ids[:3])) + (", ..." if ids.size > 3 else "")
        where = tables.label(list(point) + list(cfg), list(point.values()) + list(cfg.values()))
        value = tables.label_value(float(front.y[i]))
        if len(named) < limit:
            named.append(f"{where} ({which}; {metric}={value})")
        dropped.append({"point": {k: float(v) for k, v in point.items()}, "config": dict(cfg),
                        "reason": f"its best configuration has {metric} = {value} (<= 0), which "
                                  "a log-scale fit cannot take"})
    more = f" and {bad.sum() - limit} more" if bad.sum() > limit else ""
    warn = (f"dropped {int(bad.sum())} of {bad.size} point(s) where {metric} <= 0, which a "
            f"log-scale fit cannot take: {'; '.join(named)}{more}")
    reps = None if front.replicates is None else front.replicates[:, keep]
    return dataclasses.replace(
        front, points=front.points[keep], y=front.y[keep], n_seeds=front.n_seeds[keep],
        chosen=tuple(c for c, k in zip(front.chosen, keep) if k), n_cells=front.n_cells[keep],
        n_eligible=front.n_eligible[keep], replicates=reps,
        dropped=front.dropped + tuple(dropped)), warn
