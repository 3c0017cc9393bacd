r"""Choose a curve family by rolling-origin validation on the fitted points alone.

Extrapolation, not interpolation, is what a scaling law is for, so the
families are compared the way they will be used (Alabdulmohsin et al. 2022,
§2 argue for the extrapolation loss; rolling-origin evaluation is the
time-series practice of Tashman 2000, "Out-of-sample tests of forecasting
accuracy"). With horizon :math:`H` (the ratio of the furthest ``x`` to be
predicted to the largest fitted ``x``; 2 when unknown) the origins are

.. math:: x_{c,j} = x_{max} / H^{\,1 + j/2}, \qquad j = 0, 1, \dots

For each origin every family is fitted to the points with
:math:`x \le x_{c,j}` and scored by the RMSE of :math:`\log(\hat y/y)` on the
points in :math:`(x_{c,j},\ H x_{c,j}]`. A family's score is the mean over
origins with weights :math:`2^{-j}`, so the origin that fits the most points
and extrapolates over the most recent ones counts most. The family with the
lowest score is chosen; one whose prediction is undefined at any origin
(<= 0 or outside the bounds) scores infinity.

The same backtests measure how fast a family's extrapolation error grows:
with :math:`r_i` the log error at a window point and
:math:`\ell_i = \log(x_i / x_{c,j})` its distance past the origin,

.. math:: \kappa^2 = \frac{\sum_j w_j \sum_i r_i^2}{\sum_j w_j \sum_i \ell_i^2}

is the least-squares slope of :math:`r^2` on :math:`\ell^2`, so that
:math:`\kappa\,\log(x/x_{max})` is the standard deviation of the
extrapolation error at :math:`x` (:mod:`analysis.fit.forms.prediction` adds it to the
prediction interval). The origins fit fewer points than the final fit, so
:math:`\kappa` errs on the wide side. For the chosen family it is measured
with the family each origin's *other* origins would choose, since the
winner's own backtests are its best ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.errors import AnalysisError
from analysis.stats.result import num
from analysis.fit.forms.registry import AUTO, FORMS
from analysis.fit.forms.bounds import Bounds, defined, prepare

MIN_WINDOW = 2
"""Validation points an origin needs (fewer when the data have fewer)."""


@dataclass(frozen=True, kw_only=True)
class Selection:
    """The family chosen by rolling-origin validation, and every candidate's score."""

    chosen: str
    """Name of the family with the lowest score."""
    scores: dict
    """``{family: score}``: weighted mean RMSE-log over origins; None when not scored."""
    per_origin: dict
    """``{family: (rmse_log or None, ...)}`` per origin, in the order of ``cuts``."""
    cuts: tuple[float, ...]
    """Largest fitted ``x`` of each origin."""
    weights: tuple[float, ...]
    """Weight of each origin in the score."""
    horizon: float
    """Extrapolation ratio validated (furthest x / largest fitted x)."""
    spread: dict = None
    """``{family: kappa}``: extrapolation error sd per unit of log x past the data (None:
    unscored), and ``"auto"``: the same for the choice itself (leave one origin out)."""
    notes: tuple[str, ...] = ()
    """Why a family was not scored, or why the horizon was shortened."""

    def to_dict(self) -> dict:
        def val(v):
            return None if v is None else num(v)
        return {"chosen": self.chosen, "scores": {k: val(v) for k, v in self.scores.items()},
                "per_origin": {k: [val(v) for v in vs] for k, vs in self.per_origin.items()},
                "cuts": list(self.cuts), "weights": list(self.weights),
                "spread": {k: val(v) for k, v in (self.spread or {}).items()},
                "horizon": self.horizon, "notes": list(self.notes)}


def select_form(x, y, *, bounds: Bounds | None = None, candidates=AUTO, x_target=None,
                horizon: float | None = None, n_origins: int = 3) -> Selection:
    """Choose the family that extrapolates best over the fitted points (see module docstring).

    Parameters
    ----------
    x, y : array_like
        The points (``y`` in the metric's own units; see :class:`Bounds`).
    bounds : Bounds, optional
        The metric's bounds; a loss by default.
    candidates : sequence of str
        Families to compare.
    x_target : array_like, optional
        Where predictions are wanted: sets the horizon to ``max(x_target) / max(x)``.
    horizon : float, optional
        The horizon directly (default 2 when ``x_target`` is not given either).
    n_origins : int
        Origins at most; fewer when the data are short.

    Returns
    -------
    Selection
    """
    unknown = [c for c in candidates if c not in FORMS]
    if unknown:
        raise AnalysisError(f"unknown form(s) {unknown}; choose from {', '.join(FORMS)}")
    x, e, bounds = prepare(x, y, bounds, 2)
    H, notes = _horizon(x, x_target, horizon)
    cuts, windows = _origins(x, H, n_origins)
    if not cuts:
        raise AnalysisError(f"too few distinct x values ({np.unique(x).size}) for a rolling-origin "
                            "check; fix the form with --form instead of auto")
    weights = [0.5 ** j for j in range(len(cuts))]
    per_origin, scores, spread, errors = {}, {}, {}, {}
    for name in candidates:
        need = FORMS[name].n_params + 2
        fits = [np.unique(x[x <= c]).size >= need for c in cuts]
        if not fits[0]:
            notes.append(f"{name} not scored: fewer than {need} distinct x at every origin")
            scores[name], per_origin[name], spread[name] = None, (), None
            continue
        errors[name] = [_errors(name, x, e, bounds, c, w) if ok else None
                        for c, w, ok in zip(cuts, windows, fits)]
        per_origin[name] = tuple(None if r is None else _rmse(r[0]) for r in errors[name])
    usable = [j for j in range(len(cuts))
              if all(po[j] is not None for po in per_origin.values() if po)]
    for name, po in per_origin.items():
        if not po:
            continue
        vals = np.array([po[j] for j in usable], float)
        wts = np.array([weights[j] for j in usable])
        scores[name] = float(np.sum(wts * vals) / wts.sum())
        spread[name] = _kappa([errors[name][j] for j in usable], wts)
    finite = {k: v for k, v in scores.items() if v is not None and np.isfinite(v)}
    if not finite:
        raise AnalysisError("no family extrapolates to a defined value at any origin; "
                            "fix one with --form")
    chosen = min(finite, key=finite.get)
    spread["auto"] = _kappa_auto(errors, per_origin, usable, weights, spread)
    return Selection(chosen=chosen, scores=scores, per_origin=per_origin,
                     cuts=tuple(float(c) for c in cuts), weights=tuple(weights), horizon=H,
                     spread=spread, notes=tuple(notes))


def _horizon(x, x_target, horizon):
    notes = []
    if horizon is None:
        horizon = 2.0 if x_target is None or np.size(x_target) == 0 else \
            float(np.max(x_target)) / float(np.max(x))
    if not horizon > 1.0:
        horizon = 2.0
        notes.append("the targets lie within the data: validated a doubling instead")
    span = float(np.max(x) / np.min(x))
    cap = span ** 0.5
    if horizon > cap:
        notes.append(f"horizon {horizon:.3g} shortened to {cap:.3g} (the square root of the "
                     "data's x span), so that each origin keeps half the span to fit")
        horizon = cap
    return float(horizon), notes


def _origins(x, H, n_origins):
    """Cuts ``x_max / H^(1 + j/2)`` and their validation windows, while windows hold points."""
    xs = np.unique(x)
    cuts, windows = [], []
    for j in range(n_origins):
        cut = xs[-1] / H ** (1.0 + 0.5 * j)
        inside = (x > cut) & (x <= cut * H * (1 + 1e-12))
        fitted = np.unique(x[x <= cut]).size
        if np.unique(x[inside]).size < min(MIN_WINDOW, xs.size - 3) or fitted < 3:
            break
        cuts.append(cut)
        windows.append(inside)
    return cuts, windows


def _errors(name, x, e, bounds, cut, window):
    """``(log errors, log distances past the cut)`` on ``window``, ``name`` fitted to ``x <= cut``.

    Undefined predictions (<= 0 or outside the bounds) give infinite errors.
    """
    form = FORMS[name]
    lo, hi = bounds.error_range()
    train = x <= cut
    fitted = form.fit(x[train], e[train], low=lo, high=hi)
    pred = form.predict(fitted.params, x[window])
    with np.errstate(all="ignore"):
        err = np.where(defined(pred, bounds), np.log(pred) - np.log(e[window]), np.inf)
    return err, np.log(x[window] / cut)


def _kappa_auto(errors, per_origin, usable, weights, spread) -> float | None:
    r""":math:`\kappa` of the choice itself, free of the winner's curse.

    The chosen family is the one whose backtests erred least, so its own
    :math:`\kappa` is biased low. At each origin the family chosen by the
    *other* origins is scored instead (leave one origin out); with a single
    origin, the median :math:`\kappa` over the families.
    """
    names = [n for n, po in per_origin.items() if po]
    if len(usable) < 2:
        ks = [spread[n] for n in names if spread.get(n) is not None]
        return float(np.median(ks)) if ks else None
    picked, wts = [], []
    for j in usable:
        rest = [i for i in usable if i != j]
        score = {n: sum(weights[i] * per_origin[n][i] for i in rest) for n in names}
        picked.append(errors[min(score, key=score.get)][j])
        wts.append(weights[j])
    return _kappa(picked, np.array(wts))


def _rmse(err) -> float:
    return float(np.sqrt(np.mean(err ** 2))) if np.all(np.isfinite(err)) else float("inf")


def _kappa(errors, weights) -> float | None:
    """Weighted least-squares slope of squared error on squared log distance, square-rooted."""
    num_ = sum(w * np.sum(r ** 2) for (r, _), w in zip(errors, weights))
    den = sum(w * np.sum(ell ** 2) for (_, ell), w in zip(errors, weights))
    if not (np.isfinite(num_) and den > 0):
        return None
    return float(np.sqrt(num_ / den))
