"""``scaling fit-joint``: Chinchilla's L(N, D) on any two columns, checked and predicted."""

from __future__ import annotations

import analysis.cli.args as cliargs
import analysis.report.fit_text as fit_text
import analysis.report.text as fmt
from analysis import tables
from analysis.cli.base import Command, emit


class FitJoint(Command):
    """fit L(N, D) = E + A/N^alpha + B/D^beta (--tie: alpha = beta; --over-training: in C and M)

    Chinchilla Approach 3 (Hoffmann et al. 2022) on any two columns of a results directory, CSV
    or Parquet file, with an extrapolation check (the largest N*D held out) and predictions.
    --tie fits one exponent for both; --over-training writes that law in compute C = 6*N*D and
    token multiplier M = D/N (Gadre et al. 2024).
    """

    def add_arguments(self, p) -> None:
        p.add_argument("source", help="results directory, or a .csv / .parquet file")
        p.add_argument("--n", default="n_params", metavar="COL",
                       help="column used as N (default n_params)")
        p.add_argument("--d", default="n_train", metavar="COL", help="column used as D (default n_train)")
        p.add_argument("--loss", default=None, metavar="COL",
                       help="loss column (or error, gap); default: the headline metric, as fit's")
        cliargs.where(p)
        cliargs.sweep(p)
        p.add_argument("--predict", action="append", default=[], metavar="N=...,D=...",
                       help="predict at this (N, D): a bootstrap band and a prediction interval; "
                            "repeat for more, e.g. --predict N=1e9,D=2e10 --predict N=7e9,D=1.4e11")
        law = p.add_mutually_exclusive_group()
        law.add_argument("--tie", action="store_true",
                         help="one exponent for N and D (alpha = beta): E + A/N^alpha + B/D^alpha, "
                              "4 parameters, so 5 points suffice")
        law.add_argument("--over-training", action="store_true",
                         help="the tied law in compute C = 6*N*D and token multiplier M = D/N "
                              "(Gadre et al. 2024): E + (a*M^eta + b*M^-eta)*C^-eta; --predict "
                              "also takes C=...,M=... or N=...,M=...")
        p.add_argument("--holdout", type=int, default=None, metavar="K",
                       help="largest distinct N*D values held out to test extrapolation (default "
                            "20%%, at least 1; 0 turns it off)")
        cliargs.common(p, plot=True, delta="1e-3")

    def take_action(self, args) -> int:
        from analysis.report.fit_text import joint_lines
        from analysis.fit.joint import fit_joint_table
        from analysis.fit.joint_check import joint_holdout, joint_predict, joint_warnings, parse_points

        ns, ds = parse_points(args.predict, args.n, args.d)
        law = "over-training" if args.over_training else "tied" if args.tie else "chinchilla"
        table = cliargs.read(args, args.source, args.n, args.d, args.loss)
        args.loss = args.loss or tables.headline_metric(table)
        fit, outcomes = fit_joint_table(table, n=args.n, d=args.d, loss=args.loss,
                                        where=cliargs.where_of(args, table), sweep=args.sweep,
                                        n_boot=args.boot, level=args.level, delta=args.delta,
                                        seed=args.boot_seed, law=law)
        check_, note = joint_holdout(fit.n, fit.d, fit.y, delta=args.delta, holdout=args.holdout,
                                     law=law)
        warnings = list(fit.input_warnings) + joint_warnings(fit, check_)
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
