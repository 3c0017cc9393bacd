r"""Curve families on a sweep's learning curves, and honest warnings about the power law.

:func:`add_forms` fits a family of :mod:`analysis.fit.forms.families` (``--form NAME``) or
lets rolling-origin validation choose one (``auto``, :mod:`analysis.fit.forms.selection`)
on the frontier points of each curve of :func:`analysis.fit.curves.fit_learning_curves`,
then predicts at new ``x`` (:mod:`analysis.fit.forms.prediction`). The points are the
frontier's (winners chosen on validation or cross-fitted over seeds). With
seeds, the family is refitted to up to :data:`SEED_REFITS` clustered seed
replicates of the frontier (winners chosen again, as for the power law), one
fit each, and its intervals and predictions come from those refits; with a
single seed, from a pairs bootstrap of the points. The result says which.

:func:`power_law_warnings` holds the power law :math:`y = a x^b + c` to the same
standard as the families: a falling metric (a loss or an error rate) fitted by
a curve that rises, is unbounded below, or leaves the metric's range near the
data gets a warning, as does a held-out error more than 3x the in-sample one
or an undefined one.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from analysis.errors import AnalysisError

SEED_REFITS = 200
"""Seed replicates of the frontier a family is refitted to, at most (one fit each)."""


class _PowerCurve:
    """A fitted power law seen as a family (``name``, ``predict``) by the shape check."""

    def __init__(self, fit, bounds, maximize: bool):
        self.name = fit.form
        self.params = np.asarray(fit.params, float)
        self.offset = len(fit.params) == 3
        self.bounds, self.maximize = bounds, maximize

    def predict(self, _params, x):
        from analysis.fit.powerlaw import natural_curve

        y = natural_curve(self.params, x, self.offset)
        return self.bounds.to_error(y) if self.bounds.maximize else y


def power_law_warnings(fit, bounds, maximize: bool) -> list[str]:
    """Warnings about a :class:`analysis.fit.powerlaw.PowerLawFit` (module docstring).

    ``bounds`` is the metric's :class:`analysis.fit.forms.bounds.Bounds` (None when
    unknown: then only a minimised metric's shape is checked).
    """
    from analysis.fit.forms.bounds import Bounds
    from analysis.fit.forms.fit import HOLDOUT_FLOOR, HOLDOUT_RATIO, shape_warnings

    out = []
    if "b" in getattr(fit, "at_bound", ()):
        way = "fall" if fit.monotone == "falling" else "rise"
        out.append(f"the data do not {way} with x: the best {fit.monotone} curve is flat "
                   "(a = b = 0, c their level, without intervals); --unbounded fits the curve "
                   "the data have")
    if bounds is None and not maximize:
        bounds = Bounds()
    if bounds is not None:
        out += shape_warnings(_PowerCurve(fit, bounds, maximize), None, fit.x, bounds)
    h = fit.holdout
    if h is not None and h.rmse_log is None:
        out.append(f"{h.n_undefined} of {len(h.x)} held-out predictions of {fit.form} are "
                   "undefined (<= 0 or outside the metric's range), so its held-out error is "
                   "undefined")
    elif h is not None and h.ratio is not None and h.ratio > HOLDOUT_RATIO \
            and h.rmse_log > HOLDOUT_FLOOR:
        out.append(f"the held-out RMSE-log of {fit.form} ({h.rmse_log:.3g}) is {h.ratio:.1f}x "
                   f"its in-sample one ({h.in_sample_rmse_log:.3g}): the fit describes the data "
                   "better than it extrapolates")
    return out


def add_forms(curves, *, form: str | None = None, predict=None, holdout: int | None = None,
              n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> list:
    """Each curve with a family fitted to its frontier and, with ``predict``, predictions.

    Parameters
    ----------
    curves : list of analysis.fit.curves.CurveFit
    form : str, optional
        ``"M1"`` ... ``"M4"``, ``"BNSL"`` or ``"auto"``; None means auto, used for the
        extrapolation check (and predictions) beside the power law.
    predict : sequence of float, optional
        Where to predict (auto's choice never depends on it).
    holdout : int, optional
        Largest distinct x held out by the extrapolation check of the family that
        predicts; 0 turns it off.
    n_boot, level, seed
        Pairs-bootstrap resamples for the family's intervals and predictions (none are
        drawn for a bare extrapolation check), their coverage and seed.

    Returns
    -------
    list of CurveFit
        With ``family``, ``family_note`` and ``prediction`` set.
    """
    from analysis.fit.forms.fit import fit_form
    from analysis.fit.forms.prediction import predict as predict_at

    target = None if predict is None or len(predict) == 0 else np.asarray(predict, float)
    draws = n_boot if (form is not None or target is not None) else 0
    out = []
    for i, c in enumerate(curves):
        if len(c.x) == 0:
            out.append(c)
            continue
        if c.bounds is None:
            out.append(dataclasses.replace(c, family_note=c.bounds_note))
            continue
        reps = c.replicates if draws and c.replicates is not None else None
        try:
            fam = fit_form(c.x, c.y, form or "auto", bounds=c.bounds,
                           n_boot=0 if reps is not None else draws, level=level,
                           holdout=holdout, seed=seed + i)
            note = ""
            if reps is not None:
                fam, note = seed_refits(fam, c.x, reps[:SEED_REFITS], level)
            elif draws:
                what = "bands" if fam.interval_note else "intervals and bands"
                note = f"{what} of {fam.form}: pairs bootstrap of the points (one seed)"
            pred = None if target is None else predict_at(fam, target, level, seed=seed + i)
        except AnalysisError as e:
            out.append(dataclasses.replace(c, family_note=str(e)))
            continue
        out.append(dataclasses.replace(c, family=fam, prediction=pred, family_note=note))
    return out


def seed_refits(fam, x, replicates, level: float):
    """``(fam with intervals from refits to seed replicates, note)``.

    Each replicate is the frontier recomputed on a clustered draw of seeds, winners
    chosen again (:mod:`analysis.tables.frontier`), so the family's intervals carry the seed
    and selection variance, as the power law's do. A replicate outside the metric's
    range, or whose refit fails, is left out and counted. The parameters get no
    intervals here (``interval_note`` says why); the refits make the prediction bands.
    """
    order = np.argsort(np.asarray(x, float), kind="stable")
    b = fam.bounds
    lo, hi = b.error_range()
    rows = []
    for rep in np.asarray(replicates, float)[:, order]:
        e = b.to_error(rep)
        if not (np.all(np.isfinite(e) & (e > 0)) and (hi is None or np.all(e <= hi))):
            continue
        with np.errstate(all="ignore"):
            p = fam.model.fit(fam.x, e, low=lo, high=hi).params
        if np.all(np.isfinite(p)):
            rows.append(p)
    boot = np.array(rows, float).reshape(-1, len(fam.names))
    nan = np.full(len(fam.names), np.nan)
    why = (f"no {fam.form} parameter intervals on a seeded sweep: percentiles of refits to "
           "seed replicates of a selected frontier are not backed by any calibration (the "
           "audit of issue 24 measured M2's exponent interval covering 13-15%); the refits "
           "make the prediction bands only, and the power law (scaling fit without --form) "
           "gives the exponent's seed-clustered interval")
    warn = [w for w in fam.warnings if not w.startswith("too few usable bootstrap")]
    if boot.shape[0] < 10:
        warn.append("too few usable seed replicates for intervals")
    note = (f"prediction bands of {fam.form}: percentiles of refits to {len(replicates)} clustered seed "
            f"replicates of the frontier (winners chosen again), {boot.shape[0]} usable")
    return dataclasses.replace(fam, boot_params=boot, ci_low=tuple(nan.tolist()),
                               ci_high=tuple(nan.tolist()), interval_note=why,
                               n_boot=len(replicates), n_boot_used=int(boot.shape[0]),
                               warnings=tuple(warn)), note


def parse_floats(text: str | None, flag: str = "--predict") -> list[float] | None:
    """``"1e4,2e4"`` -> ``[10000.0, 20000.0]``; None for no text."""
    if text is None:
        return None
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise AnalysisError(f"{flag} wants numbers separated by commas, e.g. {flag} 1e5,2e5; "
                            f"got {text!r}") from None
    if not values or not all(np.isfinite(v) and v > 0 for v in values):
        raise AnalysisError(f"{flag} values must be finite and > 0, got {text!r}; did you pass "
                            "a log-transformed value?")
    return values


def parse_bounds(text: str | None) -> tuple[float, float] | None:
    """``"0,1"`` -> ``(0.0, 1.0)``; None for no text."""
    if text is None:
        return None
    try:
        low, high = (float(p) for p in str(text).split(","))
    except ValueError:
        raise AnalysisError(f"--bounded wants LOW,HIGH, e.g. --bounded 0,1 for an error rate; "
                            f"got {text!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and 0 <= low < high):
        raise AnalysisError(f"--bounded wants 0 <= LOW < HIGH, got {text!r}")
    return low, high
