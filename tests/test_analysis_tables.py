"""Table helpers: metrics, direction, outcomes, axes and groups."""

import numpy as np
import pyarrow as pa
import pytest

from analysis import tables
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


def test_candidate_axes_budget_and_extra_columns():
    fr = _frame(lr=[0.1, 0.2], epochs=[None, None], steps=[100, 200], test_loss=[1.0, 2.0],
                optimizer=["sgd", "adam"], my_time_s=[1.0, 2.0], label_smoothing=[0.0, 0.0])
    axes = tables.candidate_axes(fr)
    assert "steps" in axes and "optimizer" in axes and "label_smoothing" in axes
    assert "my_time_s" not in axes and "test_loss" not in axes
    assert tables.varying(fr, np.arange(2)) == ["lr", "steps", "optimizer"]
    fr = _frame(lr=[0.1, 0.2], epochs=[10.0, 10.0], steps=[100, 200])
    assert "steps" not in tables.candidate_axes(fr) and "epochs" in tables.candidate_axes(fr)


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
