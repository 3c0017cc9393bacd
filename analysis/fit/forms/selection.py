r"""Choose a curve family by rolling-origin validation on the fitted points alone.

Extrapolation, not interpolation, is what a scaling law is for, so the
families are compared the way they will be used (Alabdulmohsin et al. 2022,
§2 argue for the extrapolation loss; rolling-origin evaluation is the
time-series practice of Tashman 2000, "Out-of-sample tests of forecasting
accuracy"). The choice is a function of the fitted points only: the horizon
is fixed (:data:`HORIZON`, a doubling), never the ``x`` values a user asks
predictions for, so asking for one more point never changes the others. The
origins are

.. math:: x_{c,j} = x_{max} / H^{\,1 + j/2}, \qquad j = 0, 1, \dots

For each origin every family is fitted to the points with
:math:`x \le x_{c,j}` and scored by the RMSE of :math:`\log(\hat y/y)` on the
points in :math:`(x_{c,j},\ H x_{c,j}]` (on a sparse curve the cut steps back
to leave two points past it, and the window widens to hold them, so a 9-10
point curve still has origins). A family's score :math:`S_f` is the mean over origins with weights
:math:`2^{-j}`; one whose prediction is undefined at any origin (<= 0 or
outside the bounds) scores infinity.

**The choice** is the family of largest posterior weight

.. math:: w_f \propto \pi_f\, S_f^{-\gamma n_v},

the Gaussian likelihood of the :math:`n_v` backtest errors with each
family's own RMSE as scale, tempered by :math:`\gamma` (the errors of one
curve are strongly correlated, so they carry fewer than :math:`n_v`
independent pieces of evidence), times a prior :math:`\pi` that gives every
family at least half of the uniform weight (:data:`PRIOR`), so it never
collapses onto one family. On a long curve the scores decide; on a short
one (few validation points, noisy scores) the prior does. A family that
cannot be backtested (too few points at every origin) is not chosen
(:func:`posterior` says why). :data:`PRIOR` and
:data:`TEMPER` were chosen on the vision benchmark's development split
(fitted points only) and validated leave-one-dataset-out on its held-out
points (:mod:`analysis.bench.extrapolation`). Families whose scores agree to
4 significant digits are a tie, said so; the weights break it.

The same backtests measure how fast a family's extrapolation error grows:
with :math:`r_i` the log error at a window point and
:math:`\ell_i = \log(x_i / x_{c,j})` its distance past the origin,

.. math:: r_i^2 \approx \sigma_0^2 + \kappa^2 \ell_i^2

fitted by weighted least squares (weights :math:`w_j`, both terms >= 0), so that
:math:`\sqrt{\sigma_0^2 + \kappa^2 \log^2(x/x_{max})}` is the standard
deviation of the extrapolation error at :math:`x` past the data. The
intercept is there because curves bend: the held-out points just past the
data already sit off the fit (on the vision benchmark most misses of a
slope-only term began within 7 % past the data). :math:`\kappa` rests on as many backtests
as there are origins, so :mod:`analysis.fit.forms.prediction` multiplies it by
a Student t draw with (origins - 1) degrees of freedom (``df``), not a normal
one. For the chosen family it is measured with the family each origin's
*other* origins would choose, since the winner's own backtests are its best.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.errors import AnalysisError
from analysis.fit.forms.bounds import Bounds, defined, prepare
from analysis.fit.forms.registry import AUTO, FORMS
from analysis.stats.result import num

MIN_WINDOW = 2
"""Validation points an origin needs (fewer when the data have fewer)."""

HORIZON = 2.0
"""Extrapolation ratio validated: the furthest backtest point over the largest fitted x."""

PRIOR = {"M1": 0.1, "M2": 0.1, "M3": 0.1, "M4": 0.1, "BNSL": 0.6}
"""Prior weight of each family: half uniform, half on BNSL (the development split's best rule);
every family keeps half the uniform weight, so the scores can overrule it."""

TEMPER = 0.1
r""":math:`\gamma`: the share of the backtest points counted as independent evidence."""

TIE_DIGITS = 4
"""Scores equal to this many significant digits are a tie."""


@dataclass(frozen=True, kw_only=True)
class Selection:
    """The family chosen by rolling-origin validation, and every candidate's score."""

    chosen: str
    """Name of the family with the largest posterior weight."""
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
    offset: dict = None
    """``{family: sigma_0}``: extrapolation error sd just past the data (the intercept of the
    same regression), with ``"auto"`` as for ``spread``."""
    df: int = 1
    """Degrees of freedom of ``spread``: usable origins - 1 (at least 1)."""
    posterior: dict = None
    """``{family: weight}``: prior times tempered backtest likelihood, normalised."""
    n_valid: int = 0
    """Backtest points behind the scores (every usable origin's window)."""
    tied: tuple[str, ...] = ()
    """Other families whose score equals the chosen one's to :data:`TIE_DIGITS` digits."""
    notes: tuple[str, ...] = ()
    """Why a family was not scored, or why the horizon was shortened."""

    def to_dict(self) -> dict:
        def val(v):
            return None if v is None else num(v)
        return {"chosen": self.chosen, "scores": {k: val(v) for k, v in self.scores.items()},
                "per_origin": {k: [val(v) for v in vs] for k, vs in self.per_origin.items()},
                "cuts": list(self.cuts), "weights": list(self.weights),
                "spread": {k: val(v) for k, v in (self.spread or {}).items()},
                "offset": {k: val(v) for k, v in (self.offset or {}).items()},
                "df": self.df,
                "posterior": {k: val(v) for k, v in (self.posterior or {}).items()},
                "n_valid": self.n_valid, "tied": list(self.tied),
                "horizon": self.horizon, "notes": list(self.notes)}


def select_form(x, y, *, bounds: Bounds | None = None, candidates=AUTO,
                horizon: float = HORIZON, n_origins: int = 3, prior: dict | None = None,
                temper: float | None = None) -> Selection:
    """Choose the family that extrapolates best over the fitted points (see module docstring).

    Parameters
    ----------
    x, y : array_like
        The points (``y`` in the metric's own units; see :class:`Bounds`).
    bounds : Bounds, optional
        The metric's bounds; a loss by default.
    candidates : sequence of str
        Families to compare.
    horizon : float
        Extrapolation ratio validated (default :data:`HORIZON`); shortened to the square
        root of the data's x span when longer.
    n_origins : int
        Origins at most; fewer when the data are short.
    prior, temper : optional
        :data:`PRIOR` and :data:`TEMPER` by default.

    Returns
    -------
    Selection
    """
    unknown = [c for c in candidates if c not in FORMS]
    if unknown:
        raise AnalysisError(f"unknown form(s) {unknown}; choose from {', '.join(FORMS)}")
    x, e, bounds = prepare(x, y, bounds, 2)
    H, notes = _horizon(x, horizon)
    cuts, windows = _origins(x, H, n_origins)
    if not cuts:
        raise AnalysisError(f"too few distinct x values ({np.unique(x).size}) for a rolling-origin "
                            "check; fix the form with --form instead of auto")
    weights = [0.5 ** j for j in range(len(cuts))]
    per_origin, scores, spread, offset, errors = {}, {}, {}, {}, {}
    for name in candidates:
        need = FORMS[name].n_params + 2
        fits = [np.unique(x[x <= c]).size >= need for c in cuts]
        if not fits[0]:
            notes.append(f"{name} not scored: fewer than {need} distinct x at every origin")
            scores[name], per_origin[name], spread[name] = None, (), None
            offset[name] = None
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
        offset[name], spread[name] = _kappa([errors[name][j] for j in usable], wts)
    finite = {k: v for k, v in scores.items() if v is not None and np.isfinite(v)}
    if not finite:
        raise AnalysisError("no family extrapolates to a defined value at any origin; "
                            "fix one with --form")
    n_valid = int(sum(int(windows[j].sum()) for j in usable))
    post = posterior(finite, n_valid, prior, temper)
    chosen = max(post, key=lambda k: (post[k], -list(FORMS).index(k)))
    tied = tuple(k for k, v in finite.items() if chosen in finite and k != chosen
                 and _digits(v) == _digits(finite[chosen]))
    offset["auto"], spread["auto"] = _kappa_auto(errors, per_origin, usable, weights, spread,
                                                 offset, n_valid, prior, temper)
    return Selection(chosen=chosen, scores=scores, per_origin=per_origin,
                     cuts=tuple(float(c) for c in cuts), weights=tuple(weights), horizon=H,
                     spread=spread, offset=offset, df=max(len(usable) - 1, 1),
                     posterior={k: post.get(k) for k in scores}, n_valid=n_valid, tied=tied,
                     notes=tuple(notes))


def posterior(scores: dict, n_valid: int, prior: dict | None = None,
              temper: float | None = None) -> dict:
    r"""``{family: w}``, :math:`w_f \propto \pi_f S_f^{-\gamma n_v}` over the finite scores.

    A family without a score (too few points to backtest) gets no weight: giving it its
    prior at an average score (so that the prior alone decides) was tried and rejected on
    the development split (mean RMSE-log 0.0273 -> 0.0369 on its 6 curves with such a
    family).
    """
    prior = PRIOR if prior is None else prior
    gamma = TEMPER if temper is None else float(temper)
    names = list(scores)
    base = 1.0 / len(AUTO)
    pi = np.array([prior.get(k, base) for k in names], float)
    s = np.maximum(np.array([scores[k] for k in names], float), 1e-9)
    logw = np.log(pi) - gamma * n_valid * np.log(s)
    w = np.exp(logw - logw.max())
    return dict(zip(names, (w / w.sum()).tolist()))


def _digits(v: float) -> str:
    return f"{v:.{TIE_DIGITS - 1}e}"


def _horizon(x, horizon):
    notes = []
    horizon = float(horizon)
    if not horizon > 1.0:
        raise AnalysisError(f"the validation horizon must exceed 1, got {horizon}")
    span = float(np.max(x) / np.min(x))
    cap = span ** 0.5
    if horizon > cap:
        notes.append(f"horizon {horizon:.3g} shortened to {cap:.3g} (the square root of the "
                     "data's x span), so that each origin keeps half the span to fit")
        horizon = cap
    return float(horizon), notes


def _origins(x, H, n_origins):
    """Cuts near ``x_max / H^(1 + j/2)`` and their validation windows.

    Each cut is the largest fitted ``x`` at or below its nominal value, at least
    :data:`MIN_WINDOW` distinct x before the end and below the previous cut (a sparse curve
    steps back one point at a time); its window is ``(cut, H * cut]``, widened to the next
    :data:`MIN_WINDOW` points when it holds fewer. An origin fits at least 3 distinct x.
    """
    xs = np.unique(x)
    need = min(MIN_WINDOW, xs.size - 3)
    cuts, windows = [], []
    if need < 1:
        return cuts, windows
    last = xs.size - 1 - need
    for j in range(n_origins):
        nominal = xs[-1] / H ** (1.0 + 0.5 * j) * (1 + 1e-12)
        i = min(int(np.searchsorted(xs, nominal, side="right")) - 1, last)
        if i < 2:
            break
        cut = float(xs[i])
        upto = max(cut * H * (1 + 1e-12), xs[i + need])
        cuts.append(cut)
        windows.append((x > cut) & (x <= upto))
        last = i - 1
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


def _kappa_auto(errors, per_origin, usable, weights, spread, offset, n_valid, prior,
                temper) -> tuple[float | None, float | None]:
    r"""``(sigma_0, kappa)`` of the choice itself, free of the winner's curse.

    The chosen family is the one whose backtests erred least, so its own
    :math:`\kappa` is biased low. At each origin the family the *other* origins
    would choose (the same rule: prior times tempered likelihood) is scored instead
    (leave one origin out); with a single origin, the median over the families.
    """
    names = [n for n, po in per_origin.items() if po]
    if len(usable) < 2:
        ks = [(offset[n], spread[n]) for n in names if spread.get(n) is not None]
        return tuple(float(np.median(v)) for v in zip(*ks)) if ks else (None, None)
    picked, wts = [], []
    share = n_valid / len(usable)
    for j in usable:
        rest = [i for i in usable if i != j]
        total = sum(weights[i] for i in rest)
        score = {n: sum(weights[i] * per_origin[n][i] for i in rest) / total for n in names}
        score = {n: v for n, v in score.items() if np.isfinite(v)} or score
        post = posterior(score, round(share * len(rest)), prior, temper)
        picked.append(errors[max(post, key=post.get)][j])
        wts.append(weights[j])
    return _kappa(picked, np.array(wts))


def _rmse(err) -> float:
    return float(np.sqrt(np.mean(err ** 2))) if np.all(np.isfinite(err)) else float("inf")


def _kappa(errors, weights) -> tuple[float | None, float | None]:
    r"""``(sigma_0, kappa)``: weighted least squares :math:`r^2 = \sigma_0^2 + \kappa^2 \ell^2`
    (both >= 0) over the backtest points, square-rooted.

    The intercept is the error a family makes just past the data (curves bend, so the last
    fitted points already sit off the fit); the slope is how fast it grows.
    """
    from analysis.fit.forms.base import wls

    r2 = np.concatenate([r ** 2 for r, _ in errors])
    l2 = np.concatenate([ell ** 2 for _, ell in errors])
    w = np.concatenate([np.full(r.size, wt) for (r, _), wt in zip(errors, weights)])
    if not (np.all(np.isfinite(r2)) and np.sum(w * l2) > 0):
        return None, None
    beta, _ = wls(np.column_stack([np.ones_like(l2), l2]), r2, w, (1, 1))
    if not np.all(np.isfinite(beta)):
        return None, None
    return float(np.sqrt(beta[0])), float(np.sqrt(beta[1]))
