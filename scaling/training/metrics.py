"""Training diagnostics that explain the batch-size rule: gradient noise scale,
sharpness and per-example gradient norms. Plain torch; no Ray, no globals.

Gradient noise scale (McCandlish et al. 2018, "An Empirical Model of Large-Batch
Training", App. A.1). With G the true gradient and Σ the per-example gradient
covariance, a batch of B examples has E|G_B|² = |G|² + tr(Σ)/B. Two batch sizes
give unbiased estimates of both terms::

    |G|²  ≈ (B_big |G_big|² − B_small |G_small|²) / (B_big − B_small)
    tr(Σ) ≈ (|G_small|² − |G_big|²) / (1/B_small − 1/B_big)

and B_simple = tr(Σ) / |G|², the critical batch size scale. Single estimates are
noisy (|G|² may even come out negative), so exponential moving averages of the
two are kept separately and B_simple is their ratio. In one process the batch of
B examples is split in two halves (B_small ≈ B/2, B_big = B); in data-parallel
training B_small is the per-worker batch and B_big the global one.

Sharpness is the top eigenvalue of the Hessian of the training loss, found by
power iteration on Hessian-vector products (double backward). Sharp minima
bound the stable learning rate by λ_max < 2/ε (Cohen et al. 2021; Keskar et al.
2017 on large-batch training and sharp minima).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


def noise_scale_estimates(g_small_sq: float, b_small: float, g_big_sq: float,
                          b_big: float) -> tuple[float, float]:
    """Unbiased estimates ``(|G|², tr Σ)`` from squared gradient norms at two batch sizes.

    Parameters
    ----------
    g_small_sq : |G_small|², the squared norm of a gradient averaged over ``b_small`` examples
        (or the mean of several such squared norms)
    b_small : the small batch size (a harmonic mean when ``g_small_sq`` averages unequal batches)
    g_big_sq : |G_big|², over ``b_big`` examples
    b_big : the big batch size, > b_small
    """
    if not b_big > b_small > 0:
        raise ValueError(f"need b_big > b_small > 0, got b_small={b_small}, b_big={b_big}")
    grad_sq = (b_big * g_big_sq - b_small * g_small_sq) / (b_big - b_small)
    trace_cov = (g_small_sq - g_big_sq) / (1.0 / b_small - 1.0 / b_big)
    return grad_sq, trace_cov


class NoiseScaleEMA:
    """Exponential moving averages of |G|² and tr(Σ) estimates, and their ratio B_simple.

    The averages are bias-corrected (divided by 1 − β^t, as in Adam) so that the
    first values are not pulled towards zero.
    """

    def __init__(self, beta: float = 0.95):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.beta, self.updates = beta, 0
        self._grad_sq = self._trace_cov = 0.0

    def update(self, g_small_sq: float, b_small: float, g_big_sq: float, b_big: float) -> None:
        grad_sq, trace_cov = noise_scale_estimates(g_small_sq, b_small, g_big_sq, b_big)
        if not (math.isfinite(grad_sq) and math.isfinite(trace_cov)):
            return
        self.updates += 1
        self._grad_sq = self.beta * self._grad_sq + (1 - self.beta) * grad_sq
        self._trace_cov = self.beta * self._trace_cov + (1 - self.beta) * trace_cov

    def _corrected(self, value: float) -> float | None:
        return value / (1 - self.beta**self.updates) if self.updates else None

    @property
    def grad_sq(self) -> float | None:
        """Averaged estimate of |G|² (None before the first update)."""
        return self._corrected(self._grad_sq)

    @property
    def trace_cov(self) -> float | None:
        """Averaged estimate of tr(Σ) (None before the first update)."""
        return self._corrected(self._trace_cov)

    @property
    def b_simple(self) -> float | None:
        """B_simple = tr(Σ) / |G|² of the averages (None before the first update or if |G|² is 0)."""
        if not self.updates or self._grad_sq == 0:
            return None
        return self._trace_cov / self._grad_sq


def _sq_norm(tensors) -> float:
    return float(sum(t.detach().double().pow(2).sum() for t in tensors))


def split_batch_backward(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor):
    """Backward of the batch mean loss in two halves; leaves the full-batch gradient in ``.grad``.

    Returns ``(loss, g_small_sq, b_small, g_big_sq, b_big)``: the batch loss (a float),
    the mean squared norm of the two half-batch gradients with the harmonic mean of
    their sizes (E of it is |G|² + tr Σ / b_small), and the squared norm of the whole
    batch's gradient over B examples. ``loss_fn`` must return the batch mean. With
    B < 2 the noise terms are NaN. Gradients already in ``.grad`` are discarded.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    b = len(x)
    if b < 2:
        loss = loss_fn(model(x), y)
        loss.backward()
        return loss.item(), math.nan, math.nan, math.nan, float(b)
    b1 = b // 2
    loss1 = loss_fn(model(x[:b1]), y[:b1])
    (loss1 * (b1 / b)).backward()
    first = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    loss2 = loss_fn(model(x[b1:]), y[b1:])
    (loss2 * ((b - b1) / b)).backward()
    total = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    g1_sq = _sq_norm(f * (b / b1) for f in first)
    g2_sq = _sq_norm((t - f) * (b / (b - b1)) for t, f in zip(total, first))
    b_small = 2.0 / (1.0 / b1 + 1.0 / (b - b1))
    loss = (loss1.item() * b1 + loss2.item() * (b - b1)) / b
    return loss, (g1_sq + g2_sq) / 2, b_small, _sq_norm(total), float(b)


def hessian_top_eigenvalue(closure, params: list[torch.Tensor], *, iters: int = 20, tol: float = 1e-4,
                           seed: int = 0) -> float:
    """Top eigenvalue of the Hessian of ``closure()`` (a scalar loss) at ``params``.

    Power iteration on Hessian-vector products Hv = ∇(∇L · v) (double backward,
    the gradient graph built once); returns the Rayleigh quotient vᵀHv of the
    final unit vector. Power iteration finds the eigenvalue of largest magnitude,
    so a strongly negative curvature shows up as a negative value. Stops after
    ``iters`` products or when the estimate changes by less than ``tol`` (relative).
    The start vector is drawn from its own generator (``seed``); global RNGs are untouched.
    """
    params = list(params)
    with torch.enable_grad():
        loss = closure()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        v = [torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for p in params]
        norm = math.sqrt(_sq_norm(v))
        v = [t / norm for t in v]
        estimate = math.nan
        for _ in range(iters):
            hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True, allow_unused=True)
            hv = [torch.zeros_like(p) if h is None else h.detach() for h, p in zip(hv, params)]
            previous, estimate = estimate, float(sum((h * u).sum() for h, u in zip(hv, v)))
            norm = math.sqrt(_sq_norm(hv))
            if norm == 0.0 or not math.isfinite(norm):
                return estimate
            v = [h / norm for h in hv]
            if abs(estimate - previous) <= tol * abs(estimate):
                break
    return estimate


def sharpness(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, *, iters: int = 20,
              seed: int = 0) -> float:
    """Top Hessian eigenvalue of the mean loss on (x, y), the model in eval mode meanwhile."""
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    try:
        return hessian_top_eigenvalue(lambda: loss_fn(model(x), y), params, iters=iters, seed=seed)
    finally:
        model.train(was_training)


def example_grad_norms(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Norms of the per-example gradients ∇ℓ(x_i, y_i), one per row of x.

    Uses ``torch.func.vmap(grad(...))`` and falls back to a loop over examples for
    models that vmap cannot batch."""
    from torch.func import functional_call, grad, vmap

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def loss_one(p, xi, yi):
        out = functional_call(model, ({**p, **buffers}), (xi.unsqueeze(0),))
        return loss_fn(out, yi.unsqueeze(0))

    was_training = model.training
    model.eval()
    try:
        try:
            grads = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
            sq = sum(grads[n].flatten(1).double().pow(2).sum(1) for n in names)
            return sq.sqrt().cpu().numpy()
        except RuntimeError:
            norms = []
            for xi, yi in zip(x, y):
                g = grad(loss_one)(params, xi, yi)
                norms.append(math.sqrt(_sq_norm(g.values())))
            return np.asarray(norms)
    finally:
        model.train(was_training)


@dataclass(frozen=True, kw_only=True)
class MetricsSpec:
    """What to measure in a trial; the trial config's ``metrics`` mapping (scaling.config.MetricsConfig)."""

    noise_scale: bool = False
    sharpness: bool = False
    grad_norms: bool = False
    noise_ema: float = 0.95
    sharpness_iters: int = 20
    sharpness_examples: int = 256
    grad_norm_examples: int = 32


class TrialMetrics:
    """The metrics of one trial: noise-scale averages updated every step, the rest at fixed points.

    Per-example gradient norms and sharpness use a fixed probe set, the first
    examples of the trial's training subset, so values along a curve compare.
    """

    def __init__(self, spec: dict, loss_fn, x_train: torch.Tensor, y_train: torch.Tensor, seed: int):
        self.spec = MetricsSpec(**spec)
        self.loss_fn, self.seed = loss_fn, seed
        self.x_train, self.y_train = x_train, y_train
        self.ema = NoiseScaleEMA(self.spec.noise_ema) if self.spec.noise_scale else None

    def backward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        """Backward of a training batch, measuring the noise scale; returns the batch loss."""
        loss, g_small_sq, b_small, g_big_sq, b_big = split_batch_backward(model, self.loss_fn, x, y)
        if math.isfinite(g_small_sq) and math.isfinite(g_big_sq):
            self.ema.update(g_small_sq, b_small, g_big_sq, b_big)
        return loss

    def curve_values(self, model: nn.Module, finite: bool = True) -> dict:
        """Columns added to a curve row at an eval point (None where not measured, or
        everywhere when the model is no longer ``finite``)."""
        out = {}
        if not finite:
            names = (("b_simple", "grad_sq_norm", "grad_cov_trace") if self.ema is not None else ()) + (
                ("example_grad_norm_mean", "example_grad_norm_std") if self.spec.grad_norms else ())
            return dict.fromkeys(names)
        if self.ema is not None:
            out.update(b_simple=self.ema.b_simple, grad_sq_norm=self.ema.grad_sq,
                       grad_cov_trace=self.ema.trace_cov)
        if self.spec.grad_norms:
            k = self.spec.grad_norm_examples
            norms = example_grad_norms(model, self.loss_fn, self.x_train[:k], self.y_train[:k])
            out.update(example_grad_norm_mean=float(norms.mean()), example_grad_norm_std=float(norms.std()))
        return out

    def sharpness(self, model: nn.Module) -> float:
        """Top Hessian eigenvalue of the loss on the probe set."""
        k = self.spec.sharpness_examples
        return sharpness(model, self.loss_fn, self.x_train[:k], self.y_train[:k],
                         iters=self.spec.sharpness_iters, seed=self.seed)
