"""Power-law learning curves with bootstrap confidence intervals.

Fits :math:`y = a x^b + c` (Hestness et al. 2017, "Deep Learning Scaling is
Predictable, Empirically": :math:`\\varepsilon(m) = \\alpha m^{\\beta_g} +
\\gamma`) or :math:`y = a x^b` by minimising the Huber loss on log residuals
(:mod:`analysis.robust`). Intervals come from the bootstrap; the extrapolation
check fits all but the largest ``x`` values and scores the held-out points by
the RMSE of :math:`\\log(\\hat y/y)` (Alabdulmohsin et al. 2022, "Revisiting
Neural Scaling Laws in Language and Vision").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.errors import AnalysisError
from analysis.robust import (Solution, batched_lm, huber_objective, lbfgs_multistart,
                             percentile_interval, resample_counts)

_EDGE = np.log1p(-1e-4)  # beyond this log(|a|x^b / c) the a < 0 branch is extended linearly


@dataclass(frozen=True)
class OffsetModel:
    """:math:`\\log \\hat y = \\log(c + s\\,e^{\\alpha} x^b)` with ``theta = (alpha, b, log c)``.

    ``sign`` is :math:`s = \\pm 1`: :math:`+1` for curves falling (or rising)
    away from a floor :math:`c`, :math:`-1` for curves rising to a ceiling
    :math:`c` such as accuracy. For :math:`s=-1` the log prediction is
    continued linearly (with a steep slope) where :math:`|a|x^b \\ge c`, so the
    objective stays finite and smooth for both solvers.
    """

    sign: float = 1.0
    n_params: int = 3

    def log_pred(self, theta, X, jac=True):
        lx = X[0]
        alpha, b, g = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
        u = alpha + b * lx
        if self.sign > 0:
            f = np.logaddexp(u, g)
            dfdu = np.exp(u - f)
        else:
            t = u - g
            tc = np.minimum(t, _EDGE)
            e = np.exp(tc)
            dfdu = -e / (1.0 - e)
            f = g + np.log1p(-e) + dfdu * (t - tc)
        if not jac:
            return f, None
        return f, np.stack([dfdu, dfdu * lx, 1.0 - dfdu], axis=-1)

    def natural(self, theta):
        """Columns ``(a, b, c)`` from rows of ``theta``."""
        theta = np.atleast_2d(theta)
        return np.column_stack([self.sign * np.exp(theta[:, 0]), theta[:, 1], np.exp(theta[:, 2])])


@dataclass(frozen=True)
class PureModel:
    """:math:`\\log \\hat y = \\alpha + b \\log x` with ``theta = (alpha, b)``, so :math:`a = e^{\\alpha}`."""

    n_params: int = 2

    def log_pred(self, theta, X, jac=True):
        lx = X[0]
        f = theta[:, 0:1] + theta[:, 1:2] * lx
        if not jac:
            return f, None
        return f, np.stack([np.ones_like(f), np.broadcast_to(lx, f.shape)], axis=-1)

    def natural(self, theta):
        theta = np.atleast_2d(theta)
        return np.column_stack([np.exp(theta[:, 0]), theta[:, 1]])


@dataclass(frozen=True, kw_only=True)
class Holdout:
    """Extrapolation check: fit without the largest ``x`` values, score them."""

    x: tuple[float, ...]
    """Held-out ``x`` values (the largest distinct ones)."""
    rmse_log: float
    """:math:`\\sqrt{\\mathrm{mean}\\,\\log(\\hat y/y)^2}` over held-out points."""
    params: tuple[float, ...]
    """Parameters of the fit without the held-out points."""
    converged: bool
    """Whether that fit converged."""


@dataclass(frozen=True, kw_only=True)
class PowerLawFit:
    """A fitted power law with percentile-bootstrap intervals for every parameter."""

    form: str
    """``"a*x^b + c"`` or ``"a*x^b"``."""
    names: tuple[str, ...]
    """Parameter names, in the order of ``params``."""
    params: tuple[float, ...]
    """Best-fit values."""
    ci_low: tuple[float, ...]
    """Lower ends of the intervals (NaN when the bootstrap could not run)."""
    ci_high: tuple[float, ...]
    """Upper ends of the intervals."""
    level: float
    """Coverage of the intervals, e.g. 0.95."""
    n_points: int
    """Points used in the fit."""
    n_distinct_x: int
    """Distinct ``x`` values among them."""
    converged: bool
    """Whether the full-data fit converged."""
    huber_loss: float
    """Mean Huber loss of log residuals at the fit."""
    delta: float
    """Huber threshold on log residuals."""
    r2_log: float
    """:math:`R^2` of the fit in log space."""
    rmse_log: float
    """RMSE of :math:`\\log(\\hat y / y)` over the fitted points."""
    resampling: str
    """``"points"`` (pairs bootstrap) or ``"replicates"`` (given, e.g. resampled seeds)."""
    n_boot: int
    """Bootstrap resamples drawn."""
    n_boot_converged: int
    """Resamples whose fit converged; only these enter the intervals."""
    holdout: Holdout | None
    """Extrapolation check, or None (see ``holdout_note``)."""
    holdout_note: str = ""
    """Why there is no extrapolation check, when there is none."""
    model: object = field(repr=False, compare=False)
    theta: np.ndarray = field(repr=False, compare=False)
    boot_theta: np.ndarray = field(repr=False, compare=False)
    x: np.ndarray = field(repr=False, compare=False)
    y: np.ndarray = field(repr=False, compare=False)

    def predict(self, x) -> np.ndarray:
        """Model value at ``x`` for the best fit."""
        f, _ = self.model.log_pred(self.theta[None, :], (np.log(np.asarray(x, float)),), jac=False)
        return np.exp(f[0])

    def band(self, x, level: float | None = None):
        """Pointwise percentile-bootstrap band ``(low, high)`` of the curve at ``x``."""
        lx = np.log(np.asarray(x, float))
        if self.boot_theta.shape[0] < 10:
            nan = np.full(lx.shape, np.nan)
            return nan, nan.copy()
        f, _ = self.model.log_pred(self.boot_theta, (lx,), jac=False)
        tail = 50.0 * (1.0 - (level or self.level))
        return np.exp(np.percentile(f, tail, axis=0)), np.exp(np.percentile(f, 100 - tail, axis=0))

    def to_dict(self) -> dict:
        """Plain Python values (floats, ints, str, lists, dicts; NaN becomes None)."""
        params = {n: {"value": _num(v), "ci_low": _num(lo), "ci_high": _num(hi)}
                  for n, v, lo, hi in zip(self.names, self.params, self.ci_low, self.ci_high)}
        hold = None if self.holdout is None else {
            "x": [float(v) for v in self.holdout.x], "rmse_log": _num(self.holdout.rmse_log),
            "params": [_num(v) for v in self.holdout.params], "converged": self.holdout.converged}
        return {"form": self.form, "params": params, "level": self.level,
                "n_points": self.n_points, "n_distinct_x": self.n_distinct_x,
                "converged": self.converged, "huber_loss": _num(self.huber_loss),
                "delta": self.delta, "r2_log": _num(self.r2_log), "rmse_log": _num(self.rmse_log),
                "resampling": self.resampling, "n_boot": self.n_boot,
                "n_boot_converged": self.n_boot_converged, "holdout": hold,
                "holdout_note": self.holdout_note}


def _num(v) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def check_xy(x, y, n_params: int, what: str = "x") -> tuple[np.ndarray, np.ndarray]:
    """Validate fit input; raise :class:`AnalysisError` naming the problem."""
    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    if x.shape != y.shape:
        raise AnalysisError(f"{what} and y differ in length ({x.size} vs {y.size})")
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if bad.any():
        raise AnalysisError(f"{int(bad.sum())} of {x.size} points have NaN or inf in {what} or y; "
                            "drop them first (failed or diverged trials?)")
    if x.size and x.min() <= 0:
        raise AnalysisError(f"a power law needs {what} > 0, got min {what} = {x.min():g}; "
                            "did you pass a log-transformed column?")
    if y.size and y.min() <= 0:
        raise AnalysisError(f"log residuals need y > 0, got min y = {y.min():g}; "
                            "a metric that can be negative (e.g. gap) cannot be fitted this way")
    distinct = np.unique(x).size
    if distinct < n_params + 1:
        raise AnalysisError(f"need at least {n_params + 1} distinct {what} values to fit "
                            f"{n_params} parameters and judge the misfit, got {distinct}")
    if np.ptp(np.log(y)) < 1e-12:
        raise AnalysisError(f"y is constant ({y[0]:g} at every point): there is no curve to fit")
    return x, y


def _starts(x, y, offset: bool, delta: float) -> list[tuple[object, np.ndarray]]:
    """Starting points as (model, theta) pairs.

    For :math:`y = a x^b + c` the model is linear in (a, c) at fixed b, so a
    grid of b is profiled by weighted least squares with weights
    :math:`1/y^2` (relative error), and the best local minima become starts.
    """
    lx, ly = np.log(x), np.log(y)
    slope, icpt = np.polyfit(lx, ly, 1)
    if not offset:
        return [(PureModel(), np.array([icpt, slope]))]
    m = lx.mean()
    bs = np.concatenate([np.linspace(-3, -0.02, 60), np.linspace(0.02, 3, 60)])
    z = np.exp(bs[:, None] * (lx - m))                           # (G, n)
    iy = 1.0 / y
    szz, sz1, s11 = (z * z * iy * iy).sum(1), (z * iy * iy).sum(1), (iy * iy).sum()
    tz, t1 = (z * iy).sum(1), iy.sum()
    det = szz * s11 - sz1 * sz1
    a = (tz * s11 - t1 * sz1) / det
    c = (szz * t1 - sz1 * tz) / det
    floor = 1e-3 * y.min()
    refit = c < floor
    c = np.where(refit, floor, c)
    a = np.where(refit, ((y - c[:, None]) * z * iy * iy).sum(1) / szz, a)
    a_log = np.log(np.abs(a) + 1e-300) - bs * m
    out = []
    for sign in (1.0, -1.0):
        keep = np.flatnonzero((np.sign(a) == sign) & np.isfinite(a_log) & (a != 0))
        if keep.size == 0:
            continue
        model = OffsetModel(sign=sign)
        th = np.column_stack([a_log[keep], bs[keep], np.log(c[keep])])
        val = huber_objective(model, th, (lx,), ly, np.ones_like(ly), delta)
        local = [i for i in range(keep.size)
                 if (i == 0 or val[i] <= val[i - 1]) and (i == keep.size - 1 or val[i] <= val[i + 1])]
        for i in sorted(local, key=lambda i: val[i])[:2]:
            out.append((val[i], model, th[i]))
    if not out:
        out.append((0.0, OffsetModel(sign=1.0), np.array([icpt, slope, np.log(floor)])))
    out.sort(key=lambda t: t[0])
    return [(mdl, th) for _, mdl, th in out[:3]]


def _full_fit(x, y, offset: bool, delta: float) -> tuple[object, Solution]:
    lx, ly = np.log(x), np.log(y)
    best_model, best = None, Solution(theta=np.zeros(3), value=np.inf, converged=False)
    by_model: dict[object, list[np.ndarray]] = {}
    for model, th in _starts(x, y, offset, delta):
        by_model.setdefault(model, []).append(th)
    for model, starts in by_model.items():
        sol = lbfgs_multistart(model, np.array(starts), (lx,), ly, delta=delta)
        if sol.value < best.value:
            best_model, best = model, sol
    return best_model, best


def _holdout(x, y, offset, delta, n_params, holdout):
    xs = np.unique(x)
    k = max(1, int(round(0.2 * xs.size))) if holdout is None else int(holdout)
    if k <= 0:
        return None, "extrapolation check turned off"
    if xs.size - k < n_params + 1:
        return None, (f"too few distinct x values ({xs.size}) to hold out {k} and still fit "
                      f"{n_params} parameters")
    cut = xs[-k]
    train = x < cut
    model, sol = _full_fit(x[train], y[train], offset, delta)
    f, _ = model.log_pred(sol.theta[None, :], (np.log(x[~train]),), jac=False)
    rmse = float(np.sqrt(np.mean((f[0] - np.log(y[~train])) ** 2)))
    params = tuple(float(v) for v in model.natural(sol.theta)[0])
    return Holdout(x=tuple(float(v) for v in xs[-k:]), rmse_log=rmse, params=params,
                   converged=bool(sol.converged)), ""


def fit_power_law(x, y, *, offset: bool = True, replicates=None, n_boot: int = 1000,
                  level: float = 0.95, delta: float = 1e-3, holdout: int | None = None,
                  seed: int = 0) -> PowerLawFit:
    """Fit :math:`y = a x^b + c` (or :math:`a x^b`) robustly, with bootstrap intervals.

    Parameters
    ----------
    x, y : array_like
        Positive, finite points; repeated ``x`` (seeds) are allowed.
    offset : bool
        Fit the offset :math:`c` (Hestness et al. 2017) or the pure power law.
    replicates : array_like, shape (R, n), optional
        Bootstrap replicates of ``y`` built by the caller, e.g. means over
        resampled seeds. Without them, points are resampled with replacement
        (pairs bootstrap) ``n_boot`` times.
    n_boot : int
        Resamples for the pairs bootstrap.
    level : float
        Interval coverage.
    delta : float
        Huber threshold on log residuals (Hoffmann et al. 2022 use 1e-3).
    holdout : int, optional
        Largest distinct ``x`` values to hold out for the extrapolation check;
        default 20 % of them (at least 1); 0 turns it off.
    seed : int
        Seed of the resampling generator.

    Returns
    -------
    PowerLawFit

    Raises
    ------
    AnalysisError
        On NaN/inf, non-positive values, constant y or too few distinct x.
    """
    p = 3 if offset else 2
    x, y = check_xy(x, y, p)
    model, sol = _full_fit(x, y, offset, delta)
    lx, ly = np.log(x), np.log(y)
    if replicates is not None:
        logy_b = np.log(np.asarray(replicates, float))
        weights = np.ones_like(logy_b)
        ok = np.all(np.isfinite(logy_b), axis=1)
        logy_b = np.where(np.isfinite(logy_b), logy_b, 0.0)
        resampling = "replicates"
    else:
        weights = resample_counts(x.size, n_boot, np.random.default_rng(seed))
        logy_b = ly
        onehot = np.unique(x, return_inverse=True)[1][:, None] == np.arange(np.unique(x).size)
        ok = ((weights @ onehot) > 0).sum(1) >= p
        resampling = "points"
    start = np.broadcast_to(sol.theta, (weights.shape[0], p))
    boot = batched_lm(model, start, (lx,), logy_b, weights, delta=delta)
    good = ok & boot.converged
    natural = model.natural(boot.theta)
    lo, hi = percentile_interval(natural, good, level)
    f, _ = model.log_pred(sol.theta[None, :], (lx,), jac=False)
    res = f[0] - ly
    hold, note = _holdout(x, y, offset, delta, p, holdout)
    return PowerLawFit(
        form="a*x^b + c" if offset else "a*x^b", names=("a", "b", "c")[:p],
        params=tuple(float(v) for v in model.natural(sol.theta)[0]),
        ci_low=tuple(float(v) for v in lo), ci_high=tuple(float(v) for v in hi), level=level,
        n_points=int(x.size), n_distinct_x=int(np.unique(x).size), converged=bool(sol.converged),
        huber_loss=float(sol.value) * delta, delta=delta,
        r2_log=float(1.0 - (res ** 2).sum() / ((ly - ly.mean()) ** 2).sum()),
        rmse_log=float(np.sqrt(np.mean(res ** 2))), resampling=resampling,
        n_boot=int(weights.shape[0]), n_boot_converged=int(good.sum()), holdout=hold,
        holdout_note=note, model=model, theta=sol.theta, boot_theta=boot.theta[good], x=x, y=y)
