"""Learning curves from a sweep: metric against data size, one fit per group.

For each group (``by`` columns, e.g. per width) the points are the tuning
frontier (:mod:`analysis.tables.frontier`) -- at each ``x`` the configuration with
the best validation metric (or cross-fitted over seeds without one), measured
on test, as Hestness et al. (2017) tune at every data size -- or, with
``where`` fixing every other axis, one configuration. The curve is fitted by
:func:`analysis.fit.powerlaw.fit_power_law` to the frontier and to clustered
seed-bootstrap replicates in which the winners are chosen again; intervals use
a t quantile with (seeds - 1) degrees of freedom on the rescaled bootstrap sd
(:mod:`analysis.tables.cells`). With a single seed the points are resampled instead
(pairs bootstrap, percentile intervals).

The fit is held to honest standards (:func:`analysis.fit.forms.on_curves.power_law_warnings`):
a falling metric fitted by a curve that rises, is unbounded below or leaves its
range, and a held-out error more than 3x the in-sample one, are warnings. The
metric's range comes from ``bounded`` or :func:`analysis.fit.forms.bounds.detect_bounds`.

Measured on :mod:`analysis.testing.simulate` (``tests/test_analysis_calibration.py``):
95 % intervals of the exponent cover the generating one in 92-98 % of
replications with the learning_curve.yaml design at the digits noise level.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

import analysis.tables.cells as cl
from analysis import tables
from analysis.fit.forms.on_curves import power_law_warnings
from analysis.errors import AnalysisError
from analysis.tables.frontier import Frontier, frontier, positive_points
from analysis.fit.powerlaw import PowerLawFit, fit_power_law


@dataclass(frozen=True, kw_only=True)
class CurveFit:
    """The learning curve of one group and its power-law fit (or why there is none)."""

    group: dict
    """Values of the ``by`` columns for this group (empty for one curve)."""
    label: str
    """``"width=64"``; ``"all"`` for one curve."""
    x_name: str
    """Column on the x axis, e.g. ``n_train``."""
    metric: str
    """Fitted metric, e.g. ``test_loss``."""
    maximize: bool
    """Whether the frontier takes the largest metric."""
    over: tuple[str, ...]
    """Axes optimised over at each x; empty for a fixed configuration."""
    x: tuple[float, ...]
    """Frontier x values."""
    y: tuple[float, ...]
    """Frontier metric values (mean over seeds of the winner, or cross-fitted)."""
    n_seeds: tuple[int, ...]
    """Seeds of the winning configuration at each x."""
    chosen: tuple[dict, ...]
    """Winning configuration at each x."""
    outcomes: dict
    """Trials of this group by outcome: ``ok``, ``diverged``, ``failed``, ``nonfinite``, ..."""
    fit: PowerLawFit | None
    """The fit, or None (see ``message``)."""
    selection: str = ""
    """How the winner at each x was chosen and measured."""
    flagged: tuple[dict, ...] = ()
    """Configurations left out of selection (a diverged or failed trial), with the reason."""
    dropped: tuple[dict, ...] = ()
    """x values without any eligible configuration."""
    notes: tuple[str, ...] = ()
    """Warnings about the input (duplicates, batches above n_train)."""
    message: str = ""
    """Why there is no fit."""
    bounds: object = None
    """The metric's range (:class:`analysis.fit.forms.bounds.Bounds`), or None (see ``bounds_note``)."""
    bounds_note: str = ""
    """Why the range is unknown."""
    warnings: tuple[str, ...] = ()
    """About the power-law fit: it rises, is unbounded below or leaves the metric's range; its
    held-out error is more than 3x its in-sample error, or undefined."""
    seeded: bool = False
    """Whether the frontier has clustered seed replicates (the power law's intervals use them)."""
    replicates: np.ndarray = field(default=None, repr=False, compare=False)
    """Clustered seed-bootstrap replicates of ``y`` (winners chosen again), ``(R, len(x))``."""
    family: object = None
    """A curve family fitted to the frontier (:class:`analysis.fit.forms.fit.FormFit`): the one named
    by ``--form``, or auto's choice, which makes the default extrapolation check."""
    family_note: str = ""
    """Why there is no family fit."""
    prediction: object = None
    """Predictions of ``family`` (:class:`analysis.fit.forms.prediction.Prediction`), when asked for."""

    def to_dict(self) -> dict:
        """Plain Python values."""
        return {"group": self.group, "label": self.label, "x_name": self.x_name,
                "metric": self.metric, "maximize": self.maximize, "over": list(self.over),
                "selection": self.selection,
                "points": [{"x": x, "y": y, "n_seeds": n, "config": c}
                           for x, y, n, c in zip(self.x, self.y, self.n_seeds, self.chosen)],
                "outcomes": self.outcomes, "flagged": list(self.flagged),
                "dropped": list(self.dropped), "notes": list(self.notes),
                "fit": None if self.fit is None else self.fit.to_dict(),
                "message": self.message, "warnings": list(self.warnings),
                "bounds": None if self.bounds is None else self.bounds.to_dict(),
                "bounds_note": self.bounds_note,
                "family": None if self.family is None else self.family.to_dict(),
                "family_note": self.family_note,
                "prediction": None if self.prediction is None else self.prediction.to_dict()}


def fit_learning_curves(trials: pa.Table, *, x: str = "n_train", metric: str = "test_loss",
                        by=(), where: dict | None = None, sweep: str | None = None,
                        offset: bool = True, n_boot: int = 1000, level: float = 0.95,
                        delta: float | None = None, holdout: int | None = None, seed: int = 0,
                        resample: str = "auto", maximize: bool | None = None,
                        bounded: tuple[float, float] | None = None,
                        power_law: bool = True, unbounded: bool = False) -> list[CurveFit]:
    """Fit :math:`y = a x^b + c` to the frontier of each group of a sweep.

    Parameters
    ----------
    trials : pyarrow.Table
        Trials table (:func:`scaling.store.load_tables`) of one sweep, or several
        with ``sweep`` or ``by=("sweep",)``.
    x : str
        Numeric column on the x axis.
    metric : str
        Stored metric or ``error`` (1 - test_acc) or ``gap`` (test_loss - train_loss).
        Winners are chosen on its validation counterpart (``val_loss``,
        ``1 - val_acc``) when the table has one.
    by : sequence of str
        Columns to split by; one curve per distinct combination.
    where : dict, optional
        ``{column: value}`` filters applied first, e.g. to fix a configuration.
    sweep : str, optional
        Keep only this sweep.
    offset, n_boot, level, delta, holdout, seed
        Passed to :func:`analysis.fit.powerlaw.fit_power_law`.
    resample : {"auto", "seeds", "points"}
        Bootstrap unit: seeds (clustered across every x and configuration;
        ``auto`` when there are two or more), or the points themselves.
    maximize : bool, optional
        Whether larger is better; by default guessed from the name (``*acc*``).
    bounded : (low, high), optional
        The metric's range; by default [0, 1] when every frontier value lies in
        it and the name says err/acc (:func:`analysis.fit.forms.bounds.detect_bounds`).
    power_law : bool
        Fit the power law (False when a curve family replaces it, ``--form``).
    unbounded : bool
        Fit the power law without bounds. By default it is monotone: a minimised metric
        falls (a >= 0, b <= 0, c >= 0) and a maximised one rises towards its offset
        (:func:`analysis.fit.powerlaw.monotone_box`); data that do not are a warning.

    Returns
    -------
    list of CurveFit
        One per group. A group that cannot be fitted carries ``fit=None`` and a
        message; only a table where nothing is usable raises.

    Raises
    ------
    AnalysisError
        Unknown columns, several sweeps, no matching trials, or no usable trial at all.
    """
    if resample not in ("auto", "seeds", "points"):
        raise AnalysisError(f"resample must be auto, seeds or points, got {resample!r}")
    trials = _check_columns(trials, x, by)
    prep = cl.prepare(trials, metric, where=where, sweep=sweep, by=by)
    fr, y = prep.fr, prep.y
    xs = tables.numeric(fr, x, "x column")
    outcome = np.where(prep.ok & ~np.isfinite(xs), "nonfinite", prep.outcome)
    ok = prep.ok & np.isfinite(xs)
    if not (ok & prep.mask).any():
        raise AnalysisError(f"no usable trials for {metric!r}: outcomes "
                            f"{tables.count_by(outcome[prep.mask])}")
    rng = np.random.default_rng(seed)
    fit_options = dict(offset=offset, n_boot=n_boot, level=level, delta=delta, holdout=holdout)
    if unbounded and not power_law:
        raise AnalysisError("--unbounded lifts the power law's bounds; a curve family (--form) "
                            "keeps its own")
    out = []
    for key, idx in tables.groups(fr, prep.mask & np.isfinite(xs), tuple(by)):
        head = dict(group=dict(zip(by, key)), label=tables.label(by, key), x_name=x,
                    metric=metric,
                    maximize=tables.maximize(metric) if maximize is None else bool(maximize),
                    outcomes=tables.count_by(outcome[idx]), notes=prep.notes)
        if not ok[idx].any():
            out.append(CurveFit(**head, over=(), x=(), y=(), n_seeds=(), chosen=(), fit=None,
                                message="no usable trials in this group"))
            continue
        front = frontier(fr, idx, (x,), y, outcome=outcome, maximize=head["maximize"],
                         n_boot=n_boot if resample != "points" else 0, rng=rng, sel=prep.sel,
                         sel_name=prep.sel_name)
        front, zero = positive_points(front, fr, idx, metric)  # a log-scale fit needs y > 0
        bounds, bounds_note = _bounds(metric, front.y, bounded, head["maximize"])
        rng_range = None if bounds is None else (bounds.low, bounds.high)
        fit, message, warn = None, "", ()
        if power_law and zero and front.points.shape[0] == 0:
            message = f"nothing left to fit: {zero}"
        elif power_law:
            shape = None if unbounded else ("rising" if head["maximize"] else "falling")
            fit, message = _fit(front, resample, rng,
                                {**fit_options, "bounds": rng_range, "monotone": shape})
            warn = () if fit is None else tuple(power_law_warnings(fit, bounds, head["maximize"]))
        warn = ((zero,) if zero else ()) + warn
        out.append(CurveFit(**head, over=front.over, x=tuple(front.points[:, 0].tolist()),
                            y=tuple(front.y.tolist()), n_seeds=tuple(front.n_seeds.tolist()),
                            chosen=front.chosen, selection=front.selection,
                            flagged=front.flagged, dropped=front.dropped, fit=fit,
                            message=message, bounds=bounds, bounds_note=bounds_note,
                            warnings=warn, seeded=front.replicates is not None,
                            replicates=None if resample == "points" else front.replicates))
    return out


def _bounds(metric, y, bounded, maximize):
    """``(Bounds | None, why not)`` of the metric from its frontier values."""
    from analysis.fit.forms.bounds import detect_bounds

    if y.size == 0:
        return None, "no points"
    try:
        return detect_bounds(metric, y, given=bounded, maximize=maximize), ""
    except AnalysisError as e:
        return None, str(e)


def _check_columns(trials, x, by):
    names = set(trials.column_names)
    for col in by:
        if col not in names:
            raise AnalysisError(f"--by names unknown column {col!r}; the table has: "
                                f"{', '.join(sorted(names))}")
    return trials


def _fit(front: Frontier, resample: str, rng, options) -> tuple[PowerLawFit | None, str]:
    """Fit one frontier; (None, reason) when it cannot be fitted."""
    reps = None if resample == "points" else front.replicates
    try:
        if resample == "seeds" and reps is None:
            raise AnalysisError("--resample seeds needs at least 2 seeds; the winners here have "
                                f"{front.n_seeds.min() if front.n_seeds.size else 0}")
        if front.points.shape[0] == 0:
            raise AnalysisError("no x value has a configuration without diverged or failed "
                                "trials")
        fit = fit_power_law(front.points[:, 0], front.y, replicates=reps,
                            seed=int(rng.integers(2**31)), resampling=front.resampling,
                            **options)
    except AnalysisError as e:
        return None, str(e)
    return fit, ""
