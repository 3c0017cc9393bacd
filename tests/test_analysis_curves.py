"""Learning curves from sweep tables: frontier, fixed configuration, groups, outcomes."""

import numpy as np
import pyarrow as pa
import pytest

from analysis.fit.curves import fit_learning_curves
from analysis.errors import AnalysisError
from analysis.tables.load import from_store
from analysis.tables.columns import parse_where

A, B, C = 4.0, -0.5, 0.05
SIZES = (250, 500, 1000, 2000, 4000, 8000, 16000, 32000)


def _table(widths=(64,), lrs=(0.1, 0.01), seeds=(0, 1, 2), sizes=SIZES, diverged=(), seed=0):
    """test_loss = (1 + [lr != 0.1]*0.5) * width/64 * (A n^B + C), 1 % noise; acc = 1 - loss/3."""
    rng = np.random.default_rng(seed)
    rows = []
    for w in widths:
        for n in sizes:
            for lr in lrs:
                for s in seeds:
                    base = (A * n ** B + C) * (w / 64) * (1.0 if lr == 0.1 else 1.5)
                    loss = base * np.exp(0.01 * rng.standard_normal())
                    bad = (n, lr, s) in diverged
                    rows.append({"sweep": "t", "status": "diverged" if bad else "ok",
                                 "error": "nan loss" if bad else None, "width": w,
                                 "n_train": n, "batch_size": 32, "lr": lr, "momentum": 0.0,
                                 "seed": s, "test_loss": np.nan if bad else loss,
                                 "train_loss": np.nan if bad else 0.5 * loss,
                                 "test_acc": np.nan if bad else 1 - loss / 3})
    return from_store(pa.Table.from_pylist(rows))  # a sweep's table: width, n_train, ... are its axes


def test_frontier_picks_the_best_configuration_and_recovers_the_curve():
    [curve] = fit_learning_curves(_table(), n_boot=300, resample="points")
    assert curve.over == ("lr",) and curve.x == tuple(float(n) for n in SIZES)
    assert all(c == {"lr": 0.1} for c in curve.chosen)
    assert curve.n_seeds == (3,) * len(SIZES)
    fit = curve.fit
    assert fit.resampling == "points" and fit.converged
    for name, true in zip("abc", (A, B, C)):
        value, lo, hi = fit.param(name)
        assert lo <= true <= hi, (name, lo, value, hi)
        assert value == pytest.approx(true, rel=0.1)


def test_seed_resampling_is_the_default_with_seeds_and_uses_a_t_interval():
    [few] = fit_learning_curves(_table(), n_boot=100)
    assert few.fit.resampling == "replicates" and few.fit.interval == "cluster-t"
    assert few.selection.startswith("chosen and measured on the same seeds")  # 3 seeds, no val
    [many] = fit_learning_curves(_table(seeds=range(6)), n_boot=100)
    assert many.fit.resampling == "replicates" and many.selection.startswith("cross-fit")
    assert not many.fit.notes
    with pytest.raises(AnalysisError, match="resample"):
        fit_learning_curves(_table(), resample="trials")


def test_where_fixes_one_configuration():
    [curve] = fit_learning_curves(_table(), where=parse_where("lr=0.01"), n_boot=200)
    assert curve.over == () and all(c == {} for c in curve.chosen)
    assert curve.fit.param("a")[0] == pytest.approx(1.5 * A, rel=0.1)


def test_accuracy_frontier_is_maximised():
    [curve] = fit_learning_curves(_table(), metric="test_acc", n_boot=100)
    assert curve.maximize and all(c == {"lr": 0.1} for c in curve.chosen)
    assert curve.fit.params[0] < 0  # accuracy rises towards its ceiling c


def test_by_width_gives_one_curve_per_width():
    curves = fit_learning_curves(_table(widths=(64, 128)), by=["width"], n_boot=200)
    assert [c.group for c in curves] == [{"width": 64.0}, {"width": 128.0}]
    a64, a128 = (c.fit.param("a")[0] for c in curves)
    assert a128 / a64 == pytest.approx(2.0, rel=0.15)
    assert curves[1].label == "width=128"


def test_diverged_trials_are_counted_and_their_cell_left_out():
    curves = fit_learning_curves(_table(diverged={(250, 0.1, 0), (500, 0.01, 1)}), n_boot=100)
    assert curves[0].outcomes == {"ok": 46, "diverged": 2}
    # the better cell at n=250 lost a seed: it is not scored by its survivors
    assert curves[0].chosen[0] == {"lr": 0.01} and curves[0].n_seeds[0] == 3
    assert curves[0].chosen[1] == {"lr": 0.1}
    assert [f["point"] for f in curves[0].flagged] == [{"n_train": 250}, {"n_train": 500}]
    assert "diverged on 1 of 3 trials" in curves[0].flagged[0]["reason"]


def test_single_seed_falls_back_to_resampling_points():
    [curve] = fit_learning_curves(_table(seeds=(0,)), n_boot=100)
    assert curve.fit.resampling == "points"
    [forced] = fit_learning_curves(_table(seeds=(0,)), n_boot=100, resample="seeds")
    assert forced.fit is None and "2 seeds" in forced.message


def test_derived_metrics_error_and_gap():
    [err] = fit_learning_curves(_table(), metric="error", n_boot=50)
    [acc] = fit_learning_curves(_table(), metric="test_acc", n_boot=50)
    np.testing.assert_allclose(err.y, 1 - np.array(acc.y))
    [gap] = fit_learning_curves(_table(), metric="gap", n_boot=50)
    [loss] = fit_learning_curves(_table(), metric="test_loss", n_boot=50)
    np.testing.assert_allclose(gap.y, 0.5 * np.array(loss.y))


def test_a_group_that_cannot_be_fitted_carries_a_message():
    table = pa.concat_tables([_table(widths=(64,)), _table(widths=(128,), sizes=(250, 500))])
    curves = fit_learning_curves(table, by=["width"], n_boot=50)
    assert curves[0].fit is not None
    assert curves[1].fit is None and "distinct" in curves[1].message


@pytest.mark.parametrize("kwargs, words", [
    ({"x": "nope"}, "no x column 'nope'"),
    ({"metric": "nope"}, "unknown metric 'nope'"),
    ({"by": ["nope"]}, "--by names unknown column"),
    ({"where": {"lr": "0.5"}}, "no trial matches"),
    ({"where": {"nope": "1"}}, "--where names unknown column"),
    ({"where": {"lr": "abc"}}, "is not a number"),
])
def test_user_mistakes_raise_one_clear_error(kwargs, words):
    with pytest.raises(AnalysisError, match=words):
        fit_learning_curves(_table(), n_boot=10, **kwargs)


def test_all_trials_infeasible_is_an_error_naming_the_outcomes():
    table = _table(sizes=(250, 500), seeds=(0,), lrs=(0.1,),
                   diverged={(250, 0.1, 0), (500, 0.1, 0)})
    with pytest.raises(AnalysisError, match="diverged"):
        fit_learning_curves(table)


def test_parse_where_rejects_malformed_pairs():
    assert parse_where("lr=0.1, batch_size=32") == {"lr": "0.1", "batch_size": "32"}
    with pytest.raises(AnalysisError, match="COL=VALUE"):
        parse_where("lr")
