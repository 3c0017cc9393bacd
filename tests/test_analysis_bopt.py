"""B_opt per group and the rule check on synthetic sweeps with a known optimum."""

import json

import numpy as np
import pyarrow as pa
import pytest

from analysis.bopt import collapse, find_bopt, vertex_log_b
from analysis.errors import AnalysisError
from analysis.rule import check_rule
from analysis.synthetic import sweep_table


def test_vertex_of_exact_parabola_is_recovered():
    t = np.log(2.0 ** np.arange(8))
    for centre in (1.3, 2.0, 3.71, 4.5):
        scores = -(t - centre) ** 2
        assert vertex_log_b(t, scores[None, :])[0] == pytest.approx(centre)


def test_vertex_on_uneven_grid_and_at_edges():
    t = np.log(np.array([8.0, 16.0, 64.0, 100.0, 512.0]))
    assert vertex_log_b(t, -(t[None, :] - 3.5) ** 2)[0] == pytest.approx(3.5)
    assert vertex_log_b(t, -(t[None, :] - 0.0) ** 2)[0] == pytest.approx(t[0])
    assert vertex_log_b(t, -(t[None, :] - 9.9) ** 2)[0] == pytest.approx(t[-1])


def test_rule_that_holds_exactly_is_consistent():
    result = find_bopt(sweep_table(k=0.2, power=1.0, seed=1), n_boot=200)
    rule = result.rule
    assert rule.consistent is True and rule.verdict.startswith("consistent")
    assert rule.slope.ci_low <= 1.0 <= rule.slope.ci_high
    assert rule.g_opt.ci_low <= 5.0 <= rule.g_opt.ci_high  # g_opt = 1/k
    assert {e.name for e in rule.exponents} == {"lr", "n_train", "1/(1-momentum)"}
    for e in rule.exponents:
        assert abs(e.value - 1.0) < 0.05
    assert rule.n_used == 48 and rule.r2 > 0.99


def test_rule_holds_in_most_noisy_sweeps():
    consistent = [find_bopt(sweep_table(seed=s), n_boot=0).rule.consistent for s in range(20)]
    assert sum(consistent) >= 16, consistent


def test_square_root_law_is_inconsistent():
    result = find_bopt(sweep_table(k=4.0, power=0.5, seed=1), n_boot=200)
    assert result.rule.consistent is False
    assert result.rule.verdict.startswith("inconsistent")
    assert result.rule.slope.ci_high < 1.0
    assert result.rule.slope.ci_low <= 0.5 <= result.rule.slope.ci_high


def test_group_values_and_seed_interval():
    result = find_bopt(sweep_table(seed=2, noise=0.005), n_boot=400)
    assert result.axes == ("n_train", "lr", "momentum")
    covered = 0
    for g in result.groups:
        truth = 0.2 * g.lr * g.n_train / (1 - g.momentum)
        assert g.status == "ok" and g.outcomes == {"ok": 45}
        assert abs(np.log(g.b_opt / truth)) < 0.2
        covered += g.ci_low <= truth <= g.ci_high
    assert covered >= 0.8 * len(result.groups)


def test_edge_groups_are_flagged_and_left_out():
    table = sweep_table(batch_sizes=(8, 16, 32, 64, 128), seed=0)
    result = find_bopt(table, n_boot=50)
    edge = [g for g in result.groups if g.status == "edge"]
    assert edge and all(np.isnan(g.b_opt) and "usable one" in g.reason for g in edge)
    assert result.rule.n_edge == len(edge)
    assert result.rule.n_used == len(result.groups) - len(edge)


def test_every_group_at_the_edge_gives_a_verdict_not_an_error():
    table = sweep_table(batch_sizes=(1, 2, 4), lrs=(0.1,), momenta=(0.0,), seed=0)
    rule = find_bopt(table, n_boot=20).rule
    assert rule.consistent is None and rule.slope is None
    assert rule.verdict.startswith("cannot test the rule")
    assert "grid edge" in rule.verdict and "widen" in rule.verdict


def test_too_few_batch_sizes_and_too_few_groups():
    table = sweep_table(batch_sizes=(64, 128), n_trains=(1000,), momenta=(0.0,), seed=0)
    result = find_bopt(table, n_boot=20)
    assert all(g.status == "too_few" for g in result.groups)
    assert "fewer than 3 batch sizes" in result.rule.verdict
    assert check_rule([]).verdict == "cannot test the rule: the sweep has no groups"


def test_diverged_trials_are_counted_per_group():
    table = sweep_table(diverge_above=400.0, seed=0)
    result = find_bopt(table, n_boot=20)
    assert result.outcomes["diverged"] > 0
    assert sum(g.outcomes.get("diverged", 0) for g in result.groups) == result.outcomes["diverged"]
    assert any("did not train" in g.reason for g in result.groups)


def test_loss_metric_is_minimised_and_derived_metrics_work():
    table = sweep_table(seed=1)
    by_acc = find_bopt(table, metric="test_acc", n_boot=0)
    by_loss = find_bopt(table, metric="test_loss", n_boot=0)
    by_err = find_bopt(table, metric="error", n_boot=0)
    assert not by_loss.maximize and by_acc.maximize and not by_err.maximize
    np.testing.assert_allclose([g.b_opt for g in by_loss.groups], [g.b_opt for g in by_acc.groups])
    np.testing.assert_allclose([g.b_opt for g in by_err.groups], [g.b_opt for g in by_acc.groups])


def test_exponent_of_constant_axis_is_reported_as_not_estimated():
    table = sweep_table(momenta=(0.5,), seed=1)
    rule = find_bopt(table, n_boot=0).rule
    assert "momentum" in rule.not_estimated
    assert "does not vary" in rule.not_estimated["momentum"]
    assert {e.name for e in rule.exponents} == {"lr", "n_train"}


def test_to_dict_has_the_fields_of_the_json_output():
    d = find_bopt(sweep_table(seed=1), n_boot=50).to_dict()
    for key in ("slope", "slope_ci", "g_opt", "g_opt_ci", "verdict", "groups", "r2", "exponents"):
        assert key in d
    json.dumps(d, allow_nan=False)
    assert {"b_opt", "ci_low", "ci_high", "status", "outcomes"} <= set(d["groups"][0])


def test_missing_columns_and_no_usable_trials_raise_clear_errors():
    table = sweep_table(seed=0)
    with pytest.raises(AnalysisError, match="lr"):
        find_bopt(table.drop_columns(["lr"]))
    with pytest.raises(AnalysisError, match="unknown metric"):
        find_bopt(table, metric="nope")
    failed = table.set_column(table.column_names.index("status"), "status",
                              pa.array(["failed"] * table.num_rows))
    with pytest.raises(AnalysisError, match="no usable trials"):
        find_bopt(failed)


def test_collapse_uses_every_usable_trial():
    table = sweep_table(diverge_above=400.0, seed=0)
    col = collapse(table)
    ok = np.array(table.column("status").to_pylist()) == "ok"
    assert col.g.size == ok.sum() and col.outcomes["diverged"] == (~ok).sum()
    noise = np.array(table.column("noise_scale").to_pylist())[ok]
    np.testing.assert_allclose(np.sort(col.g), np.sort(noise))
