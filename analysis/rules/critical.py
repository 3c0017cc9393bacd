r"""The critical batch size of every group of a sweep, beside B_simple and B_opt.

:mod:`analysis.rules.tradeoff` fits McCandlish et al.'s trade-off for one group; this
module reads a sweep's trials and curves, forms the groups (every axis but
``batch_size`` and the seed; ``lr`` too with ``tune_lr``, then chosen per batch
size), finds each trial's steps to every target, and puts beside each
:math:`B_{crit}` the gradient noise scale :math:`B_{simple}` measured at the
target (curves of ``metrics: {noise_scale: true}``) and the group's
:math:`B_{opt}` (:mod:`analysis.rules.bopt`). The bootstrap draws one multiset of
seeds for the whole sweep, so every group and target is resampled by the same
clusters, and the scaling of :math:`B_{crit}` with ``n_train`` (and, given
three targets or more, with the target) is fitted inside each replicate:
Zhang et al. (2024, "How Does Critical Batch Size Scale in Pre-training?")
find it grows with the data size. That fit is a Tobit regression
(:mod:`analysis.stats.tobit`) of :math:`\ln B_{crit}`: a group whose fit puts
:math:`B_{crit}` beyond every batch size (:math:`S_{min} \le 0`) is right-censored
at its largest batch size, one with :math:`E_{min} \le 0` left-censored at its
smallest, as the SGD rule treats optima at a grid edge. Dropping them would bias
the exponent down: the dropped group is the one with the largest :math:`B_{crit}`
(informative censoring). The scale is the residual sd of the observed groups
(floor 0.05); every replicate is refitted with its own censoring, and the result
counts the groups, censored groups and replicates used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from scipy import stats

import analysis.stats.tobit as tobit
import analysis.tables.cells as cl
from analysis import tables
from analysis.rules.tradeoff import Estimate, Tradeoff, steps_to_target, tradeoff
from analysis.errors import AnalysisError


@dataclass(frozen=True, kw_only=True)
class CriticalGroup:
    """One group at one target."""

    key: dict
    label: str
    target: float
    fit: Tradeoff
    b_simple: float
    """Median B_simple at the target over the group's trials that reached it (NaN: not measured);
    the median, because one trial's estimate (a ratio of two moving averages) is heavy-tailed."""
    n_b_simple: int
    b_opt: Estimate | None
    """B_opt of the same group (fixed lr), or None."""

    def to_dict(self) -> dict:
        return {"group": self.key, "label": self.label, "target": self.target, **self.fit.to_dict(),
                "b_simple": _num(self.b_simple), "n_b_simple": self.n_b_simple,
                "b_opt": None if self.b_opt is None else self.b_opt.to_dict()}


@dataclass(frozen=True, kw_only=True)
class CriticalResult:
    metric: str
    maximize: bool
    targets: tuple
    tune_lr: bool
    axes: tuple
    """Axes that define a group."""
    groups: tuple
    scaling: tuple
    """(name, Estimate) exponents of B_crit against n_train (and the target)."""
    n_seeds: int
    notes: tuple
    level: float = 0.95
    scaling_counts: dict = None
    """What the scaling fit used: ``groups`` (with a fit), ``censored_high`` / ``censored_low``
    (B_crit beyond the largest / below the smallest batch size, censored there), ``left_out``
    (no fit), ``replicates`` used of ``replicates_drawn``."""

    def to_dict(self) -> dict:
        return {"metric": self.metric, "maximize": self.maximize, "targets": list(self.targets),
                "tune_lr": self.tune_lr, "axes": list(self.axes), "n_seeds": self.n_seeds,
                "level": self.level, "groups": [g.to_dict() for g in self.groups],
                "scaling": {name: est.to_dict() for name, est in self.scaling},
                "scaling_counts": dict(self.scaling_counts or {}), "notes": list(self.notes)}


def _num(v):
    return float(v) if v is not None and np.isfinite(v) else None


def critical_batch(trials: pa.Table, curves: pa.Table, *, targets, metric: str = "test_loss",
                   tune_lr: bool = False, where: dict | None = None, sweep: str | None = None,
                   n_boot: int = 400, level: float = 0.95, seed: int = 0, with_bopt: bool = True) -> CriticalResult:
    """:math:`B_{crit}` per group and target (see the module docstring).

    Raises
    ------
    AnalysisError
        No curves, an unknown metric, a schedule other than constant, ``tune_lr`` without
        an ``lr`` axis, several sweeps without ``sweep``.
    """
    targets = tuple(float(t) for t in targets)
    if not targets:
        raise AnalysisError("give at least one --target value of the metric")
    bad = [t for t in targets if not np.isfinite(t)]
    if bad:
        raise AnalysisError(f"--target must be finite numbers (a value of the metric, e.g. 0.3), "
                            f"got {', '.join(str(t) for t in bad)}")
    prep = cl.prepare(trials, metric, where=where, sweep=sweep)
    fr, rows = prep.fr, np.flatnonzero(prep.mask)
    _check_schedule(fr, rows)
    maximize = tables.maximize(metric)
    rep = fr.replicate if getattr(fr, "replicate", None) in fr else None
    exclude = ("batch_size",) + ((rep,) if rep else ()) + (("lr",) if tune_lr else ())
    if tune_lr and "lr" not in fr:
        raise AnalysisError("--tune lr needs an lr column")
    axes = tuple(cl.varying(fr, rows, exclude=exclude))
    sel_name = _selection_metric(metric, curves) if tune_lr else metric
    per_trial = _steps(fr, rows, curves, targets, metric, sel_name, maximize)
    seeds = np.unique(fr[rep][rows]) if rep else np.zeros(1)
    draws = np.random.default_rng(seed).integers(0, seeds.size, size=(n_boot, seeds.size))
    notes = list(prep.notes)
    if not tune_lr and "lr" in fr:
        notes.append("lr is fixed within each group; McCandlish et al.'s model assumes it is tuned per "
                     "batch size (pass --tune lr when the sweep has an lr axis)")
    if tune_lr and sel_name == metric:
        notes.append(f"the lr of each batch size is chosen and measured on {metric}: no validation "
                     "counterpart in the curves, so the steps are slightly optimistic")
    notes.append("steps to target: log step interpolated linearly in the metric between the eval "
                 "points around the first crossing (log-spaced eval points keep this precise)")
    bopt = _bopt(trials, metric, where, sweep, n_boot, level, seed, axes, tune_lr) if with_bopt else {}
    out = []
    for key, idx in cl.groups(fr, rows, axes):
        label = tables.label(axes, key)
        arrays = _arrays(fr, idx, per_trial, targets, rep, seeds, tune_lr)
        b, lrs = arrays["b"], arrays["lr"]
        for k, target in enumerate(targets):
            fit = tradeoff(b, arrays["steps"][k], select=arrays["select"][k], lrs=lrs, n_boot=n_boot,
                           level=level, draws=draws)
            bs, n_bs = _b_simple(per_trial, idx, k)
            out.append(CriticalGroup(key=dict(zip(axes, key)), label=label, target=target, fit=fit,
                                     b_simple=bs, n_b_simple=n_bs, b_opt=bopt.get(key)))
            notes += _cutoff_note(fr, idx, fit, label, target)
    scaling, counts = _scaling(out, axes, targets, seeds.size, level)
    return CriticalResult(metric=metric, maximize=maximize, targets=targets, tune_lr=tune_lr, axes=axes,
                          groups=tuple(out), scaling=scaling, n_seeds=int(seeds.size), notes=tuple(notes),
                          level=level, scaling_counts=counts)


def auto_target(trials: pa.Table, metric: str, quantile: float = 0.7) -> float:
    """A target most batch sizes reach: the 70th percentile (the 30th for a rising metric) of the
    median final value per batch size, over the sweep's ok trials, to two significant digits."""
    fr = tables.frame(trials)
    y = tables.metric(fr, metric)
    ok, _ = tables.usable(fr, y)
    if not ok.any() or "batch_size" not in fr:
        raise AnalysisError(f"no usable trials with {metric!r} and batch_size to choose a target from")
    meds = [np.median(y[idx]) for _, idx in cl.groups(fr, np.flatnonzero(ok), ["batch_size"])]
    value = float(np.quantile(meds, 1 - quantile if tables.maximize(metric) else quantile))
    return float(f"{value:.2g}")


def _check_schedule(fr, rows) -> None:
    if "schedule" not in fr:
        return
    kinds = {str(v) for v in fr["schedule"][rows] if v is not None}
    if kinds - {"constant"}:
        raise AnalysisError(f"steps to a target depend on the planned horizon under {', '.join(sorted(kinds - {'constant'}))} "
                            "schedules; the critical batch size needs schedule: constant (warmup allowed)")


def _selection_metric(metric: str, curves: pa.Table) -> str:
    if metric.startswith("test_") and "val_" + metric[5:] in curves.column_names:
        col = curves.column("val_" + metric[5:])
        if col.null_count < len(col):
            return "val_" + metric[5:]
    return metric


def _steps(fr, rows, curves: pa.Table, targets, metric: str, sel_name: str, maximize: bool) -> dict:
    """{row: (steps per target, selection steps per target, B_simple per target)} from the curves."""
    for name in {metric, sel_name}:
        if name not in curves.column_names:
            raise AnalysisError(f"the curves have no column {name!r}; they have: {', '.join(curves.column_names)}")
    ids = {str(fr["trial_id"][r]): r for r in rows} if "trial_id" in fr else {}
    if not ids or curves.num_rows == 0:
        raise AnalysisError("the critical batch size needs learning curves (the store's curves table)")
    tid = np.array(curves.column("trial_id").to_pylist(), dtype=object)
    keep = np.array([t in ids for t in tid])
    tid = tid[keep]
    step = curves.column("step").to_numpy(zero_copy_only=False)[keep].astype(float)
    y = curves.column(metric).to_numpy(zero_copy_only=False)[keep].astype(float)
    ys = curves.column(sel_name).to_numpy(zero_copy_only=False)[keep].astype(float)
    bsim = (curves.column("b_simple").to_numpy(zero_copy_only=False)[keep].astype(float)
            if "b_simple" in curves.column_names else np.full(tid.size, np.nan))
    order = np.lexsort((step, tid))
    tid, step, y, ys, bsim = tid[order], step[order], y[order], ys[order], bsim[order]
    bounds = np.flatnonzero(np.r_[True, tid[1:] != tid[:-1], True])
    out = {}
    for a, z in zip(bounds[:-1], bounds[1:]):
        s, v, vs, bb = step[a:z], y[a:z], ys[a:z], bsim[a:z]
        reach = [steps_to_target(s, v, t, maximize) for t in targets]
        reach_sel = [steps_to_target(s, vs, t, maximize) for t in targets]
        at = [_value_at(s, bb, r) for r in reach]
        out[ids[tid[a]]] = (reach, reach_sel, at)
    return out


def _value_at(steps: np.ndarray, values: np.ndarray, at: float) -> float:
    """A curve column (B_simple) at step ``at``: interpolated in log step; NaN if not measured."""
    ok = np.isfinite(values) & (steps > 0)
    if not np.isfinite(at) or ok.sum() == 0:
        return np.nan
    return float(np.interp(np.log(max(at, 1.0)), np.log(steps[ok]), values[ok]))


def _arrays(fr, idx, per_trial, targets, rep, seeds, tune_lr) -> dict:
    """(nT, nB, nLR, nS) steps and selection steps of one group (NaN: no trial)."""
    b = np.unique(fr["batch_size"][idx])
    lrs = np.unique(fr["lr"][idx]) if "lr" in fr else np.array([np.nan])  # one per group unless tuned
    shape = (len(targets), b.size, lrs.size, seeds.size)
    steps, select = np.full(shape, np.nan), np.full(shape, np.nan)
    for r in idx:
        if r not in per_trial:
            continue  # no curve (a failed trial): absent, as NaN
        i = np.searchsorted(b, fr["batch_size"][r])
        j = np.searchsorted(lrs, fr["lr"][r]) if "lr" in fr else 0
        s = np.searchsorted(seeds, fr[rep][r]) if rep else 0
        steps[:, i, j, s], select[:, i, j, s] = per_trial[r][0], per_trial[r][1]
    return {"b": b, "lr": lrs, "steps": steps, "select": select}


def _b_simple(per_trial, idx, k) -> tuple[float, int]:
    vals = [per_trial[r][2][k] for r in idx if r in per_trial and np.isfinite(per_trial[r][2][k])]
    return (float(np.median(vals)), len(vals)) if vals else (np.nan, 0)  # single estimates are heavy-tailed


def _bopt(trials, metric, where, sweep, n_boot, level, seed, axes, tune_lr) -> dict:
    """{group key: Estimate of B_opt} of the same groups: analysis.rules.bopt with a fixed lr; the joint
    (lr, B) optimum of analysis.rules.joint_optimum when lr is tuned."""
    try:
        if tune_lr:
            from analysis.rules.joint_optimum import find_joint_optimum

            res = find_joint_optimum(trials, metric=metric, batch="batch_size", lr="lr", scale=axes[:1] or ("n_train",),
                                     where=where, sweep=sweep, n_boot=n_boot, level=level, seed=seed)
            return {tuple(_key(c.key.get(a)) for a in axes): Estimate(value=c.b_opt, ci_low=c.b_ci[0], ci_high=c.b_ci[1])
                    for c in res.cells}
        from analysis.rules.bopt import find_bopt

        res = find_bopt(trials, metric=metric, where=where, sweep=sweep, n_boot=n_boot, level=level, seed=seed)
    except AnalysisError:
        return {}
    return {tuple(_key(g.key.get(a)) for a in axes): Estimate(value=g.b_opt, ci_low=g.ci_low, ci_high=g.ci_high)
            for g in res.groups}


def _key(v):
    return float(v) if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool) else v


def _cutoff_note(fr, idx, fit: Tradeoff, label: str, target: float) -> list[str]:
    """On multi-epoch data B <= N cuts the E(B) branch off near N: say so where it matters."""
    if "n_train" not in fr or not fit.ok:
        return []
    n = float(np.nanmin(fr["n_train"][idx]))
    high = fit.b_crit.ci_high
    if np.isfinite(high) and high < n / 4:
        return []
    return [f"{label}, target {target:g}: B_crit reaches toward n_train = {n:g}; with B <= N a step "
            "at B near N sees every example, so E(B) is cut off near N and B_crit there is not "
            "the large-data critical batch size"]


def _censoring(values, lo, hi):
    """(ln value, side, ln bound) of B_crit values: inf above the largest batch size, 0 below
    the smallest, NaN left out."""
    v = np.asarray(values, float)
    side = np.where(np.isnan(v), tobit.EXCLUDED, np.where(v == np.inf, tobit.ABOVE,
                    np.where(v <= 0, tobit.BELOW, tobit.OBSERVED)))
    with np.errstate(all="ignore"):
        logv = np.where(side == tobit.OBSERVED, np.log(np.where(v > 0, v, 1.0)), np.nan)
    bound = np.where(side == tobit.ABOVE, np.log(hi), np.where(side == tobit.BELOW, np.log(lo), np.nan))
    return logv, side, bound


def _scaling(groups, axes, targets, n_seeds: int, level: float) -> tuple:
    """Exponents of B_crit against n_train (and the target, given 3+ targets), per replicate,
    by Tobit with B_crit beyond the batch sizes censored (module docstring); and the counts."""
    usable = [g for g in groups if g.fit.ok]
    names = [n for n in (("n_train",) if "n_train" in axes else ())]
    if len(targets) >= 3:
        names.append("target")
    counts = {"groups": len(usable), "left_out": len(groups) - len(usable)}
    if not names or len(usable) < len(names) + 2:
        return (), counts
    cols = {"n_train": [g.key.get("n_train") for g in usable], "target": [g.target for g in usable]}
    x = np.column_stack([np.ones(len(usable))] + [np.log(np.asarray(cols[n], float)) for n in names])
    if np.linalg.matrix_rank(x) < x.shape[1]:
        return (), counts
    lo = np.array([min(g.fit.batch_sizes) for g in usable], float)
    hi = np.array([max(g.fit.batch_sizes) for g in usable], float)
    y, side, bound = _censoring([g.fit.b_crit.value for g in usable], lo, hi)
    counts.update(censored_high=int((side == tobit.ABOVE).sum()),
                  censored_low=int((side == tobit.BELOW).sum()))
    obs = side == tobit.OBSERVED
    if obs.sum() < x.shape[1] + 1:
        return (), counts
    sigma = np.ones(len(usable))
    for _ in range(3):  # scale from the observed groups' residuals
        beta = tobit.fit_tobit(x, y[None], side[None], bound[None], sigma).beta[0]
        if not np.all(np.isfinite(beta)):
            return (), counts
        r = (y - x @ beta)[obs]
        sigma = np.full(len(usable), max(float(np.sqrt((r ** 2).sum() / max(obs.sum() - x.shape[1], 1))), 0.05))
    reps = np.stack([g.fit.replicates for g in usable], axis=1)  # (R, G)
    ry, rside, rbound = _censoring(reps, lo, hi)
    fit = tobit.fit_tobit(x, ry, rside, rbound, sigma)
    good = fit.converged
    counts.update(replicates=int(good.sum()), replicates_drawn=int(reps.shape[0]))
    out = []
    if good.sum() >= 2:
        rb = fit.beta[good]
        half = stats.t.ppf((1 + level) / 2, max(n_seeds - 1, 1)) * np.sqrt(n_seeds / max(n_seeds - 1, 1))
        for j, name in enumerate(names, start=1):
            sd = rb[:, j].std(ddof=1)
            out.append((name, Estimate(value=beta[j], ci_low=beta[j] - half * sd, ci_high=beta[j] + half * sd)))
    return tuple(out), counts
