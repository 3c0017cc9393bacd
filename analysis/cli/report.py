"""``scaling report``: one self-contained HTML page."""

from __future__ import annotations

import analysis.cli.args as cliargs
from analysis import tables
from analysis.cli.base import Command


class Report(Command):
    """one self-contained HTML page of counts, fits and plots"""

    def add_arguments(self, p) -> None:
        p.add_argument("results", help="results directory, one sweep folder, or a trials CSV/Parquet")
        p.add_argument("-o", "--output", default="report.html", help="HTML file to write")
        p.add_argument("--x", default="n_train", help="learning-curve x column")
        p.add_argument("--metric", default=None,
                       help="learning-curve metric (default: the task's headline metric, error for "
                            "classification, test_loss for a language model)")
        p.add_argument("--by", default="", metavar="COLS",
                       help="one learning curve per group (--by sweep: every sweep apart)")
        cliargs.sweep(p)
        p.add_argument("--filter", default=None, metavar="SQL",
                       help='keep only rows where an SQL expression holds, e.g. --filter "lr <= 0.1"')
        p.add_argument("--bopt-metric", default=None,
                       help="metric for B_opt and the collapse (default: as --metric)")
        p.add_argument("--curves", default=None, metavar="WHERE",
                       help="also draw the training curves of this group, coloured by the axis "
                            'that varies in it: COL=VALUE pairs as --where takes them, e.g. '
                            '--curves "n_train=600,momentum=0.9", or an SQL expression as --filter '
                            'takes it, e.g. --curves "lr >= 0.1 AND batch_size = 32" (the '
                            "winners at each --x are always drawn)")
        p.add_argument("--boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
        cliargs.declare(p)

    def take_action(self, args) -> int:
        from analysis.report.html import write_report

        out = write_report(args.results, args.output, x=args.x, metric=args.metric,
                           by=tables.parse_cols(args.by), bopt_metric=args.bopt_metric,
                           n_boot=args.boot, sweep=args.sweep, axes=tables.parse_cols(args.axes),
                           seed=args.seed, filter=args.filter, curves_where=args.curves,
                           **({"cols": args.col} if args.col else {}))
        print(f"wrote {out}")
        return 0
