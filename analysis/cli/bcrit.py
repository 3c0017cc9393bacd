"""``scaling bcrit``: the critical batch size from the stored curves."""

from __future__ import annotations

import analysis.cli.args as cliargs
from analysis import tables
from analysis.cli.base import Command, emit
from analysis.errors import AnalysisError


class Bcrit(Command):
    """critical batch size from the stored curves, beside B_simple and B_opt

    Steps S(B) to first reach each target, fitted with S = S_min + E_min/B (McCandlish et al.
    2018); B_crit = E_min/S_min per group with clustered bootstrap intervals, and its scaling with
    n_train.
    """

    def add_arguments(self, p) -> None:
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

    def take_action(self, args) -> int:
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
