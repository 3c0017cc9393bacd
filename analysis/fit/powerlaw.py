r"""Power-law learning curves with bootstrap confidence intervals.

Fits :math:`y = a x^b + c` (Hestness et al. 2017, "Deep Learning Scaling is
Predictable, Empirically": :math:`\varepsilon(m) = \alpha m^{\beta_g} +
\gamma`) or :math:`y = a x^b` by minimising the Huber loss on log residuals
(:mod:`analysis.stats.robust`). Intervals come from the bootstrap; the extrapolation
check fits all but the largest ``x`` values and scores the held-out points by
the RMSE of :math:`\log(\hat y/y)` (Alabdulmohsin et al. 2022, "Revisiting
Neural Scaling Laws in Language and Vision").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.errors import AnalysisError
from analysis.stats.result import ScalingFit, num, summarise
from analysis.stats.robust import Solution, bootstrap, fit_auto, huber_objective

_FLOOR = 1e-6  # below this relative prediction, log is continued linearly


def safe_log(pred):
    r""":math:`\log p` for :math:`p \ge \epsilon`, continued linearly below.

    The slope below :math:`\epsilon` is :math:`1/\epsilon`. Returns
    ``(f, df/dp)``. Keeps the objective finite and continuously differentiable
    where a trial step makes the prediction non-positive, so both solvers see
    one objective; the steep slope makes such points costly.
    """
    p = np.maximum(pred, _FLOOR)
    return np.log(p) + (pred - p) / _FLOOR, 1.0 / p


@dataclass(frozen=True)
class OffsetModel:
    r""":math:`\hat y = s\,(c + a\,e^{b(\log x - m)})` with ``theta = (a, b, c)``.

    The constants :math:`m` (mean log x) and :math:`s` (geometric mean of y)
    only rescale, so ``a``, ``c`` are of order one and ``c`` may reach zero or
    below without leaving the parameter space; a sign of ``a`` is not assumed
    (negative for a rising accuracy curve). Natural parameters are
    :math:`(s\,a\,e^{-bm},\; b,\; s\,c)`.
    """

    m: float = 0.0
    log_s: float = 0.0
    n_params: int = 3
    box: tuple | None = None
    """Bounds ``(low, high)`` on ``theta`` (:func:`monotone_box`), or None: unbounded."""

    def log_pred(self, theta, X, jac=True):
        lx = X[0] - self.m
        a, b, c = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
        z = np.exp(np.minimum(b * lx, 700.0))
        f, dfdp = safe_log(c + a * z)
        if not jac:
            return f + self.log_s, None
        J = np.empty((theta.shape[0], 3, lx.size))
        np.multiply(dfdp, z, out=J[:, 0])
        np.multiply(J[:, 0], a * lx, out=J[:, 1])
        J[:, 2] = dfdp
        return f + self.log_s, J

    def natural(self, theta):
        """Columns ``(a, b, c)`` in data units from rows of ``theta``."""
        theta = np.atleast_2d(theta)
        s = np.exp(self.log_s)
        return np.column_stack([s * theta[:, 0] * np.exp(-theta[:, 1] * self.m), theta[:, 1],
                                s * theta[:, 2]])


@dataclass(frozen=True)
class PureModel:
    r""":math:`\log \hat y = \alpha + b(\log x - m)`, ``theta = (alpha, b)``.

    Natural parameters are :math:`a = e^{\alpha - bm}` and :math:`b`.
    """

    m: float = 0.0
    n_params: int = 2
    box: tuple | None = None
    """Bounds ``(low, high)`` on ``theta`` (:func:`monotone_box`), or None: unbounded."""

    def log_pred(self, theta, X, jac=True):
        lx = X[0] - self.m
        f = theta[:, 0:1] + theta[:, 1:2] * lx
        if not jac:
            return f, None
        J = np.empty((theta.shape[0], 2, lx.size))
        J[:, 0] = 1.0
        J[:, 1] = lx
        return f, J

    def natural(self, theta):
        theta = np.atleast_2d(theta)
        return np.column_stack([np.exp(theta[:, 0] - theta[:, 1] * self.m), theta[:, 1]])


SHAPES = ("falling", "rising")
"""What ``monotone`` may ask of a curve: fall towards ``c`` (a loss, an error) or rise towards it."""


def monotone_box(offset: bool, monotone: str | None) -> tuple | None:
    r"""Bounds on ``theta`` that make :math:`a x^b (+ c)` monotone, or None.

    ``falling``: :math:`a \ge 0,\ b \le 0,\ c \ge 0` (a loss or error that falls towards
    its floor :math:`c`); ``rising``: :math:`a \le 0,\ b \le 0,\ c \ge 0` with the offset
    (an accuracy rising towards :math:`c`), :math:`b \ge 0` without it. The scaled
    parameters of :class:`OffsetModel` have the signs of the natural ones.
    """
    if monotone is None:
        return None
    if monotone not in SHAPES:
        raise AnalysisError(f"monotone must be one of {SHAPES} or None, got {monotone!r}")
    inf = np.inf
    if not offset:
        return ((-inf, -inf), (inf, 0.0)) if monotone == "falling" else ((-inf, 0.0), (inf, inf))
    if monotone == "falling":
        return ((0.0, -inf, 0.0), (inf, 0.0, inf))
    return ((-inf, -inf, 0.0), (0.0, 0.0, inf))


def at_bound(model, theta) -> tuple[bool, ...]:
    """Per parameter of ``theta`` (one row): whether it sits on a bound of ``model.box``."""
    if model.box is None:
        return (False,) * model.n_params
    lo, hi = (np.asarray(v, float) for v in model.box)
    t = np.asarray(theta, float).ravel()
    return tuple(bool(v) for v in (t <= lo) | (t >= hi))


@dataclass(frozen=True, kw_only=True)
class Holdout:
    """Extrapolation check: fit without the largest ``x`` values, score them."""

    x: tuple[float, ...]
    """Held-out ``x`` values (the largest distinct ones)."""
    rmse_log: float | None
    r""":math:`\sqrt{\mathrm{mean}\,\log(\hat y/y)^2}` over held-out points; None when a
    held-out prediction is undefined (<= 0, or outside the metric's bounds)."""
    params: tuple[float, ...]
    """Parameters of the fit without the held-out points."""
    converged: bool
    """Whether that fit converged."""
    in_sample_rmse_log: float = float("nan")
    """RMSE of log(pred/true) of that fit on the points it was fitted to."""
    delta: float = float("nan")
    """Huber threshold of that fit (given, or chosen on the remaining points only)."""
    n_undefined: int = 0
    """Held-out predictions that are undefined."""

    @property
    def ratio(self) -> float | None:
        """Held-out over in-sample RMSE-log; None when either is undefined."""
        if self.rmse_log is None or not self.in_sample_rmse_log > 0:
            return None
        return self.rmse_log / self.in_sample_rmse_log


@dataclass(frozen=True, kw_only=True)
class PowerLawFit(ScalingFit):
    """A power law :math:`y = a x^b (+ c)` with bootstrap intervals (see :class:`ScalingFit`)."""

    n_distinct_x: int = 0
    """Distinct ``x`` values among the points."""
    holdout: Holdout | None = None
    """Extrapolation check, or None (see ``holdout_note``)."""
    holdout_note: str = ""
    """Why there is no extrapolation check, when there is none."""
    monotone: str | None = None
    """``"falling"`` or ``"rising"``: the bounds the fit kept (:func:`monotone_box`); None:
    unbounded."""
    at_bound: tuple[str, ...] = ()
    """Parameters whose best-fit value sits on a bound (``b`` at 0: the data do not fall)."""
    x: np.ndarray = field(repr=False, compare=False, default=None)
    y: np.ndarray = field(repr=False, compare=False, default=None)

    def predict(self, x) -> np.ndarray:
        """Best-fit curve at ``x``."""
        return np.exp(self._log_pred((np.log(np.asarray(x, float)),), self.theta)[0])

    def band(self, x, level: float | None = None):
        """Pointwise percentile-bootstrap band ``(low, high)`` of the curve at ``x``."""
        return self._band((np.log(np.asarray(x, float)),), level)

    def to_dict(self) -> dict:
        h = self.holdout
        hold = None if h is None else {
            "form": self.form, "x": [float(v) for v in h.x],
            "rmse_log": None if h.rmse_log is None else num(h.rmse_log),
            "in_sample_rmse_log": num(h.in_sample_rmse_log),
            "ratio": None if h.ratio is None else num(h.ratio), "n_undefined": h.n_undefined,
            "delta": num(h.delta), "params": [num(v) for v in h.params],
            "converged": h.converged}
        return {**super().to_dict(), "n_distinct_x": self.n_distinct_x, "holdout": hold,
                "holdout_note": self.holdout_note, "monotone": self.monotone,
                "bounds": bound_text(self.form, self.monotone), "at_bound": list(self.at_bound)}


def bound_text(form: str, monotone: str | None) -> str:
    """The bounds of a fit in words, e.g. ``"a >= 0, b <= 0, c >= 0 (falling)"``; "" for none."""
    if monotone is None:
        return ""
    if "c" not in form:
        return f"b {'<=' if monotone == 'falling' else '>='} 0 ({monotone})"
    return f"a {'>=' if monotone == 'falling' else '<='} 0, b <= 0, c >= 0 ({monotone})"


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


def _starts(x, y, offset: bool, delta: float, box=None):
    """The model and starting points for the full fit (inside ``box`` when given).

    For :math:`y = a x^b + c` the model is linear in (a, c) at fixed b, so a
    grid of b is profiled by least squares with weights :math:`1/y^2`
    (relative error), and the best local minima of the Huber objective along
    the grid become the starts (variable projection; Golub & Pereyra 1973).
    """
    lx, ly = np.log(x), np.log(y)
    m = float(lx.mean())
    slope, icpt = np.polyfit(lx - m, ly, 1)
    if not offset:
        model = PureModel(m=m, box=box)
        return model, _inside(model, np.array([[icpt, slope]]))
    model = OffsetModel(m=m, log_s=float(ly.mean()), box=box)
    yn = np.exp(ly - model.log_s)
    bs = np.concatenate([np.linspace(-3, -0.02, 60), np.linspace(0.02, 3, 60)])
    z = np.exp(bs[:, None] * (lx - m)) / yn                      # (G, n), scaled by 1/y
    iy = 1.0 / yn
    szz, sz1, s11 = (z * z).sum(1), (z * iy).sum(1), (iy * iy).sum()
    tz, t1 = z.sum(1), iy.sum()
    det = szz * s11 - sz1 * sz1
    a = (tz * s11 - t1 * sz1) / det
    c = (szz * t1 - sz1 * tz) / det
    th = _inside(model, np.column_stack([a, bs, c]))
    th = th[np.all(np.isfinite(th), axis=1)]
    val = huber_objective(model, th, (lx,), ly, np.ones_like(ly), delta)
    local = [i for i in range(val.size)
             if (i == 0 or val[i] <= val[i - 1]) and (i == val.size - 1 or val[i] <= val[i + 1])]
    keep = sorted(local, key=lambda i: val[i])[:4]
    pure = np.array([[np.exp(icpt - model.log_s), slope, 0.0]])  # a x^b through the data, c = 0
    flat = np.array([[0.0, 0.0, 1.0]])  # the constant through the data's geometric mean
    return model, _inside(model, np.vstack([th[keep], pure, flat]))


def _inside(model, theta):
    """Rows of ``theta`` moved into ``model.box`` (unchanged without one)."""
    if model.box is None:
        return theta
    return np.clip(theta, *(np.asarray(v, float) for v in model.box))


def _full_fit(x, y, offset: bool, delta: float | None, box=None):
    """(model, solution, delta, starts) for the full data."""
    with np.errstate(all="ignore"):  # extreme inputs overflow harmlessly in the profile
        model, starts = _starts(x, y, offset, 1.0, box)
    sol, delta = fit_auto(model, starts, (np.log(x),), np.log(y), delta)
    return model, sol, delta, starts


def natural_curve(params, x, offset: bool) -> np.ndarray:
    """:math:`a x^b (+ c)` at ``x`` from natural parameters, unclamped (may be <= 0)."""
    x = np.asarray(x, float)
    with np.errstate(all="ignore"):
        return params[0] * x ** params[1] + (params[2] if offset else 0.0)


def _holdout(x, y, offset, delta, n_params, holdout, bounds=None, box=None):
    """Refit without the ``holdout`` largest distinct x (Huber delta: the caller's, or chosen on
    the remaining points only) and score them; undefined predictions make the RMSE None."""
    xs = np.unique(x)
    k = max(1, int(round(0.2 * xs.size))) if holdout is None else int(holdout)
    if k <= 0:
        return None, "extrapolation check turned off"
    if xs.size - k < n_params + 1:
        return None, (f"too few distinct x values ({xs.size}) to hold out {k} and still fit "
                      f"{n_params} parameters")
    cut = xs[-k]
    train = x < cut
    model, sol, used, _ = _full_fit(x[train], y[train], offset, delta, box)
    params = tuple(float(v) for v in model.natural(sol.theta)[0])
    pred = natural_curve(params, x[~train], offset)
    low, high = bounds if bounds is not None else (0.0, None)
    ok = np.isfinite(pred) & (pred > 0) & (pred >= low)
    if high is not None:
        ok &= pred <= high
    with np.errstate(all="ignore"):
        rmse = float(np.sqrt(np.mean((np.log(pred) - np.log(y[~train])) ** 2))) if ok.all() \
            else None
        inside = natural_curve(params, x[train], offset)
        in_rmse = float(np.sqrt(np.mean((np.log(inside) - np.log(y[train])) ** 2))) \
            if np.all(inside > 0) else float("nan")
    return Holdout(x=tuple(float(v) for v in xs[-k:]), rmse_log=rmse, params=params,
                   converged=bool(sol.converged), in_sample_rmse_log=in_rmse, delta=used,
                   n_undefined=int((~ok).sum())), ""


def fit_power_law(x, y, *, offset: bool = True, replicates=None, n_boot: int = 1000,
                  level: float = 0.95, delta: float | None = None, holdout: int | None = None,
                  seed: int = 0, resampling=None, bounds=None,
                  monotone: str | None = None) -> PowerLawFit:
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
    delta : float, optional
        Huber threshold on log residuals. Hoffmann et al. (2022) use 1e-3,
        which makes the loss nearly absolute error; by default it is set from
        the residual scale (:func:`analysis.stats.robust.auto_delta`, never below
        1e-3) and reported.
    holdout : int, optional
        Largest distinct ``x`` values to hold out for the extrapolation check;
        default 20 % of them (at least 1); 0 turns it off. The check's Huber
        threshold is ``delta`` when given, else chosen on the remaining points
        only, like its parameters.
    seed : int
        Seed of the resampling generator.
    resampling : analysis.tables.cells.Resampling, optional
        For ``replicates`` from the clustered seed bootstrap: intervals are the
        estimate +- a t quantile times the rescaled bootstrap sd instead of
        percentiles.
    bounds : (low, high), optional
        The metric's range (``high`` None when unbounded above): a held-out
        prediction outside it, or <= 0, is undefined and so is the check's RMSE.
    monotone : {"falling", "rising"}, optional
        Constrain the curve to fall (a >= 0, b <= 0, c >= 0) or rise towards its
        offset (:func:`monotone_box`), in the full fit, every resample and the
        check; intervals are clipped to the same bounds. None fits without bounds.

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
    if replicates is not None and (np.ndim(replicates) != 2
                                   or np.shape(replicates)[1] != x.size):
        raise AnalysisError(f"replicates must have shape (R, {x.size}), "
                            f"got {np.shape(replicates)}")
    given = delta
    box = monotone_box(offset, monotone)
    model, sol, delta, starts = _full_fit(x, y, offset, delta, box)
    if box is not None and offset and (sol.theta[0] == 0 or sol.theta[1] == 0):
        # a flat curve is flat whichever bound it reached (a = 0 leaves b free, b = 0 leaves
        # a + c): write it one way, a = b = 0 and c its level, the same objective
        sol = Solution(theta=np.array([0.0, 0.0, sol.theta[0] + sol.theta[2]]), value=sol.value,
                       converged=sol.converged)
    X, ly = (np.log(x),), np.log(y)
    inverse = np.unique(x, return_inverse=True)[1]
    onehot = inverse[:, None] == np.arange(inverse.max() + 1)

    def well_posed(counts):
        return ((counts @ onehot) > 0).sum(1) >= p

    boot = bootstrap(model, sol.theta, X, ly, delta=delta, replicates=replicates,
                     n_boot=n_boot, seed=seed, well_posed=well_posed, starts=starts)
    hold, note = _holdout(x, y, offset, given, p, holdout, bounds, box)
    summary = summarise(model, sol, boot, X, ly, level=level, delta=delta,
                        resampling=resampling if replicates is not None else None)
    if box is not None:  # an interval of a bounded parameter ends at its bound
        lo, hi = np.array(box[0], float), np.array(box[1], float)
        if not offset:  # a = exp(alpha) > 0 whatever the bound on alpha
            lo[0], hi[0] = -np.inf, np.inf
        summary["ci_low"] = tuple(float(v) for v in np.clip(summary["ci_low"], lo, hi))
        summary["ci_high"] = tuple(float(v) for v in np.clip(summary["ci_high"], lo, hi))
    names = ("a", "b", "c")[:p]
    pinned = tuple(n for n, b in zip(names, at_bound(model, sol.theta)) if b)
    if offset and "b" in pinned:  # flat: a = 0 and the level c are what the bounds allow,
        nan = float("nan")         # not estimates with an interval
        summary["ci_low"] = (nan, summary["ci_low"][1], nan)
        summary["ci_high"] = (nan, summary["ci_high"][1], nan)
    return PowerLawFit(form="a*x^b + c" if offset else "a*x^b", names=names, **summary,
                       n_distinct_x=int(onehot.shape[1]), holdout=hold, holdout_note=note,
                       x=x, y=y, monotone=monotone, at_bound=pinned)
