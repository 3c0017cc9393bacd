"""``scaling compute-optimal``: N_opt ∝ C^a by Chinchilla's Approaches 2 and 3."""

from __future__ import annotations

import analysis.cli.args as cliargs
from analysis.cli.base import Command, emit


class ComputeOptimal(Command):
    """N_opt ∝ C^a by IsoFLOP parabolas (Approach 2) and by the joint fit (Approach 3), side by
    side

    Hoffmann et al. (2022) Approaches 2 and 3 on any table of (N, D, loss) rows, with paired
    bootstrap intervals and their difference. C is --flops, else a stored train_flops column,
    else 6*N*D.
    """

    def add_arguments(self, p) -> None:
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

    def take_action(self, args) -> int:
        from analysis.fit.compute_optimal import compute_optimal_table
        from analysis.report.fit_text import compute_optimal_lines

        table = cliargs.read(args, args.source, args.n, args.d, args.loss, args.flops)
        table = cliargs.apply_where(table, cliargs.where_of(args, table))
        res = compute_optimal_table(table, n=args.n, d=args.d, loss=args.loss, flops=args.flops,
                                    n_boot=args.boot, level=args.level, delta=args.delta,
                                    seed=args.boot_seed)
        emit(args, res.to_dict(), compute_optimal_lines(res))
        return 0
