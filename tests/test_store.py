"""The Parquet results store and read-only SQL over it."""

from __future__ import annotations

import json
import math
import os
import uuid
from datetime import datetime, timedelta, timezone

import pyarrow.parquet as pq
import pytest

from scaling.spec.schema import as_trial
from scaling.errors import StoreError, UserError
from scaling.store.query import format_table, run_query
from scaling.spec.schema import TRIALS_SCHEMA
from scaling.store.writer import Store
from scaling.store.views import load_tables

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


def raw_count(root, table="trials") -> int:
    return Store(str(root)).raw_table(table).num_rows


@pytest.mark.parametrize("order", ["failed first", "ok first"])
def test_a_rerun_adds_a_run_and_ok_beats_failed_whatever_the_order(tmp_path, order):
    store = Store(str(tmp_path))
    failed, ok = result(acc=0.1), result(acc=0.9)
    failed["trial"].update(status="failed", error="boom")
    failed["curves"] = []
    for r in ([failed, ok] if order == "failed first" else [ok, failed]):
        store.write_result("s", r)
    assert raw_count(tmp_path) == 2, "a rerun never overwrites: both runs are stored"
    trials, curves = load_tables(str(tmp_path))
    assert trials.num_rows == 1 and trials.column("status").to_pylist() == ["ok"]
    assert curves.num_rows == 3 and set(curves.column("run_id").to_pylist()) == {ok["trial"]["run_id"]}


def test_the_newer_code_version_wins_then_the_smallest_run_id(tmp_path):
    store = Store(str(tmp_path))
    old = result(acc=0.1, end=datetime(2030, 1, 1, tzinfo=timezone.utc))
    new, also_new = result(acc=0.5), result(acc=0.7)
    old["trial"].update(code_version="9", run_id="0" * 32)  # the smallest id and the latest clock: still loses
    new["trial"].update(code_version="10", run_id="b" * 32)
    also_new["trial"].update(code_version="10", run_id="a" * 32)
    for r in (new, old, also_new):
        store.write_result("s", r)
    trials, curves = load_tables(str(tmp_path))
    assert trials.column("run_id").to_pylist() == ["a" * 32], "10 > 9 as numbers; then the smaller run id"
    assert set(curves.column("run_id").to_pylist()) == {"a" * 32} and curves.num_rows == 3


def test_the_rule_in_python_and_in_sql_agree():
    import duckdb

    from scaling.store.views import WINNER_ORDER, winner_key

    runs = [("failed", "9", "9", "a"), ("ok", "1", "2", "b"), ("diverged", "2", None, "c"), ("ok", "2", "1", "a"),
            ("ok", None, "1", "0"), ("weird", "3", "3", "0"), ("ok", "2", "x", "d"), ("ok", "2", "1", "0")]
    con = duckdb.connect()
    con.execute("CREATE TABLE r (status VARCHAR, code_version VARCHAR, data_version VARCHAR, run_id VARCHAR, "
                "_part VARCHAR)")
    for run in runs:
        con.execute("INSERT INTO r VALUES ($1, $2, $3, $4, 'p')", list(run))
    sql = [tuple(row) for row in con.sql(f"SELECT status, code_version, data_version, run_id FROM r "
                                        f"ORDER BY {WINNER_ORDER}").fetchall()]
    assert sql == sorted(runs, key=lambda r: winner_key(*r, "p"))
    assert sql[:2] == [("ok", "2", "1", "0"), ("ok", "2", "1", "a")], "integer versions beat text ones"


def test_racing_writers_leave_one_row_and_its_own_curves(tmp_path):
    """Two drivers that wrote the same trial under different part names: readers keep the run the
    rule picks (here the smaller run id; clocks play no part) and only that run's curves."""
    store = Store(str(tmp_path))
    t0 = datetime.now(timezone.utc)
    a, b = result(acc=0.3, end=t0 + timedelta(days=1), n_curve=4), result(acc=0.7, end=t0, n_curve=2)
    a["trial"]["run_id"], b["trial"]["run_id"] = "f" * 32, "e" * 32
    store.write_result("s", a, part="a")
    store.write_result("s", b, part="b")
    trials, curves = load_tables(str(tmp_path))
    assert trials.num_rows == 1 and trials.column("test_acc").to_pylist() == [0.7]
    assert curves.num_rows == 2 and set(curves.column("run_id").to_pylist()) == {"e" * 32}


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
    "COPY (SELECT 1) TO '{tmp}/s/trials/x.parquet'",
    "COPY (SELECT 1) TO '{part}'",
    "SELECT 1; COPY (SELECT 1) TO '{tmp}/s/trials/x.parquet'",
    "ATTACH '{tmp}/s/trials/x.duckdb' AS x",
    "SELECT * FROM read_parquet('{tmp}/s/*/*.parquet')",
    "SELECT * FROM read_text('{tmp}/s/sweep.yaml')",
    "CREATE TABLE t AS SELECT 1",
    "PRAGMA version",
    "CALL pragma_version()",
    "ATTACH '{tmp}/x.duckdb' AS x",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SET enable_external_access = true",
    "SELEC 1",
])
def test_query_is_read_only_and_bad_sql_is_one_line(tmp_path, sql):
    """DuckDB 2.0.1's allowed_directories would let COPY write inside the store: the views may open
    only their own parts, and only one SELECT runs."""
    Store(str(tmp_path)).write_result("s", result())
    (tmp_path / "s" / "sweep.yaml").write_text("name: s")
    part = next((tmp_path / "s" / "trials").glob("*.parquet"))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(UserError) as err:
        run_query(str(tmp_path), sql.format(tmp=tmp_path, part=part))
    assert "\n" not in str(err.value)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before, "nothing was written"


def test_nan_metrics_survive(tmp_path):
    r = result()
    r["trial"].update(status="diverged", test_acc=math.nan)
    Store(str(tmp_path)).write_result("s", r)
    trials, _ = load_tables(str(tmp_path))
    assert math.isnan(trials.column("test_acc")[0].as_py())


def test_query_refuses_two_columns_of_one_name_and_json_writes_null_for_nan(tmp_path):
    r = result()
    r["trial"].update(test_loss=math.nan)
    Store(str(tmp_path)).write_result("s", r)
    with pytest.raises(UserError, match="more than one column named 'test_acc'.*AS"):
        run_query(str(tmp_path), "SELECT a.test_acc, b.test_acc FROM trials a, trials b")
    fine = run_query(str(tmp_path), "SELECT a.test_acc AS a_acc, b.test_acc AS b_acc, a.test_loss, "
                                    "'inf'::DOUBLE AS big FROM trials a, trials b")
    line = format_table(fine, "json")
    assert json.loads(line) == {"a_acc": 0.5, "b_acc": 0.5, "test_loss": None, "big": None}
    assert "NaN" not in line and "Infinity" not in line


def test_query_time_and_memory_are_bounded(tmp_path):
    Store(str(tmp_path)).write_result("s", result())
    endless = "SELECT count(*) FROM range(1000000000) a, range(1000000000) b WHERE a.range + b.range = -1"
    with pytest.raises(UserError, match="time limit of 0.5 s.*--timeout"):
        run_query(str(tmp_path), endless, timeout_s=0.5)
    with pytest.raises(UserError, match="more memory than its limit .64MB.*--memory"):
        run_query(str(tmp_path), "SELECT list(range) FROM range(100000000)", memory_limit="64MB")


def test_status_counts_in_sql_and_finds_sweeps_by_their_marker(tmp_path):
    from scaling.status import status_table

    store = Store(str(tmp_path))
    for seed in range(3):
        store.write_result("s", result({**TRIAL, "seed": seed}))
    (tmp_path / "notes" / "trials").mkdir(parents=True)  # a folder named like the layout, not a sweep
    rows = status_table(str(tmp_path)).to_pylist()
    assert [(r["sweep"], r["ok"], r["stored"]) for r in rows] == [("s", 3, 3)]
    assert store.sweeps() == ["s"] and Store(str(tmp_path / "s")).sweeps() == [""]
