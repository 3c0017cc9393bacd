"""``scaling bopt``: the optimal batch size per group and the SGD rule, or (``--over lr``) the
joint (lr, B) optimum and its scale laws."""

from __future__ import annotations

import analysis.cli.args as cliargs
import analysis.report.rule_text as rule_text
from analysis import tables
from analysis.cli.base import Command, emit
from analysis.errors import AnalysisError


class Bopt(Command):
    """optimal batch size per group and the B ∝ lr*N/(1-m) check; --over lr: the joint (lr, B)
    optimum and its scale laws

    The best batch size of each group (every axis but the batch and the seed), and the SGD rule
    B_opt ∝ lr*N/(1-m) when lr, n_train and momentum columns are all there. --over lr: the joint
    (lr, B) optimum of each cell and power laws of B_opt and lr_opt in the --scale columns.
    Columns are named, never renamed.
    """

    def add_arguments(self, p) -> None:
        p.add_argument("results", help="results directory, one sweep folder, or a trials CSV/Parquet")
        p.add_argument("--metric", default=None,
                       help="metric that defines the optimum (default: the task's headline "
                            "metric, error for classification, test_loss for a language model)")
        p.add_argument("--by", default="", metavar="COLS",
                       help="extra grouping columns (--by sweep: groups of each sweep apart)")
        p.add_argument("--batch", default="batch_size", metavar="COL",
                       help="batch-size column (default batch_size)")
        p.add_argument("--lr", default="lr", metavar="COL", help="learning-rate column (default lr)")
        p.add_argument("--scale", default="", metavar="COL[,COL]",
                       help="scale columns of --over lr, e.g. N,D: B_opt and lr_opt are fitted as "
                            "power laws of all of them, and of each alone when there are several "
                            "(B_opt = k*D^b beside k*N^a*D^b, in one run)")
        p.add_argument("--over", default=None, choices=("lr",),
                       help="lr: the joint (lr, B) optimum of each cell (grid argmin, refined by a "
                            "quadratic bowl in log lr and log B), and B_opt and lr_opt as power "
                            "laws k*prod(col^e_col) over the --scale columns (all together, then "
                            "each alone); rows of one cell that differ in another column with its "
                            "own (lr, B) grid (a model size not in --scale) are refused, never "
                            "merged")
        cliargs.where(p)
        cliargs.sweep(p)
        cliargs.direction(p)
        p.add_argument("--margin", type=float, default=0.25,
                       help="the rule is 'consistent' when every exponent's 90%% CI lies within "
                            "1 +- this (default 0.25)")
        cliargs.common(p, plot=True, delta=None)

    def take_action(self, args) -> int:
        scale = tables.parse_cols(args.scale)
        if args.over == "lr":
            return _bopt_over(args, scale)
        if scale:
            raise AnalysisError("--scale is for --over lr (the scale laws of the joint optimum); "
                                "without it, use --by to split groups")
        from analysis.rules.bopt import find_bopt

        trials = cliargs.read(args, args.results, args.metric, implied=(args.batch, args.lr))
        args.metric = args.metric or tables.headline_metric(trials)
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
    args.metric = args.metric or tables.headline_metric(trials)
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
