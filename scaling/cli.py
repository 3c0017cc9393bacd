from __future__ import annotations

from scaling.store.compaction import TARGET_ROWS
from scaling.store.verify import compact, outside, repair, verify

# ---- command line ---------------------------------------------------------------------------

def cmd_verify(args) -> int:
    """``scaling verify DIR [--repair]``: 0 when the store is sound, 1 when problems remain."""
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


def register(subparsers) -> None:
    """Add the ``verify`` and ``compact`` commands to the ``scaling`` command line."""
    p = subparsers.add_parser("verify", help="check every Parquet part of a results store")
    p.add_argument("results", help="results store (path or URI)")
    p.add_argument("--repair", action="store_true",
                   help="move bad parts and leftovers to <sweep>/quarantine/ (never deletes)")
    p.add_argument("-v", "--verbose", action="store_true", help="also list harmless findings")
    p.set_defaults(func=cmd_verify)
    p = subparsers.add_parser("compact", help="merge small parts into larger ones, safely for readers")
    p.add_argument("results", help="results store (path or URI)")
    p.add_argument("--sweep", default=None, help="only this sweep (default: every sweep)")
    p.add_argument("--target-rows", type=int, default=TARGET_ROWS,
                   help=f"trial rows per merged part (default: {TARGET_ROWS:,})")
    p.set_defaults(func=cmd_compact)
