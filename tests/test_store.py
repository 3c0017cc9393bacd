"""The Parquet results store and read-only SQL over it."""

from __future__ import annotations

import math
import os
import uuid
from datetime import datetime, timedelta, timezone

import pyarrow.parquet as pq
import pytest

from scaling.schema import as_trial
from scaling.errors import StoreError, UserError
from scaling.query import format_table, run_query
from scaling.store import TRIALS_SCHEMA, Store, load_tables

TRIAL = {"task": {"name": "digits"}, "model": {"name": "mlp", "width": 8, "depth": 1},
         "n_train": 100, "batch_size": 16, "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0,
         "seed": 0, "budget": {"epochs": 1.0}, "eval": {"points": 3}}

def config_columns(trial) -> dict:
    """The flat columns of a trial (a Trial or its canonical config dict)."""
    return as_trial(trial).columns()


def result(trial=TRIAL, acc=0.5, end=None, n_curve=3):
    now = end or datetime.now(timezone.utc)
    run_id = uuid.uuid4().hex
    row = {**config_columns(trial), "run_id": run_id, "status": "ok", "error": None, "steps": 7,
           "examples_seen": 112, "n_params": 610, "train_loss": 0.1, "test_loss": 0.2, "test_acc": acc,
           "wall_s": 1.0, "host": "h", "start_time": now, "end_time": now, "version": "t", "engine": "single"}
    curves = [{"step": s, "epoch": s / 7, "examples_seen": 16 * s, "train_loss": 1.0, "test_loss": 1.0,
               "test_acc": acc, "wall_s": 0.1 * s} for s in range(n_curve)]
    return {"trial": row, "curves": curves}


def test_round_trip_with_plain_pyarrow(tmp_path):
    store = Store(str(tmp_path))
    store.write_result("s", result())
    parts = list((tmp_path / "s" / "trials").glob("*.parquet"))
    assert len(parts) == 1
    table = pq.read_table(parts[0])
    assert table.schema.equals(TRIALS_SCHEMA)
    assert table.column("sweep").to_pylist() == ["s"]
    curves = pq.read_table(next((tmp_path / "s" / "curves").glob("*.parquet")))
    assert curves.num_rows == 3
    assert not [p for p in os.listdir(tmp_path / "s" / "trials") if p.startswith(".")], "no temp files left"


def test_rerun_of_a_trial_replaces_it(tmp_path):
    store = Store(str(tmp_path))
    store.write_result("s", result(acc=0.1))
    store.write_result("s", result(acc=0.9))
    trials, curves = load_tables(str(tmp_path))
    assert trials.num_rows == 1 and trials.column("test_acc").to_pylist() == [0.9]
    assert curves.num_rows == 3 and set(curves.column("test_acc").to_pylist()) == {0.9}
    assert store.finished("s") == {trials.column("trial_id")[0].as_py(): ("ok", None, None)}  # no versions: a hand-made row


def test_racing_writers_leave_one_row_and_its_own_curves(tmp_path):
    """Two drivers that wrote the same trial under different part names: readers keep the latest."""
    store = Store(str(tmp_path))
    t0 = datetime.now(timezone.utc)
    store.write_result("s", result(acc=0.3, end=t0, n_curve=4), part="a")
    store.write_result("s", result(acc=0.7, end=t0 + timedelta(seconds=1), n_curve=2), part="b")
    trials, curves = load_tables(str(tmp_path))
    assert trials.num_rows == 1 and trials.column("test_acc").to_pylist() == [0.7]
    assert curves.num_rows == 2 and set(curves.column("run_id").to_pylist()) == set(
        trials.column("run_id").to_pylist())


def test_corrupt_part_is_skipped_with_a_warning(tmp_path):
    store = Store(str(tmp_path))
    store.write_result("s", result())
    other = {**TRIAL, "seed": 1}
    store.write_result("s", result(other))
    bad = next((tmp_path / "s" / "trials").glob("*.parquet"))
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    with pytest.warns(UserWarning, match=bad.name):
        trials, _ = load_tables(str(tmp_path))
    assert trials.num_rows == 1


def test_parts_from_an_older_schema_still_read(tmp_path):
    store = Store(str(tmp_path))
    store.write_result("s", result())
    old = pq.read_table(next((tmp_path / "s" / "trials").glob("*.parquet"))).drop_columns(["engine", "n_params"])
    pq.write_table(old.set_column(old.column_names.index("trial_id"), "trial_id",
                                  [["0000000000000000"]]), tmp_path / "s" / "trials" / "old.parquet")
    trials, _ = load_tables(str(tmp_path))
    assert trials.num_rows == 2
    engines = dict(zip(trials.column("trial_id").to_pylist(), trials.column("engine").to_pylist()))
    assert engines["0000000000000000"] is None


def test_temporary_files_are_invisible(tmp_path):
    store = Store(str(tmp_path))
    store.write_result("s", result())
    (tmp_path / "s" / "trials" / ".tmp-123-x.parquet").write_bytes(b"half a file")
    trials, _ = load_tables(str(tmp_path))
    assert trials.num_rows == 1


def test_missing_and_empty_stores(tmp_path):
    with pytest.raises(StoreError, match="no results store"):
        load_tables(str(tmp_path / "nope"))
    trials, curves = load_tables(str(tmp_path))  # an empty folder is an empty store
    assert trials.num_rows == 0 and "test_acc" in trials.column_names and curves.num_rows == 0


def test_query_counts_and_formats(tmp_path):
    store = Store(str(tmp_path))
    for seed in range(3):
        store.write_result("s", result({**TRIAL, "seed": seed}, acc=0.1 * seed))
    table = run_query(str(tmp_path), "SELECT status, count(*) AS n FROM trials GROUP BY status")
    assert table.to_pylist() == [{"status": "ok", "n": 3}]
    text = format_table(run_query(str(tmp_path), "SELECT seed, test_acc FROM trials ORDER BY seed"))
    lines = text.splitlines()
    assert lines[0].split() == ["seed", "test_acc"] and lines[-1] == "(3 rows)"
    assert len({len(l) for l in lines[2:-1]}) == 1, "rows are aligned"
    csv = format_table(run_query(str(tmp_path), "SELECT seed FROM trials ORDER BY seed"), "csv")
    assert csv.splitlines() == ["seed", "0", "1", "2"]


@pytest.mark.parametrize("sql", [
    "COPY trials TO '{tmp}/out.csv'",
    "ATTACH '{tmp}/x.duckdb' AS x",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SET enable_external_access = true",
    "SELEC 1",
])
def test_query_is_read_only_and_bad_sql_is_one_line(tmp_path, sql):
    Store(str(tmp_path)).write_result("s", result())
    with pytest.raises(UserError) as err:
        run_query(str(tmp_path), sql.format(tmp=tmp_path))
    assert "\n" not in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["s"], "nothing was written"


def test_nan_metrics_survive(tmp_path):
    r = result()
    r["trial"].update(status="diverged", test_acc=math.nan)
    Store(str(tmp_path)).write_result("s", r)
    trials, _ = load_tables(str(tmp_path))
    assert math.isnan(trials.column("test_acc")[0].as_py())
