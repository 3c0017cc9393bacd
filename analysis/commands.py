"""Subcommands ``fit``, ``fit-joint``, ``bopt`` and ``report`` for the ``scaling`` console script.

:func:`register` adds them to an ``argparse`` subparsers object; each handler
takes the parsed arguments and returns an exit code. Mistakes a user can fix
(missing directory, empty store, unknown column, degenerate data) print one
line ``error: ...`` to stderr and return 2.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from analysis import format as fmt
from analysis import tables
from analysis.errors import AnalysisError


def register(subparsers) -> None:
    """Add ``fit``, ``fit-joint``, ``bopt`` and ``report`` to ``subparsers``."""
    p = subparsers.add_parser("fit", help="fit a power-law learning curve y = a*x^b + c to a sweep",
                              description="Fit y = a*x^b + c (Hestness et al. 2017) to the best "
                              "mean-over-seeds metric at each x (or to one configuration with "
                              "--where), with bootstrap intervals and an extrapolation check.")
    p.add_argument("results", help="results directory, one sweep folder, or a trials CSV/Parquet")
    p.add_argument("--x", default="n_train", help="column on the x axis (default n_train)")
    p.add_argument("--metric", default="test_loss",
                   help="metric column, or error (1-test_acc) or gap (test_loss-train_loss)")
    p.add_argument("--by", default="", metavar="COLS",
                   help="comma-separated columns: one curve each")
    _where(p)
    p.add_argument("--no-offset", action="store_true", help="fit y = a*x^b without the offset c")
    p.add_argument("--resample", choices=["auto", "seeds", "points"], default="auto",
                   help="bootstrap unit: seeds within each x (auto: when every x has 2+), "
                        "or the x points themselves")
    p.add_argument("--holdout", type=int, default=None, metavar="K",
                   help="largest distinct x values held out to test extrapolation "
                        "(default 20%%, at least 1; 0 turns it off)")
    _common(p, plot=True)
    p.set_defaults(func=lambda a: _run(_cmd_fit, a))

    p = subparsers.add_parser("fit-joint", help="fit L(N, D) = E + A/N^alpha + B/D^beta",
                              description="Chinchilla Approach 3 (Hoffmann et al. 2022) on any "
                              "two columns of a results directory, CSV or Parquet file.")
    p.add_argument("source", help="results directory, or a .csv / .parquet file")
    p.add_argument("--n", required=True, metavar="COL", help="column used as N (e.g. n_params)")
    p.add_argument("--d", required=True, metavar="COL", help="column used as D (e.g. n_train)")
    p.add_argument("--loss", required=True, metavar="COL", help="loss column (or error, gap)")
    _where(p)
    _common(p, plot=True)
    p.set_defaults(func=lambda a: _run(_cmd_fit_joint, a))

    p = subparsers.add_parser("bopt",
                              help="optimal batch size per group and the B ∝ lr*N/(1-m) check")
    p.add_argument("results", help="results directory, one sweep folder, or a trials CSV/Parquet")
    p.add_argument("--metric", default="test_acc", help="metric that defines the optimum")
    _where(p)
    _common(p, plot=True, delta=False)
    p.set_defaults(func=lambda a: _run(_cmd_bopt, a))

    p = subparsers.add_parser("report",
                              help="one self-contained HTML page of counts, fits and plots")
    p.add_argument("results", help="results directory, one sweep folder, or a trials CSV/Parquet")
    p.add_argument("-o", "--output", default="report.html", help="HTML file to write")
    p.add_argument("--x", default="n_train", help="learning-curve x column")
    p.add_argument("--metric", default="test_loss", help="learning-curve metric")
    p.add_argument("--by", default="", metavar="COLS", help="one learning curve per group")
    p.add_argument("--bopt-metric", default="test_acc", help="metric for B_opt and the collapse")
    p.add_argument("--boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.set_defaults(func=lambda a: _run(_cmd_report, a))


def _where(p) -> None:
    p.add_argument("--where", default="", metavar="COL=V,...",
                   help='keep only matching trials, e.g. "lr=0.1,batch_size=32"; '
                        "fix every other axis to fit one configuration")


def _common(p, *, plot: bool, delta: bool = True) -> None:
    p.add_argument("--boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--level", type=float, default=0.95, help="interval coverage (default 0.95)")
    if delta:
        p.add_argument("--delta", type=float, default=None,
                       help="Huber threshold on log residuals (default: from the residual "
                            "scale, at least 1e-3; 1e-3 reproduces Hoffmann et al. 2022)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    if plot:
        p.add_argument("--plot", default=None, metavar="FILE", help="save a figure (png/pdf/svg)")


def _run(cmd, args) -> int:
    try:
        _check(args)
        return cmd(args)
    except AnalysisError as e:
        return _fail(str(e))
    except Exception as e:  # a store or config mistake reported by the core library
        from scaling.errors import StorageError, UserError
        if isinstance(e, UserError):
            return _fail(str(e))
        if isinstance(e, StorageError):
            _fail(str(e))
            return 3
        raise


def _fail(message: str) -> int:
    print(f"error: {message.splitlines()[0] if message else 'failed'}", file=sys.stderr)
    return 2


def _check(args) -> None:
    if getattr(args, "boot", 0) < 0:
        raise AnalysisError(f"--boot must be >= 0, got {args.boot}")
    level = getattr(args, "level", 0.95)
    if not 0.0 < level < 1.0:
        raise AnalysisError(f"--level must be between 0 and 1 (e.g. 0.95), got {level}")
    delta = getattr(args, "delta", None)
    if delta is not None and not delta > 0:
        raise AnalysisError(f"--delta must be > 0 (e.g. 1e-3), got {delta}")


def _emit(args, data: dict, lines: list[str], fig=None) -> None:
    if fig is not None and getattr(args, "plot", None):
        from analysis import plots
        try:
            plots.save(fig(), args.plot)
        except (OSError, ValueError) as e:
            raise AnalysisError(f"cannot write the plot to {args.plot!r}: {e}") from None
    if args.json:
        print(json.dumps(_plain(data), indent=2, allow_nan=False))
    else:
        print("\n".join(lines))


def _plain(obj):
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _cmd_fit(args) -> int:
    from analysis.curves import fit_learning_curves

    trials = tables.read_any(args.results)
    curves = fit_learning_curves(trials, x=args.x, metric=args.metric,
                                 by=tables.parse_cols(args.by),
                                 where=tables.parse_where(args.where),
                                 offset=not args.no_offset, n_boot=args.boot, level=args.level,
                                 delta=args.delta, holdout=args.holdout, seed=args.seed,
                                 resample=args.resample)
    if all(c.fit is None for c in curves):
        return _fail(curves[0].message if len(curves) == 1 else
                     f"no group could be fitted; first reason: {curves[0].message}")

    def fig():
        from analysis.plots import plot_curves
        return plot_curves(curves)

    data = {"x": args.x, "metric": args.metric, "curves": [c.to_dict() for c in curves]}
    _emit(args, data, fmt.curve_lines(curves), fig)
    return 0


def _cmd_fit_joint(args) -> int:
    from analysis.joint import fit_joint_table

    table = tables.read_any(args.source)
    fit, outcomes = fit_joint_table(table, n=args.n, d=args.d, loss=args.loss,
                                    where=tables.parse_where(args.where), n_boot=args.boot,
                                    level=args.level, delta=args.delta, seed=args.seed)

    def fig():
        from analysis.plots import plot_joint
        return plot_joint(fit)

    lines = [f"L({args.n}, {args.d}) for {args.loss}; rows: {fmt.outcomes_text(outcomes)}"]
    _emit(args, {**fit.to_dict(), "outcomes": outcomes}, lines + fmt.fit_lines(fit), fig)
    return 0


def _cmd_bopt(args) -> int:
    from analysis.bopt import find_bopt

    trials = tables.read_any(args.results)
    result = find_bopt(trials, metric=args.metric, where=tables.parse_where(args.where),
                       n_boot=args.boot, level=args.level, seed=args.seed)

    def fig():
        from analysis.plots import plot_bopt
        return plot_bopt(result)

    _emit(args, result.to_dict(), fmt.bopt_lines(result), fig)
    return 0


def _cmd_report(args) -> int:
    from analysis.report import write_report

    if args.boot < 0:
        raise AnalysisError(f"--boot must be >= 0, got {args.boot}")
    out = write_report(args.results, args.output, x=args.x, metric=args.metric,
                       by=tables.parse_cols(args.by), bopt_metric=args.bopt_metric,
                       n_boot=args.boot)
    print(f"wrote {out}")
    return 0


def summary_lines(root: str) -> list[str]:
    """Trial counts by status for each sweep under ``root`` (infeasible trials included)."""
    trials = tables.load_trials(root)
    return fmt.summary_lines(trials)
