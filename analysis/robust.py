"""Robust curve fitting: Huber loss on log residuals, solved two ways.

Every fit in this package minimises one objective,

.. math::

    F(\\theta) = \\frac{1}{\\delta \\sum_i w_i} \\sum_i w_i\\,
                 \\rho_\\delta\\big(\\log \\hat y_i(\\theta) - \\log y_i\\big),
    \\qquad
    \\rho_\\delta(r) = \\begin{cases} r^2/2 & |r| \\le \\delta \\\\
                     \\delta(|r| - \\delta/2) & |r| > \\delta \\end{cases}

the Huber loss on log residuals used by Hoffmann et al. (2022, "Training
Compute-Optimal Large Language Models", Approach 3) and Besiroglu et al.
(2024, "Chinchilla Scaling: A replication attempt"), with their
:math:`\\delta = 10^{-3}` as default. Dividing by :math:`\\delta` changes no
minimiser; it keeps the objective near the mean absolute log residual so that
optimiser tolerances mean the same thing for any :math:`\\delta`.

The full-data fit uses multi-start L-BFGS (:func:`lbfgs_multistart`). Bootstrap
resamples are fitted all at once by :func:`batched_lm`, a Levenberg-Marquardt
iteration on iteratively reweighted least squares (Huber weights
:math:`\\psi(r)/r`), vectorised across resamples and warm-started from the
full fit. Each accepted step lowers :math:`F`, so both solvers descend the
same objective. A model is any object with ``n_params`` and
``log_pred(theta, X) -> (f, J)``: ``theta`` has shape ``(R, p)``, ``X`` is a
tuple of shared arrays of length ``n``, ``f`` has shape ``(R, n)`` and the
Jacobian ``J = d f / d theta`` has shape ``(R, n, p)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize


@dataclass(frozen=True, kw_only=True)
class Solution:
    """Result of one or many minimisations of the Huber objective."""

    theta: np.ndarray
    """Parameters, shape ``(p,)`` for one fit or ``(R, p)`` for a batch."""
    value: np.ndarray | float
    """Objective :math:`F` at ``theta`` (see module docstring)."""
    converged: np.ndarray | bool
    """Whether the solver met its tolerance (per resample for a batch)."""


def huber_objective(model, theta, X, logy, w, delta: float) -> np.ndarray:
    """Objective :math:`F` for each row of ``theta`` (shape ``(R, p)``); ``inf`` where undefined."""
    f, _ = model.log_pred(theta, X, jac=False)
    r = np.abs(f - logy)
    rho = np.where(r <= delta, 0.5 * r * r / delta, r - 0.5 * delta)
    value = (w * rho).sum(-1) / w.sum(-1)
    return np.where(np.isfinite(value), value, np.inf)


def _value_and_grad(theta, model, X, logy, w, delta):
    f, J = model.log_pred(theta[None, :], X, jac=True)
    r = f[0] - logy
    a = np.abs(r)
    rho = np.where(a <= delta, 0.5 * r * r / delta, a - 0.5 * delta)
    psi = np.clip(r / delta, -1.0, 1.0)
    wsum = w.sum()
    value = float((w * rho).sum() / wsum)
    grad = (J[0] * (w * psi)[:, None]).sum(0) / wsum
    if not (np.isfinite(value) and np.all(np.isfinite(grad))):
        return 1e300, np.zeros_like(theta)
    return value, grad


def lbfgs_multistart(model, starts, X, logy, w=None, *, delta: float = 1e-3) -> Solution:
    """Minimise :math:`F` with L-BFGS from each start; polish the best with :func:`batched_lm`.

    Parameters
    ----------
    model
        Object with ``n_params`` and ``log_pred`` (see module docstring).
    starts : array_like, shape (S, p)
        Starting points; a few good ones beat many poor ones.
    X : tuple of ndarray
        Shared regressors, each of length ``n``.
    logy : ndarray, shape (n,)
        Log of the observed values.
    w : ndarray, shape (n,), optional
        Non-negative point weights (counts); ones by default.
    delta : float
        Huber threshold on log residuals.

    Returns
    -------
    Solution
        The lowest objective over starts. ``converged`` is true when L-BFGS or
        the polishing step reports convergence at that point.
    """
    w = np.ones_like(logy) if w is None else np.asarray(w, float)
    best = Solution(theta=np.asarray(starts[0], float), value=np.inf, converged=False)
    for start in np.atleast_2d(np.asarray(starts, float)):
        res = minimize(_value_and_grad, start, args=(model, X, logy, w, delta), jac=True,
                       method="L-BFGS-B",
                       options={"maxiter": 1000, "ftol": 1e-13, "gtol": 1e-9})
        if np.isfinite(res.fun) and res.fun < best.value:
            best = Solution(theta=res.x, value=float(res.fun), converged=bool(res.success))
    if not np.isfinite(best.value):
        return best
    polished = batched_lm(model, best.theta[None, :], X, logy, w, delta=delta)
    if polished.value[0] <= best.value:
        ok = bool(polished.converged[0]) or bool(best.converged)
        return Solution(theta=polished.theta[0], value=float(polished.value[0]), converged=ok)
    return best


def batched_lm(model, theta0, X, logy, w, *, delta: float = 1e-3, max_iter: int = 200,
               ftol: float = 1e-10, xtol: float = 1e-10) -> Solution:
    """Minimise :math:`F` for ``R`` problems at once by Levenberg-Marquardt on IRLS.

    Problem ``k`` has weights ``w[k]`` (bootstrap counts) and responses
    ``logy[k]`` (both broadcast to ``(R, n)``). Each iteration solves

    .. math:: (J^T \\Omega J + \\lambda\\,\\mathrm{diag}(J^T \\Omega J))\\,\\Delta
              = -J^T w \\psi(r)/\\delta,
              \\qquad \\Omega = \\mathrm{diag}\\big(w\\,\\psi(r)/(\\delta r)\\big)

    where :math:`\\Omega` are the Huber IRLS weights, so :math:`J^T\\Omega J`
    is the Gauss-Newton matrix of a quadratic majoriser of :math:`F`. A step
    is kept only if it lowers :math:`F`; then :math:`\\lambda` shrinks,
    otherwise it grows. Problems leave the active set as they converge.

    Returns
    -------
    Solution
        ``theta`` of shape ``(R, p)``; ``converged[k]`` is false where the
        iteration limit was hit or no descent step could be found away from a
        stationary point.
    """
    theta = np.array(theta0, dtype=float, copy=True)
    R, p = theta.shape
    logy = np.broadcast_to(logy, (R, np.shape(logy)[-1]))
    w = np.broadcast_to(w, logy.shape)
    value = huber_objective(model, theta, X, logy, w, delta)
    lam = np.full(R, 1e-3)
    converged = np.zeros(R, bool)
    act = np.flatnonzero(np.isfinite(value))
    eye = np.eye(p)
    for _ in range(max_iter):
        if act.size == 0:
            break
        th, ly, ww, lm = theta[act], logy[act], w[act], lam[act]
        f, J = model.log_pred(th, X, jac=True)
        r = f - ly
        a = np.abs(r)
        wsum = ww.sum(1)
        psi = np.clip(r / delta, -1.0, 1.0)
        omega = ww * np.where(a <= delta, 1.0, delta / np.maximum(a, delta)) / delta
        grad = np.einsum("knp,kn->kp", J, ww * psi) / wsum[:, None]
        H = np.einsum("knp,knq->kpq", J * omega[..., None], J) / wsum[:, None, None]
        d = np.diagonal(H, axis1=1, axis2=2)
        damp = lm[:, None] * d + 1e-12 * (d.max(1, keepdims=True) + 1e-300)
        step = -np.linalg.solve(H + damp[:, :, None] * eye, grad[..., None])[..., 0]
        step = np.where(np.isfinite(step), step, 0.0)
        trial = th + step
        new = huber_objective(model, trial, X, ly, ww, delta)
        old = value[act]
        accept = new < old
        theta[act[accept]] = trial[accept]
        value[act[accept]] = new[accept]
        lam[act] = np.where(accept, np.maximum(lm / 3.0, 1e-12), lm * 4.0)
        small_f = (old - new) <= ftol * np.maximum(old, 1e-300)
        small_x = np.abs(step).max(1) <= xtol * (1.0 + np.abs(th).max(1))
        stalled = ~accept & (small_x | (lam[act] > 1e12))
        done = (accept & (small_f | small_x)) | stalled
        flat = np.abs(grad).max(1) < 1e-5
        converged[act] = (done & ~stalled) | (stalled & flat)
        act = act[~done]
    return Solution(theta=theta, value=value, converged=converged)


def resample_counts(n: int, n_boot: int, rng: np.random.Generator,
                    strata: np.ndarray | None = None) -> np.ndarray:
    """Bootstrap counts: row ``k`` says how often each of ``n`` points is drawn.

    Without ``strata`` this is the pairs bootstrap (Efron & Tibshirani 1993,
    ch. 9): ``n`` draws with replacement from all points. With ``strata``
    (one label per point) points are drawn within each stratum, keeping its
    size, e.g. seeds within one data size.
    """
    counts = np.zeros((n_boot, n))
    rows = np.arange(n_boot)[:, None]
    groups = [np.arange(n)] if strata is None else \
        [np.flatnonzero(strata == s) for s in np.unique(strata)]
    for members in groups:
        pick = members[rng.integers(0, members.size, (n_boot, members.size))]
        np.add.at(counts, (np.broadcast_to(rows, pick.shape), pick), 1.0)
    return counts


def percentile_interval(samples: np.ndarray, ok: np.ndarray, level: float):
    """Percentile bootstrap interval of each column over rows where ``ok``.

    Returns two arrays of length ``samples.shape[1]``; NaN when fewer than 10
    usable resamples exist.
    """
    good = samples[ok & np.all(np.isfinite(samples), axis=1)]
    if good.shape[0] < 10:
        nan = np.full(samples.shape[1], np.nan)
        return nan, nan.copy()
    tail = 50.0 * (1.0 - level)
    return np.percentile(good, tail, axis=0), np.percentile(good, 100.0 - tail, axis=0)
