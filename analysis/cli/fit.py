"""``scaling fit``: a learning curve's power law or curve family, with predictions."""

from __future__ import annotations

import analysis.cli.args as cliargs
import analysis.report.fit_text as fit_text
from analysis import tables
from analysis.cli.base import Command, emit, fail
from analysis.fit.forms.registry import FORMS


class Fit(Command):
    """fit a learning curve: the power law y = a*x^b + c, or a curve family (--form), with
    predictions

    Fit y = a*x^b + c (Hestness et al. 2017) to the best mean-over-seeds metric at each x (or to
    one configuration with --where), with bootstrap intervals, and check extrapolation with the
    curve family that rolling-origin validation on the fitted points chooses (auto); --form fits
    a family instead of the power law, --predict predicts.
    """

    def add_arguments(self, p) -> None:
        p.add_argument("results", help="results directory, one sweep folder, or a trials CSV/Parquet")
        p.add_argument("--x", default="n_train", help="column on the x axis (default n_train)")
        p.add_argument("--metric", default=None,
                       help="metric column, or error (1-test_acc) or gap (test_loss-train_loss); default: the "
                            "task's headline metric (error for classification, test_loss for a "
                            "language model)")
        p.add_argument("--by", default="", metavar="COLS",
                       help="comma-separated columns: one curve each (--by sweep: one per sweep)")
        cliargs.where(p)
        cliargs.sweep(p)
        cliargs.direction(p)
        p.add_argument("--no-offset", action="store_true", help="fit y = a*x^b without the offset c")
        p.add_argument("--unbounded", action="store_true",
                       help="fit the power law without bounds (default: a minimised metric falls, "
                            "a >= 0, b <= 0, c >= 0; a maximised one rises towards c)")
        p.add_argument("--form", default=None, choices=("auto",) + tuple(FORMS),
                       help="fit this curve family instead of the power law and use it for the "
                            "extrapolation check and --predict (auto: the family rolling-origin "
                            "validation on the fitted points chooses; default: the power law, with "
                            "auto for the check and the predictions)")
        p.add_argument("--predict", default=None, metavar="X1,X2,...",
                       help="predict at these x: a bootstrap band for the curve and a prediction "
                            "interval for a new observation (by --form; default auto, whose choice "
                            "never depends on these x)")
        p.add_argument("--bounded", default=None, metavar="LOW,HIGH",
                       help="the metric's range, e.g. 0,1 for an error rate (default: [0, 1] when "
                            "every value lies in it and the name says err/acc)")
        p.add_argument("--resample", choices=["auto", "seeds", "points"], default="auto",
                       help="bootstrap unit of the power law: seeds within each x (auto: when every "
                            "x has 2+), or the x points themselves")
        p.add_argument("--holdout", type=int, default=None, metavar="K",
                       help="largest distinct x values held out to test extrapolation (default 20%%, "
                            "at least 1; 0 turns it off); the Huber delta is chosen on the remaining "
                            "points only, and the family checked is the one that predicts")
        cliargs.common(p, plot=True)

    def take_action(self, args) -> int:
        from analysis.fit.forms.on_curves import add_forms, parse_bounds, parse_floats
        from analysis.fit.curves import fit_learning_curves

        at = parse_floats(args.predict)
        bounded = parse_bounds(args.bounded)
        trials = cliargs.read(args, args.results, args.x, args.metric)
        args.metric = args.metric or tables.headline_metric(trials)
        curves = fit_learning_curves(trials, x=args.x, metric=args.metric,
                                     by=tables.parse_cols(args.by), sweep=args.sweep,
                                     where=cliargs.where_of(args, trials),
                                     offset=not args.no_offset, n_boot=args.boot, level=args.level,
                                     delta=args.delta, holdout=args.holdout, seed=args.boot_seed,
                                     resample=args.resample, maximize=args.maximize,
                                     bounded=bounded, power_law=args.form is None,
                                     unbounded=args.unbounded)
        curves = add_forms(curves, form=args.form, predict=at, holdout=args.holdout,
                           n_boot=args.boot, level=args.level, seed=args.boot_seed)
        if all(c.fit is None and c.family is None for c in curves):
            first = curves[0].message or curves[0].family_note
            return fail(first if len(curves) == 1 else
                        f"no group could be fitted; first reason: {first}")

        def fig():
            from analysis.report.plots import plot_curves
            return plot_curves(curves)

        warnings = [f"[{c.label}] {w}" for c in curves for w in c.warnings + (
            c.family.warnings if c.family is not None else ()) + (
            c.prediction.warnings if c.prediction is not None else ())]
        data = {"x": args.x, "metric": args.metric, "form": args.form or "power law",
                "check_form": args.form or "auto",
                "notes": list(curves[0].notes), "warnings": warnings,
                "curves": [c.to_dict() for c in curves]}
        emit(args, data, fit_text.curve_lines(curves), fig)
        return 0
