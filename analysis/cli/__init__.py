"""The analysis subcommands of ``scaling``: :data:`COMMANDS`, one table of name -> command.

Each command is one module here that owns its flags and its action (a
:class:`~analysis.cli.base.Command`: ``add_arguments(parser)``, ``take_action(args) -> int``,
help from its docstring); :func:`register` adds them all to an ``argparse`` subparsers object.
Adding a subcommand is its module and one line in :data:`COMMANDS` (``name: "module:Class"``,
imported only when that command runs or ``scaling --help`` lists them all). Shared flags and reading
a table: :mod:`analysis.cli.args`; running, errors and output: :mod:`analysis.cli.base`.
Mistakes a user can fix (missing directory, empty store, unknown column, degenerate data)
print one line ``error: ...`` to stderr and return 2.

May import everything in analysis and scaling.errors. Modules in here import each other by
full path (``analysis.cli.args``), never this package.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import partial
from importlib import import_module

from analysis.errors import AnalysisError


class _Commands(Mapping):
    """Name -> command class, each imported when it is first looked up (``scaling fit`` loads
    no other command's module)."""

    def __init__(self, paths: dict[str, str]):
        self._paths = paths

    def __getitem__(self, name: str):
        module, _, attr = self._paths[name].partition(":")
        return getattr(import_module(module), attr)

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


COMMANDS: Mapping[str, type] = _Commands({
    "fit": "analysis.cli.fit:Fit",
    "fit-joint": "analysis.cli.fit_joint:FitJoint",
    "bopt": "analysis.cli.bopt:Bopt",
    "bcrit": "analysis.cli.bcrit:Bcrit",
    "compute-optimal": "analysis.cli.compute_optimal:ComputeOptimal",
    "report": "analysis.cli.report:Report",
    "serve": "analysis.cli.serve:Serve",
})
"""Subcommand name -> its command class (``"module:Class"``, imported on lookup), in the order
``scaling --help`` lists them."""


def command(name: str) -> type:
    """The command called ``name``; :class:`AnalysisError` naming the known ones otherwise."""
    try:
        return COMMANDS[name]
    except KeyError:
        raise AnalysisError(f"unknown command {name!r}; choose one of: "
                            f"{', '.join(COMMANDS)}") from None


def register(subparsers, only: str | None = None) -> None:
    """Add every command of :data:`COMMANDS` (or only the one named ``only``) to a subparsers
    object; each sets ``func`` (parsed arguments -> exit code)."""
    from analysis.cli.base import help_texts, run

    for name in COMMANDS if only is None else [only]:
        cls = COMMANDS[name]
        cmd = cls()
        help_, description = help_texts(cls)
        parser = subparsers.add_parser(name, help=help_, description=description)
        cmd.add_arguments(parser)
        parser.set_defaults(func=partial(run, cmd.take_action))
