"""Training diagnostics against answers known in closed form: the gradient noise scale of
linear regression, the top Hessian eigenvalue of quadratics; and how trials record them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from scaling.config.sweep import parse_config
from scaling.spec.schema import trial_id
from scaling.errors import ConfigError
from scaling.training.metrics import NoiseScaleEMA, TrialMetrics, example_grad_norms, hessian_top_eigenvalue, noise_scale_estimates, sharpness, split_batch_backward
from scaling.store.writer import Store
from scaling.store.views import load_tables
from scaling.training.data import cross_entropy
from scaling.training.run import run_trial


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def half_squared_error(output, y):
    return 0.5 * ((output.squeeze(-1) - y) ** 2).mean()


def test_estimates_invert_the_expected_squared_norms():
    # E|G_B|^2 = |G|^2 + tr(Sigma)/B exactly: the estimator must return |G|^2 and tr(Sigma)
    grad_sq, trace = 2.5, 40.0
    est = noise_scale_estimates(grad_sq + trace / 8, 8, grad_sq + trace / 64, 64)
    assert est == pytest.approx((grad_sq, trace))
    with pytest.raises(ValueError, match="b_big > b_small"):
        noise_scale_estimates(1.0, 8, 1.0, 8)
    ema = NoiseScaleEMA(0.9)
    assert ema.b_simple is None and ema.grad_sq is None
    for _ in range(3):
        ema.update(grad_sq + trace / 8, 8, grad_sq + trace / 64, 64)
    assert ema.grad_sq == pytest.approx(grad_sq) and ema.trace_cov == pytest.approx(trace), "bias-corrected"
    assert ema.b_simple == pytest.approx(trace / grad_sq)


def test_noise_scale_of_linear_regression_matches_the_closed_form():
    """y = x.w* + sigma*eps, x ~ N(0, I_p), loss (x.w - y)^2 / 2. At w = w* + delta the
    per-example gradient is g = (x.delta - sigma*eps) x, so G = delta and (Isserlis)
    Sigma = (|delta|^2 + sigma^2) I + delta delta^T: tr(Sigma) = p(|delta|^2 + sigma^2) + |delta|^2."""
    p, sigma, batch = 8, 1.0, 32
    gen = torch.Generator().manual_seed(0)
    w_star = torch.randn(p, generator=gen)
    delta = 1.5 * torch.randn(p, generator=gen) / math.sqrt(p)
    model = torch.nn.Linear(p, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_((w_star + delta)[None])
    grad_sq = float(delta @ delta)
    trace = p * (grad_sq + sigma**2) + grad_sq
    probe = TrialMetrics({"noise_scale": True, "noise_ema": 0.999}, half_squared_error, None, None, seed=0)
    for _ in range(4000):  # fixed parameters: only the batches change
        x = torch.randn(batch, p, generator=gen)
        probe.backward(model, x, x @ w_star + sigma * torch.randn(batch, generator=gen))
    values = probe.curve_values(model)
    assert values["grad_sq_norm"] == pytest.approx(grad_sq, rel=0.1)
    assert values["grad_cov_trace"] == pytest.approx(trace, rel=0.1)
    assert values["b_simple"] == pytest.approx(trace / grad_sq, rel=0.1)


def test_split_backward_leaves_the_whole_batch_gradient():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    x, y = torch.randn(13, 5), torch.randint(0, 3, (13,))
    loss = cross_entropy(model(x), y)
    expected = torch.autograd.grad(loss, list(model.parameters()))
    value, g_small_sq, b_small, g_big_sq, b_big = split_batch_backward(model, cross_entropy, x, y)
    assert value == pytest.approx(loss.item(), rel=1e-6)
    for p, g in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, g)
    assert b_big == 13 and b_small == pytest.approx(2 / (1 / 6 + 1 / 7))
    assert g_big_sq == pytest.approx(sum(float((g**2).sum()) for g in expected), rel=1e-6)
    assert g_small_sq > 0


def test_sharpness_of_a_quadratic_is_its_top_eigenvalue():
    rng = np.random.default_rng(0)
    eigenvalues = np.array([10.0, 7.0, 4.0, 2.0, 1.0, 0.5, 0.1, 0.0, -0.5, -1.0])
    q, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    hessian = torch.tensor(q @ np.diag(eigenvalues) @ q.T, dtype=torch.float64)
    theta = torch.tensor(rng.standard_normal(10), requires_grad=True)  # a quadratic: any point will do
    top = hessian_top_eigenvalue(lambda: 0.5 * theta @ hessian @ theta + theta.sum(), [theta], iters=100)
    assert top == pytest.approx(10.0, rel=0.01)


def test_sharpness_of_least_squares_is_the_top_eigenvalue_of_the_data_covariance():
    """For (x.w - y)^2 / 2 averaged over n examples the Hessian is X^T X / n, whatever w."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 6, generator=gen) * torch.tensor([3.0, 2.0, 1.0, 1.0, 0.5, 0.2])
    y = torch.randn(64, generator=gen)
    model = torch.nn.Linear(6, 1, bias=False)
    expected = float(torch.linalg.eigvalsh(x.T @ x / 64).max())
    before = [p.detach().clone() for p in model.parameters()]
    assert sharpness(model, half_squared_error, x, y, iters=100) == pytest.approx(expected, rel=0.01)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())) and model.weight.grad is None


def test_sharpness_of_a_network_matches_its_full_hessian():
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    x, y = torch.randn(20, 3), torch.randint(0, 2, (20,))
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(vector):
        params, i = [], 0
        for s in shapes:
            params.append(vector[i:i + math.prod(s)].view(s))
            i += math.prod(s)
        h = torch.tanh(x @ params[0].T + params[1])
        return cross_entropy(h @ params[2].T + params[3], y)

    eigenvalues = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of, flat))
    dominant = float(eigenvalues[eigenvalues.abs().argmax()])
    assert sharpness(model, cross_entropy, x, y, iters=200) == pytest.approx(dominant, rel=0.01)


def test_per_example_gradient_norms_match_a_loop():
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    x, y = torch.randn(9, 5), torch.randint(0, 4, (9,))
    norms = example_grad_norms(model, cross_entropy, x, y)
    for i in range(9):
        grads = torch.autograd.grad(cross_entropy(model(x[i:i + 1]), y[i:i + 1]), list(model.parameters()))
        assert norms[i] == pytest.approx(math.sqrt(sum(float((g**2).sum()) for g in grads)), rel=1e-5)


BASE = {"name": "m", "task": {"name": "digits"}, "model": {"name": "mlp", "width": 16, "depth": 1},
        "axes": {"n_train": 200, "batch_size": 32, "lr": 0.1, "momentum": 0.9}, "budget": {"steps": 25},
        "eval": {"points": 4}}
METRICS = {"noise_scale": True, "sharpness": True, "grad_norms": True, "sharpness_examples": 64}


def test_metrics_config_is_checked_and_only_enters_trials_when_enabled():
    plain = parse_config(BASE)
    assert "metrics" not in plain.trials()[0].to_dict() and plain.engine == "packed"
    off = parse_config({**BASE, "metrics": {"noise_scale": False}})
    assert off.trials() == plain.trials(), "metrics switched off leave trial ids as they were"
    on = parse_config({**BASE, "metrics": METRICS})
    trial = on.trials()[0].to_dict()
    assert trial["metrics"]["noise_scale"] and trial["metrics"]["sharpness_examples"] == 64
    assert trial["metrics"]["noise_ema"] == 0.95 and trial_id(trial) != trial_id(plain.trials()[0])
    assert on.engine == "packed", "packs measure metrics (the vmap backend)"
    for metrics, key in (({"noise_scale": 1}, "metrics.noise_scale"), ({"hessian": True}, "metrics.hessian"),
                         ({"sharpness": True, "noise_ema": 1.0}, "metrics.noise_ema"),
                         ({"grad_norms": True, "grad_norm_examples": 0}, "metrics.grad_norm_examples"),
                         ("yes", "metrics")):
        with pytest.raises(ConfigError, match=f"'{key}'"):
            parse_config({**BASE, "metrics": metrics})
    with pytest.raises(ConfigError, match="'metrics'.*workers_per_trial: 2"):
        parse_config({**BASE, "metrics": METRICS, "workers_per_trial": 2})
    assert yaml.safe_load("metrics: {noise_scale: true, sharpness: true}")["metrics"]["sharpness"] is True


def test_a_trial_records_its_metrics_and_the_store_keeps_them(tmp_path):
    trial = parse_config({**BASE, "metrics": METRICS}).trials()[0]
    out = run_trial(trial)
    row, curves = out["trial"], out["curves"]
    assert row["status"] == "ok"
    assert row["sharpness_init"] > 0 and row["sharpness_final"] > 0
    assert curves[0]["b_simple"] is None, "no gradient seen at step 0"
    assert all(c["b_simple"] is not None and c["b_simple"] > 0 for c in curves[1:])
    assert all(c["grad_cov_trace"] > 0 and c["example_grad_norm_mean"] > 0 and c["example_grad_norm_std"] >= 0
               for c in curves[1:])
    plain = run_trial(parse_config(BASE).trials()[0])  # the halves' gradients sum to the batch's
    assert row["train_loss"] == pytest.approx(plain["trial"]["train_loss"], rel=1e-4)
    assert "sharpness_init" not in plain["trial"] and "b_simple" not in plain["curves"][0]
    Store(str(tmp_path)).write_result("s", out)
    trials, stored = load_tables(str(tmp_path))
    assert trials.column("sharpness_final").to_pylist() == [row["sharpness_final"]]
    assert stored.column("b_simple").to_pylist()[0] is None
    assert stored.column("b_simple").to_pylist()[1:] == [c["b_simple"] for c in curves[1:]]


def test_a_diverged_trial_has_no_final_sharpness():
    out = run_trial(parse_config({**BASE, "axes": {**BASE["axes"], "lr": 1000.0}, "metrics": METRICS}).trials()[0])
    assert out["trial"]["status"] == "diverged"
    assert math.isfinite(out["trial"]["sharpness_init"]) and math.isnan(out["trial"]["sharpness_final"])


def test_a_noise_scale_sweep_packs_and_measures_what_the_single_engine_measures(monkeypatch):
    """|G_small|² and |G_big|² of every step, per member, within 1e-4 of the trial alone; and the
    curves' moving averages, per-example gradient norms and sharpness with them."""
    from cluster.driver.planner import plan
    from scaling.training.run import run_pack
    from scaling.training.metrics import NoiseScaleEMA
    from scaling.training.backends.vmap import NoiseScaleState

    raw = {**BASE, "axes": {"n_train": [150, 200], "batch_size": 16, "lr": [0.05, 0.1], "momentum": 0.9,
                            "seed": [0, 1]}, "metrics": METRICS}
    cfg = parse_config(raw)
    trials = cfg.trials()
    assert cfg.engine == "packed"
    units = plan(trials, engine=cfg.engine, slots=1, memory_bytes=1 << 30, log=lambda *_: None)
    assert [(u.engine, u.backend, len(u.trials)) for u in units] == [("packed", "vmap", len(trials))]

    seen = {"alone": [], "packed": []}
    single_update, packed_update = NoiseScaleEMA.update, NoiseScaleState.update

    def record_single(self, g_small_sq, b_small, g_big_sq, b_big):
        seen["alone"][-1].append((g_small_sq, g_big_sq))
        return single_update(self, g_small_sq, b_small, g_big_sq, b_big)

    def record_packed(self, g_small_sq, b_small, g_big_sq, b_big):
        seen["packed"].append((g_small_sq.tolist(), g_big_sq.tolist()))
        return packed_update(self, g_small_sq, b_small, g_big_sq, b_big)

    monkeypatch.setattr(NoiseScaleEMA, "update", record_single)
    monkeypatch.setattr(NoiseScaleState, "update", record_packed)
    packed = run_pack(trials)
    for i, (trial, mine) in enumerate(zip(trials, packed)):
        seen["alone"].append([])
        alone = run_trial(trial)
        assert mine["trial"]["backend"] == "vmap" and mine["trial"]["engine"] == "packed"
        steps = [(small[i], big[i]) for small, big in seen["packed"]]
        assert len(steps) == len(seen["alone"][-1]) == trial.total_steps
        for (a_small, a_big), (b_small, b_big) in zip(steps, seen["alone"][-1]):
            assert a_small == pytest.approx(b_small, rel=1e-4) and a_big == pytest.approx(b_big, rel=1e-4)
        for c, d in zip(mine["curves"], alone["curves"]):
            for key in ("b_simple", "grad_sq_norm", "grad_cov_trace", "example_grad_norm_mean",
                        "example_grad_norm_std"):
                assert (c[key] is None) == (d[key] is None), key
                if d[key] is not None:
                    assert c[key] == pytest.approx(d[key], rel=1e-4), (c["step"], key)
        for key in ("sharpness_init", "sharpness_final"):
            assert mine["trial"][key] == pytest.approx(alone["trial"][key], rel=1e-4), key
