"""The result of a robust, bootstrapped fit: values, intervals and diagnostics.

Shared by :class:`analysis.fit.powerlaw.PowerLawFit` and
:class:`analysis.fit.joint.JointFit`; computing lives in those modules, this one
only holds numbers and turns them into plain Python values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.stats.robust import Bootstrap, Solution, percentile_interval


@dataclass(frozen=True, kw_only=True)
class ScalingFit:
    """A fitted law with percentile-bootstrap intervals for every parameter."""

    form: str
    """The fitted formula, e.g. ``"a*x^b + c"``."""
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
    converged: bool
    """Whether the full-data fit converged."""
    huber_loss: float
    """Mean Huber loss of log residuals at the fit."""
    delta: float
    """Huber threshold on log residuals that was used."""
    r2_log: float
    """:math:`R^2` of the fit in log space."""
    rmse_log: float
    r"""RMSE of :math:`\log(\hat y / y)` over the fitted points."""
    resampling: str
    """``"points"`` (pairs bootstrap) or ``"replicates"`` (e.g. resampled seeds)."""
    n_boot: int
    """Bootstrap resamples drawn."""
    n_boot_converged: int
    """Resamples whose refit met the tolerance."""
    n_boot_failed: int = 0
    """Resamples left out of the intervals (not fittable in log space, or no finite refit)."""
    interval: str = "percentile"
    """How intervals were built: ``"percentile"``, or ``"cluster-t"`` (seed bootstrap sd
    rescaled, t quantile with few seeds; :class:`analysis.tables.cells.Resampling`)."""
    notes: tuple[str, ...] = ()
    """Caveats worth reading before trusting the numbers."""
    model: object = field(repr=False, compare=False, default=None)
    theta: np.ndarray = field(repr=False, compare=False, default=None)
    boot_theta: np.ndarray = field(repr=False, compare=False, default=None)

    def param(self, name: str) -> tuple[float, float, float]:
        """``(value, ci_low, ci_high)`` of one parameter."""
        i = self.names.index(name)
        return self.params[i], self.ci_low[i], self.ci_high[i]

    def _log_pred(self, X, thetas) -> np.ndarray:
        with np.errstate(all="ignore"):
            return self.model.log_pred(np.atleast_2d(thetas), X, jac=False)[0]

    def _band(self, X, level: float | None):
        if self.boot_theta is None or self.boot_theta.shape[0] < 10:
            nan = np.full(np.shape(X[0]), np.nan)
            return nan, nan.copy()
        f = self._log_pred(X, self.boot_theta)
        tail = 50.0 * (1.0 - (level or self.level))
        return np.exp(np.percentile(f, tail, axis=0)), np.exp(np.percentile(f, 100 - tail, axis=0))

    def to_dict(self) -> dict:
        """Plain Python values (floats, ints, str, lists, dicts; NaN and inf become None)."""
        params = {n: {"value": num(v), "ci_low": num(lo), "ci_high": num(hi)}
                  for n, v, lo, hi in zip(self.names, self.params, self.ci_low, self.ci_high)}
        return {"form": self.form, "params": params, "level": self.level,
                "n_points": self.n_points, "converged": self.converged,
                "huber_loss": num(self.huber_loss), "delta": self.delta,
                "r2_log": num(self.r2_log), "rmse_log": num(self.rmse_log),
                "resampling": self.resampling, "interval": self.interval, "n_boot": self.n_boot,
                "n_boot_converged": self.n_boot_converged, "n_boot_failed": self.n_boot_failed,
                "notes": list(self.notes)}


def num(v) -> float | None:
    """A float, or None for NaN/inf (JSON has neither)."""
    v = float(v)
    return v if np.isfinite(v) else None


def summarise(model, sol: Solution, boot: Bootstrap, X, logy, *, level: float,
              delta: float, resampling=None) -> dict:
    """Common fields of a :class:`ScalingFit` from a full fit and its bootstrap.

    With ``resampling`` (:class:`analysis.tables.cells.Resampling`, for replicates from
    the clustered seed bootstrap) each interval is the estimate +- a t quantile
    times the rescaled bootstrap sd; otherwise percentile intervals.
    """
    natural = model.natural(boot.theta)
    if resampling is not None and natural.shape[0] >= 10:
        lo, hi = resampling.interval(model.natural(sol.theta)[0], natural, level)
        interval = "cluster-t"
    else:
        lo, hi = percentile_interval(natural, level)
        interval = "percentile"
    with np.errstate(all="ignore"):
        f, _ = model.log_pred(sol.theta[None, :], X, jac=False)
    res = f[0] - logy
    notes = []
    if not sol.converged:
        notes.append("the full-data fit did not converge: the parameters may be unidentified "
                     "(e.g. an exponent near 0, or a step at the smallest x)")
    failed = boot.n_boot - boot.n_converged
    if failed > 0.05 * boot.n_boot:
        notes.append(f"{failed} of {boot.n_boot} resamples did not converge; they are kept at "
                     "the point reached, so wide intervals mean the data do not pin the "
                     "parameters down")
    if boot.n_failed:
        notes.append(f"{boot.n_failed} of {boot.n_boot} resamples could not be fitted (a value "
                     "<= 0 or not finite, e.g. a zero error) and are left out of the intervals")
    if boot.theta.shape[0] < 10:
        notes.append("too few usable resamples for intervals")
    return dict(params=tuple(float(v) for v in model.natural(sol.theta)[0]),
                ci_low=tuple(float(v) for v in lo), ci_high=tuple(float(v) for v in hi),
                level=level, n_points=int(logy.size), converged=bool(sol.converged),
                huber_loss=float(sol.value) * delta, delta=delta,
                r2_log=float(1.0 - (res ** 2).sum() / ((logy - logy.mean()) ** 2).sum()),
                rmse_log=float(np.sqrt(np.mean(res ** 2))), resampling=boot.resampling,
                n_boot=boot.n_boot, n_boot_converged=boot.n_converged,
                n_boot_failed=boot.n_failed, interval=interval, notes=tuple(notes),
                model=model, theta=sol.theta, boot_theta=boot.theta)
