"""Power-law fits: known answers, interval coverage, degenerate input, plain output."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.errors import AnalysisError
from analysis.fit.powerlaw import fit_power_law

A, B, C = 5.0, -0.5, 0.2


@pytest.fixture
def curve():
    """Hestness-style curve y = 5 x^-0.5 + 0.2 with 5 % log-normal noise, 12 sizes."""
    rng = np.random.default_rng(7)
    x = np.logspace(2, 5, 12)
    return x, (A * x ** B + C) * np.exp(0.05 * rng.standard_normal(x.size))


def test_true_parameters_inside_intervals(curve):
    fit = fit_power_law(*curve, n_boot=500)
    assert fit.converged
    for name, true in zip("abc", (A, B, C)):
        value, lo, hi = fit.param(name)
        assert lo <= true <= hi, (name, lo, true, hi)
        assert lo <= value <= hi
    assert fit.n_points == 12 and fit.n_boot_converged >= 490
    assert fit.r2_log > 0.95


@pytest.mark.slow
def test_interval_coverage_over_200_replications():
    """95 % intervals of the exponent cover the truth in 90-99 % of 200 noisy replications."""
    rng = np.random.default_rng(12345)
    x = np.logspace(2, 5, 12)
    hits = 0
    for rep in range(200):
        y = (A * x ** B + C) * np.exp(0.05 * rng.standard_normal(x.size))
        fit = fit_power_law(x, y, n_boot=300, holdout=0, seed=rep)
        hits += fit.ci_low[1] <= B <= fit.ci_high[1]
    assert 0.90 <= hits / 200 <= 0.99, hits


def test_pure_power_law_without_offset():
    rng = np.random.default_rng(1)
    x = np.logspace(1, 4, 10)
    y = 3.0 * x ** -0.3 * np.exp(0.02 * rng.standard_normal(x.size))
    fit = fit_power_law(x, y, offset=False, n_boot=300)
    assert fit.names == ("a", "b") and fit.form == "a*x^b"
    assert fit.ci_low[1] <= -0.3 <= fit.ci_high[1]
    assert fit.ci_low[0] <= 3.0 <= fit.ci_high[0]


def test_rising_accuracy_curve_has_negative_a_and_ceiling_c():
    rng = np.random.default_rng(2)
    x = np.logspace(2, 5, 12)
    y = (0.95 - 3.0 * x ** -0.5) * np.exp(0.003 * rng.standard_normal(x.size))
    fit = fit_power_law(x, y, n_boot=300)
    a, b, c = fit.params
    assert a < 0 and 0.9 < c < 1.0
    assert fit.ci_low[1] <= -0.5 <= fit.ci_high[1]


def test_exact_data_is_recovered_closely():
    x = np.logspace(1, 4, 8)
    fit = fit_power_law(x, A * x ** B + C, n_boot=50)
    np.testing.assert_allclose(fit.params, (A, B, C), rtol=1e-4)


def test_extrapolation_check_holds_out_the_largest_x(curve):
    fit = fit_power_law(*curve, n_boot=100, holdout=3)
    assert fit.holdout is not None
    assert fit.holdout.x == tuple(np.sort(curve[0])[-3:])
    assert 0 <= fit.holdout.rmse_log < 0.3
    off = fit_power_law(*curve, n_boot=100, holdout=0)
    assert off.holdout is None and "off" in off.holdout_note


def test_holdout_skipped_with_a_reason_when_too_few_points():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    fit = fit_power_law(x, 2 * x ** -0.5 + 0.1 + [0.001, -0.002, 0.0, 0.001], n_boot=50)
    assert fit.holdout is None and "too few" in fit.holdout_note


def test_replicates_are_used_instead_of_point_resampling(curve):
    x, y = curve
    reps = y * np.exp(0.05 * np.random.default_rng(0).standard_normal((200, y.size)))
    fit = fit_power_law(x, y, replicates=reps)
    assert fit.resampling == "replicates" and fit.n_boot == 200


def test_to_dict_is_plain_json(curve):
    d = fit_power_law(*curve, n_boot=100).to_dict()
    text = json.dumps(d, allow_nan=False)
    assert set(d["params"]) == {"a", "b", "c"}
    for p in d["params"].values():
        assert {"value", "ci_low", "ci_high"} <= set(p)
        assert all(type(v) is float for v in p.values())
    assert type(d["n_points"]) is int and type(d["converged"]) is bool
    assert json.loads(text)["form"] == "a*x^b + c"


def test_band_brackets_the_fit(curve):
    fit = fit_power_law(*curve, n_boot=300)
    grid = np.geomspace(100, 1e5, 20)
    lo, hi = fit.band(grid)
    mid = fit.predict(grid)
    assert np.all(lo <= mid * 1.001) and np.all(mid <= hi * 1.001)


@pytest.mark.parametrize("x, y, words", [
    ([1, 2, 3], [3, 2, 1], "at least 4 distinct"),
    ([1, 2, 3, 4, 5], [2, 2, 2, 2, 2], "constant"),
    ([1, 2, 3, 4, 5], [2, 1, np.nan, 0.5, 0.4], "NaN or inf"),
    ([1, 2, 3, 4, 5], [2, 1, np.inf, 0.5, 0.4], "NaN or inf"),
    ([0, 2, 3, 4, 5], [2, 1, 0.7, 0.5, 0.4], "x > 0"),
    ([-1, 2, 3, 4, 5], [2, 1, 0.7, 0.5, 0.4], "log-transformed"),
    ([1, 2, 3, 4, 5], [2, 1, -0.7, 0.5, 0.4], "y > 0"),
    ([1, 2, 3], [1, 2], "differ in length"),
    ([], [], "at least 4"),
])
def test_degenerate_input_gets_a_clear_message(x, y, words):
    with pytest.raises(AnalysisError, match=words):
        fit_power_law(np.array(x, float), np.array(y, float), n_boot=20)


def test_fewer_points_than_parameters_without_offset():
    with pytest.raises(AnalysisError, match="at least 3 distinct"):
        fit_power_law([1.0, 2.0], [1.0, 0.5], offset=False)


def test_unidentified_curve_is_flagged_not_raised():
    """A flat curve (y = x^-0.001 with +-1 % noise) has no exponent to find: the fit still
    describes the points (RMSE-log at the noise, 0.01), and says it cannot pin the parameters
    down by wide intervals and a note on the resamples, never by a narrow interval around an
    arbitrary exponent."""
    x = np.logspace(0, 3, 6)
    y = np.exp(-0.001 * np.log(x)) * np.exp(0.01 * np.array([1, -1, 1, -1, 1, -1]))
    fit = fit_power_law(x, y, n_boot=100)
    assert fit.rmse_log < 0.0105
    _, lo, hi = fit.param("b")
    assert hi - lo > 2.0, (lo, hi)                      # the exponent is not identified
    _, lo, hi = fit.param("c")
    assert lo <= 1.0 <= hi                              # ... but the level is: c covers 1
    _, lo, hi = fit.param("a")
    assert lo <= 0 < hi or hi / lo > 1e3                # a is anything from ~0 up
    assert any("do not pin the parameters down" in n for n in fit.notes), fit.notes


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(allow_nan=True, allow_infinity=True, width=32),
                          st.floats(allow_nan=True, allow_infinity=True, width=32)),
                max_size=12))
def test_any_input_gives_a_fit_or_an_analysis_error(points):
    x = np.array([p[0] for p in points], float)
    y = np.array([p[1] for p in points], float)
    try:
        fit = fit_power_law(x, y, n_boot=20, holdout=0)
    except AnalysisError:
        return
    assert len(fit.params) == 3 and fit.n_points == x.size


# --- monotone bounds (the default of scaling fit) -------------------------------------------


def _rising(seed: int, n_seeds: int = 3):
    """A loss that rises with x (log-linear plus noise): unlike any falling power law."""
    rng = np.random.default_rng(seed)
    x = np.repeat([100.0, 200, 400, 800, 1600], n_seeds)
    return x, 0.5 + 0.05 * np.log(x) + rng.normal(0, 0.01, x.size)


@pytest.mark.parametrize("seed", range(5))
def test_a_rising_curve_fitted_as_falling_is_flat_warned_and_never_dives(seed):
    from analysis.fit.forms.on_curves import power_law_warnings

    x, y = _rising(seed)
    fit = fit_power_law(x, y, n_boot=200, monotone="falling")
    a, b, c = fit.params
    assert b == 0.0 and "b" in fit.at_bound and a >= 0 and c >= 0
    assert np.isnan(fit.ci_low[0]) and np.isnan(fit.ci_low[2]), "a and c are not identified"
    grid = np.logspace(1, 6, 50)
    assert np.all(fit.predict(grid) > 0.5 * y.min()), "the curve stays near the data, never to 0"
    assert any("do not fall" in w and "--unbounded" in w for w in power_law_warnings(fit, None, False))
    free = fit_power_law(x, y, n_boot=50)
    assert free.monotone is None and free.at_bound == ()
    assert not any("do not fall" in w for w in power_law_warnings(free, None, False))


@pytest.mark.parametrize("rep", range(20))
def test_bounded_intervals_keep_their_signs_on_noisy_falling_curves(rep):
    """Few points with seed-level shifts (a shared offset per seed, not i.i.d. noise): the
    bounded fit's estimates and interval ends keep a >= 0, b <= 0, c >= 0 on every replication."""
    rng = np.random.default_rng(100 + rep)
    x = np.array([75.0, 150, 300, 600, 1200])
    seeds = rng.normal(0, 0.15, 3)
    y = np.concatenate([0.9 * x ** -0.45 * np.exp(s + rng.normal(0, 0.1, x.size)) for s in seeds])
    fit = fit_power_law(np.tile(x, 3), y, n_boot=200, monotone="falling")
    lo, hi = np.array(fit.ci_low), np.array(fit.ci_high)
    assert fit.params[0] >= 0 and fit.params[1] <= 0 and fit.params[2] >= 0
    assert lo[0] >= 0 and hi[1] <= 0 and lo[2] >= 0
    assert fit.n_boot_failed == 0


def test_a_rising_accuracy_is_bounded_to_rise():
    x = np.logspace(2, 4, 8)
    y = 0.95 - 0.8 * x ** -0.4
    fit = fit_power_law(x, y, n_boot=100, monotone="rising")
    a, b, c = fit.params
    assert a <= 0 and b <= 0 and c >= 0
    assert abs(b + 0.4) < 0.02 and abs(c - 0.95) < 0.01


def test_unconverged_resamples_are_refitted_from_the_starts():
    """Warm-started far from the optimum with few iterations, most resamples stop short; the
    refit from the full fit's starts brings them to converged solutions at a lower objective."""
    from analysis.fit.powerlaw import _starts
    from analysis.stats.robust import bootstrap, huber_objective

    rng = np.random.default_rng(3)
    x = np.logspace(2, 5, 10)
    y = (5 * x ** -0.5 + 0.2) * np.exp(0.03 * rng.standard_normal(x.size))
    model, starts = _starts(x, y, True, 1.0)
    far = np.array([40.0, -2.9, -30.0])  # a runaway corner of the scaled parameters
    X, ly = (np.log(x),), np.log(y)
    plain = bootstrap(model, far, X, ly, delta=0.05, n_boot=100, seed=1)
    again = bootstrap(model, far, X, ly, delta=0.05, n_boot=100, seed=1, starts=starts)
    assert plain.n_converged < again.n_converged == 100
    w = np.ones_like(ly)
    assert np.median(huber_objective(model, again.theta, X, ly, w, 0.05)) < \
        np.median(huber_objective(model, plain.theta, X, ly, w, 0.05))
