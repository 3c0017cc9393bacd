"""The store's subcommands: ``scaling status``, ``query``, ``export``, ``verify`` and ``compact``.

Each is a ``cmd_*`` action; ``register`` adds their parsers, in the order ``scaling --help``
lists them. ``cluster/cli.py`` assembles these with ``sweep`` and the analysis commands.
"""
from __future__ import annotations

from scaling.errors import UserError

COMMANDS = ("status", "query", "export", "verify", "compact")
"""The store's subcommands, in the order ``scaling --help`` lists them."""

def cmd_status(args) -> int:
    from scaling.status import status_table
    from scaling.store.query import format_table

    print(format_table(status_table(args.results)))
    return 0


def cmd_query(args) -> int:
    """``scaling query DIR SQL``: the time limit covers running, fetching and printing; the memory
    limit bounds DuckDB, the fetched result and its text."""
    import math
    import sys
    import time

    from scaling.store.query import memory_bytes, parse_memory, run_query, write_result
    from scaling.store.views import default_memory_limit

    if not args.timeout > 0:
        raise UserError(f"--timeout must be a number of seconds > 0 (or inf for no limit), got {args.timeout:g}")
    timeout = None if math.isinf(args.timeout) else args.timeout
    memory = parse_memory(args.memory) if args.memory else default_memory_limit()
    limit = memory_bytes(memory)
    start = time.monotonic()
    table = run_query(args.results, args.sql, timeout_s=timeout, memory_limit=memory, max_bytes=limit)
    write_result(table, args.format, sys.stdout, budget=limit - table.nbytes,
                 deadline=None if timeout is None else start + timeout, timeout_s=timeout)
    return 0


def cmd_export(args) -> int:
    """``scaling export DIR OUT.parquet|OUT.csv [--curves [FILE]] [--sweep NAME]``."""
    from scaling.store.query import export_tables

    for path, rows in export_tables(args.results, args.out, args.curves, args.sweep).items():
        print(f"wrote {path} ({rows} rows)")
    return 0


def cmd_verify(args) -> int:
    """``scaling verify DIR [--repair]``: 0 when the store is sound, 1 when problems remain."""
    from scaling.store.verify import outside, repair, verify

    report = verify(args.results)
    for f in report.problems:
        print(f)
    if getattr(args, "repair", False) and not report.ok:
        for folder in outside(args.results):
            print(f"not repaired: {folder} resolves outside the store (a symbolic link); repair leaves it alone")
        moved = repair(args.results)
        for src, dst in moved:
            print(f"moved {src} -> {dst}")
        print(f"repair: moved {len(moved)} file(s) to quarantine; nothing was deleted")
        report = verify(args.results)
        for f in report.problems:
            print(f"still: {f}")
    if getattr(args, "verbose", False):
        for f in report.info:
            print(f"note: {f}")
    notes = f", {len(report.info)} note(s)" + ("" if getattr(args, "verbose", False) else " (-v lists them)")
    print(f"{report.parts} part(s) in {len(report.sweeps)} sweep(s): {len(report.problems)} problem(s)"
          f"{notes if report.info else ''}")
    return 0 if report.ok else 1


def cmd_compact(args) -> int:
    """``scaling compact DIR [--sweep NAME]``."""
    from scaling.store.compaction import TARGET_ROWS
    from scaling.store.verify import compact

    report = compact(args.results, args.sweep, target_rows=getattr(args, "target_rows", TARGET_ROWS))
    for path in report.finished:
        print(f"finished an interrupted compaction: {path}")
    for m in report.merges:
        print(f"{m.sweep or '.'}: {len(m.replaced)} parts ({m.rows_in} trial rows) -> "
              f"{m.part.rsplit('/', 1)[-1] or 'nothing (every run was superseded)'} ({m.rows_out} trial rows)")
    for f in report.skipped:
        print(f"skipped {f}")
    print(f"compacted {sum(len(m.replaced) for m in report.merges)} parts into {len(report.merges)}")
    return 0


def register(subparsers, only: str | None = None) -> None:
    """Add the store's commands (or only the one named ``only``) to the ``scaling`` command line."""
    def wanted(name: str) -> bool:
        return only is None or only == name

    if wanted("status"):
        p = subparsers.add_parser("status", help="trial counts by status for each sweep in a store")
        p.add_argument("results", help="results store (path or URI)")
        p.set_defaults(func=cmd_status)

    if wanted("query"):
        p = subparsers.add_parser("query", help="run SQL over the tables trials and curves (DuckDB, read-only)")
        p.add_argument("results", help="results store (path or URI)")
        p.add_argument("sql", help="a SELECT over trials and curves")
        p.add_argument("--format", choices=["table", "csv", "json"], default="table")
        p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                       help="stop a query that runs longer, fetching and printing included (default: 300; "
                            "inf: no limit)")
        p.add_argument("--memory", default=None, metavar="SIZE",
                       help="most memory a query may use, e.g. 8GB, for running it and for its result "
                            "(default: half of this machine's)")
        p.set_defaults(func=cmd_query)

    if wanted("export"):
        p = subparsers.add_parser("export", help="write the kept run of every trial (and --curves) to "
                                                 "a Parquet or CSV file, every value exact")
        p.add_argument("results", help="results store (path or URI)")
        p.add_argument("out", help="file to write: OUT.parquet or OUT.csv (written whole or not at all)")
        p.add_argument("--curves", nargs="?", const="", default=None, metavar="FILE",
                       help="also write the curves of those runs, to FILE or (no FILE) to "
                            "OUT.curves.parquet / OUT.curves.csv beside OUT")
        p.add_argument("--sweep", default=None, metavar="NAME", help="only this sweep (default: every sweep)")
        p.set_defaults(func=cmd_export)

    if wanted("verify"):
        p = subparsers.add_parser("verify", help="check every Parquet part of a results store")
        p.add_argument("results", help="results store (path or URI)")
        p.add_argument("--repair", action="store_true",
                       help="move bad parts and leftovers to <sweep>/quarantine/ (never deletes)")
        p.add_argument("-v", "--verbose", action="store_true", help="also list harmless findings")
        p.set_defaults(func=cmd_verify)

    if wanted("compact"):
        from scaling.store.compaction import TARGET_ROWS

        p = subparsers.add_parser("compact", help="merge small parts into larger ones, safely for readers")
        p.add_argument("results", help="results store (path or URI)")
        p.add_argument("--sweep", default=None, help="only this sweep (default: every sweep)")
        p.add_argument("--target-rows", type=int, default=TARGET_ROWS,
                       help=f"trial rows per merged part (default: {TARGET_ROWS:,})")
        p.set_defaults(func=cmd_compact)
