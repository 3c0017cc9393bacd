r"""Robust curve fitting: Huber loss on log residuals, solved two ways.

Every fit in this package minimises one objective,

.. math::

    F(\theta) = \frac{1}{\delta \sum_i w_i} \sum_i w_i\,
                 \rho_\delta\big(\log \hat y_i(\theta) - \log y_i\big),
    \qquad
    \rho_\delta(r) = \begin{cases} r^2/2 & |r| \le \delta \\
                     \delta(|r| - \delta/2) & |r| > \delta \end{cases}

the Huber loss on log residuals used by Hoffmann et al. (2022, "Training
Compute-Optimal Large Language Models", Approach 3) and Besiroglu et al.
(2024, "Chinchilla Scaling: A replication attempt"). They use
:math:`\delta = 10^{-3}`, which makes :math:`F` nearly the mean absolute log
residual; :func:`fit_auto` by default picks :math:`\delta` from the residual
scale instead (never below :math:`10^{-3}`), and any fixed value can be
passed. Dividing by :math:`\delta` changes no minimiser; it keeps optimiser
tolerances meaningful for any :math:`\delta`.

The full-data fit (:func:`multistart_fit`) runs every start at once through
:func:`batched_lm` and finishes the best with scipy's L-BFGS. Bootstrap
resamples (:func:`bootstrap`) are refitted all at once by :func:`batched_lm`,
a damped Newton iteration vectorised across resamples and warm-started from
the full fit. Each accepted step of either solver lowers the same :math:`F`.
A model is any object with ``n_params``, ``natural(theta)`` and
``log_pred(theta, X, jac) -> (f, J)``: ``theta`` has shape ``(R, p)``, ``X``
is a tuple of shared arrays of length ``n``, ``f`` has shape ``(R, n)`` and
the transposed Jacobian ``J[k, j, i] = d f[k, i] / d theta[k, j]`` has shape
``(R, p, n)``, parameter-major so each row is contiguous. A model may also have
``box = (low, high)``, bounds on ``theta`` (``-inf``/``inf`` where free): both solvers
then keep every iterate inside it (projected steps; L-BFGS-B's bounds).
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
    with np.errstate(all="ignore"):
        f, _ = model.log_pred(theta, X, jac=False)
        r = np.abs(f - logy)
        u = np.minimum(r, delta)  # rho/delta = u (|r| - u/2) / delta
        value = (w * (u * (r - 0.5 * u))).sum(-1) / (delta * w.sum(-1))
    return np.where(np.isfinite(value), value, np.inf)


def _value_and_grad(theta, model, X, logy, w, delta):
    with np.errstate(all="ignore"):
        f, J = model.log_pred(theta[None, :], X, jac=True)
        r = f[0] - logy
        u = np.minimum(np.abs(r), delta)
        psi = np.clip(r / delta, -1.0, 1.0)
        wsum = w.sum()
        value = float((w * (u * (np.abs(r) - 0.5 * u))).sum() / (delta * wsum))
        grad = J[0] @ (w * psi) / wsum
    if not (np.isfinite(value) and np.all(np.isfinite(grad))):
        return 1e300, np.zeros_like(theta)
    return value, grad


def multistart_fit(model, starts, X, logy, w=None, *, delta: float = 1e-3,
                   polish: bool = True) -> Solution:
    r"""Minimise :math:`F` from several starts; finish the best with L-BFGS.

    All starts run at once through :func:`batched_lm` (one vectorised
    problem per start); L-BFGS (scipy) then continues from the best of them
    and is kept if it lowers :math:`F` further. Running L-BFGS from every
    start would find the same minima but is slow on this nearly piecewise-
    linear objective (hundreds of iterations at :math:`\delta = 10^{-3}`).

    Parameters
    ----------
    model
        Object with ``n_params`` and ``log_pred`` (see module docstring).
    starts : array_like, shape (S, p)
        Starting points.
    X : tuple of ndarray
        Shared regressors, each of length ``n``.
    logy : ndarray, shape (n,)
        Log of the observed values.
    w : ndarray, shape (n,), optional
        Non-negative point weights (counts); ones by default.
    delta : float
        Huber threshold on log residuals.
    polish : bool
        Continue from the best start with L-BFGS.

    Returns
    -------
    Solution
        The lowest objective found; ``converged`` tells whether the solver
        that produced it met its tolerance.
    """
    w = np.ones_like(logy) if w is None else np.asarray(w, float)
    many = batched_lm(model, np.atleast_2d(np.asarray(starts, float)), X, logy, w, delta=delta)
    k = int(np.argmin(many.value))
    best = Solution(theta=many.theta[k], value=float(many.value[k]),
                    converged=bool(many.converged[k]))
    if not (polish and np.isfinite(best.value)):
        return best
    box = getattr(model, "box", None)
    bounds = None if box is None else [(None if np.isinf(lo) else lo, None if np.isinf(hi) else hi)
                                       for lo, hi in zip(*box)]
    res = minimize(_value_and_grad, best.theta, args=(model, X, logy, w, delta), jac=True,
                   method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": 200, "ftol": 1e-12, "gtol": 1e-8})
    if np.isfinite(res.fun) and res.fun < best.value:
        again = batched_lm(model, res.x[None, :], X, logy, w, delta=delta)
        return Solution(theta=again.theta[0], value=float(again.value[0]),
                        converged=bool(again.converged[0]) or bool(res.success))
    return best


def batched_lm(model, theta0, X, logy, w, *, delta: float = 1e-3, max_iter: int = 200,
               ftol: float = 1e-10, xtol: float = 1e-10) -> Solution:
    r"""Minimise :math:`F` for ``R`` problems at once by damped Newton (Levenberg-Marquardt).

    Problem ``k`` has weights ``w[k]`` (bootstrap counts) and responses
    ``logy[k]`` (both broadcast to ``(R, n)``). Each iteration solves

    .. math:: \big(J^T \Omega J + \lambda\,\mathrm{diag}(J^T \Omega' J)\big)\,\Delta
              = -J^T w\,\psi(r)/\delta

    with :math:`\Omega = \mathrm{diag}(w\,[|r| \le \delta]/\delta)`, the
    Gauss-Newton curvature of the Huber loss, and
    :math:`\Omega' = \mathrm{diag}(w\,\psi(r)/(\delta r))`, the IRLS weights,
    which scale the damping where few residuals are in the quadratic zone.
    A step is kept only if it lowers :math:`F`; then :math:`\lambda`
    shrinks, otherwise it grows. Problems leave the batch as they converge.

    Returns
    -------
    Solution
        ``theta`` of shape ``(R, p)``; ``converged[k]`` is false where the
        iteration limit was hit or no descent step could be found away from a
        stationary point.
    """
    with np.errstate(all="ignore"):
        return _lm(model, np.array(theta0, dtype=float, copy=True), X, logy, w,
                   delta, max_iter, ftol, xtol)


def _lm(model, theta, X, logy, w, delta, max_iter, ftol, xtol) -> Solution:
    R, p = theta.shape
    box = getattr(model, "box", None)
    if box is not None:  # projected Levenberg-Marquardt: a bound that the gradient pushes against
        lo, hi = (np.asarray(v, float) for v in box)  # pins its parameter for that step
        theta = np.clip(theta, lo, hi)
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
        quad = a <= delta
        irls = ww * np.where(quad, 1.0, delta / np.maximum(a, delta)) / delta
        grad = np.matmul(J, (ww * psi)[..., None])[..., 0] / wsum[:, None]
        H = np.matmul(J * (ww * quad / delta)[:, None, :], J.transpose(0, 2, 1))
        H /= wsum[:, None, None]
        d = np.matmul(J * J, irls[..., None])[..., 0] / wsum[:, None]
        if box is not None:
            free = ~(((th <= lo) & (grad > 0)) | ((th >= hi) & (grad < 0)))
            grad = np.where(free, grad, 0.0)
            H = H * (free[:, :, None] & free[:, None, :])
        damp = lm[:, None] * d + 1e-12 * d.max(1, keepdims=True) + 1e-30
        step = -_solve(H + damp[:, :, None] * eye, grad)
        step = np.where(np.isfinite(step), step, 0.0)
        trial = th + step if box is None else np.clip(th + step, lo, hi)
        step = trial - th
        new = huber_objective(model, trial, X, ly, ww, delta)
        old = value[act]
        accept = new < old
        theta[act[accept]] = trial[accept]
        value[act[accept]] = new[accept]
        lam[act] = np.where(accept, np.maximum(lm / 3.0, 1e-12), lm * 4.0)
        small_f = (old - new) <= ftol * np.maximum(old, 1e-300)
        small_x = np.abs(step).max(1) <= xtol * (1.0 + np.abs(th).max(1))
        stalled = ~accept & (small_x | (lam[act] > 1e12))
        runaway = np.abs(theta[act]).max(1) > 1e8  # off towards an unidentified limit
        done = (accept & (small_f | small_x)) | stalled | runaway
        flat = np.abs(grad).max(1) < 1e-5
        converged[act] = ((done & ~stalled) | (stalled & flat)) & ~runaway
        act = act[~done]
    return Solution(theta=theta, value=value, converged=converged)


def _solve(M: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Batched ``M^{-1} g``; a pseudo-inverse where some matrix is singular."""
    try:
        return np.linalg.solve(M, g[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return np.matmul(np.linalg.pinv(M), g[..., None])[..., 0]


def auto_delta(residuals: np.ndarray, n_params: int) -> float:
    r"""Huber threshold from the scale of log residuals: :math:`\max(10^{-3}, 1.345\,\hat\sigma)`.

    :math:`\hat\sigma = 1.4826\,\mathrm{median}|r|\,\sqrt{n/(n-p)}` is the
    normalised median absolute residual of a least-squares fit; 1.345 is
    Huber's (1964) constant for 95 % efficiency under Gaussian noise. The
    floor is the :math:`\delta` of Hoffmann et al. (2022).
    """
    n = residuals.size
    sigma = 1.4826 * np.median(np.abs(residuals)) * np.sqrt(n / max(n - n_params, 1))
    return float(max(1e-3, 1.345 * sigma))


def fit_auto(model, starts, X, logy, delta: float | None) -> tuple[Solution, float]:
    r"""Full-data fit from ``starts``; with ``delta=None`` choose it by :func:`auto_delta`.

    The threshold comes from the residuals of a least-squares-like fit
    (:math:`\delta = 1`) and is then held fixed, for the full fit and every
    bootstrap resample alike.
    """
    starts = np.atleast_2d(np.asarray(starts, float))
    if delta is None:
        pre = multistart_fit(model, starts, X, logy, delta=1.0, polish=False)
        with np.errstate(all="ignore"):
            f, _ = model.log_pred(pre.theta[None, :], X, jac=False)
        delta = auto_delta(f[0] - logy, model.n_params)
        starts = np.vstack([pre.theta, starts])
    return multistart_fit(model, starts, X, logy, delta=delta), float(delta)


@dataclass(frozen=True, kw_only=True)
class Bootstrap:
    """Refits of bootstrap resamples."""

    theta: np.ndarray
    """Parameters of usable resamples (finite, well-posed), shape ``(R', p)``."""
    n_boot: int
    """Resamples drawn."""
    n_converged: int
    """Resamples whose fit met the tolerance."""
    resampling: str
    """``"points"`` or ``"replicates"``."""
    n_failed: int = 0
    """Resamples left out: a replicate with a non-positive or non-finite value, or a refit
    that did not end at finite parameters."""


def bootstrap(model, theta, X, logy, *, delta: float, replicates=None, n_boot: int = 1000,
              seed: int = 0, well_posed=None, starts=None) -> Bootstrap:
    """Refit resamples with :func:`batched_lm`, warm-started at ``theta``.

    With ``replicates`` (shape ``(R, n)``, e.g. means over resampled seeds)
    each row replaces ``y`` (a row with a non-positive or non-finite value cannot be
    fitted in log space and is counted in ``n_failed``); otherwise points are drawn
    with replacement (pairs bootstrap). ``well_posed(counts) -> bool mask`` drops resamples
    whose design cannot identify the parameters (e.g. too few distinct x).
    Resamples that hit the iteration limit are kept at the point reached:
    they usually run off along a direction the data do not pin down (an
    exponent near 0 or a step), which the interval should show, and they are
    counted in ``n_boot - n_converged``. Before that, a resample whose refit did
    not converge is refitted from each of ``starts`` (the full fit's starting
    points), and the lowest objective found is kept.
    """
    if replicates is not None:
        logy_b = np.log(np.asarray(replicates, float))
        weights = np.ones_like(logy_b)
        ok = np.all(np.isfinite(logy_b), axis=1)
        logy_b = np.where(np.isfinite(logy_b), logy_b, 0.0)
        kind = "replicates"
    else:
        weights = resample_counts(logy.size, n_boot, np.random.default_rng(seed))
        logy_b = logy
        ok = np.ones(n_boot, bool) if well_posed is None else well_posed(weights)
        kind = "points"
    start = np.broadcast_to(theta, (weights.shape[0], theta.size))
    sol = batched_lm(model, start, X, logy_b, weights, delta=delta, max_iter=100)
    if starts is not None:
        sol = _refit_from_starts(model, sol, starts, X, logy_b, weights, delta, ok)
    ok &= np.all(np.isfinite(sol.theta), axis=1) & np.isfinite(sol.value)
    return Bootstrap(theta=sol.theta[ok], n_boot=int(weights.shape[0]),
                     n_converged=int((ok & sol.converged).sum()), resampling=kind,
                     n_failed=int((~ok).sum()))


def _refit_from_starts(model, sol: Solution, starts, X, logy_b, weights, delta, ok) -> Solution:
    """``sol`` with each usable, unconverged resample refitted from every start; a refit is
    kept when it converged at an objective no higher than the first (1e-9 relative)."""
    again = np.flatnonzero(ok & ~sol.converged)
    if again.size == 0:
        return sol
    theta, value, converged = sol.theta.copy(), sol.value.copy(), sol.converged.copy()
    ly = np.broadcast_to(logy_b, weights.shape)[again]
    for s0 in np.atleast_2d(np.asarray(starts, float)):
        start = np.broadcast_to(s0, (again.size, s0.size))
        new = batched_lm(model, start, X, ly, weights[again], delta=delta, max_iter=200)
        base = np.where(converged[again], value[again], np.inf)
        better = new.converged & (new.value <= np.minimum(value[again] * (1 + 1e-9), base))
        rows = again[better]
        theta[rows], value[rows], converged[rows] = new.theta[better], new.value[better], True
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


def percentile_interval(samples: np.ndarray, level: float):
    """Percentile bootstrap interval of each column (Efron & Tibshirani 1993, ch. 13).

    Returns two arrays of length ``samples.shape[1]``; NaN when fewer than 10
    resamples are usable.
    """
    if samples.shape[0] < 10:
        nan = np.full(samples.shape[1], np.nan)
        return nan, nan.copy()
    tail = 50.0 * (1.0 - level)
    return np.percentile(samples, tail, axis=0), np.percentile(samples, 100.0 - tail, axis=0)
