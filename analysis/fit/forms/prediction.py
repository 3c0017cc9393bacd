r"""Predictions from a fitted curve family: a band for the curve, an interval for a new point.

Both come from the bootstrap refits of :class:`analysis.fit.forms.fit.FormFit` and
live in log space, where the families were fitted:

* the **confidence band** of the curve at :math:`x` is the percentile
  interval of :math:`\log \hat y_b(x)` over resamples :math:`b`;
* the **prediction interval** for a new observation adds to each resample
  a residual :math:`\varepsilon_b` drawn from the fit's log residuals,
  inflated by :math:`\sqrt{n/(n-p)}` (Davison & Hinkley 1997, "Bootstrap
  Methods and their Application", Algorithm 6.4), and an extrapolation
  error :math:`\sqrt{\sigma_0^2 + \kappa^2\log^2(x/x_{max})}\,t_b`, for
  :math:`x > x_{max}`, whose scales the rolling-origin backtests measured
  (:mod:`analysis.fit.forms.selection`) and :math:`t_b` a Student t draw with
  (origins - 1) degrees of freedom: the scales rest on only 2-3
  overlapping backtests, and a normal draw treats it as known. It takes the
  percentile interval of the sum, widened where Monte Carlo noise left it
  inside the band. Points of one learning curve are strongly correlated, so
  the bootstrap and the residuals alone describe interpolation; on held-out
  larger scales they cover far less than their nominal level. On the vision
  benchmark (:mod:`analysis.bench.extrapolation`, paper's protocol) 95 %
  intervals with a normal draw held 82.8 % of the held-out points; with the
  t draw, see ``make bench`` (per point and per curve) and
  ``docs/curve-families.md``.

A prediction that is <= 0, or outside the bounds of an error rate, is
undefined: None in the result, with a warning, never a number. An interval
end beyond a bound is clipped to the bound (and said so).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.errors import AnalysisError
from analysis.fit.forms.bounds import defined
from analysis.fit.forms.fit import FormFit
from analysis.stats.result import num

SCALE = 1.0
"""Multiplier of the extrapolation term, calibrated across the vision benchmark's curves
(:mod:`analysis.bench.extrapolation`, leave one dataset out); 1 leaves the t term alone."""

DRAWS = 4000
"""Residual and extrapolation draws at least (each refit is reused): the t tails need many."""


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """Predictions of one fit at new ``x``, with a band and a prediction interval."""

    form: str
    """Family that made the predictions."""
    x: tuple[float, ...]
    """Where the predictions are."""
    y: tuple[float | None, ...]
    """Best-fit values in the metric's units; None where undefined."""
    band_low: tuple[float | None, ...]
    """Lower end of the bootstrap confidence band of the curve."""
    band_high: tuple[float | None, ...]
    """Upper end of the band."""
    pi_low: tuple[float | None, ...]
    """Lower end of the prediction interval for a new observation."""
    pi_high: tuple[float | None, ...]
    """Upper end of the prediction interval."""
    level: float
    """Coverage of band and interval."""
    beyond: tuple[float, ...]
    """``x / max(fitted x)``: how far each prediction extrapolates (<= 1 interpolates)."""
    method: str = ""
    """How the prediction interval was made (the extrapolation term and its quantile)."""
    warnings: tuple[str, ...] = ()
    """Undefined predictions, clipped intervals, too few resamples."""

    def to_dict(self) -> dict:
        def vals(t):
            return [None if v is None else num(v) for v in t]
        return {"form": self.form, "x": list(self.x), "y": vals(self.y),
                "band_low": vals(self.band_low), "band_high": vals(self.band_high),
                "pi_low": vals(self.pi_low), "pi_high": vals(self.pi_high),
                "level": self.level, "beyond": list(self.beyond), "method": self.method,
                "warnings": list(self.warnings)}


def predict(fit: FormFit, x_new, level: float | None = None, seed: int = 0,
            scale: float | None = None) -> Prediction:
    """Predict at ``x_new`` with a confidence band and a prediction interval (module docstring).

    Parameters
    ----------
    fit : FormFit
        From :func:`analysis.fit.forms.fit.fit_form` with ``n_boot > 0``.
    x_new : array_like
        Positive scales.
    level : float, optional
        Coverage; the fit's level by default.
    seed : int
        Seed of the residual draws.
    scale : float, optional
        Multiplier of the extrapolation term (:data:`SCALE` by default).

    Returns
    -------
    Prediction
    """
    level = fit.level if level is None else float(level)
    if not 0.0 < level < 1.0:
        raise AnalysisError(f"level must be between 0 and 1 (e.g. 0.95), got {level}")
    x_new = np.atleast_1d(np.asarray(x_new, float)).ravel()
    if x_new.size == 0 or not np.all(np.isfinite(x_new) & (x_new > 0)):
        raise AnalysisError("prediction x values must be finite and > 0; did you pass a "
                            "log-transformed value?")
    b = fit.bounds
    e = fit.model.predict(np.asarray(fit.params), x_new)
    ok = defined(e, b)
    warn = []
    if (~ok).any():
        warn.append(f"{int((~ok).sum())} of {x_new.size} predictions are undefined (the {fit.form} "
                    f"curve is <= 0 or outside the bounds there): reported as undefined")
    scale = SCALE if scale is None else float(scale)
    band, pi, more = _intervals(fit, x_new, level, seed, scale)
    warn += more
    far = int(np.sum(x_new > fit.horizon * np.max(fit.x) * (1 + 1e-9)))
    if far and fit.spread is not None:
        warn.append(f"{far} of {x_new.size} predictions lie past the {fit.horizon:.3g}x the "
                    "backtests validated: their intervals assume the extrapolation error grows "
                    "with the square of log x there")
    lo_b, hi_b = b.error_range()
    ends = [_ends(band[0], band[1], lo_b, hi_b), _ends(pi[0], pi[1], lo_b, hi_b)]
    if any(c for _, _, c in ends):
        warn.append("interval ends beyond the metric's bounds were clipped to the bounds")
    y = [float(v) if k else None for v, k in zip(b.from_error(e), ok)]
    (bl, bh, _), (pl, ph, _) = ends
    if b.maximize:  # error intervals turn around into accuracy intervals
        bl, bh = _flip(bh, b), _flip(bl, b)
        pl, ph = _flip(ph, b), _flip(pl, b)
    return Prediction(form=fit.form, x=tuple(float(v) for v in x_new), y=tuple(y),
                      band_low=tuple(bl), band_high=tuple(bh), pi_low=tuple(pl),
                      pi_high=tuple(ph), level=level,
                      beyond=tuple(float(v) for v in x_new / np.max(fit.x)),
                      method=interval_method(fit, scale), warnings=tuple(warn))


def interval_method(fit: FormFit, scale: float = SCALE) -> str:
    """One line saying how the prediction interval was made."""
    draws = f"{fit.n_boot_used} refits and resampled log residuals"
    if fit.spread is None:
        return f"{draws}; no extrapolation term (too few points to backtest)"
    times = "" if scale == 1.0 else f"{scale:g}*"
    return (f"{draws}, plus past the data an extrapolation term {times}sqrt({fit.offset or 0:.3g}^2 + "
            f"({fit.spread:.3g}*log(x/x_max))^2)*t with t a Student t draw on {fit.spread_df} df "
            "(rolling-origin backtests - 1)")


def _intervals(fit: FormFit, x_new, level, seed, scale=1.0):
    """Log-space quantiles ``(band (lo, hi), pi (lo, hi), warnings)`` of the fitted quantity."""
    boot = fit.boot_params
    nan = np.full(x_new.size, np.nan)
    if boot is None or boot.shape[0] < 10:
        return (nan, nan), (nan, nan), [("too few bootstrap resamples for intervals "
                                        "(refit with more --boot)")]
    with np.errstate(all="ignore"):
        E = fit.model.predict(boot, x_new)
        L = np.where(E > 0, np.log(E), -np.inf)
        L = np.where(np.isnan(E), -np.inf, L)
    if L.shape[0] < DRAWS:  # more residual and t draws per refit: steadier tail quantiles
        L = np.tile(L, (-(-DRAWS // L.shape[0]), 1))
    res = fit.log_residuals()
    res = (res - res.mean()) * np.sqrt(res.size / max(res.size - len(fit.names), 1))
    rng = np.random.default_rng(seed)
    noise = rng.choice(res, size=L.shape, replace=True)
    past = np.maximum(np.log(x_new / np.max(fit.x)), 0.0)
    if fit.spread is not None:
        reach = np.log(max(fit.horizon, 1.0 + 1e-9))
        past = past * np.maximum(1.0, past / reach)  # squared growth past the validated reach
        sd = scale * np.where(past > 0, np.hypot(fit.offset or 0.0, fit.spread * past), 0.0)
        # one draw per row, shared along x: a curve errs past the data as a whole
        noise = noise + sd * rng.standard_t(max(fit.spread_df, 1), (L.shape[0], 1))
    tail = 0.5 * (1.0 - level)
    qs = [tail, 1.0 - tail]
    band = np.quantile(L[:boot.shape[0]], qs, axis=0, method="nearest")
    pi = np.quantile(L + noise, qs, axis=0, method="nearest")
    pi = np.array([np.minimum(pi[0], band[0]), np.maximum(pi[1], band[1])])  # never inside the band
    return np.exp(band), np.exp(pi), []


def _ends(lo, hi, low, high):
    """Interval ends as floats or None (undefined: <= 0 or NaN), clipped to the bounds."""
    clipped = False
    out_lo, out_hi = [], []
    for a, z in zip(lo, hi):
        if high is not None and np.isfinite(z) and z > high:
            z, clipped = high, True
        if high is not None and np.isfinite(a) and a > high:
            a, clipped = high, True
        if np.isfinite(a) and a < low:
            a, clipped = low, True
        out_lo.append(float(a) if np.isfinite(a) and a > 0 else None)
        out_hi.append(float(z) if np.isfinite(z) and z > 0 else None)
    return out_lo, out_hi, clipped


def _flip(values, b):
    return [None if v is None else float(b.high - v) for v in values]
