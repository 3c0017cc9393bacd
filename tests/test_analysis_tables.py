"""Table helpers: metrics, direction, outcomes, axes and groups."""

import numpy as np
import pyarrow as pa
import pytest

from analysis import tables
import analysis.tables.columns as frame_mod
from analysis.errors import AnalysisError


def _frame(**cols):
    return tables.frame(pa.table(cols))


def test_derived_metrics_and_direction():
    fr = _frame(test_acc=[0.9, 0.8], test_loss=[0.5, 0.7], train_loss=[0.25, 0.3],
                error=["boom", None])
    np.testing.assert_allclose(tables.metric(fr, "error"), [0.1, 0.2])
    np.testing.assert_allclose(tables.metric(fr, "gap"), [0.25, 0.4])
    assert tables.maximize("test_acc") and tables.maximize("train_acc")
    assert not any(tables.maximize(m) for m in ("test_loss", "error", "gap"))
    with pytest.raises(AnalysisError, match="try one of: .*test_acc"):
        tables.metric(fr, "accuracy")


def test_outcomes_count_nonfinite_ok_trials_separately():
    fr = _frame(status=["ok", "ok", "diverged", "failed"], test_loss=[1.0, np.nan, np.nan, None])
    ok, label = tables.usable(fr, tables.metric(fr, "test_loss"))
    assert ok.tolist() == [True, False, False, False]
    assert tables.count_by(label) == {"diverged": 1, "failed": 1, "nonfinite": 1, "ok": 1}


def test_table_without_status_counts_as_ok():
    fr = _frame(x=[1.0, 2.0], y=[1.0, 2.0])
    assert tables.status(fr).tolist() == ["ok", "ok"]


def test_axes_are_declared_never_guessed():
    cols = dict(lr=[0.1, 0.2], epochs=[None, None], steps=[100, 200], test_loss=[1.0, 2.0],
                optimizer=["sgd", "adam"], my_time_s=[1.0, 2.0], label_smoothing=[0.0, 0.0], seed=[0, 1])
    # a table from elsewhere: its columns with schema axis names, or the axes its user names
    # (--axes overrides), and its replicate column; never a metric, time or step count
    assert tables.candidate_axes(_frame(**cols)) == ["lr", "optimizer", "epochs", "seed"]
    fr = tables.frame(tables.declare(pa.table(cols), axes=["lr", "label_smoothing"], named=("test_loss",)))
    assert tables.candidate_axes(fr) == ["lr", "label_smoothing", "seed"] and fr.replicate == "seed"
    assert tables.varying(fr, np.arange(2)) == ["lr", "seed"]
    with pytest.raises(AnalysisError, match="either an axis or what is measured"):
        tables.declare(pa.table(cols), axes=["test_loss"], named=("test_loss",))
    # a store's table has the schema's: steps taken, times and metrics never are axes
    fr = tables.frame(tables.from_store(pa.table(cols)))
    assert tables.candidate_axes(fr) == ["lr", "optimizer", "seed", "epochs"]
    assert fr.declared and "steps" not in tables.candidate_axes(fr)


def test_rows_of_one_cell_that_are_not_seeds_stop_the_command():
    rows = np.arange(4)
    fr = tables.frame(pa.table({"n": [1, 1, 2, 2], "lr": [0.1, 0.2, 0.1, 0.2], "y": [1.0, 2, 3, 4],
                                "seed": [0, 0, 0, 0]}))
    with pytest.raises(AnalysisError, match=r"2 rows at n=1 share seed 0 but differ in lr.*--axes lr"):
        tables.check_replicates(fr, rows, np.array([0, 0, 1, 1]), ["n"])
    tables.check_replicates(fr, rows, np.array([0, 1, 2, 3]), ["n", "lr"])  # one row per cell: fine
    no_seed = tables.frame(pa.table({"n": [1, 1], "lr": [0.1, 0.2]}))
    with pytest.raises(AnalysisError, match="have no seed column"):
        tables.check_replicates(no_seed, np.arange(2), np.array([0, 0]), ["n"])


def test_groups_are_sorted_and_cover_every_row():
    fr = _frame(width=[64, 32, 64, 32, None], lr=[0.1, 0.1, 0.2, 0.2, 0.1])
    found = tables.groups(fr, np.ones(5, bool), ["width"])
    assert [k for k, _ in found] == [(32.0,), (64.0,), (None,)]
    assert sorted(np.concatenate([i for _, i in found]).tolist()) == [0, 1, 2, 3, 4]
    assert tables.label(["width", "lr"], (64.0, 0.1)) == "width=64, lr=0.1"
    assert tables.label([], ()) == "all"


def test_where_matches_numbers_with_tolerance_and_strings_exactly():
    fr = _frame(lr=[0.1, 0.30000000000000004, 0.3], task=["a", "b", "a"])
    assert tables.where_mask(fr, {"lr": "0.3"}).tolist() == [False, True, True]
    assert tables.where_mask(fr, {"task": "a", "lr": "0.1"}).tolist() == [True, False, False]


def test_read_any_rejects_a_non_table_file(tmp_path):
    bad = tmp_path / "x.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(AnalysisError, match="cannot read"):
        tables.read_any(str(bad))


def test_vectorised_groups_and_varying_match_the_reference_helpers():
    """analysis.tables.cells.groups (one int64 key per row) and cells.varying (constant columns skipped
    without sorting) give what tables.groups and tables.varying give, on columns with NaN,
    None, text, constants and numbers that print alike (1 and 1.0)."""
    import analysis.tables.cells as cells

    rng = np.random.default_rng(0)
    n = 600
    cols = dict(lr=rng.choice([0.1, 0.3, np.nan], n), width=rng.choice([64, 256], n).astype(float),
                optimizer=rng.choice(np.array(["sgd", "adamw", None], dtype=object), n),
                depth=np.full(n, 2.0), task=np.array(["digits"] * n, dtype=object),
                momentum=np.full(n, np.nan), seed=rng.integers(0, 5, n).astype(float),
                test_loss=rng.random(n))
    fr = tables.frame(tables.declare(pa.table(cols), axes=["lr", "width", "optimizer", "depth", "task",
                                                           "momentum"], named=("test_loss",)))
    rows = np.flatnonzero(rng.random(n) < 0.8)
    for by in (("lr",), ("optimizer", "width"), ("width", "lr", "optimizer", "depth")):
        fast, ref = cells.groups(fr, rows, by), tables.groups(fr, rows, by)
        assert [k for k, _ in fast] == [k for k, _ in ref]
        for (_, a), (_, b) in zip(fast, ref):
            assert sorted(a.tolist()) == sorted(b.tolist())
    assert cells.varying(fr, rows) == tables.varying(fr, rows, exclude=("seed",)) == ["lr", "width", "optimizer"]
    assert cells._constant(np.array(["a", "a"], dtype=object))
    assert not cells._constant(np.array(["a", None], dtype=object))
    assert not cells._constant(np.array([1, 1.0], dtype=object))  # they print differently
    assert cells._constant(np.array([np.nan, np.nan])) and not cells._constant(np.array([np.nan, 1.0]))


def test_text_columns_read_the_same_by_either_path():
    """Few distinct values share one str per value (dictionary path); mostly distinct values
    (ids) take the plain path; both give str and None in row order."""
    few = pa.chunked_array([pa.array(["ok", None, "failed"]), pa.array(["ok"] * 5)])
    ids = pa.chunked_array([pa.array(["a1", "b2", None, "c3"])])
    for col in (few, ids, pa.chunked_array([], pa.string()), pa.chunked_array([pa.array([None, None], pa.string())])):
        got = frame_mod._text(col)
        assert got.dtype == object and got.tolist() == col.to_pylist()
    got = frame_mod._text(few)
    assert got[0] is got[3], "one str object per distinct value"
    assert tables.frame(pa.table({"s": few})).get("s").tolist() == few.to_pylist()


def test_the_headline_metric_is_the_tasks_then_the_tables():
    """What fit, report, bopt and the sweep summary default to: the task's declared metric
    (error for classification, test_loss for the text task), else what the columns allow."""
    digits = pa.table({"task": ["digits"] * 2, "test_acc": [0.9, 0.95], "test_loss": [0.3, 0.2]})
    text = pa.table({"task": ["text"] * 2, "test_acc": [0.4, 0.5], "test_loss": [2.1, 1.9]})
    assert tables.headline_metric(digits) == "error"
    assert tables.headline_metric(text) == "test_loss", "next-byte accuracy is not an LM's metric"
    plugin = pa.table({"task": ["pkg.mod:make"] * 2, "test_acc": [3.0, 2.0], "test_loss": [1.0, 0.5]})
    assert tables.headline_metric(plugin) == "test_loss", "a test_acc outside [0, 1] is no accuracy"
    assert tables.headline_metric(pa.table({"test_acc": [0.5, None]})) == "error"
    assert tables.headline_metric(pa.table({"test_loss": [1.0], "test_acc": ["a"]})) == "test_loss"
    mixed = pa.table({"task": ["digits", "text"], "test_acc": [0.9, 0.4], "test_loss": [0.3, 2.0]})
    assert tables.headline_metric(mixed) == "error", "two tasks disagree: the columns decide"
    with pytest.raises(AnalysisError, match="--metric"):
        tables.headline_metric(pa.table({"n": [1, 2], "value": [0.3, 0.2]}))
