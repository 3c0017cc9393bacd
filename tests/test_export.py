"""Lossless export: ``scaling export`` writes the kept run of every trial (and --curves) whole or
not at all, a re-imported CSV has bit-identical floats and gives the store's bopt output, and
``query --format csv`` writes floats that read back exactly."""

import argparse
import csv
import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from analysis.cli import register as register_analysis
from analysis.testing.synthetic import sweep_table, write_store
from scaling.cli import register as register_store
from scaling.errors import UserError
from scaling.spec.schema import CURVES_SCHEMA
from scaling.store import query as query_mod
from scaling.store.query import format_table, run_query

LRS = (10 ** -2.5, 10 ** -1.5, 0.1)
"""No short decimal form: 0.00316228 would be another lr."""


def run(*argv):
    parser = argparse.ArgumentParser(prog="scaling")
    sub = parser.add_subparsers(dest="command", required=True)
    register_store(sub)
    register_analysis(sub)
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sweep with curves for half of its trials."""
    root = tmp_path_factory.mktemp("export")
    trials = sweep_table(n_trains=(1000, 4000), batch_sizes=tuple(2 ** i for i in range(9)),
                         lrs=LRS, momenta=(0.0, 0.5), seeds=(0, 1), diverge_above=40, seed=2)
    write_store(trials, str(root))
    rows = [{"sweep": t["sweep"], "trial_id": t["trial_id"], "run_id": t["run_id"], "step": step,
             "test_loss": t["test_loss"] * (1 + 1 / step), "lr_now": t["lr"] / step}
            for t in trials.to_pylist()[::2] for step in (1, 3, 10)]
    (root / "synthetic" / "curves").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=CURVES_SCHEMA),
                   root / "synthetic" / "curves" / "part-0.parquet")
    return root


def _stored_trials(root):
    return run_query(str(root), "SELECT * FROM trials ORDER BY sweep, trial_id")


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_export_writes_every_kept_trial_and_its_curves_exactly(store, tmp_path, ext, capsys):
    out = tmp_path / f"runs.{ext}"
    assert run("export", store, out, "--curves") == 0
    said = capsys.readouterr().out
    curves = tmp_path / f"runs.curves.{ext}"
    assert f"wrote {out} (216 rows)" in said and f"wrote {curves} (324 rows)" in said
    read = pcsv.read_csv if ext == "csv" else pq.read_table
    got, want = read(out), _stored_trials(store)
    assert got.column_names == want.column_names and got.num_rows == want.num_rows
    for name in ("lr", "test_loss", "noise_scale"):  # bit for bit, NaN where the store has NaN
        a = got.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        b = want.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        assert np.array_equal(a.view(np.int64), b.view(np.int64)), name
    assert set(got.column("lr").to_pylist()) == set(LRS)
    lr_now = read(curves).column("lr_now").to_numpy()
    assert np.array_equal(np.sort(lr_now), np.sort([lr / s for lr in want.column("lr").to_pylist()[::2]
                                                    for s in (1, 3, 10)]))
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []  # no temporary file left


def test_reimported_csv_gives_the_stores_bopt_output(store, tmp_path, capsys):
    out = tmp_path / "runs.csv"
    assert run("export", store, out) == 0
    capsys.readouterr()
    outputs = []
    for source in (store, out):
        assert run("bopt", source, "--metric", "test_loss", "--boot", "40") == 0
        text = capsys.readouterr().out
        assert run("bopt", source, "--metric", "test_loss", "--boot", "40", "--json") == 0
        outputs.append((text, json.loads(capsys.readouterr().out)))
    assert outputs[0] == outputs[1]
    assert "0.0031622776601683794" in outputs[0][0]  # a group's lr, printed as it reads back
    assert "0.00316228" not in outputs[0][0].replace("0.0031622776601683794", "")


def test_query_csv_floats_read_back_bit_for_bit(store):
    table = run_query(str(store), "SELECT lr, test_loss, noise_scale FROM trials ORDER BY trial_id")
    text = format_table(table, "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    for name in ("lr", "test_loss", "noise_scale"):
        back = [float(r[name]) for r in rows]
        want = table.column(name).to_pylist()
        assert all(a == b or (np.isnan(a) and np.isnan(b)) for a, b in zip(back, want)), name
    assert "0.0031622776601683794" in text and "0.00316228\n" not in text
    shown = format_table(table, "table", width=100)  # on screen: the lr exact, a loss rounded
    assert "0.0031622776601683794" in shown and "0.00316228 " not in shown
    assert max(len(line) for line in shown.splitlines()) <= 100


def test_col_is_for_tables_from_elsewhere(store, capsys):
    assert run("fit", store, "--col", "lr=learning_rate") == 2
    assert "--col is for tables from elsewhere" in capsys.readouterr().err


def test_a_failed_export_leaves_no_file(store, tmp_path, monkeypatch):
    out = tmp_path / "runs.parquet"
    out.write_bytes(b"an older export")

    def broken(table, where, **kw):
        with open(where, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        query_mod.export_tables(str(store), str(out))
    assert out.read_bytes() == b"an older export" and os.listdir(tmp_path) == ["runs.parquet"]


def test_export_names_its_mistakes(store, tmp_path, capsys):
    with pytest.raises(UserError, match=r"writes .parquet or .csv, got '.*runs.txt'"):
        query_mod.export_paths(str(tmp_path / "runs.txt"), None)
    with pytest.raises(UserError, match="is the trials file"):
        query_mod.export_paths(str(tmp_path / "a.csv"), str(tmp_path / "a.csv"))
    with pytest.raises(UserError, match="does not exist"):
        query_mod.export_paths(str(tmp_path / "nope" / "a.csv"), None)
    with pytest.raises(UserError, match="no sweep 'other'.*synthetic"):
        query_mod.export_tables(str(store), str(tmp_path / "a.csv"), sweep="other")
    assert query_mod.export_paths(str(tmp_path / "runs.parquet"), "")[1] == str(tmp_path / "runs.curves.parquet")
