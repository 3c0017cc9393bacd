r"""Fit one curve family, or choose one by rolling-origin validation, with honest warnings.

:func:`fit_form` fits a named family of :mod:`analysis.fit.forms.families` (or ``"auto"``)
with bootstrap intervals and a held-out extrapolation check;
:func:`select_form` chooses the family that extrapolates best on the fitted
points alone (:mod:`analysis.fit.forms.selection`); :func:`analysis.fit.forms.prediction.predict`
turns a fit into predictions with a confidence band and a prediction
interval. Warnings are fields of the results, never printed here.

**Bounded metrics.** A metric with bounds (``low``, ``high``) is an error
rate or an accuracy. Accuracy is fitted as the error ``high - y``, which
falls with scale like every family here; intervals and predictions are
turned back into accuracy. :func:`detect_bounds` assumes [0, 1] when every
value lies in it and the name says err/error/acc, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.errors import AnalysisError
from analysis.fit.forms.base import Form
from analysis.fit.forms.bounds import Bounds, defined, num_or_none, prepare, rmse_log
from analysis.fit.forms.registry import FORMS
from analysis.stats.result import num
from analysis.stats.robust import percentile_interval

HOLDOUT_RATIO = 3.0
"""Warn when the held-out RMSE-log exceeds this multiple of the in-sample RMSE-log ..."""

HOLDOUT_FLOOR = 1e-3
"""... and exceeds this (0.1 %): below it both errors are at the level of rounding."""


@dataclass(frozen=True, kw_only=True)
class HoldoutCheck:
    """Extrapolation check: fit without the largest ``x`` values, predict them."""

    x: tuple[float, ...]
    """Held-out ``x`` values (the largest distinct ones)."""
    form: str
    """Family refitted: the one that predicts (for ``auto``, chosen on every point)."""
    rmse_log: float | None
    r""":math:`\sqrt{\mathrm{mean}\,\log(\hat y/y)^2}` on held-out points; None if any undefined."""
    in_sample_rmse_log: float
    """RMSE-log of the same fit on the points it was fitted to."""
    n_undefined: int
    """Held-out predictions that are undefined (<= 0 or outside the bounds)."""

    @property
    def ratio(self) -> float | None:
        if self.rmse_log is None or not self.in_sample_rmse_log > 0:
            return None
        return self.rmse_log / self.in_sample_rmse_log

    def to_dict(self) -> dict:
        return {"x": list(self.x), "form": self.form, "rmse_log": num_or_none(self.rmse_log),
                "in_sample_rmse_log": num(self.in_sample_rmse_log),
                "ratio": num_or_none(self.ratio), "n_undefined": self.n_undefined}


@dataclass(frozen=True, kw_only=True)
class FormFit:
    """One family fitted to one curve, with bootstrap intervals, a held-out check and warnings."""

    form: str
    """Family name (``M1`` ... ``M4``, ``BNSL``)."""
    formula: str
    """The family's formula."""
    names: tuple[str, ...]
    """Parameter names."""
    params: tuple[float, ...]
    """Best-fit values (of the fitted quantity, see ``bounds.fitted``)."""
    ci_low: tuple[float, ...]
    """Percentile-bootstrap lower ends (NaN when too few resamples, or see ``interval_note``)."""
    ci_high: tuple[float, ...]
    """Upper ends."""
    level: float
    """Coverage of the intervals."""
    n_points: int
    """Points fitted."""
    rmse_log: float
    """In-sample RMSE of log(prediction / y)."""
    converged: bool
    """Whether the full-data fit converged."""
    bounds: Bounds
    """The metric's bounds and whether it was fitted as an error."""
    holdout: HoldoutCheck | None
    """Extrapolation check, or None (see ``holdout_note``)."""
    holdout_note: str = ""
    """Why there is no extrapolation check."""
    selection: object = None
    """The :class:`analysis.fit.forms.selection.Selection` that chose the family, for ``auto``."""
    spread: float | None = None
    """Extrapolation error sd per unit of log x past the data, from rolling-origin backtests
    (:mod:`analysis.fit.forms.selection`); None when the data are too short to backtest."""
    offset: float | None = None
    """Extrapolation error sd just past the data (the backtests' intercept, with ``spread``)."""
    horizon: float = 2.0
    """Extrapolation ratio the backtests validated (furthest backtest x / its origin)."""
    spread_df: int = 1
    """Degrees of freedom of ``spread`` (backtest origins - 1): predictions use a t quantile."""
    warnings: tuple[str, ...] = ()
    """What a reader must know before trusting the numbers, one sentence each."""
    interval_note: str = ""
    """Why the parameters have no intervals (the refits still make prediction bands)."""
    n_boot: int = 0
    """Bootstrap resamples drawn."""
    n_boot_used: int = 0
    """Resamples whose refit was usable."""
    model: Form = field(repr=False, compare=False, default=None)
    x: np.ndarray = field(repr=False, compare=False, default=None)
    e: np.ndarray = field(repr=False, compare=False, default=None)
    boot_params: np.ndarray = field(repr=False, compare=False, default=None)

    def predict(self, x) -> np.ndarray:
        """Best-fit curve at ``x`` in the metric's units; NaN where undefined."""
        e = self.model.predict(np.asarray(self.params), np.atleast_1d(np.asarray(x, float)))
        return np.where(defined(e, self.bounds), self.bounds.from_error(e), np.nan)

    def log_residuals(self) -> np.ndarray:
        """log(prediction / observation) of the fitted quantity at the fitted points."""
        with np.errstate(all="ignore"):
            return np.log(self.model.predict(np.asarray(self.params), self.x)) - np.log(self.e)

    def to_dict(self) -> dict:
        """Plain Python values (NaN and inf become None)."""
        params = {n: {"value": num(v), "ci_low": num(lo), "ci_high": num(hi)}
                  for n, v, lo, hi in zip(self.names, self.params, self.ci_low, self.ci_high)}
        return {"form": self.form, "formula": self.formula, "params": params,
                "level": self.level, "n_points": self.n_points, "rmse_log": num(self.rmse_log),
                "converged": self.converged, "bounds": self.bounds.to_dict(),
                "holdout": None if self.holdout is None else self.holdout.to_dict(),
                "holdout_note": self.holdout_note,
                "selection": None if self.selection is None else self.selection.to_dict(),
                "interval_note": self.interval_note,
                "spread": num_or_none(self.spread), "offset": num_or_none(self.offset),
                "spread_df": self.spread_df, "horizon": self.horizon,
                "warnings": list(self.warnings),
                "n_boot": self.n_boot,
                "n_boot_used": self.n_boot_used}


def fit_named(form: Form, x, e, bounds: Bounds):
    """Full fit of ``form`` to the fitted quantity ``e``: ``(Fitted, in-sample rmse_log)``."""
    lo, hi = bounds.error_range()
    fitted = form.fit(x, e, low=lo, high=hi)
    pred = form.predict(fitted.params, x)
    return fitted, rmse_log(pred, e)


def fit_form(x, y, form: str = "auto", *, bounds: Bounds | None = None, n_boot: int = 200,
             level: float = 0.95, holdout: int | None = None, seed: int = 0) -> FormFit:
    """Fit a curve family (or choose one with ``"auto"``) with bootstrap intervals and checks.

    Parameters
    ----------
    x, y : array_like
        Positive scale and metric values; repeated ``x`` are allowed.
    form : str
        ``"M1"`` ... ``"M4"``, ``"BNSL"`` or ``"auto"`` (:func:`analysis.fit.forms.selection.select_form`).
    bounds : Bounds, optional
        The metric's bounds (see :func:`detect_bounds`); a loss by default.
    n_boot : int
        Pairs-bootstrap resamples for the intervals and for predictions.
    level : float
        Interval coverage.
    holdout : int, optional
        Largest distinct ``x`` values held out for the extrapolation check
        (default 20 %, at least 1; 0 turns it off). The check refits the family that
        predicts (for ``auto``, the family chosen on every point) without them.
    seed : int
        Seed of the bootstrap.

    Returns
    -------
    FormFit
    """
    if form != "auto" and form not in FORMS:
        raise AnalysisError(f"unknown form {form!r}; choose one of: auto, {', '.join(FORMS)}")
    if not 0.0 < level < 1.0:
        raise AnalysisError(f"level must be between 0 and 1 (e.g. 0.95), got {level}")
    x, e, bounds = prepare(x, y, bounds, 2)
    form, selection, (offset, spread, df, horizon), warn = _family(form, x, e, bounds)
    model = FORMS[form]
    if np.unique(x).size < model.n_params + 1:
        raise AnalysisError(f"{form} has {model.n_params} parameters and needs at least "
                            f"{model.n_params + 1} distinct x values, got {np.unique(x).size}")
    fitted, in_rmse = fit_named(model, x, e, bounds)
    lo, hi = bounds.error_range()
    boot = model.bootstrap(x, e, fitted.params, low=lo, high=hi, n_boot=n_boot, seed=seed) \
        if n_boot > 0 else np.empty((0, model.n_params))
    ci_lo, ci_hi = percentile_interval(boot, level)
    why = f"no {form} parameter intervals: {model.no_interval}" if model.no_interval else ""
    if why:
        ci_lo, ci_hi = np.full(model.n_params, np.nan), np.full(model.n_params, np.nan)
    check, note = holdout_check(x, e, form, bounds, holdout)
    warn += shape_warnings(model, fitted.params, x, bounds)
    if in_rmse is None:
        warn.insert(0, "the fitted curve is undefined (<= 0 or outside the bounds) at some "
                       "fitted points")
    warn += rising_end_warnings(x, e)
    if not fitted.converged:
        warn.append(f"the {form} fit did not converge (the optimiser's last step still "
                    "improved the objective); its parameters may be unidentified")
    warn += holdout_warnings(check)
    if n_boot > 0 and boot.shape[0] < 10:
        warn.append("too few usable bootstrap resamples for intervals")
    return FormFit(form=form, formula=model.formula, names=model.names,
                   params=tuple(float(v) for v in fitted.params),
                   ci_low=tuple(float(v) for v in ci_lo), ci_high=tuple(float(v) for v in ci_hi),
                   level=level, n_points=int(x.size), rmse_log=float(in_rmse or np.nan),
                   converged=fitted.converged, bounds=bounds, holdout=check, holdout_note=note,
                   selection=selection, spread=spread, offset=offset, spread_df=df, horizon=horizon,
                   interval_note=why,
                   warnings=tuple(warn),
                   n_boot=int(n_boot), n_boot_used=int(boot.shape[0]), model=model, x=x, e=e,
                   boot_params=boot)


def _family(form, x, e, bounds):
    """``(family, Selection | None, (offset, spread, df, horizon), warnings)``: auto's choice
    and its backtest.

    A function of the fitted points only (never of where predictions are wanted).
    """
    from analysis.fit.forms.selection import HORIZON, select_form

    warn = []
    if form == "auto":
        form, selection, note = choose(x, e, bounds)
        warn += [note] if note else []
        spread = None if selection is None else selection.spread.get("auto")
        offset = None if selection is None else selection.offset.get("auto")
        df = 1 if selection is None else selection.df
        horizon = HORIZON if selection is None else selection.horizon
    else:
        selection = None
        try:
            sel = select_form(x, bounds.from_error(e), bounds=bounds, candidates=(form,))
            spread, offset, df = sel.spread.get(form), sel.offset.get(form), sel.df
            horizon = sel.horizon
        except AnalysisError:
            spread, offset, df, horizon = None, None, 1, HORIZON
    if spread is None:
        warn.append("no rolling-origin backtest of this form (too few points): prediction "
                    "intervals past the data leave out the extrapolation error")
    return form, selection, (offset, spread, df, horizon), warn


def choose(x, e, bounds: Bounds):
    """``(family, Selection | None, note)`` for auto; the prior's favourite it can fit when
    the curve is too short to backtest."""
    from analysis.fit.forms.selection import PRIOR, select_form

    try:
        sel = select_form(x, bounds.from_error(e), bounds=bounds)
        return sel.chosen, sel, ""
    except AnalysisError as err:
        distinct = np.unique(x).size
        order = sorted(PRIOR, key=lambda k: (-PRIOR[k], -FORMS[k].n_params))
        form = next((f for f in order if distinct >= FORMS[f].n_params + 1), "M1")
        return form, None, (f"auto could not choose ({err}); fitted {form}, the family of "
                            "largest prior weight (then the richest) these points can fit; "
                            "force another with "
                            "--form (M1 needs 3 distinct x, M2 4, M3 5, M4 6, BNSL 7)")


def holdout_check(x, e, form: str, bounds: Bounds, holdout: int | None):
    """``(HoldoutCheck | None, note)``: refit ``form`` without the ``holdout`` largest x, score them."""
    xs = np.unique(x)
    k = max(1, round(0.2 * xs.size)) if holdout is None else int(holdout)
    if k <= 0:
        return None, "extrapolation check turned off"
    train = x < xs[-k] if k <= xs.size else np.zeros(x.size, bool)
    need = FORMS[form].n_params + 1
    if np.unique(x[train]).size < need:
        return None, (f"too few distinct x values ({xs.size}) to hold out {k} and still fit "
                      f"{form}")
    fitted, in_rmse = fit_named(FORMS[form], x[train], e[train], bounds)
    pred = FORMS[form].predict(fitted.params, x[~train])
    ok = defined(pred, bounds)
    out = rmse_log(pred, e[~train]) if ok.all() else None
    return HoldoutCheck(x=tuple(float(v) for v in xs[-k:]), form=form, rmse_log=out,
                        in_sample_rmse_log=float(in_rmse or np.nan),
                        n_undefined=int((~ok).sum())), ""


def holdout_warnings(check: HoldoutCheck | None) -> list[str]:
    if check is None:
        return []
    if check.rmse_log is None:
        return [(f"{check.n_undefined} of {len(check.x)} held-out predictions are undefined "
                "(<= 0 or outside the bounds), so the held-out error is undefined")]
    if check.ratio is not None and check.ratio > HOLDOUT_RATIO and check.rmse_log > HOLDOUT_FLOOR:
        return [(f"the held-out RMSE-log ({check.rmse_log:.3g}) is {check.ratio:.1f}x the "
                f"in-sample one ({check.in_sample_rmse_log:.3g}): the fit describes the data "
                "better than it extrapolates")]
    return []


def rising_end_warnings(x, e) -> list[str]:
    """A warning when the fitted points themselves rise at the end.

    With :math:`m` the log of the fitted quantity (a loss or an error; mean over repeats) at
    each distinct ``x``: the last point lies above the minimum over the smaller ``x`` by more
    than three noise sds (and 0.1 %), and the last step rises. The noise sd comes from the
    second differences of :math:`m` (median absolute value / 0.6745 / sqrt 6), which a smooth
    curve leaves near zero and a bend at the end does not move. No falling family follows
    such points, so predictions past them are doubtful.
    """
    xs, inv = np.unique(x, return_inverse=True)
    if xs.size < 4:
        return []
    with np.errstate(all="ignore"):
        m = np.log(np.bincount(inv, weights=e) / np.bincount(inv))
    noise = float(np.median(np.abs(np.diff(m, 2)))) / 0.6745 / np.sqrt(6.0)
    low = int(np.argmin(m[:-1]))
    if m[-1] - m[low] > max(3.0 * noise, 1e-3) and m[-1] > m[-2]:
        return [(f"the fitted points rise at the end (at x = {xs[-1]:.3g} the metric is "
                f"{np.expm1(m[-1] - m[low]):.1%} worse than at x = {xs[low]:.3g}): a falling "
                "family cannot follow, so predictions past the data are doubtful")]
    return []


def shape_warnings(model: Form, params, x, bounds: Bounds, decades: float = 3.0) -> list[str]:
    """Warnings when a falling curve's fit rises, or leaves the metric's range, near the data.

    The fitted quantity (a loss or an error) must fall with ``x``; the curve is
    checked on a log grid from the smallest ``x`` to ``decades`` decades past
    the largest, and in the limit :math:`x \\to \\infty` (``1e12`` times the
    largest ``x``).
    """
    xmin, xmax = float(np.min(x)), float(np.max(x))
    grid = np.logspace(np.log10(xmin), np.log10(xmax) + decades, 400)
    grid = np.append(grid, xmax * 1e12)
    with np.errstate(all="ignore"):
        e = model.predict(np.asarray(params), grid)
    out = []
    bad = ~defined(e, bounds)
    if bad.any():
        where = "within" if grid[np.argmax(bad)] <= xmax else "beyond"
        lo, hi = bounds.error_range()
        what = "<= 0" if hi is None else f"outside [{lo:g}, {hi:g}]"
        out.append(f"the fitted {model.name} curve is {what} {where} the data (from x = "
                   f"{grid[np.argmax(bad)]:.3g}): predictions there are undefined")
    with np.errstate(all="ignore"):
        rise = np.diff(np.log(np.where(bad, np.nan, e))) > 1e-9
    if rise.any():
        at = grid[1:][np.argmax(rise)]
        where = "within the data" if at <= xmax else "beyond the data"
        out.append(f"the fitted {model.name} curve rises {where} (from x = {at:.3g}) although "
                   "the metric should fall with scale")
    return out
