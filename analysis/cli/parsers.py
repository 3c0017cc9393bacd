"""Subcommands ``fit``, ``fit-joint``, ``bopt``, ``compute-optimal`` and ``report`` for ``scaling``.

:func:`register` adds them to an ``argparse`` subparsers object; each handler
(:mod:`analysis.cli.handlers`) takes the parsed arguments and returns an exit code.
Mistakes a user can fix (missing directory, empty store, unknown column,
degenerate data) print one line ``error: ...`` to stderr and return 2.
"""

from __future__ import annotations

import analysis.cli.args as cliargs
import analysis.report.text as fmt
import analysis.cli.handlers as h
from analysis import tables

FORMS = ("M1", "M2", "M3", "M4", "BNSL")
"""Curve families ``--form`` names (:mod:`analysis.fit.forms.families`, :mod:`analysis.fit.forms.bnsl`)."""


def register(subparsers) -> None:
    """Add ``fit``, ``fit-joint``, ``bopt``, ``bcrit``, ``compute-optimal`` and ``report`` to a
    subparsers object."""
    _fit(subparsers)
    _fit_joint(subparsers)
    _bopt(subparsers)
    _bcrit(subparsers)
    _compute_optimal(subparsers)
    _report(subparsers)


def _fit(subparsers) -> None:
    p = subparsers.add_parser("fit", help="fit a learning curve: the power law y = a*x^b + c, or "
                                          "a curve family (--form), with predictions",
                              description="Fit y = a*x^b + c (Hestness et al. 2017) to the best "
                              "mean-over-seeds metric at each x (or to one configuration with "
                              "--where), with bootstrap intervals, and check extrapolation with "
                              "the curve family that rolling-origin validation on the fitted "
                              "points chooses (auto); --form fits a family instead of the power "
                              "law, --predict predicts.")
    p.add_argument("results", help="results directory, one sweep folder, or a trials CSV/Parquet")
    p.add_argument("--x", default="n_train", help="column on the x axis (default n_train)")
    p.add_argument("--metric", default="test_loss",
                   help="metric column, or error (1-test_acc) or gap (test_loss-train_loss)")
    p.add_argument("--by", default="", metavar="COLS",
                   help="comma-separated columns: one curve each (--by sweep: one per sweep)")
    cliargs.where(p)
    cliargs.sweep(p)
    cliargs.direction(p)
    p.add_argument("--no-offset", action="store_true", help="fit y = a*x^b without the offset c")
    p.add_argument("--form", default=None, choices=("auto",) + FORMS,
                   help="fit this curve family instead of the power law and use it for the "
                        "extrapolation check and --predict (auto: the family rolling-origin "
                        "validation on the fitted points chooses; default: the power law, with "
                        "auto for the check and the predictions)")
    p.add_argument("--predict", default=None, metavar="X1,X2,...",
                   help="predict at these x: a bootstrap band for the curve and a prediction "
                        "interval for a new observation (by --form; default auto)")
    p.add_argument("--bounded", default=None, metavar="LOW,HIGH",
                   help="the metric's range, e.g. 0,1 for an error rate (default: [0, 1] when "
                        "every value lies in it and the name says err/acc)")
    p.add_argument("--resample", choices=["auto", "seeds", "points"], default="auto",
                   help="bootstrap unit of the power law: seeds within each x (auto: when every "
                        "x has 2+), or the x points themselves")
    p.add_argument("--holdout", type=int, default=None, metavar="K",
                   help="largest distinct x values held out to test extrapolation (default 20%%, "
                        "at least 1; 0 turns it off); the Huber delta and the family are chosen "
                        "on the remaining points only")
    cliargs.common(p, plot=True)
    p.set_defaults(func=lambda a: h.run(h.cmd_fit, a))


def _fit_joint(subparsers) -> None:
    p = subparsers.add_parser("fit-joint", help="fit L(N, D) = E + A/N^alpha + B/D^beta",
                              description="Chinchilla Approach 3 (Hoffmann et al. 2022) on any "
                              "two columns of a results directory, CSV or Parquet file, with an "
                              "extrapolation check (the largest N*D held out) and predictions.")
    p.add_argument("source", help="results directory, or a .csv / .parquet file")
    p.add_argument("--n", required=True, metavar="COL", help="column used as N (e.g. n_params)")
    p.add_argument("--d", required=True, metavar="COL", help="column used as D (e.g. n_train)")
    p.add_argument("--loss", required=True, metavar="COL", help="loss column (or error, gap)")
    cliargs.where(p)
    cliargs.sweep(p)
    p.add_argument("--predict", action="append", default=[], metavar="N=...,D=...",
                   help="predict at this (N, D): a bootstrap band and a prediction interval; "
                        "repeat for more, e.g. --predict N=1e9,D=2e10 --predict N=7e9,D=1.4e11")
    p.add_argument("--holdout", type=int, default=None, metavar="K",
                   help="largest distinct N*D values held out to test extrapolation (default "
                        "20%%, at least 1; 0 turns it off)")
    cliargs.common(p, plot=True, delta="1e-3")
    p.set_defaults(func=lambda a: h.run(h.cmd_fit_joint, a))


def _bopt(subparsers) -> None:
    p = subparsers.add_parser("bopt",
                              help="optimal batch size per group and the B ∝ lr*N/(1-m) check; "
                                   "--over lr: the joint (lr, B) optimum and its scale laws",
                              description="The best batch size of each group (every axis but "
                              "the batch and the seed), and the SGD rule B_opt ∝ lr*N/(1-m) when "
                              "lr, n_train and momentum columns are all there. --over lr: the "
                              "joint (lr, B) optimum of each cell and power laws of B_opt and "
                              "lr_opt in the --scale columns. Columns are named, never renamed.")
    p.add_argument("results", help="results directory, one sweep folder, or a trials CSV/Parquet")
    p.add_argument("--metric", default="test_acc", help="metric that defines the optimum")
    p.add_argument("--by", default="", metavar="COLS",
                   help="extra grouping columns (--by sweep: groups of each sweep apart)")
    p.add_argument("--batch", default="batch_size", metavar="COL",
                   help="batch-size column (default batch_size)")
    p.add_argument("--lr", default="lr", metavar="COL", help="learning-rate column (default lr)")
    p.add_argument("--scale", default="", metavar="COL[,COL]",
                   help="scale columns of --over lr, e.g. N,D: B_opt and lr_opt are fitted as "
                        "power laws of them")
    p.add_argument("--over", default=None, choices=("lr",),
                   help="lr: the joint (lr, B) optimum of each cell (grid argmin, refined by a "
                        "quadratic bowl in log lr and log B), and B_opt = k*D^b, "
                        "lr_opt = k*N^a*D^c fitted over --scale")
    cliargs.where(p)
    cliargs.sweep(p)
    cliargs.direction(p)
    p.add_argument("--margin", type=float, default=0.25,
                   help="the rule is 'consistent' when every exponent's 90%% CI lies within "
                        "1 +- this (default 0.25)")
    cliargs.common(p, plot=True, delta=None)
    p.set_defaults(func=lambda a: h.run(h.cmd_bopt, a))


def _bcrit(subparsers) -> None:
    p = subparsers.add_parser("bcrit", help="critical batch size from the stored curves, beside "
                                           "B_simple and B_opt",
                              description="Steps S(B) to first reach each target, fitted with "
                              "S = S_min + E_min/B (McCandlish et al. 2018); B_crit = E_min/S_min per "
                              "group with clustered bootstrap intervals, and its scaling with n_train.")
    p.add_argument("results", help="results directory or one sweep folder (curves are needed)")
    p.add_argument("--target", required=True, metavar="T[,T...]",
                   help="target value(s) of the metric, e.g. 0.3 or 0.4,0.3,0.25")
    p.add_argument("--metric", default="test_loss", help="curve column (default test_loss)")
    p.add_argument("--tune", choices=["lr"], default=None,
                   help="--tune lr: choose the lr of each batch size (fewest steps on validation)")
    cliargs.where(p)
    cliargs.sweep(p)
    p.add_argument("--boot", type=int, default=400, help="bootstrap resamples (default 400)")
    p.add_argument("--level", type=float, default=0.95, help="interval coverage (default 0.95)")
    p.add_argument("--boot-seed", type=int, default=0, help="seed of the bootstrap's random draws")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--plot", default=None, metavar="FILE", help="save the S-E figure (png/pdf/svg)")
    p.set_defaults(func=lambda a: h.run(h.cmd_bcrit, a))


def _compute_optimal(subparsers) -> None:
    p = subparsers.add_parser("compute-optimal",
                              help="N_opt ∝ C^a by IsoFLOP parabolas (Approach 2) and by the "
                                   "joint fit (Approach 3), side by side",
                              description="Hoffmann et al. (2022) Approaches 2 and 3 on any table "
                              "of (N, D, loss) rows, with paired bootstrap intervals and their "
                              "difference. C is --flops, else a stored train_flops column, "
                              "else 6*N*D.")
    p.add_argument("source", help="results directory, or a .csv / .parquet file")
    p.add_argument("--n", required=True, metavar="COL", help="column used as N (e.g. n_params)")
    p.add_argument("--d", required=True, metavar="COL", help="column used as D (e.g. tokens)")
    p.add_argument("--loss", required=True, metavar="COL", help="loss column")
    p.add_argument("--flops", default=None, metavar="COL",
                   help="compute column (default: train_flops when stored, else 6*N*D)")
    cliargs.where(p)
    p.add_argument("--boot", type=int, default=400, help="bootstrap resamples (default 400)")
    p.add_argument("--level", type=float, default=0.95, help="interval coverage (default 0.95)")
    p.add_argument("--delta", type=float, default=1e-3,
                   help="Huber threshold of the joint fit (default 1e-3, Hoffmann et al. 2022)")
    p.add_argument("--boot-seed", type=int, default=0, help="seed of the bootstrap's random draws")
    cliargs.declare(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=lambda a: h.run(h.cmd_compute_optimal, a))


def _report(subparsers) -> None:
    p = subparsers.add_parser("report",
                              help="one self-contained HTML page of counts, fits and plots")
    p.add_argument("results", help="results directory, one sweep folder, or a trials CSV/Parquet")
    p.add_argument("-o", "--output", default="report.html", help="HTML file to write")
    p.add_argument("--x", default="n_train", help="learning-curve x column")
    p.add_argument("--metric", default="test_loss", help="learning-curve metric")
    p.add_argument("--by", default="", metavar="COLS",
                   help="one learning curve per group (--by sweep: every sweep apart)")
    cliargs.sweep(p)
    p.add_argument("--filter", default=None, metavar="SQL",
                   help='keep only rows where an SQL expression holds, e.g. --filter "lr <= 0.1"')
    p.add_argument("--bopt-metric", default="test_acc", help="metric for B_opt and the collapse")
    p.add_argument("--boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    cliargs.declare(p)
    p.set_defaults(func=lambda a: h.run(h.cmd_report, a))


def summary_lines(root: str) -> list[str]:
    """Trial counts by status for each sweep under ``root`` (infeasible trials included)."""
    trials = tables.load_trials(root)
    return fmt.summary_lines(trials)
