"""What every analysis subcommand shares: the :class:`Command` contract, :func:`run` (a
mistake a user can fix -> one line ``error: ...`` and exit code 2; a store failure -> 3),
:func:`emit` (text, or JSON with ``--json``, and ``--plot``) and :func:`plain`.
"""

from __future__ import annotations

import inspect
import json
import sys

import numpy as np

import analysis.cli.args as cliargs
import analysis.report.text as fmt
from analysis import tables
from analysis.errors import AnalysisError
from scaling import textout


class Command:
    """One subcommand: its flags (:meth:`add_arguments`) and its action (:meth:`take_action`).

    The first paragraph of a subclass's docstring is the one-line help listed under
    ``scaling --help``; the rest, if any, is the description of ``scaling <name> --help``.
    """

    def add_arguments(self, parser) -> None:
        raise NotImplementedError

    def take_action(self, args) -> int:
        raise NotImplementedError


def help_texts(command) -> tuple[str, str | None]:
    """``(help, description)`` of a command class or instance, from its docstring."""
    doc = inspect.cleandoc(command.__doc__ or "")
    paragraphs = [" ".join(p.split()) for p in doc.split("\n\n") if p.strip()]
    if not paragraphs:
        raise TypeError(f"{command!r} needs a docstring: its first paragraph is the help")
    return paragraphs[0], " ".join(paragraphs[1:]) or None


def run(cmd, args) -> int:
    try:
        check(args)
        return cmd(args)
    except AnalysisError as e:
        return fail(str(e))
    except Exception as e:  # a store or config mistake reported by the core library
        from scaling.errors import StorageError, UserError
        if isinstance(e, UserError):
            return fail(str(e))
        if isinstance(e, StorageError):  # the store failed, not the user: exit 3
            fail(str(e))
            return 3
        raise


def fail(message: str) -> int:
    print(f"error: {message.splitlines()[0] if message else 'failed'}", file=sys.stderr)
    return 2


def check(args) -> None:
    if getattr(args, "boot", 0) < 0:
        raise AnalysisError(f"--boot must be >= 0, got {args.boot}")
    level = getattr(args, "level", 0.95)
    if not 0.0 < level < 1.0:
        raise AnalysisError(f"--level must be between 0 and 1 (e.g. 0.95), got {level}")
    delta = getattr(args, "delta", None)
    if isinstance(delta, str):
        args.delta = cliargs.delta_value(delta)
    elif delta is not None and not delta > 0:
        raise AnalysisError(f"--delta must be > 0 (e.g. 1e-3), got {delta}")
    if getattr(args, "holdout", None) is not None and args.holdout < 0:
        raise AnalysisError(f"--holdout must be >= 0 (0 turns the check off), got {args.holdout}")


def emit(args, data: dict, lines: list[str], fig=None) -> None:
    if fig is not None and getattr(args, "plot", None):
        import analysis.report.plots as plots
        try:
            plots.save(fig(), args.plot)
        except (OSError, ValueError) as e:
            raise AnalysisError(f"cannot write the plot to {args.plot!r}: {e}") from None
    if args.json:
        warned = [str(n) for n in data.get("notes", ()) or () if str(n).startswith("warning: ")]
        if warned:
            print(textout.render(warned, sys.stderr), file=sys.stderr)
        print(json.dumps(plain(data), indent=2, allow_nan=False))
    else:
        print(textout.render(lines, sys.stdout))


def plain(obj):
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def summary_lines(root: str) -> list[str]:
    """Trial counts by status for each sweep under ``root`` (infeasible trials included)."""
    trials = tables.load_trials(root)
    return fmt.summary_lines(trials)
