"""The analysis subcommands' table and their flags, frozen.

A flag added, renamed or removed fails :func:`test_no_new_or_removed_flags` naming it: update
:data:`FLAGS` in the same change (and the docs that list the flag), on purpose.
"""

import argparse

import pytest

from analysis.cli import COMMANDS, command, register
from analysis.cli.base import Command
from analysis.errors import AnalysisError

_COMMON = {"-h", "--help", "--where", "--filter"}
FLAGS = {
    "fit": _COMMON | {"--x", "--metric", "--by", "--sweep", "--minimize", "--maximize",
                      "--no-offset", "--unbounded", "--form", "--predict", "--bounded", "--resample",
                      "--holdout", "--boot", "--level", "--delta", "--boot-seed", "--axes",
                      "--seed", "--col", "--json", "--plot"},
    "fit-joint": _COMMON | {"--n", "--d", "--loss", "--sweep", "--predict", "--tie", "--over-training",
                            "--holdout", "--boot",
                            "--level", "--delta", "--boot-seed", "--axes", "--seed", "--col",
                            "--json", "--plot"},
    "bopt": _COMMON | {"--metric", "--by", "--batch", "--lr", "--scale", "--over", "--sweep",
                       "--minimize", "--maximize", "--margin", "--boot", "--level", "--boot-seed",
                       "--axes", "--seed", "--col", "--json", "--plot"},
    "bcrit": _COMMON | {"--target", "--metric", "--tune", "--sweep", "--boot", "--level",
                        "--boot-seed", "--json", "--plot"},
    "compute-optimal": _COMMON | {"--n", "--d", "--loss", "--flops", "--boot", "--level",
                                  "--delta", "--boot-seed", "--axes", "--seed", "--col", "--json"},
    "report": {"-h", "--help", "-o", "--output", "--x", "--metric", "--by", "--sweep", "--filter",
               "--bopt-metric", "--curves", "--boot", "--axes", "--seed", "--col"},
    "serve": {"-h", "--help", "--port", "--host", "--poll"},
}
"""Every analysis subcommand -> its option strings, as released."""


def _subparsers():
    parser = argparse.ArgumentParser(prog="scaling")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    return sub.choices


def _options(parser) -> set:
    return {o for action in parser._actions for o in action.option_strings}


def test_the_table_lists_exactly_the_registered_subcommands():
    assert list(_subparsers()) == list(COMMANDS)
    assert set(COMMANDS) == set(FLAGS)


@pytest.mark.parametrize("name", sorted(FLAGS))
def test_no_new_or_removed_flags(name):
    have = _options(_subparsers()[name])
    added, removed = sorted(have - FLAGS[name]), sorted(FLAGS[name] - have)
    assert not added and not removed, (
        f"`scaling {name}` flags changed: added {added}, removed {removed}; if on purpose, "
        f"update FLAGS in tests/test_cli_commands.py")


def test_every_command_has_a_help_line_and_an_action():
    for name, cls in COMMANDS.items():
        assert cls.__doc__ and cls.__doc__.strip(), name
        assert cls.take_action is not Command.take_action, name
        assert cls.add_arguments is not Command.add_arguments, name


def test_an_unknown_command_lists_the_known_ones():
    assert command("bopt") is COMMANDS["bopt"]
    with pytest.raises(AnalysisError) as err:
        command("fitt")
    message = str(err.value)
    assert "'fitt'" in message
    assert all(name in message for name in COMMANDS)


def test_form_choices_come_from_the_registry():
    from analysis.fit.forms.registry import AUTO, FORMS, form

    [action] = [a for a in _subparsers()["fit"]._actions if "--form" in a.option_strings]
    assert tuple(action.choices) == ("auto",) + tuple(FORMS)
    assert set(AUTO) <= set(FORMS)
    assert form("M4") is FORMS["M4"] and FORMS["M4"].name == "M4"
    with pytest.raises(AnalysisError) as err:
        form("M5")
    assert all(name in str(err.value) for name in FORMS)


def test_a_command_builds_only_its_own_parser_and_parses_as_the_full_one():
    """``scaling NAME ...`` builds only NAME's parser (cluster.cli.command_of): the same
    arguments as the full parser, and no other command's module imported (checked in a fresh
    process); an unknown word or ``--help`` gets every command."""
    import subprocess
    import sys

    from cluster.cli import build_parser, command_of

    lines = [["sweep", "c.yaml", "--num-cpus", "2", "--dry-run"], ["status", "r"],
             ["query", "r", "SELECT 1", "--format", "csv"], ["export", "r", "o.csv", "--curves"],
             ["verify", "r", "--repair"], ["compact", "r", "--target-rows", "5"],
             ["fit", "r", "--form", "M4", "--boot", "7"], ["fit-joint", "r"], ["bopt", "r"],
             ["bcrit", "r", "--target", "0.1"],
             ["compute-optimal", "r", "--n", "n", "--d", "d", "--loss", "l"], ["report", "r", "-o", "x.html"],
             ["serve", "r", "--port", "0"]]
    full = build_parser()
    assert [w[0] for w in lines] == list(full._subparsers._group_actions[0].choices)
    for words in lines:
        assert command_of(words) == words[0]
        one = build_parser(command_of(words))
        assert list(one._subparsers._group_actions[0].choices) == [words[0]]
        a, b = vars(full.parse_args(words)), vars(one.parse_args(words))
        fa, fb = a.pop("func"), b.pop("func")
        assert a == b, words
        if hasattr(fa, "func"):  # an analysis command: run(<its take_action>)
            assert fa.func is fb.func and type(fa.args[0].__self__) is type(fb.args[0].__self__), words
        else:
            assert fa is fb, words
    assert command_of(["fitt"]) is None and command_of(["--help"]) is None and command_of([]) is None
    code = ("import sys; from cluster.cli import build_parser; build_parser('status').parse_args(['status', 'r']); "
            "print(sorted(m for m in sys.modules if m.startswith('analysis.cli.') or m == 'scaling.config'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
