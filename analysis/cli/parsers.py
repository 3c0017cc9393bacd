"""Old home of :func:`register`, kept so ``from analysis.cli.parsers import register`` goes on
working; the table of subcommands is :mod:`analysis.cli` (``COMMANDS``, ``register``)."""

from analysis.cli import register  # noqa: F401
