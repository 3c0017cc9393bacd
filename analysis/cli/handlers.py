"""Handlers of the analysis subcommands (:mod:`analysis.cli.parsers` registers their flags).

Each ``cmd_*`` takes the parsed arguments, computes with the analysis modules,
and prints text (or JSON with ``--json``) built by :mod:`analysis.report.text` and
:mod:`analysis.report.fit_text`; :func:`run` turns a mistake a user can fix into one
line ``error: ...`` and exit code 2.
"""

from __future__ import annotations

import json
import sys

import numpy as np

import analysis.cli.args as cliargs
import analysis.report.fit_text as fit_text
import analysis.report.rule_text as rule_text
import analysis.report.text as fmt
from analysis import tables
from analysis.errors import AnalysisError


def run(cmd, args) -> int:
    try:
        check(args)
        return cmd(args)
    except AnalysisError as e:
        return fail(str(e))
    except Exception as e:  # a store or config mistake reported by the core library
        from scaling.errors import StorageError, UserError
        if isinstance(e, UserError):
            return fail(str(e))
        if isinstance(e, StorageError):  # the store failed, not the user: exit 3
            fail(str(e))
            return 3
        raise


def fail(message: str) -> int:
    print(f"error: {message.splitlines()[0] if message else 'failed'}", file=sys.stderr)
    return 2


def check(args) -> None:
    if getattr(args, "boot", 0) < 0:
        raise AnalysisError(f"--boot must be >= 0, got {args.boot}")
    level = getattr(args, "level", 0.95)
    if not 0.0 < level < 1.0:
        raise AnalysisError(f"--level must be between 0 and 1 (e.g. 0.95), got {level}")
    delta = getattr(args, "delta", None)
    if isinstance(delta, str):
        args.delta = cliargs.delta_value(delta)
    elif delta is not None and not delta > 0:
        raise AnalysisError(f"--delta must be > 0 (e.g. 1e-3), got {delta}")
    if getattr(args, "holdout", None) is not None and args.holdout < 0:
        raise AnalysisError(f"--holdout must be >= 0 (0 turns the check off), got {args.holdout}")


def emit(args, data: dict, lines: list[str], fig=None) -> None:
    if fig is not None and getattr(args, "plot", None):
        import analysis.report.plots as plots
        try:
            plots.save(fig(), args.plot)
        except (OSError, ValueError) as e:
            raise AnalysisError(f"cannot write the plot to {args.plot!r}: {e}") from None
    if args.json:
        for note in data.get("notes", ()) or ():
            if str(note).startswith("warning: "):
                print(note, file=sys.stderr)
        print(json.dumps(plain(data), indent=2, allow_nan=False))
    else:
        print("\n".join(lines))


def plain(obj):
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def cmd_fit(args) -> int:
    from analysis.fit.forms.on_curves import add_forms, parse_bounds, parse_floats
    from analysis.fit.curves import fit_learning_curves

    at = parse_floats(args.predict)
    bounded = parse_bounds(args.bounded)
    trials = cliargs.read(args, args.results, args.x, args.metric)
    curves = fit_learning_curves(trials, x=args.x, metric=args.metric,
                                 by=tables.parse_cols(args.by), sweep=args.sweep,
                                 where=cliargs.where_of(args, trials),
                                 offset=not args.no_offset, n_boot=args.boot, level=args.level,
                                 delta=args.delta, holdout=args.holdout, seed=args.boot_seed,
                                 resample=args.resample, maximize=args.maximize,
                                 bounded=bounded, power_law=args.form is None)
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


def cmd_fit_joint(args) -> int:
    from analysis.report.fit_text import joint_lines
    from analysis.fit.joint import fit_joint_table
    from analysis.fit.joint_check import joint_holdout, joint_predict, joint_warnings, parse_points

    ns, ds = parse_points(args.predict, args.n, args.d)
    table = cliargs.read(args, args.source, args.n, args.d, args.loss)
    fit, outcomes = fit_joint_table(table, n=args.n, d=args.d, loss=args.loss,
                                    where=cliargs.where_of(args, table), sweep=args.sweep,
                                    n_boot=args.boot, level=args.level, delta=args.delta,
                                    seed=args.boot_seed)
    check_, note = joint_holdout(fit.n, fit.d, fit.y, delta=args.delta, holdout=args.holdout)
    warnings = joint_warnings(fit, check_)
    pred = joint_predict(fit, ns, ds, check=check_, level=args.level, seed=args.boot_seed) \
        if ns else None

    def fig():
        from analysis.report.plots import plot_joint
        return plot_joint(fit)

    lines = [f"L({args.n}, {args.d}) for {args.loss}; rows: {fmt.outcomes_text(outcomes)}"]
    lines += fit_text.fit_lines(fit) + joint_lines(check_, note, warnings, pred, args.n, args.d)
    data = {**fit.to_dict(), "outcomes": outcomes,
            "holdout": None if check_ is None else check_.to_dict(), "holdout_note": note,
            "warnings": warnings + (list(pred.warnings) if pred is not None else []),
            "predictions": None if pred is None else pred.to_dict()}
    emit(args, data, lines, fig)
    return 0


def cmd_bopt(args) -> int:
    scale = tables.parse_cols(args.scale)
    if args.over == "lr":
        return _bopt_over(args, scale)
    if scale:
        raise AnalysisError("--scale is for --over lr (the scale laws of the joint optimum); "
                            "without it, use --by to split groups")
    from analysis.rules.bopt import find_bopt

    trials = cliargs.read(args, args.results, args.metric, implied=(args.batch, args.lr))
    result = find_bopt(trials, metric=args.metric, where=cliargs.where_of(args, trials),
                       sweep=args.sweep, by=tables.parse_cols(args.by), n_boot=args.boot,
                       level=args.level, margin=args.margin, seed=args.boot_seed,
                       batch=args.batch, lr=args.lr, maximize=args.maximize)

    def fig():
        from analysis.report.plots import plot_bopt
        return plot_bopt(result)

    emit(args, result.to_dict(), rule_text.bopt_lines(result), fig)
    return 0


def _bopt_over(args, scale) -> int:
    from analysis.rules.joint_optimum import find_joint_optimum
    from analysis.report.rule_text import over_lines

    trials = cliargs.read(args, args.results, args.metric,
                          implied=(args.batch, args.lr) + tuple(scale))
    result = find_joint_optimum(trials, metric=args.metric, batch=args.batch, lr=args.lr,
                                scale=scale, where=cliargs.where_of(args, trials),
                                sweep=args.sweep, by=tables.parse_cols(args.by),
                                n_boot=args.boot, level=args.level, seed=args.boot_seed,
                                maximize=args.maximize)

    def fig():
        from analysis.report.plots import plot_over
        return plot_over(result)

    emit(args, result.to_dict(), over_lines(result), fig)
    return 0


def cmd_bcrit(args) -> int:
    from analysis.rules.critical import critical_batch
    from analysis.report.rule_text import critical_lines
    from analysis.tables.sqlfilter import apply_filter

    try:
        targets = [float(t) for t in tables.parse_cols(args.target)]
    except ValueError:
        raise AnalysisError(f"--target wants numbers separated by commas, got {args.target!r}") from None
    trials, curves = tables.load_sweep(args.results)
    trials = apply_filter(trials, args.filter)
    res = critical_batch(trials, curves, targets=targets, metric=args.metric, tune_lr=args.tune == "lr",
                         where=cliargs.where_of(args, trials), sweep=args.sweep, n_boot=args.boot,
                         level=args.level, seed=args.boot_seed)

    def fig():
        from analysis.report.plots import plot_tradeoff
        return plot_tradeoff(res)

    emit(args, res.to_dict(), critical_lines(res), fig)
    return 0


def cmd_compute_optimal(args) -> int:
    from analysis.fit.compute_optimal import compute_optimal_table
    from analysis.report.fit_text import compute_optimal_lines

    table = cliargs.read(args, args.source, args.n, args.d, args.loss, args.flops)
    table = cliargs.apply_where(table, cliargs.where_of(args, table))
    res = compute_optimal_table(table, n=args.n, d=args.d, loss=args.loss, flops=args.flops,
                                n_boot=args.boot, level=args.level, delta=args.delta,
                                seed=args.boot_seed)
    emit(args, res.to_dict(), compute_optimal_lines(res))
    return 0


def cmd_report(args) -> int:
    from analysis.report.html import write_report

    out = write_report(args.results, args.output, x=args.x, metric=args.metric,
                       by=tables.parse_cols(args.by), bopt_metric=args.bopt_metric,
                       n_boot=args.boot, sweep=args.sweep, axes=tables.parse_cols(args.axes),
                       seed=args.seed, filter=args.filter)
    print(f"wrote {out}")
    return 0
