r"""Predictions from a fitted curve family: a band for the curve, an interval for a new point.

Both come from the bootstrap refits of :class:`analysis.fit.forms.fit.FormFit` and
live in log space, where the families were fitted:

* the **confidence band** of the curve at :math:`x` is the percentile
  interval of :math:`\log \hat y_b(x)` over resamples :math:`b`;
* the **prediction interval** for a new observation adds to each resample
  a residual :math:`\varepsilon_b` drawn from the fit's log residuals,
  inflated by :math:`\sqrt{n/(n-p)}` (Davison & Hinkley 1997, "Bootstrap
  Methods and their Application", Algorithm 6.4), and an extrapolation
  error :math:`\kappa\,\log(x/x_{max})\,z_b`, :math:`z_b \sim N(0, 1)`,
  for :math:`x > x_{max}`, whose scale :math:`\kappa` the rolling-origin
  backtests measured (:mod:`analysis.fit.forms.selection`); it takes the percentile
  interval of the sum, widened where Monte Carlo noise left it inside the
  band. Points of one learning curve are strongly correlated, so the
  bootstrap and the residuals alone describe interpolation; on held-out
  larger scales they cover far less than their nominal level (on the
  development split of :mod:`analysis.bench.extrapolation`, 68 % for 95 %
  intervals without the extrapolation term, 92 % with it).

A prediction that is <= 0, or outside the bounds of an error rate, is
undefined: None in the result, with a warning, never a number. An interval
end beyond a bound is clipped to the bound (and said so).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.errors import AnalysisError
from analysis.stats.result import num
from analysis.fit.forms.fit import FormFit
from analysis.fit.forms.bounds import defined


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
    warnings: tuple[str, ...] = ()
    """Undefined predictions, clipped intervals, too few resamples."""

    def to_dict(self) -> dict:
        def vals(t):
            return [None if v is None else num(v) for v in t]
        return {"form": self.form, "x": list(self.x), "y": vals(self.y),
                "band_low": vals(self.band_low), "band_high": vals(self.band_high),
                "pi_low": vals(self.pi_low), "pi_high": vals(self.pi_high),
                "level": self.level, "beyond": list(self.beyond),
                "warnings": list(self.warnings)}


def predict(fit: FormFit, x_new, level: float | None = None, seed: int = 0) -> Prediction:
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
    band, pi, more = _intervals(fit, x_new, level, seed)
    warn += more
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
                      beyond=tuple(float(v) for v in x_new / np.max(fit.x)), warnings=tuple(warn))


def _intervals(fit: FormFit, x_new, level, seed):
    """Log-space quantiles ``(band (lo, hi), pi (lo, hi), warnings)`` of the fitted quantity."""
    boot = fit.boot_params
    nan = np.full(x_new.size, np.nan)
    if boot is None or boot.shape[0] < 10:
        return (nan, nan), (nan, nan), ["too few bootstrap resamples for intervals "
                                        "(refit with more --boot)"]
    with np.errstate(all="ignore"):
        E = fit.model.predict(boot, x_new)
        L = np.where(E > 0, np.log(E), -np.inf)
        L = np.where(np.isnan(E), -np.inf, L)
    res = fit.log_residuals()
    res = (res - res.mean()) * np.sqrt(res.size / max(res.size - len(fit.names), 1))
    rng = np.random.default_rng(seed)
    noise = rng.choice(res, size=L.shape, replace=True)
    past = np.maximum(np.log(x_new / np.max(fit.x)), 0.0)
    if fit.spread is not None:
        noise = noise + fit.spread * past * rng.standard_normal(L.shape)
    tail = 0.5 * (1.0 - level)
    qs = [tail, 1.0 - tail]
    band = np.quantile(L, qs, axis=0, method="nearest")
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
