"""The ``scaling`` command: the one place that wires scaling, cluster and analysis together.

A user mistake (bad config, missing store, bad SQL) prints one line
``error: ...`` and exits with code 2; a storage outage that outlasts the retry
bound prints one line and exits 3; a failure of Ray itself under a sweep (a dead
raylet or GCS, a vanished session folder) prints one line and exits 4. Ray and torch
are imported only by the commands that need them, so ``scaling query`` starts fast.
"""

from __future__ import annotations

import signal
import sys

_early: list[int] = []


def _note(signum, frame):
    _early.append(signum)


if sys.argv[1:2] == ["sweep"] and __name__ in ("__main__", "cluster.cli"):
    # `scaling sweep`: from the first line of ours, SIGTERM/SIGINT are noted, not fatal; main()
    # hands them to localray.hold_signals, which stops the sweep cleanly (before this line runs,
    # only Python's own start-up has: site, the venv's .pth files)
    for _s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(_s, _note)

import argparse  # noqa: E402
import os  # noqa: E402
import warnings  # noqa: E402

from scaling.errors import StorageError, UserError  # noqa: E402


def _warn_one_line(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(f"warning: {message}\n")


def cmd_sweep(args) -> int:
    import cluster.launch.localray as localray

    localray.check_num_cpus(args.num_cpus, args.address)
    if args.max_config_bytes < 1:
        raise UserError(f"--max-config-bytes {args.max_config_bytes} is not a size; give a number of bytes >= 1")
    localray.check_auth_mode(args.insecure_ray)
    if not args.dry_run:
        # may re-run this command: before anything prints or warns, and while this process has one
        # thread (importing the store starts pyarrow's), so no signal lands in a thread exec ends
        _private_ray_network(args)
    from scaling.config.file import read_text
    from scaling.config.sweep import config_from_text
    from scaling.store.uri import open_filesystem

    open_filesystem(args.results)  # an unknown or mistyped URI scheme is refused before anything runs
    text = read_text(args.config, args.max_config_bytes)  # read once: the text stored is the text checked
    cfg = config_from_text(text, repr(args.config), overrides={"engine": args.engine} if args.engine else None)
    if args.dry_run:
        return dry_run(args, cfg)
    from cluster.driver.sweep import run_sweep  # after the config is checked: a refused one starts sooner

    if cfg.search.kind == "adaptive":  # rounds of ordinary sweeps, each planned by the fits (issue 28)
        from cluster.rounds import run_adaptive as run_sweep

    try:
        with localray.stop_on_signals():
            summary = run_sweep(cfg, text, args.results, address=args.address,
                                retry_failed=args.retry_failed, allow_large=args.allow_large,
                                num_cpus=args.num_cpus, progress=not args.quiet,
                                insecure_ray=args.insecure_ray, rerun_stale=args.rerun_stale,
                                accept_mixed=args.accept_mixed, storage_timeout=args.storage_timeout,
                                compact=not args.no_compact, snap=args.snap, log=_say)
    except KeyboardInterrupt as e:  # SIGINT, or SIGTERM through localray.Stopped
        return stopped(e)
    ran = sum(summary.counts.values())
    _say(f"ran {ran} trials in {summary.wall_s:.1f}s "
         f"({', '.join(f'{n} {s}' for s, n in summary.counts.items())}); "
         f"{summary.skipped} were already stored")
    from scaling.textout import width

    where = f"results: {summary.results}/{summary.name}"  # a path is never broken across lines
    tail = "  (trials/ and curves/ as Parquet)"
    print(where + tail if len(where + tail) <= width() else where)
    if not args.quiet:
        print_summary(args.results, summary.name)
    return 0


def stopped(e: KeyboardInterrupt) -> int:
    """The one line a sweep stopped by SIGINT or SIGTERM prints; its exit code, 128 + signum."""
    import cluster.launch.localray as localray

    signum = localray.stopped_by(e)
    what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    print(f"{chr(10) if sys.stderr.isatty() else ''}{what}: finished trials are stored; "
          "run the same command again to resume", file=sys.stderr)
    return 128 + signum


def _say(line: str) -> None:
    """One line of the sweep's own output, wrapped at the width (warnings stand out on a TTY)."""
    from scaling.textout import render

    print(render([line]), flush=True)


def dry_run(args, cfg) -> int:
    """``scaling sweep --dry-run``: the counts, units and a time estimate; nothing started or written."""
    from cluster.driver.dryrun import plan_sweep

    if cfg.search.kind == "adaptive":  # round 1's trials, planned as the run plans them (issue 28)
        from cluster.rounds import dry_run as plan_sweep

    plan = plan_sweep(cfg, args.results, engine=args.engine, num_cpus=args.num_cpus,
                      retry_failed=args.retry_failed, allow_large=args.allow_large,
                      rerun_stale=args.rerun_stale, accept_mixed=args.accept_mixed,
                      storage_timeout=args.storage_timeout, snap=args.snap)
    for line in plan.lines(args.address or os.environ.get("RAY_ADDRESS")):
        _say(line)
    return 0


def _private_ray_network(args) -> None:
    """Run a local Ray in a network of its own (only loopback) when the sweep needs no network:
    no cluster to join, results on a local disk. Re-runs the command in this process to get there."""
    import cluster.launch.netns as netns

    local_ray = not (args.address or os.environ.get("RAY_ADDRESS"))
    local_results = "://" not in args.results or args.results.startswith("file://")
    if args.ray_network != "private" or not local_ray or not local_results:
        return
    if netns.state() is None and args.argv is not None:
        import cluster.launch.localray as localray

        # returns only if it cannot, or a signal came (raised once the start-up ends)
        netns.reexec(args.argv, go=lambda: localray.pending_signal() is None)
    if (netns.state() or "").startswith("unavailable"):
        print(f"ray network: private network {netns.state()}; the local Ray listens on all "
              "interfaces, behind its token")


def print_summary(results: str, sweep: str) -> None:
    """Short summary of a stored sweep: statuses and the best configuration per n_train."""
    from scaling.store.views import open_store

    with open_store(results, [sweep]) as view:  # one view of the sweep for every part of the summary
        _print_summary(view, results, sweep)


def _print_summary(view, results: str, sweep: str) -> None:
    from analysis import tables
    from analysis.tables.load import from_store
    from scaling.store.query import format_table, run_query

    from scaling.textout import render

    name = sweep.replace("'", "''")
    out = [""]
    out += format_table(run_query(view, (
        "SELECT status, count(*) AS trials FROM trials "
        f"WHERE sweep = '{name}' GROUP BY status ORDER BY status"))).splitlines()
    trials = from_store(view.sql("SELECT * FROM trials ORDER BY trial_id"))  # the schema's axes
    try:
        metric = tables.headline_metric(trials)
    except UserError:
        metric = None
    if metric is not None:
        out += _best_lines(view, trials, name, metric) + exponent_lines(results, trials, metric) \
            + rule_lines(trials, metric)
    print(render(out))


def _best_lines(view, trials, name: str, metric: str) -> list[str]:
    """The best configuration at each n_train, chosen on validation, over the axes that vary."""
    from scaling.spec.schema import AXES
    from scaling.store.query import format_table, run_query

    fixed = {"n_train", "seed", "sweep", "task", "model"}
    varied = [a for a in (f.name for f in AXES) if a not in fixed and a in trials.column_names
              and len(trials.column(a).unique()) > 1]
    if metric == "error":  # both headline metrics are minimised: the winner is the arg_min
        sel, value, what = "avg(coalesce(1 - val_acc, 1 - test_acc))", "avg(1 - test_acc)", \
            "1 - validation accuracy"
    else:
        sel, value, what = "avg(coalesce(val_loss, test_loss))", "avg(test_loss)", "validation loss"
    cols = ", ".join(varied)
    picks = "".join(f"arg_min({a}, sel) AS {a}, " for a in varied)
    return ["", (f"best configuration at each n_train (chosen on {what}, mean over seeds; "
                 f"configurations with a diverged or failed seed left out; test {metric} reported):"),
            *format_table(run_query(view, (
        f"WITH g AS (SELECT n_train{', ' + cols if cols else ''}, {sel} AS sel, {value} AS v "
        f"FROM trials WHERE sweep = '{name}' GROUP BY ALL HAVING bool_and(status = 'ok')) "
        f"SELECT n_train, {picks}round(arg_min(v, sel), 4) AS {metric} FROM g "
        "GROUP BY n_train ORDER BY n_train"))).splitlines()]


def exponent_lines(results: str, trials, metric: str) -> list[str]:
    """The learning-curve exponent of ``metric`` on the tuned frontier, with its CI: the fit that
    ``scaling fit`` makes by default (same metric, form, bounds and bootstrap)."""
    from analysis.fit.curves import fit_learning_curves
    from analysis.fit.powerlaw import bound_text

    if len(trials.column("n_train").unique()) < 4:
        return []
    try:
        curve = fit_learning_curves(trials, x="n_train", metric=metric)[0]
    except UserError:
        return []
    fit = curve.fit
    out = ["", (f"more: scaling fit {results}; scaling bopt {results}; "
                f"scaling report {results} -o report.html")]
    if fit is None or not fit.converged:
        return out + ["learning curve: the power-law fit did not converge; see scaling fit"]
    b, lo, hi = fit.param("b")
    out.append(f"learning curve: {metric} ~ a*N^b + c, b = {b:.3f} (95% CI {lo:.3f} to {hi:.3f}; "
               f"bounds {bound_text(fit.form, fit.monotone).split(' (')[0]})")
    return out + [f"warning: {w}" for w in curve.warnings]


def rule_lines(trials, metric: str) -> list[str]:
    """The check of B_opt ∝ lr*N/(1-m) in one line, and what it means in another."""
    from analysis.rules.bopt import find_bopt

    names = set(trials.column_names)
    if not {"batch_size", "lr", "n_train"} <= names or len(trials.column("batch_size").unique()) < 3:
        return []
    try:
        result = find_bopt(trials, metric=metric)
    except UserError:
        return []
    rule = result.rule
    if rule is None:
        return [f"B_opt rule: not checked ({result.rule_note})"]
    axes = f" ({', '.join(rule.verdict.axes)})" if rule.verdict.axes else ""
    out = [(f"B_opt rule (B_opt ∝ lr*N/(1-m), Smith & Le 2018): {rule.verdict.label}{axes}; "
            f"{rule.n_observed} of {rule.n_groups} groups have their optimum inside the batch grid")]
    if rule.exponents:
        fitted = " * ".join(f"({e.name})^{e.value:.2f}" if "/" in e.name else f"{e.name}^{e.value:.2f}"
                            for e in rule.exponents)
        off = " and ".join(rule.verdict.axes)
        why = {"consistent": f"and every 90% CI here lies within 1 ± {rule.margin:g}",
               "inconsistent": f"and the 95% CI of {off} excludes 1",
               "inconclusive": "and some intervals here are too wide to tell"}[rule.verdict.label]
        out.append(f"  meaning: here B_opt ~ {fitted}; the rule has every exponent 1, {why}")
    return out


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value <= 7 * 86400:
        raise argparse.ArgumentTypeError(f"expected seconds in [0, 604800], got {text!r}")
    return value


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``scaling`` parser with every subcommand, or with only the one named ``only`` (what
    :func:`main` builds for ``scaling NAME ...``: no other command's module is imported, so a
    command starts in a fraction of the time; ``scaling --help`` and an unknown name get all)."""
    from analysis.cli import COMMANDS as ANALYSIS
    from analysis.cli import register as register_analysis
    from scaling.cli import COMMANDS as STORE
    from scaling.cli import register as register_store

    class _Version(argparse.Action):  # the version is looked up only when asked for
        def __call__(self, parser, namespace, values, option_string=None):
            from scaling import __version__

            print(f"scaling {__version__}")  # on stdout, as argparse's own version action
            parser.exit()

    parser = argparse.ArgumentParser(prog="scaling", description="Measure scaling laws with sweeps.")
    parser.add_argument("-V", "--version", action=_Version, nargs=0, default=argparse.SUPPRESS,
                        help="show program's version number and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if only is None or only == "sweep":
        _add_sweep(sub)
    if only is None or only in STORE:
        register_store(sub, only)
    if only is None or only in ANALYSIS:
        register_analysis(sub, only)
    return parser


def command_of(words: list[str]) -> str | None:
    """The subcommand ``words`` run when it is a known one and the first word; else None."""
    from analysis.cli import COMMANDS as ANALYSIS
    from scaling.cli import COMMANDS as STORE

    first = words[0] if words else ""
    return first if first == "sweep" or first in STORE or first in ANALYSIS else None


def _add_sweep(sub) -> None:
    from scaling.config.file import MAX_CONFIG_BYTES

    p = sub.add_parser("sweep", help="run (or resume) a sweep from a YAML config on Ray")
    p.add_argument("config", help="sweep config (YAML)")
    p.add_argument("--results", default="results", help="results store: a path or URI (default: results)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (or set RAY_ADDRESS); default: start a local Ray")
    p.add_argument("--engine", choices=["packed", "single"], default=None, help="override the config's engine")
    p.add_argument("--retry-failed", action="store_true", help="run again trials stored as failed")
    stale = p.add_mutually_exclusive_group()
    stale.add_argument("--rerun-stale", action="store_true",
                       help="train again stored trials made by another code_version or data_version")
    stale.add_argument("--accept-mixed", action="store_true",
                       help="keep stored trials of another code_version or data_version beside new ones")
    p.add_argument("--allow-large", action="store_true", help="allow sweeps over the trial limit")
    p.add_argument("--snap", action="store_true",
                   help="where a config value is within 1e-6 (relative) of a different stored value "
                        "of the same axis, use the stored one (default: warn and run it as new)")
    p.add_argument("--max-config-bytes", type=int, default=MAX_CONFIG_BYTES, metavar="N",
                   help=f"refuse a config file over N bytes before parsing it (default: {MAX_CONFIG_BYTES:,})")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.add_argument("--ray-network", choices=["private", "host"], default="private",
                   help="where a local Ray listens: private (default: a network namespace with only "
                        "loopback, where Linux allows it and results are on a local disk) or host")
    p.add_argument("--insecure-ray", action="store_true",
                   help="allow RAY_AUTH_MODE=disabled: a Ray whose ports accept anyone (trusted networks only)")
    p.add_argument("--storage-timeout", type=_seconds, default=60.0, metavar="SECONDS",
                   help="retry a failing results store this long before stopping the sweep with exit 3 "
                        "(default: 60)")
    p.add_argument("--no-compact", action="store_true",
                   help="leave the parts as written (default: compact every ~10,000 parts and at the end)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the config, data and store, and print the trials, packs, backend and a time "
                        "estimate; start no Ray, train and write nothing")
    p.set_defaults(func=cmd_sweep)


def main(argv: list[str] | None = None) -> int:
    import cluster.launch.netns as netns
    from cluster.launch.health import EXIT_CODE as RAY_FAILED, ClusterFailure

    words = list(sys.argv[1:]) if argv is None else argv
    sweep = words[:1] == ["sweep"]
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}  # given back at the end
    if sweep:  # SIGTERM/SIGINT from here on stop the sweep cleanly, in one line (never half-way)
        import cluster.launch.localray as localray

        localray.hold_signals(_early[0] if _early else None)
    netns.enter()  # first, while single-threaded: only acts when `scaling sweep` re-ran itself for it
    warnings.showwarning = _warn_one_line
    try:
        args = build_parser(command_of(words)).parse_args(argv)
        args.argv = list(sys.argv[1:]) if argv is None else None  # to re-run this command, not a caller's
        code = args.func(args)
        if sweep:
            localray.end_startup()  # a signal during a dry run or before Ray was needed
        return code
    except KeyboardInterrupt as e:
        if not sweep:
            raise
        return stopped(e)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except StorageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except ClusterFailure as e:  # Ray itself broke under the sweep: no trial was marked failed
        print(f"error: {e}", file=sys.stderr)
        return RAY_FAILED
    except BrokenPipeError:
        return 0
    finally:
        if sweep:  # a caller's own handlers (main called in-process) are theirs again
            for s, handler in handlers.items():
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
