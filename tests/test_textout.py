"""Text output that fits the terminal: one table style (scaling/textout.py) for every command.

The commands run in this process on a small store built here (no Ray): every line of fit, bopt,
bcrit, fit-joint, status and query fits $COLUMNS, piped output carries no ANSI escapes, and
--json is what the result's to_dict() says, byte for byte the JSON the commands printed before.
"""
from __future__ import annotations

import io
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest

from scaling import textout

ANSI = re.compile(r"\x1b\[")


# ---- the renderer ----------------------------------------------------------------------------------

def test_a_table_has_a_rule_and_right_aligned_numbers():
    lines = textout.table(["name", "value"], [["a", "1.5"], ["bb", "-"], ["c", "12"]], cols=100)
    assert lines == ["name  value", "----  -----", "a       1.5", "bb        -", "c        12"]


def test_a_wide_label_column_splits_into_its_keys_when_that_fits():
    rows = [["n_train=75, lr=0.0316228", "1"], ["n_train=1200, lr=0.1", "2"]]
    lines = textout.table(["group", "x"], rows, cols=26, label=0)
    assert lines[0].split() == ["n_train", "lr", "x"] and lines[2].split() == ["75", "0.0316228", "1"]
    assert all(len(line) <= 26 for line in lines)


def test_a_column_with_one_value_is_said_once_below_when_the_table_is_too_wide():
    rows = [["a", "3", "x" * 20], ["b", "3", "y" * 20]]
    assert textout.table(["k", "seeds", "text"], rows, cols=40)[0].split() == ["k", "seeds", "text"]
    lines = textout.table(["k", "seeds", "text"], rows, cols=26)
    assert lines[0].split() == ["k", "text"] and lines[-1] == "in every row: seeds=3"


def test_a_label_column_too_wide_to_split_prints_short_labels_and_a_key():
    rows = [["n_train=75, lr=0.0316228, momentum=0.9", "12345.6", "7.25", "edge1"],
            ["n_train=1200, lr=0.1, momentum=0", "3.5", "16", "ok"]]
    lines = textout.table(["group", "lr*N/(1-m)", "batch_size best", "status"], rows, cols=40, label=0)
    assert all(len(line) <= 40 for line in lines)
    body = [line.split() for line in lines if line.startswith("G")]
    assert [r[0] for r in body[:2]] == ["G1", "G2"] and body[0][1:] == ["12345.6", "7.25", "edge1"]
    key = lines[lines.index("") + 1:]  # the key: G1 = n_train 75, lr 0.0316228, momentum 0.9
    assert key[0].split() == ["group", "n_train", "lr", "momentum"]
    assert key[2].split() == ["G1", "75", "0.0316228", "0.9"] and key[3].split() == ["G2", "1200", "0.1", "0"]


def test_a_table_too_wide_for_any_shrinking_splits_into_blocks_and_never_cuts_a_number():
    head = [f"column_{i}" for i in range(12)]
    rows = [[str(123456789 + i) for i in range(12)]]
    lines = textout.table(head, rows, cols=50, footer="(1 row)")
    assert all(len(line) <= 50 for line in lines) and lines[-1] == "(1 row)"
    text = "\n".join(lines)
    assert all(str(123456789 + i) in text for i in range(12))
    assert text.count("column_0") > 1  # the first column repeats in each block


def test_long_text_cells_wrap_and_are_cut_after_four_lines_with_a_note():
    rows = [["a", "word " * 200]]
    lines = textout.table(["k", "text"], rows, cols=40)
    assert all(len(line) <= 40 for line in lines)
    assert len(lines) == 2 + 4 + 1 and lines[5].endswith(textout.ELLIPSIS) and "cut" in lines[-1]


def test_wrap_hangs_under_the_label_and_counts_utf8_bytes():
    lines = textout.wrap("  warning: " + "the fitted curve rises " * 10, 60)
    assert len(lines) > 1 and all(len(line) <= 60 for line in lines)
    assert all(line.startswith(" " * 11) and line[11] != " " for line in lines[1:])
    lines = textout.wrap("exponent of n_train: the rule says 1 ± 0.25 " * 5, 50)
    assert all(len(line.encode()) <= 50 for line in lines)  # what a byte-counting awk measures


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_warnings_are_coloured_on_a_tty_only_and_never_with_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TERM", raising=False)
    lines = ["fit a*x^b + c", "  warning: the curve rises"]
    assert textout.render(lines, io.StringIO()) == "\n".join(lines)
    tty = textout.render(lines, _Tty())
    assert tty.splitlines()[0] == lines[0] and ANSI.search(tty.splitlines()[1])
    monkeypatch.setenv("NO_COLOR", "1")
    assert textout.render(lines, _Tty()) == "\n".join(lines)


def test_the_width_is_columns_else_100_when_piped(monkeypatch):
    monkeypatch.setenv("COLUMNS", "77")
    assert textout.width(io.StringIO()) == 77
    monkeypatch.delenv("COLUMNS")
    assert textout.width(io.StringIO()) == textout.DEFAULT_WIDTH == 100


# ---- the commands on a store ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sweep, trials and curves: 2 x 2 x 3 groups of (n_train, lr, momentum), labels long enough
    that bopt's and bcrit's tables need short labels, edges and groups bcrit cannot fit."""
    from analysis.testing.synthetic import sweep_table, write_store
    from scaling.spec.schema import CURVES_SCHEMA

    root = tmp_path_factory.mktemp("textout")
    trials = sweep_table(n_trains=(1000, 2000, 4000, 8000), batch_sizes=(2, 4, 8, 16, 32, 64),
                         lrs=(0.0316228, 0.1, 0.316228), momenta=(0.0, 0.9), seeds=(0, 1), seed=3)
    folder = write_store(trials, str(root))
    rows = []
    for t in trials.select(["sweep", "trial_id", "run_id", "steps", "test_loss"]).to_pylist():
        for step in np.unique(np.geomspace(1, t["steps"], 12).astype(int)):
            loss = t["test_loss"] * (1 + 30 * t["steps"] / step / 1000)
            rows.append({"sweep": t["sweep"], "trial_id": t["trial_id"], "run_id": t["run_id"],
                         "step": int(step), "test_loss": loss, "val_loss": loss})
    (root / "synthetic" / "curves").mkdir()
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(rows, schema=CURVES_SCHEMA),
                   root / "synthetic" / "curves" / "part-0.parquet")
    return folder


COMMANDS = {
    "fit": ["fit", "{store}", "--metric", "test_loss", "--boot", "30"],
    "bopt": ["bopt", "{store}", "--metric", "test_acc", "--boot", "30"],
    "bcrit": ["bcrit", "{store}", "--target", "0.2", "--boot", "20"],
    "fit-joint": ["fit-joint", "{store}", "--n", "n_train", "--d", "batch_size", "--loss", "test_loss",
                  "--boot", "30"],
    "status": ["status", "{store}"],
    "query": ["query", "{store}", "SELECT * FROM trials ORDER BY trial_id LIMIT 4"],
}


def _run(argv, capsys):
    from cluster.cli import main

    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("cols", [100, 80])
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_line_of_every_command_fits_the_width_and_has_no_colour_when_piped(
        name, cols, store, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(cols))
    monkeypatch.delenv("NO_COLOR", raising=False)
    rc, out, err = _run([a.format(store=store) for a in COMMANDS[name]], capsys)
    assert rc == 0, err
    wide = [line for line in (out + err).splitlines() if len(line.encode()) > cols]
    assert not wide, f"{name} at {cols} columns:\n" + "\n".join(wide)
    assert not ANSI.search(out + err)
    assert "----" in out  # the one table style: a dashed rule under every header


def test_bopt_prints_a_status_code_per_group_and_explains_each_code_once(store, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    rc, out, _ = _run([a.format(store=store) for a in COMMANDS["bopt"]], capsys)
    rc, data, _ = _run([a.format(store=store) for a in COMMANDS["bopt"]] + ["--json"], capsys)
    groups = json.loads(data)["groups"]
    reasons = {g["reason"] for g in groups if g["status"] == "edge"}
    lines = out.splitlines()
    key = " ".join(" ".join(lines[lines.index("status:") + 1:]).split())  # key lines may wrap
    assert len(groups) == 24 and reasons
    for r in reasons:  # each reason once in the key, and in no row of the table
        assert key.count(f": {r} (") == 1 and " ".join(out.split()).count(r) == 1
    rule = next(i for i, line in enumerate(lines) if line.startswith("---") and "status" in lines[i - 1])
    rows = lines[rule + 1:rule + 25]  # here the group labels split into n_train, lr, momentum columns
    assert lines[rule - 1].split()[:3] == ["n_train", "lr", "momentum"]
    assert lines[rule + 25] == "in every row: seeds=2; trials=ok 12"
    codes = {r.split()[-1] for r in rows}
    assert "ok" in codes and all(c == "ok" or f"{c}: " in key for c in codes)


def test_json_is_the_results_to_dict_unchanged(store, capsys):
    from analysis.cli.base import plain
    from analysis.rules.bopt import find_bopt
    from analysis.tables import load_trials

    rc, data, _ = _run([a.format(store=store) for a in COMMANDS["bopt"]] + ["--json"], capsys)
    res = find_bopt(load_trials(store), metric="test_acc", n_boot=30)
    assert data.strip() == json.dumps(plain(res.to_dict()), indent=2, allow_nan=False)
    rc, data, _ = _run(["query", store, "SELECT n_train, lr FROM trials ORDER BY trial_id LIMIT 2",
                        "--format", "json"], capsys)
    assert [json.loads(line) for line in data.splitlines()] == [{"n_train": 1000, "lr": 0.0316228}] * 2


def test_a_csv_with_long_wandb_column_names_fits(tmp_path, capsys, monkeypatch):
    """W&B exports name columns config.lr and summary.test_loss."""
    from analysis.testing.synthetic import sweep_table

    t = sweep_table(n_trains=(1000, 2000, 4000, 8000), batch_sizes=(4, 16, 64), lrs=(0.1,),
                    momenta=(0.0,), seeds=(0, 1))
    table = pa.table({"config.training.n_train_examples": t.column("n_train"),
                      "config.optimizer.batch_size": t.column("batch_size"),
                      "config.optimizer.learning_rate": t.column("lr"),
                      "config.seed": t.column("seed"),
                      "summary.evaluation/test_loss_final": t.column("test_loss")})
    path = tmp_path / "wandb_export.csv"
    pcsv.write_csv(table, path)
    monkeypatch.setenv("COLUMNS", "80")
    rc, out, err = _run(["fit", str(path), "--x", "config.training.n_train_examples",
                         "--metric", "summary.evaluation/test_loss_final", "--seed", "config.seed",
                         "--axes", "config.optimizer.batch_size,config.optimizer.learning_rate",
                         "--boot", "20"], capsys)
    assert rc == 0, err
    assert max(len(line) for line in (out + err).splitlines()) <= 80
    assert "config.optimizer.batch_size=16" in out.replace("\n", " ") or "config.optimizer.batch_size" in out
