"""What every curve family shares and sits below both the fitter and the chooser: the
metric's range (:class:`Bounds`, :func:`detect_bounds`) and the helpers that prepare points
and score a fit on them."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from analysis.errors import AnalysisError
from analysis.fit.powerlaw import check_xy
from analysis.stats.result import num


@dataclass(frozen=True, kw_only=True)
class Bounds:
    """What values a metric can take, and whether it rises with scale."""

    low: float = 0.0
    """Smallest possible value (0 for a loss or an error rate)."""
    high: float | None = None
    """Largest possible value (1 for an error rate or accuracy); None when unbounded (a loss)."""
    maximize: bool = False
    """The metric rises with scale (accuracy); forms are fitted to the error ``high - y``."""
    reason: str = ""
    """Where the bounds come from: given by the caller, or the detection rule that fired."""

    def __post_init__(self):
        if not self.low >= 0:
            raise AnalysisError(f"the lower bound must be >= 0 for a log-scale fit, got {self.low}")
        if self.high is not None and not self.high > self.low:
            raise AnalysisError(f"bounds must satisfy low < high, got ({self.low}, {self.high})")
        if self.maximize and self.high is None:
            raise AnalysisError("a metric that rises (accuracy) needs an upper bound to be "
                                "fitted as an error, e.g. --bounded 0,1")

    @property
    def bounded(self) -> bool:
        return self.high is not None

    def to_error(self, y):
        """The falling quantity the forms fit: ``y``, or ``high - y`` for accuracy."""
        return self.high - np.asarray(y, float) if self.maximize else np.asarray(y, float)

    def from_error(self, e):
        return self.high - np.asarray(e, float) if self.maximize else np.asarray(e, float)

    def error_range(self) -> tuple[float, float | None]:
        """``(low, high)`` of the fitted quantity."""
        if self.maximize:
            return 0.0, self.high - self.low
        return self.low, self.high

    @property
    def fitted(self) -> str:
        return f"{self.high:g} - y" if self.maximize else "y"

    def to_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "maximize": self.maximize,
                "fitted": self.fitted, "reason": self.reason}


def detect_bounds(name: str, y, *, given: tuple[float, float] | None = None,
                  maximize: bool | None = None) -> Bounds:
    """Bounds of a metric: ``given`` (``--bounded``), else [0, 1] for a named error or accuracy.

    The rule: every value lies in [0, 1] and the name contains ``err`` or
    ``acc``. ``maximize`` defaults to whether the name contains ``acc``.
    """
    rises = ("acc" in name.lower()) if maximize is None else bool(maximize)
    if given is not None:
        return Bounds(low=float(given[0]), high=float(given[1]), maximize=rises,
                      reason=f"given as ({given[0]:g}, {given[1]:g})")
    y = np.asarray(y, float)
    if y.size and np.all((y >= 0) & (y <= 1)) and re.search(r"err|acc", name, re.IGNORECASE):
        kind = "an accuracy" if rises else "an error rate"
        return Bounds(low=0.0, high=1.0, maximize=rises,
                      reason=f"every value of {name!r} lies in [0, 1] and the name says it is "
                             f"{kind}: treated as bounded in [0, 1]")
    if rises:
        raise AnalysisError(f"{name!r} looks like an accuracy (it rises with scale) but its "
                            "bounds are unknown; give them, e.g. --bounded 0,1")
    return Bounds(reason="no bounds: treated as a loss, > 0 and unbounded above")


def num_or_none(v) -> float | None:
    return None if v is None else num(v)


def defined(e, bounds: Bounds) -> np.ndarray:
    """Where a prediction of the fitted quantity is a number: > 0, finite and within the bounds."""
    lo, hi = bounds.error_range()
    e = np.asarray(e, float)
    ok = np.isfinite(e) & (e > 0) & (e >= lo)
    return ok & (e <= hi) if hi is not None else ok


def rmse_log(pred, obs) -> float | None:
    """RMSE of log(pred / obs); None when any prediction is undefined (<= 0 or NaN)."""
    pred = np.asarray(pred, float)
    if pred.size == 0 or not np.all(np.isfinite(pred) & (pred > 0)):
        return None
    return float(np.sqrt(np.mean((np.log(pred) - np.log(obs)) ** 2)))


def prepare(x, y, bounds: Bounds | None, n_params: int):
    """Validated ``(x, e, bounds)``: ``e`` is the falling quantity the families fit."""
    bounds = bounds or Bounds()
    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    if bounds.bounded and y.size and (y.min() < bounds.low or y.max() > bounds.high):
        raise AnalysisError(f"values lie in [{y.min():g}, {y.max():g}], outside the bounds "
                            f"[{bounds.low:g}, {bounds.high:g}]; are the bounds or the column "
                            "wrong?")
    e = bounds.to_error(y)
    if bounds.maximize and e.size and e.min() <= 0:
        raise AnalysisError(f"{int((e <= 0).sum())} point(s) sit at the upper bound "
                            f"{bounds.high:g} (zero error), which has no logarithm; drop them")
    x, e = check_xy(x, e, n_params)
    order = np.argsort(x, kind="stable")
    return x[order], e[order], bounds
