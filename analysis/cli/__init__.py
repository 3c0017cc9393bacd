"""The analysis subcommands of ``scaling``: :data:`COMMANDS`, one table of name -> command.

Each command is one module here that owns its flags and its action (a
:class:`~analysis.cli.base.Command`: ``add_arguments(parser)``, ``take_action(args) -> int``,
help from its docstring); :func:`register` adds them all to an ``argparse`` subparsers object.
Adding a subcommand is its module and one line in :data:`COMMANDS`. Shared flags and reading
a table: :mod:`analysis.cli.args`; running, errors and output: :mod:`analysis.cli.base`.
Mistakes a user can fix (missing directory, empty store, unknown column, degenerate data)
print one line ``error: ...`` to stderr and return 2.

May import everything in analysis and scaling.errors. Modules in here import each other by
full path (``analysis.cli.args``), never this package.
"""

from __future__ import annotations

from functools import partial

from analysis.cli.base import Command, help_texts, run
from analysis.cli.bcrit import Bcrit
from analysis.cli.bopt import Bopt
from analysis.cli.compute_optimal import ComputeOptimal
from analysis.cli.fit import Fit
from analysis.cli.fit_joint import FitJoint
from analysis.cli.report import Report
from analysis.cli.serve import Serve
from analysis.errors import AnalysisError

COMMANDS: dict[str, type[Command]] = {
    "fit": Fit,
    "fit-joint": FitJoint,
    "bopt": Bopt,
    "bcrit": Bcrit,
    "compute-optimal": ComputeOptimal,
    "report": Report,
    "serve": Serve,
}
"""Subcommand name -> its command class, in the order ``scaling --help`` lists them."""


def command(name: str) -> type[Command]:
    """The command called ``name``; :class:`AnalysisError` naming the known ones otherwise."""
    try:
        return COMMANDS[name]
    except KeyError:
        raise AnalysisError(f"unknown command {name!r}; choose one of: "
                            f"{', '.join(COMMANDS)}") from None


def register(subparsers) -> None:
    """Add every command of :data:`COMMANDS` to a subparsers object; each sets ``func``
    (parsed arguments -> exit code)."""
    for name, cls in COMMANDS.items():
        cmd = cls()
        help_, description = help_texts(cls)
        parser = subparsers.add_parser(name, help=help_, description=description)
        cmd.add_arguments(parser)
        parser.set_defaults(func=partial(run, cmd.take_action))
