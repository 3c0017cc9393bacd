"""The two solvers minimise one objective; resampling keeps sizes; thresholds follow noise."""

import numpy as np
import pytest
from scipy.optimize import minimize

from analysis.fit.powerlaw import OffsetModel, PureModel
from analysis.stats.robust import auto_delta, batched_lm, huber_objective, multistart_fit, percentile_interval, resample_counts


@pytest.fixture
def problem():
    """Noisy y = 5 x^-0.5 + 0.2 in the scaled parametrisation, with 40 bootstrap resamples."""
    rng = np.random.default_rng(3)
    lx = np.log(np.logspace(2, 5, 12))
    ly = np.log((5 * np.exp(-0.5 * lx) + 0.2) * np.exp(0.05 * rng.standard_normal(lx.size)))
    model = OffsetModel(m=float(lx.mean()), log_s=float(ly.mean()))
    start = np.array([0.6, -0.5, 0.5])
    return model, (lx,), ly, start, resample_counts(lx.size, 40, rng)


@pytest.mark.parametrize("delta", [1e-3, 0.05])
def test_batched_fit_matches_lbfgs_on_the_same_objective(problem, delta):
    model, X, ly, start, counts = problem
    sol = batched_lm(model, np.tile(start, (counts.shape[0], 1)), X, ly, counts, delta=delta,
                     max_iter=2000)
    for k in range(0, counts.shape[0], 8):
        def fun(t, w=counts[k]):
            return float(huber_objective(model, t[None, :], X, ly, w, delta)[0])
        ref = minimize(fun, sol.theta[k], method="Nelder-Mead",
                       options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20000})
        assert sol.value[k] <= ref.fun + 1e-9 * max(ref.fun, 1.0), k
        assert sol.value[k] == pytest.approx(fun(sol.theta[k]), rel=1e-12)


def test_batched_fit_descends_from_every_start(problem):
    model, X, ly, start, counts = problem
    theta0 = np.tile(start, (counts.shape[0], 1))
    before = huber_objective(model, theta0, X, ly, counts, 0.05)
    after = batched_lm(model, theta0, X, ly, counts, delta=0.05)
    assert np.all(after.value <= before + 1e-15)
    assert after.converged.mean() > 0.9


def test_multistart_finds_the_better_basin(problem):
    model, X, ly, start, _ = problem
    bad = np.array([5.0, 2.5, -3.0])
    sol = multistart_fit(model, np.vstack([bad, start]), X, ly, delta=0.05)
    alone = multistart_fit(model, bad[None, :], X, ly, delta=0.05)
    assert sol.value <= alone.value + 1e-12
    assert sol.converged


def test_linear_model_huber_fit_equals_least_squares_when_delta_is_large():
    rng = np.random.default_rng(0)
    lx = np.linspace(0, 3, 20)
    ly = 1.0 - 0.7 * lx + 0.05 * rng.standard_normal(lx.size)
    sol = batched_lm(PureModel(), np.zeros((1, 2)), (lx,), ly, np.ones_like(ly), delta=10.0)
    slope, icpt = np.polyfit(lx, ly, 1)
    np.testing.assert_allclose(sol.theta[0], [icpt, slope], rtol=1e-7, atol=1e-9)


def test_resample_counts_keep_size_and_strata():
    rng = np.random.default_rng(0)
    counts = resample_counts(6, 500, rng)
    assert counts.shape == (500, 6) and np.all(counts.sum(1) == 6)
    strata = np.array([0, 0, 0, 1, 1, 2])
    counts = resample_counts(6, 500, rng, strata)
    assert np.all(counts[:, :3].sum(1) == 3) and np.all(counts[:, 3:5].sum(1) == 2)
    assert np.all(counts[:, 5] == 1)


def test_auto_delta_tracks_noise_and_has_a_floor():
    rng = np.random.default_rng(0)
    r = 0.1 * rng.standard_normal(5000)
    assert auto_delta(r, 3) == pytest.approx(1.345 * 0.1, rel=0.05)
    assert auto_delta(np.zeros(10), 3) == 1e-3


def test_percentile_interval_needs_ten_samples():
    lo, hi = percentile_interval(np.arange(9.0)[:, None], 0.95)
    assert np.isnan(lo[0]) and np.isnan(hi[0])
    lo, hi = percentile_interval(np.arange(1001.0)[:, None], 0.9)
    assert lo[0] == pytest.approx(50.0) and hi[0] == pytest.approx(950.0)
