r"""The joint (lr, B) optimum of each cell, and power laws of B_opt and lr_opt in scale columns.

Recent hyperparameter laws tune the learning rate and the batch size jointly
at each model size N and data size D and fit power laws to the optima
(DeepSeek-AI 2024, "DeepSeek LLM", §3.1; Li et al. 2025, "Predictable Scale:
Part I", the Step Law): :math:`B_{opt} = k D^b`,
:math:`\eta_{opt} = k N^a D^c`. Here a *cell* is one value of every axis but
the learning rate, the batch size and the seed (e.g. one (N, D)); in each:

1. the **grid optimum** is the (lr, B) with the best selection metric (the
   validation metric when the table has one) among grid points with no
   diverged or failed trial;
2. it is **refined** by a quadratic bowl
   :math:`z = c_0 + c_1 u + c_2 v + c_3 u^2 + c_4 uv + c_5 v^2` in
   :math:`(u, v) = (\log \eta, \log B)`, least squares through the optimum and
   its grid neighbours: its stationary point when the bowl curves the right way,
   clipped to the neighbours' box; otherwise, per axis, the vertex of the
   parabola through the optimum and its two neighbours (as :mod:`analysis.rules.bopt`);
3. an optimum at the edge of the usable grid in an axis is a one-sided bound in
   that axis (beyond halfway to its neighbour).

Rows of one cell that differ in another column, each value with its own (lr, B) grid (a
model size left out of the scale columns), are refused, never merged
(:func:`check_one_model_per_cell`). :math:`\log B_{opt}` and :math:`\log \eta_{opt}` are
then regressed on the log of every scale column that varies (and, with several, on each
alone: Step Law's :math:`B_{opt} = k D^b` beside the law in N and D), by Tobit regression (:mod:`analysis.stats.tobit`;
edge cells enter as censored bounds). Intervals: with seeds, a clustered seed
bootstrap redoes steps 1-3 and the regression in every replicate (t quantile
with S - 1 degrees of freedom on the rescaled sd, :mod:`analysis.tables.cells`); the
regression's own interval (residual scale, cells independent) is computed too,
and the wider one is reported, so lack of fit is never hidden by a narrow seed
interval. Without seeds only the latter exists, and the output says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from scipy import stats

import analysis.tables.cells as cl
from analysis import tables
import analysis.stats.tobit as tobit
from analysis.errors import AnalysisError
from analysis.stats.result import num
from analysis.rules.optima import grid_optima


@dataclass(frozen=True, kw_only=True)
class CellOptimum:
    """One cell's (lr, B) grid, its grid optimum and the refined optimum."""

    key: dict
    """Values of the cell's axes (the scale columns among them)."""
    label: str
    lr_best: float
    """Learning rate of the grid optimum (NaN when the cell has no eligible point)."""
    b_best: float
    """Batch size of the grid optimum."""
    lr_opt: float
    """Refined learning rate (the bound, for an edge in lr)."""
    b_opt: float
    """Refined batch size (the bound, for an edge in B)."""
    lr_side: str
    """``""`` (interior), ``"low"``/``"high"`` (edge: the optimum is below/above ``lr_opt``),
    or ``"none"`` (fewer than 2 learning rates)."""
    b_side: str
    lr_ci: tuple[float, float]
    """Seed-bootstrap interval of the refined lr (NaN without seeds or at an edge)."""
    b_ci: tuple[float, float]
    n_points: int
    """Eligible (lr, B) grid points."""
    n_seeds: int
    flagged: tuple[dict, ...] = ()
    """Grid points left out of selection (a diverged or failed trial), with the reason."""
    outcomes: dict = None

    def to_dict(self) -> dict:
        return {"cell": self.key, "label": self.label, "lr_best": num(self.lr_best),
                "b_best": num(self.b_best), "lr_opt": num(self.lr_opt), "b_opt": num(self.b_opt),
                "lr_side": self.lr_side, "b_side": self.b_side,
                "lr_ci": [num(v) for v in self.lr_ci], "b_ci": [num(v) for v in self.b_ci],
                "n_points": self.n_points, "n_seeds": self.n_seeds,
                "flagged": list(self.flagged), "outcomes": self.outcomes or {}}


@dataclass(frozen=True, kw_only=True)
class ScaleLaw:
    """``target = k * prod(scale_j ^ e_j)``, fitted on the cells' optima."""

    target: str
    """``"B_opt"`` or ``"lr_opt"``."""
    scale: tuple[str, ...]
    """The scale columns it is a power law in: every ``--scale`` column, or one alone (with
    several, each one's law is fitted too: Step Law's ``B_opt = k D^b`` beside the law in N
    and D)."""
    formula: str
    names: tuple[str, ...]
    """``("k", "exponent of N", ...)``."""
    params: tuple[float, ...]
    ci_low: tuple[float, ...]
    ci_high: tuple[float, ...]
    level: float
    interval: str
    """How the intervals were built (module docstring)."""
    n_observed: int
    n_censored: int
    n_excluded: int
    n_boot_failed: int = 0
    not_estimated: dict = None
    """Scale column -> why its exponent was not estimated."""

    def param(self, name: str) -> tuple[float, float, float]:
        i = self.names.index(name)
        return self.params[i], self.ci_low[i], self.ci_high[i]

    def to_dict(self) -> dict:
        params = {n: {"value": num(v), "ci_low": num(lo), "ci_high": num(hi)}
                  for n, v, lo, hi in zip(self.names, self.params, self.ci_low, self.ci_high)}
        return {"target": self.target, "scale": list(self.scale), "formula": self.formula,
                "params": params,
                "level": self.level, "interval": self.interval, "n_observed": self.n_observed,
                "n_censored": self.n_censored, "n_excluded": self.n_excluded,
                "n_boot_failed": self.n_boot_failed, "not_estimated": self.not_estimated or {}}


@dataclass(frozen=True, kw_only=True)
class JointOptimum:
    """Per-cell (lr, B) optima and the scale laws of B_opt and lr_opt."""

    metric: str
    maximize: bool
    batch: str
    lr: str
    scale: tuple[str, ...]
    axes: tuple[str, ...]
    """Axes that define a cell."""
    cells: tuple[CellOptimum, ...]
    laws: tuple[ScaleLaw, ...]
    selection: str
    outcomes: dict
    n_boot: int = 0
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"metric": self.metric, "maximize": self.maximize, "batch": self.batch,
                "lr": self.lr, "scale": list(self.scale), "axes": list(self.axes),
                "selection": self.selection, "outcomes": self.outcomes, "n_boot": self.n_boot,
                "notes": list(self.notes), "laws": [law.to_dict() for law in self.laws],
                "cells": [c.to_dict() for c in self.cells]}


def find_joint_optimum(trials: pa.Table, *, metric: str, batch: str, lr: str, scale,
                       where: dict | None = None, sweep: str | None = None, by=(),
                       n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                       maximize: bool | None = None) -> JointOptimum:
    """The (lr, B) optimum of every cell and the scale laws (module docstring).

    Parameters
    ----------
    trials : pyarrow.Table
        Any table with the metric, batch, lr and scale columns (names as given).
    metric : str
        Stored or derived metric; chosen on its validation counterpart when present.
    batch, lr : str
        Batch-size and learning-rate columns.
    scale : sequence of str
        Scale columns (e.g. ``N``, ``D``): the laws are power laws in them.
    where, sweep, by, n_boot, level, seed
        As in :func:`analysis.rules.bopt.find_bopt`.
    maximize : bool, optional
        Whether larger is better; by default guessed from the name (``*acc*``).
    """
    scale = tuple(scale)
    if not scale:
        raise AnalysisError("--over lr needs the scale columns, e.g. --scale N,D")
    prep = cl.prepare(trials, metric, where=where, sweep=sweep, by=by, batch=batch)
    fr = prep.fr
    for col, flag in [(batch, "--batch"), (lr, "--lr")] + [(c, "--scale") for c in scale]:
        tables.numeric(fr, col, f"{flag} column")
    maximize = tables.maximize(metric) if maximize is None else bool(maximize)
    rows = np.flatnonzero(prep.mask)
    axes = tuple(dict.fromkeys(tuple(by) + tuple(
        cl.varying(fr, rows, exclude=(batch, lr, "seed")))))
    check_one_model_per_cell(fr, rows, axes, lr, batch, scale, skip=(metric, prep.sel_name))
    cm = cl.cell_matrix(fr, rows, axes + (lr, batch), prep.y, prep.sel, prep.outcome)
    grid = grid_optima(cm, maximize, validation=prep.sel is not None, fr=fr)
    S = cm.seeds.size
    est = grid.estimate(np.ones((1, S)))
    reps, res = None, None
    if S >= 2 and n_boot > 0:
        reps = grid.estimate(cl.seed_counts(S, n_boot, np.random.default_rng(seed)))
        res = cl.resampling(S, "validation" if prep.sel is not None else "same seeds")
    cells = _cells(fr, cm, grid, est, reps, res, axes, level, rows)
    notes = list(prep.notes)
    laws = []
    for cols in [scale] + ([(c,) for c in scale] if len(scale) > 1 else []):
        for target, which in (("B_opt", "b"), ("lr_opt", "lr")):
            laws.append(_law(target, which, grid, est, reps, res, cols, axes, level, notes))
    if reps is None:
        notes.append("no seed bootstrap (one seed, or --boot 0): the laws' intervals come from "
                     "the regression's residuals and treat cells as independent")
    selection = (f"chosen on {prep.sel_name}, refined on the mean of {prep.sel_name} and {metric}"
                 if prep.sel is not None else f"chosen and refined on {metric} ({prep.sel_name})")
    return JointOptimum(metric=metric, maximize=maximize, batch=batch, lr=lr, scale=scale,
                        axes=axes, cells=tuple(cells), laws=tuple(laws), selection=selection,
                        outcomes=tables.count_by(prep.outcome[prep.mask]),
                        n_boot=0 if reps is None else n_boot, notes=tuple(notes))


def check_one_model_per_cell(fr, rows, axes, lr: str, batch: str, scale=(), skip=()) -> None:
    """Refuse cells that hold several configurations, each with its own (lr, B) grid.

    A column that is not a cell axis (say ``N`` of a table whose ``--scale`` is ``D``) but
    takes several values among the rows of one cell, each value with at least two learning
    rates and two batch sizes of its own, is a configuration: merging its grids into one
    would pick an optimum across different models (their learning rates may even differ in
    the 4th digit, so no (lr, B) point repeats and no duplicate guard fires). Columns that are
    a function of lr or B (``steps = D/B``), outcomes, times, ids and the replicate are not
    configurations (:func:`analysis.tables.plausible_config`). Raises :class:`AnalysisError`
    naming the column, the cell and what to pass instead.
    """
    if getattr(fr, "declared", False):
        return  # a results store declares every configuration column as an axis
    rep = getattr(fr, "replicate", None)
    named = set(getattr(fr, "named", ())) | set(axes) | {lr, batch, rep, "seed", "sweep",
                                                          "trial_id", "status"} | set(skip)
    candidates = [c for c in fr if c not in named and "seed" not in c.lower()
                  and "replicate" not in c.lower() and tables.plausible_config(fr, c)]
    if not candidates:
        return
    lrs, bs = fr[lr], fr[batch]
    for key, idx in tables.groups(fr, rows, axes):
        for col in candidates:
            vals = tables.hashable(fr[col][idx])
            distinct = sorted(set(vals), key=lambda v: (v is None, str(v) if v is None or
                                                          isinstance(v, str) else v))
            if len(distinct) < 2:
                continue
            own = [idx[[v == d for v in vals]] for d in distinct]
            if all(np.unique(lrs[o]).size >= 2 and np.unique(bs[o]).size >= 2 for o in own):
                where = tables.label(axes, key) if axes else "the one cell"
                shown = ", ".join(tables.label_value(v) for v in distinct[:4])
                more = ", ..." if len(distinct) > 4 else ""
                raise AnalysisError(
                    f"rows of the cell {where} differ in {col} ({shown}{more}), each value with "
                    f"its own ({lr}, {batch}) grid: they are different models, and one optimum "
                    f"over them would mix them. Pass --scale {','.join((col,) + tuple(scale))} "
                    f"(a cell per {col}; the laws in each scale column alone are printed too), "
                    f"--by {col}, or --where {col}=VALUE")


_WORD = {tobit.OBSERVED: "", tobit.BELOW: "low", tobit.ABOVE: "high", tobit.EXCLUDED: "none"}


def _cells(fr, cm, grid, est, reps, res, axes, level, rows):
    out = []
    for g, key in enumerate(grid.keys):
        members = grid.members[g]
        elig = [c for c in members if cm.eligible[c]]
        ci = {}
        for which in ("lr", "b"):
            lo = hi = float("nan")
            if reps is not None and est.side[which][0, g] == tobit.OBSERVED:
                v = reps.value[which][:, g]
                half = res.half_width(np.nanstd(v, ddof=1), level)
                lo, hi = (float(np.exp(est.value[which][0, g] + s * half)) for s in (-1, 1))
            ci[which] = (lo, hi)

        def value(which):
            s = est.side[which][0, g]
            v = est.value[which][0, g] if s == tobit.OBSERVED else est.bound[which][0, g]
            return float(np.exp(v)) if np.isfinite(v) else float("nan")
        jl, jk = est.best_lr[0, g], est.best_b[0, g]
        out.append(CellOptimum(
            key={a: _plain(v) for a, v in zip(axes, key)}, label=tables.label(axes, key),
            lr_best=float(grid.lrs[g, jl]) if jl >= 0 else float("nan"),
            b_best=float(grid.bs[g, jk]) if jk >= 0 else float("nan"),
            lr_opt=value("lr"), b_opt=value("b"), lr_side=_WORD[int(est.side["lr"][0, g])],
            b_side=_WORD[int(est.side["b"][0, g])], lr_ci=ci["lr"], b_ci=ci["b"],
            n_points=len(elig), n_seeds=int(np.isfinite(cm.y[elig]).any(0).sum()) if elig else 0,
            flagged=tuple({"point": dict(zip(("lr", "batch"), map(_plain, cm.keys[c][-2:]))),
                           "reason": cm.reasons[c]} for c in members if not cm.eligible[c]),
            outcomes=cm.outcomes(members)))
    return out


def _law(target, which, grid, est, reps, res, scale, axes, level, notes) -> ScaleLaw:
    """Tobit regression of the log optimum on the log scale columns, with intervals."""
    G = len(grid.keys)
    cols, names, missing = [np.ones(G)], ["k"], {}
    for col in scale:
        v, why = _scale_values(grid, col, axes)
        if why:
            missing[col] = why
            continue
        cols.append(np.log(v))
        names.append(f"exponent of {col}")
    X = np.column_stack(cols)
    y, side, bound = est.value[which][0], est.side[which][0], est.bound[which][0]
    obs = side == tobit.OBSERVED
    p = X.shape[1]
    formula = f"{target} = k" + "".join(f" * {n.split()[-1]}^e_{n.split()[-1]}"
                                        for n in names[1:])
    counts = dict(n_observed=int(obs.sum()), n_censored=int(np.isin(side, (tobit.ABOVE,
                  tobit.BELOW)).sum()), n_excluded=int((side == tobit.EXCLUDED).sum()))
    nan = tuple([float("nan")] * p)
    if obs.sum() <= p:
        notes.append(f"{target}: {int(obs.sum())} cells with an interior optimum cannot fit "
                     f"{p} parameters")
        return ScaleLaw(target=target, scale=tuple(scale), formula=formula, names=tuple(names),
                        params=nan,
                        ci_low=nan, ci_high=nan, level=level, interval="none",
                        not_estimated=missing, **counts)
    sigma = _sigma(X, y, obs)
    beta = tobit.fit_tobit(X, y[None], side[None], bound[None], sigma).beta[0]
    df = max(int(obs.sum()) - p, 1)
    se = np.full(p, np.nan)
    if np.all(np.isfinite(beta)):
        info, _ = tobit.information(X, beta, y, side, bound, sigma)
        with np.errstate(all="ignore"):
            se = np.sqrt(np.diag(np.linalg.pinv(info)))
    half = stats.t.ppf(0.5 + level / 2.0, df) * se
    interval, failed = "residual-t (cells independent)", 0
    if reps is not None:
        fit = tobit.fit_tobit(X, reps.value[which], reps.side[which], reps.bound[which], sigma)
        failed = int((~fit.converged).sum())
        if fit.converged.sum() >= 10:
            boot = res.half_width(np.std(fit.beta[fit.converged], axis=0, ddof=1), level)
            interval = "cluster-t (seeds)" if np.nanmax(boot[1:] - half[1:], initial=-1) > 0 \
                else "residual-t (wider than cluster-t)"
            half = np.fmax(half, boot)
    k = beta.copy()
    k[0] = np.exp(beta[0])
    lo, hi = beta - half, beta + half
    lo[0], hi[0] = np.exp(lo[0]), np.exp(hi[0])
    return ScaleLaw(target=target, scale=tuple(scale), formula=formula, names=tuple(names),
                    params=tuple(float(v) for v in k), ci_low=tuple(float(v) for v in lo),
                    ci_high=tuple(float(v) for v in hi), level=level, interval=interval,
                    n_boot_failed=failed, not_estimated=missing, **counts)


def _scale_values(grid, col, axes):
    """``(value per cell, "")``, or ``(None, why not)``: from the cell's key when ``col`` is an
    axis, else the one value its rows share (e.g. ``n_params``, fixed by the width)."""
    if col in axes:
        v = np.array([k[axes.index(col)] for k in grid.keys], float)
    else:
        cm, fr = grid.cm, grid.fr
        v = np.full(len(grid.keys), np.nan)
        for g, members in enumerate(grid.members):
            vals = np.unique(fr[col][cm.rows[np.isin(cm.cell_of, members)]])
            if vals.size != 1:
                return None, "it is not one value per cell; make it an axis with --axes"
            v[g] = vals[0]
    if not np.all(np.isfinite(v) & (v > 0)):
        return None, "it has values <= 0 or missing"
    if np.unique(v).size < 2:
        return None, "it takes one value here"
    return v, ""


def _sigma(X, y, obs) -> float:
    """Residual sd of least squares on the observed cells (at least 0.02 in log)."""
    beta, *_ = np.linalg.lstsq(X[obs], y[obs], rcond=None)
    r = y[obs] - X[obs] @ beta
    dof = max(int(obs.sum()) - X.shape[1], 1)
    return float(max(np.sqrt(np.sum(r ** 2) / dof), 0.02))


def _plain(v):
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v

