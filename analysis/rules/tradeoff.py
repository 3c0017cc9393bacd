r"""The critical batch size from stored learning curves (McCandlish et al. 2018).

For a target value :math:`T` of a metric, let :math:`S(B)` be the optimizer
steps a trial of batch size :math:`B` needs to first reach it and
:math:`E(B) = B\,S(B)` the examples it consumes. McCandlish, Kaplan, Amodei et
al. ("An Empirical Model of Large-Batch Training", 2018, eq. 2.11) find the
trade-off

.. math:: \Big(\frac{S}{S_{min}} - 1\Big)\Big(\frac{E}{E_{min}} - 1\Big) = 1
          \quad\Longleftrightarrow\quad S(B) = S_{min} + \frac{E_{min}}{B},

and call :math:`B_{crit} = E_{min}/S_{min}` the critical batch size: below it,
doubling the batch nearly halves the steps; above it, more data per step
buys few steps. They predict it from the gradient noise scale
:math:`B_{simple}` measured at the same loss.

Steps to target: the curves are evaluated at a few (log-spaced) steps, so the
first crossing of :math:`T` is located by interpolating :math:`\log` step
linearly in the metric between the two eval points around it (linearly in
the step when the earlier point is step 0). Log-spaced eval points keep the
relative error of this small at every step count.

Per group (every axis but batch size and seed; the learning rate either fixed
or, with ``tune_lr``, chosen per batch size as the one that reaches the target
in the fewest steps on the selection metric), the steps of a batch size are
the geometric mean over seeds when every seed reached the target, else the
median with a never-reaching seed counting as infinitely slow: a batch size
whose median seed never reaches it is *censored* (reported as a lower bound,
not fitted), and the never-reaching trials are counted. The fit minimises squared errors of :math:`\log S` by
iteratively reweighted least squares on :math:`S = S_{min} + E_{min}/B`
(weights :math:`1/\hat S^2`), a closed-form 2x2 solve per iteration, so all
bootstrap replicates are fitted at once.

Intervals come from the clustered bootstrap: a replicate draws one multiset of
seeds and applies it to every batch size (and learning rate) of every group,
redoing the choice of learning rate inside the replicate. An interval is
:math:`\hat\theta \pm t_{S-1}\sqrt{S/(S-1)}\,\mathrm{sd}^*` on the log scale
(the rescaled bootstrap with a t quantile for few clusters), as for the
other statistics of :mod:`analysis`. Replicates whose fit leaves
:math:`S_{min} \le 0` (:math:`B_{crit}` beyond every batch size) or
:math:`E_{min} \le 0` are counted; when more than a tail's worth of them do,
the interval is open on that side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

MIN_BATCH_SIZES = 3
IRLS_STEPS = 6


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """A value and its interval (``ci_high`` may be inf: open above)."""

    value: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict:
        return {"value": _num(self.value), "ci_low": _num(self.ci_low), "ci_high": _num(self.ci_high)}


def _num(v: float):
    return float(v) if np.isfinite(v) else None


# ---- steps to target -------------------------------------------------------------------------

def steps_to_target(steps: np.ndarray, values: np.ndarray, target: float, maximize: bool = False) -> float:
    """Steps at which a curve first reaches ``target`` (inf if it never does, 0 if it starts there).

    ``steps`` ascending eval steps, ``values`` the metric there (NaN: not measured, e.g. after
    divergence). Interpolates log(step) linearly in the metric between the two eval points
    around the first crossing (linearly in step when the earlier one is step 0)."""
    v = -np.asarray(values, float) if maximize else np.asarray(values, float)
    t = -target if maximize else target
    hit = np.flatnonzero(np.isfinite(v) & (v <= t))
    if hit.size == 0:
        return np.inf
    i = hit[0]
    if i == 0:
        return float(steps[0])
    s0, s1, y0, y1 = float(steps[i - 1]), float(steps[i]), v[i - 1], v[i]
    frac = 1.0 if not np.isfinite(y0) or y0 == y1 else (y0 - t) / (y0 - y1)
    if s0 <= 0:
        return s0 + frac * (s1 - s0)
    return float(np.exp(np.log(s0) + frac * (np.log(s1) - np.log(s0))))


# ---- the fit ---------------------------------------------------------------------------------

def fit_tradeoff(b: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""(S_min, E_min) of :math:`S = S_{min} + E_{min}/B` for every row of ``s``.

    ``b`` (n,) batch sizes; ``s`` (..., n) steps to target, NaN where a batch size is left
    out. Least squares on log S by IRLS: weighted least squares of S on (1, 1/B) with
    weights 1/Ŝ², Ŝ from the previous step (the data on the first). Rows with fewer
    than two finite points give NaN."""
    s = np.asarray(s, float)
    x = 1.0 / np.asarray(b, float)
    use = np.isfinite(s) & (s > 0)
    y = np.where(use, s, 0.0)
    fitted = np.where(use, s, 1.0)
    a = e = np.full(s.shape[:-1], np.nan)
    for _ in range(IRLS_STEPS):
        w = np.where(use, 1.0 / np.maximum(fitted, 1e-300) ** 2, 0.0)
        sw, sx, sxx = w.sum(-1), (w * x).sum(-1), (w * x * x).sum(-1)
        sy, sxy = (w * y).sum(-1), (w * x * y).sum(-1)
        det = sw * sxx - sx * sx
        with np.errstate(divide="ignore", invalid="ignore"):
            a = (sxx * sy - sx * sxy) / det
            e = (sw * sxy - sx * sy) / det
        fitted = np.abs(a[..., None] + e[..., None] * x) + 1e-12
    bad = use.sum(-1) < 2
    a[bad], e[bad] = np.nan, np.nan
    return a, e


def interval(point: float, reps: np.ndarray, n_seeds: int, level: float) -> tuple[float, float]:
    """Rescaled clustered-bootstrap interval on the log scale: point ± t_{S−1}·√(S/(S−1))·sd*.

    ``reps`` may hold +inf / -inf (a replicate beyond every batch size, or at zero); when more
    than (1 − level)/2 of them are infinite on one side, the interval is open on that side."""
    if not (np.isfinite(point) and point > 0) or n_seeds < 2:
        return np.nan, np.nan
    reps = np.asarray(reps, float)
    reps = reps[~np.isnan(reps)]
    tail = (1 - level) / 2
    hi_open = np.mean(reps == np.inf) > tail if reps.size else True
    lo_open = np.mean(reps <= 0) > tail if reps.size else True
    logs = np.log(reps[np.isfinite(reps) & (reps > 0)])
    if logs.size < 2:
        return (0.0 if lo_open else np.nan), (np.inf if hi_open else np.nan)
    half = stats.t.ppf(1 - tail, n_seeds - 1) * np.sqrt(n_seeds / (n_seeds - 1)) * logs.std(ddof=1)
    lo, hi = np.exp(np.log(point) - half), np.exp(np.log(point) + half)
    return (0.0 if lo_open else lo), (np.inf if hi_open else hi)


@dataclass(frozen=True, kw_only=True)
class Tradeoff:
    """S(B) of one group at one target, and its fitted trade-off."""

    batch_sizes: tuple
    """Every batch size of the group, ascending."""
    steps: tuple
    """Median steps to target per batch size (inf: the median seed never reached it)."""
    reached: tuple
    """Seeds that reached the target, per batch size."""
    seeds: tuple
    """Seeds per batch size."""
    lr: tuple
    """The learning rate used per batch size (chosen per B with tune_lr)."""
    s_min: Estimate
    e_min: Estimate
    b_crit: Estimate
    n_fitted: int
    """Batch sizes in the fit (the median seed reached the target)."""
    n_censored_trials: int
    """Trials that never reached the target (counted, not dropped)."""
    bad_replicates: int
    """Bootstrap replicates with S_min <= 0 or E_min <= 0 or too few batch sizes."""
    n_replicates: int
    reason: str = ""
    """Why there is no fit, or empty."""
    notes: tuple = ()
    replicates: np.ndarray = field(default=None, repr=False, compare=False)
    """B_crit of each bootstrap replicate (inf: beyond every batch size; NaN: no fit)."""

    @property
    def ok(self) -> bool:
        return not self.reason

    def to_dict(self) -> dict:
        return {"batch_sizes": list(self.batch_sizes), "steps": [_num(s) for s in self.steps],
                "reached": list(self.reached), "seeds": list(self.seeds), "lr": list(self.lr),
                "s_min": self.s_min.to_dict(), "e_min": self.e_min.to_dict(), "b_crit": self.b_crit.to_dict(),
                "n_fitted": self.n_fitted, "n_censored_trials": self.n_censored_trials,
                "bad_replicates": self.bad_replicates, "n_replicates": self.n_replicates,
                "reason": self.reason, "notes": list(self.notes)}


NAN = Estimate(value=np.nan, ci_low=np.nan, ci_high=np.nan)


def tradeoff(b: np.ndarray, steps: np.ndarray, *, select: np.ndarray | None = None, lrs: np.ndarray | None = None,
             n_boot: int = 400, level: float = 0.95, seed: int = 0, draws: np.ndarray | None = None) -> Tradeoff:
    r"""Fit :math:`S(B) = S_{min} + E_{min}/B` for one group.

    Parameters
    ----------
    b : (nB,) batch sizes, ascending.
    steps : (nB, nLR, nS) steps to target per batch size, learning rate and seed (inf: never
        reached; NaN: no such trial).
    select : like ``steps``, the steps measured on the selection metric (choice of lr per B);
        None: ``steps`` itself.
    lrs : (nLR,) learning rates (labels only).
    draws : (R, nS) seed indices of the bootstrap replicates (shared across groups so that the
        resampling is clustered over the whole sweep); drawn here when None.
    """
    b = np.asarray(b, float)
    steps = np.asarray(steps, float)
    n_b, n_lr, n_s = steps.shape
    select = steps if select is None else np.asarray(select, float)
    lrs = np.arange(n_lr, dtype=float) if lrs is None else np.asarray(lrs, float)
    if draws is None:
        draws = np.random.default_rng(seed).integers(0, n_s, size=(n_boot, n_s))
    point_steps, chosen = _median_steps(steps, select, np.arange(n_s)[None, :])
    point_steps, chosen = point_steps[0], chosen[0]
    reached = [int(np.sum(np.isfinite(steps[i, chosen[i]]))) for i in range(n_b)]
    seeds = [int(np.sum(~np.isnan(steps[i, chosen[i]]))) for i in range(n_b)]
    censored = int(sum(s - r for s, r in zip(seeds, reached)))
    common = dict(batch_sizes=tuple(b.tolist()), steps=tuple(point_steps.tolist()), reached=tuple(reached),
                  seeds=tuple(seeds), lr=tuple(lrs[chosen].tolist()), n_censored_trials=censored,
                  n_replicates=len(draws))
    fitted = np.isfinite(point_steps) & (point_steps > 0)
    if fitted.sum() < MIN_BATCH_SIZES:
        why = (f"only {int(fitted.sum())} of {n_b} batch sizes reach the target (the median seed); "
               f"the trade-off needs at least {MIN_BATCH_SIZES}")
        if np.any(point_steps == 0):
            why = "the target is reached at step 0 (it is above the starting value); choose a lower target"
        return Tradeoff(**common, s_min=NAN, e_min=NAN, b_crit=NAN, n_fitted=int(fitted.sum()),
                        bad_replicates=0, reason=why, replicates=np.full(len(draws), np.nan))
    a, e = fit_tradeoff(b, np.where(fitted, point_steps, np.nan)[None, :])
    a, e = float(a[0]), float(e[0])
    rep_steps, _ = _median_steps(steps, select, draws)
    rep_steps = np.where(np.isfinite(rep_steps) & (rep_steps > 0), rep_steps, np.nan)
    too_few = np.sum(np.isfinite(rep_steps), axis=1) < MIN_BATCH_SIZES
    ra, re = fit_tradeoff(b, rep_steps)
    ra[too_few], re[too_few] = np.nan, np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        rb = np.where(ra > 0, np.where(re > 0, re / ra, 0.0), np.inf)
    rb[np.isnan(ra) | np.isnan(re)] = np.nan
    bad = int(np.sum(too_few | ~(ra > 0) | ~(re > 0)))
    notes = []
    if not (a > 0 and e > 0):
        notes.append("the fit puts S_min <= 0: every batch size tested is below B_crit (perfect scaling)"
                     if a <= 0 else "the fit puts E_min <= 0: every batch size tested is above B_crit")
    b_crit = e / a if a > 0 and e > 0 else (np.inf if a <= 0 else 0.0)
    censored_fast = [bb for bb, s, f in zip(b, point_steps, fitted) if not f and np.isinf(s) and a + e / bb > 0]
    if censored_fast:
        notes.append(f"batch sizes {', '.join(f'{x:g}' for x in censored_fast)} never reached the target "
                     "within their budget (censored: their steps are only a lower bound)")
    n_seeds = steps.shape[2]
    return Tradeoff(**common, s_min=Estimate(value=a, **_ci(a, ra, n_seeds, level)),
                    e_min=Estimate(value=e, **_ci(e, re, n_seeds, level)),
                    b_crit=Estimate(value=b_crit, **_ci(b_crit, rb, n_seeds, level)),
                    n_fitted=int(fitted.sum()), bad_replicates=bad, notes=tuple(notes), replicates=rb)


def _ci(point: float, reps: np.ndarray, n_seeds: int, level: float) -> dict:
    lo, hi = interval(point, reps, n_seeds, level)
    return {"ci_low": lo, "ci_high": hi}


def _median_steps(steps: np.ndarray, select: np.ndarray, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steps over the drawn seeds of each (batch size, lr) (:func:`_center`), the lr chosen per
    batch size on ``select``; returns ((R, nB) steps, (R, nB) chosen lr index)."""
    picked = steps[:, :, draws]  # (nB, nLR, R, nS)
    picked_sel = select[:, :, draws]
    med = _center(picked)  # (nB, nLR, R)
    med_sel = _center(picked_sel)
    key = np.where(np.isnan(med_sel), np.inf, med_sel)
    chosen = np.argmin(key, axis=1)  # (nB, R)
    out = np.take_along_axis(med, chosen[:, None, :], axis=1)[:, 0, :]  # (nB, R)
    return out.T, chosen.T


def _center(x: np.ndarray) -> np.ndarray:
    """Steps of a cell from its seeds (last axis): the geometric mean when every seed reached the
    target, else the median with inf (never reached) as slowest; NaN entries (no trial) left out."""
    finite = np.isfinite(x) & (x > 0)
    present = ~np.isnan(x)
    with np.errstate(all="ignore"):
        geo = np.exp(np.sum(np.where(finite, np.log(np.where(finite, x, 1.0)), 0.0), -1) / present.sum(-1))
    return np.where(np.all(finite | ~present, -1) & (present.sum(-1) > 0), geo, _nanmedian_inf(x))


def _nanmedian_inf(x: np.ndarray) -> np.ndarray:
    """Median over the last axis ignoring NaN, with inf as a value (all NaN: NaN)."""
    with np.errstate(all="ignore"):
        srt = np.sort(np.where(np.isnan(x), np.inf, x), axis=-1)
    n = np.sum(~np.isnan(x), axis=-1)
    lo = np.clip((n - 1) // 2, 0, x.shape[-1] - 1)
    hi = np.clip(n // 2, 0, x.shape[-1] - 1)
    a = np.take_along_axis(srt, lo[..., None], -1)[..., 0]
    b = np.take_along_axis(srt, hi[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore"):
        med = np.where(np.isinf(a) | np.isinf(b), np.maximum(a, b), (a + b) / 2)
    return np.where(n > 0, med, np.nan)
