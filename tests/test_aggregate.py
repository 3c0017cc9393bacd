"""SQL-side aggregates over a store (scaling.store.aggregate) against the same sums done by hand."""

from __future__ import annotations

import math
import statistics

import pytest

from scaling.store.aggregate import curve_summary, frontier_points, group_stats
from scaling.errors import UserError
from scaling.store.writer import Store
from scaling.store.views import open_store
from test_store import TRIAL, result


@pytest.fixture()
def store(tmp_path):
    """n_train x lr x seed, test_loss = 1/n_train + |lr - 0.1| + seed/1000; one diverged trial, one
    failed one and one NaN (all counted, none averaged); a rerun that the rule keeps."""
    s = Store(str(tmp_path))
    for n in (100, 200, 400):
        for lr in (0.05, 0.1, 0.2):
            for seed in range(3):
                r = result({**TRIAL, "n_train": n, "lr": lr, "seed": seed}, n_curve=3)
                loss = 1 / n + abs(lr - 0.1) + seed / 1000
                r["trial"].update(test_loss=loss, test_acc=1 - loss)
                for c in r["curves"]:
                    c["test_loss"] = loss * (3 - c["step"])
                if (n, lr, seed) == (400, 0.2, 2):
                    r["trial"].update(status="diverged", test_loss=math.nan)
                if (n, lr, seed) == (200, 0.05, 1):
                    r["trial"].update(status="failed", test_loss=None)
                if (n, lr, seed) == (100, 0.1, 0):
                    r["trial"].update(test_loss=math.nan)
                s.write_result("s", r)
    return str(tmp_path)


def test_group_stats_match_the_rows(store):
    with open_store(store) as view:
        got = {r["n_train"]: r for r in group_stats(view, ["n_train"], ["test_loss", "error"], values=True).to_pylist()}
        rows = view.sql("SELECT n_train, status, test_loss, test_acc, seed FROM trials").to_pylist()
    for n in (100, 200, 400):
        mine = [r for r in rows if r["n_train"] == n]
        ok = sorted((r for r in mine if r["status"] == "ok" and r["test_loss"] is not None
                     and math.isfinite(r["test_loss"])), key=lambda r: r["seed"])
        losses = [r["test_loss"] for r in ok]
        g = got[n]
        assert (g["trials"], g["ok"], g["diverged"], g["failed"]) == (
            9, sum(r["status"] == "ok" for r in mine), sum(r["status"] == "diverged" for r in mine),
            sum(r["status"] == "failed" for r in mine))
        assert g["test_loss_n"] == len(losses) and g["test_loss_mean"] == pytest.approx(statistics.mean(losses))
        assert g["test_loss_std"] == pytest.approx(statistics.stdev(losses))
        assert sorted(g["test_loss_values"]) == pytest.approx(sorted(losses))
        assert g["error_mean"] == pytest.approx(statistics.mean(1 - r["test_acc"] for r in mine if r["status"] == "ok"))


def test_frontier_picks_the_best_cell_at_each_x(store):
    got = frontier_points(store, "n_train", "test_loss").to_pylist()
    assert [r["n_train"] for r in got] == [100, 200, 400]
    assert all(r["lr"] == 0.1 and r["cells"] == 3 for r in got), "lr 0.1 is best at every n_train"
    assert got[1]["n"] == 3 and got[1]["mean"] == pytest.approx(1 / 200 + 0.001)
    assert got[0]["n"] == 2, "the NaN seed is left out"
    best_acc = frontier_points(store, "n_train", "test_acc", maximize=True, where={"lr": 0.2})
    assert best_acc.column("n_train").to_pylist() == [100, 200, 400]
    assert "lr" not in best_acc.column_names, "fixed by the filter: not an axis to tune over"


def test_curve_summary_joins_curves_with_their_trials(store):
    got = curve_summary(store, ["lr"], "test_loss", where={"n_train": 100}).to_pylist()
    assert [(r["lr"], r["step"]) for r in got] == [(lr, s) for lr in (0.05, 0.1, 0.2) for s in range(3)]
    first = next(r for r in got if r["lr"] == 0.05 and r["step"] == 0)
    assert first["n"] == 3 and first["mean"] == pytest.approx(statistics.mean(
        3 * (1 / 100 + 0.05 + s / 1000) for s in range(3)))


def test_unknown_columns_are_refused_not_pasted_into_sql(store):
    with pytest.raises(UserError, match="no column 'n_train; DROP'"):
        group_stats(store, ["n_train; DROP"], ["test_loss"])
    with pytest.raises(UserError, match="no metric 'nope'"):
        frontier_points(store, "n_train", "nope")
