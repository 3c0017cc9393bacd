r"""Weighted regression with censored responses (Tobit), for many replicates at once.

Group :math:`g` has covariates :math:`x_g` and scale :math:`\sigma_g`. Its
response is observed (:math:`y_g`), known only to lie above a bound
:math:`c_g` (right-censored: the optimum is beyond the largest batch size
tried), or below one (left-censored). The log likelihood (Tobin 1958;
Amemiya 1984, "Tobit models: a survey") is

.. math::

    \ell(\beta) = -\tfrac12 \sum_{\mathrm{obs}} \Big(\frac{y_g - x_g^T\beta}{\sigma_g}\Big)^2
                  + \sum_{\mathrm{cens}} \log\Phi(z_g),\qquad
    z_g = s_g\,\frac{x_g^T\beta - c_g}{\sigma_g},

with :math:`s_g = +1` above the bound and :math:`-1` below. With known
:math:`\sigma_g` it is concave in :math:`\beta`, so Newton's method with
step halving converges from the least-squares start. Every replicate (a
bootstrap draw of the responses, bounds and censoring pattern; the design is
shared) takes its Newton steps in one batched linear solve: no per-replicate
optimiser.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr

OBSERVED, ABOVE, BELOW, EXCLUDED = 0, 1, -1, 2
"""Values of ``side``: observed, censored above/below the bound, left out."""

_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)


@dataclass(frozen=True, kw_only=True)
class TobitFit:
    """Coefficients of every replicate."""

    beta: np.ndarray
    """Shape ``(R, p)``; NaN rows where the fit failed."""
    converged: np.ndarray
    """Shape ``(R,)``: finite, bounded and met the tolerance."""
    loglik: np.ndarray
    """Shape ``(R,)``."""


def _mills(z: np.ndarray) -> np.ndarray:
    r""":math:`\phi(z)/\Phi(z)`, stable for very negative :math:`z`."""
    return np.exp(-0.5 * z * z - _LOG_SQRT_2PI - log_ndtr(z))


def _parts(X, beta, y, side, bound, inv_s):
    """Log likelihood, gradient and negative Hessian for each replicate."""
    eta = beta @ X.T                                            # (R, G)
    obs = side == OBSERVED
    cens = (side == ABOVE) | (side == BELOW)
    sign = np.where(side == BELOW, -1.0, 1.0)
    r = np.where(obs, (y - eta) * inv_s, 0.0)
    z = np.where(cens, sign * (eta - bound) * inv_s, 0.0)
    lam = np.where(cens, _mills(z), 0.0)
    ll = -0.5 * (r * r).sum(1) + np.where(cens, log_ndtr(z), 0.0).sum(1)
    score = (r * inv_s + lam * sign * inv_s)                     # d ll / d eta
    grad = score @ X
    w = (obs + cens * lam * (z + lam)) * inv_s ** 2
    neg_h = np.einsum("rg,gp,gq->rpq", w, X, X)
    return ll, grad, neg_h


def fit_tobit(X, y, side, bound, sigma, *, max_iter: int = 60, tol: float = 1e-9) -> TobitFit:
    r"""Maximise :math:`\ell(\beta)` for every replicate by batched Newton steps.

    Parameters
    ----------
    X : ndarray, shape (G, p)
        Design, shared by every replicate (an intercept column included).
    y, side, bound : ndarray, shape (R, G)
        Responses (read where ``side == OBSERVED``), censoring
        (:data:`OBSERVED`, :data:`ABOVE`, :data:`BELOW`, :data:`EXCLUDED`) and bounds.
    sigma : ndarray, shape (G,) or (R, G)
        Scale of each group's response.

    Returns
    -------
    TobitFit
        A replicate whose observed groups cannot identify :math:`\beta`, or whose
        iteration runs away, is marked not converged with NaN coefficients.
    """
    X = np.asarray(X, float)
    y = np.where(side == OBSERVED, y, 0.0)
    bound = np.where((side == ABOVE) | (side == BELOW), bound, 0.0)
    inv_s = 1.0 / np.broadcast_to(np.asarray(sigma, float), side.shape)
    R, p = side.shape[0], X.shape[1]
    ridge = 1e-10 * np.eye(p)
    with np.errstate(all="ignore"):
        w0 = (side == OBSERVED) * inv_s ** 2
        a = np.einsum("rg,gp,gq->rpq", w0, X, X) + ridge
        beta = _solve(a, (w0 * y) @ X)
        beta = np.where(np.isfinite(beta), beta, 0.0)
        ll, grad, neg_h = _parts(X, beta, y, side, bound, inv_s)
        done = np.zeros(R, bool)
        for _ in range(max_iter):
            act = np.flatnonzero(~done)
            if act.size == 0:
                break
            step = _solve(neg_h[act] + ridge, grad[act])
            step = np.where(np.isfinite(step), step, 0.0)
            scale = np.ones(act.size)
            accepted = np.zeros(act.size, bool)
            for _ in range(30):
                trial = beta[act] + scale[:, None] * step
                new = _parts(X, trial, y[act], side[act], bound[act], inv_s[act])
                good = ~accepted & (new[0] >= ll[act] - 1e-12 * np.abs(ll[act]))
                if good.any():
                    k = act[good]
                    beta[k], ll[k], grad[k], neg_h[k] = (trial[good], new[0][good],
                                                         new[1][good], new[2][good])
                    accepted |= good
                if accepted.all():
                    break
                scale = np.where(accepted, scale, scale / 2.0)
            small = np.abs(step).max(1) * scale <= tol * (1.0 + np.abs(beta[act]).max(1))
            done[act] = small | ~accepted
        ok = done & np.all(np.isfinite(beta), 1) & (np.abs(beta).max(1) < 1e3)
        ok &= _identified(X, side)
    return TobitFit(beta=np.where(ok[:, None], beta, np.nan), converged=ok, loglik=ll)


def information(X, beta, y, side, bound, sigma) -> tuple[np.ndarray, np.ndarray]:
    r"""Observed information :math:`-\nabla^2\ell` at ``beta`` (one replicate) and each
    group's weight in it, :math:`w_g` with :math:`-\nabla^2\ell = \sum_g w_g x_g x_g^T`:
    :math:`1/\sigma_g^2` if observed, :math:`\lambda(z)(z+\lambda(z))/\sigma_g^2` if censored."""
    X = np.asarray(X, float)
    side = np.asarray(side)[None]
    inv_s = 1.0 / np.broadcast_to(np.asarray(sigma, float), side.shape)
    y = np.where(side == OBSERVED, np.asarray(y)[None], 0.0)
    bound = np.where((side == ABOVE) | (side == BELOW), np.asarray(bound)[None], 0.0)
    with np.errstate(all="ignore"):
        _, _, neg_h = _parts(X, np.asarray(beta, float)[None], y, side, bound, inv_s)
        eta = np.asarray(beta, float) @ X.T
        cens = ((side == ABOVE) | (side == BELOW))[0]
        sign = np.where(side[0] == BELOW, -1.0, 1.0)
        z = np.where(cens, sign * (eta - bound[0]) * inv_s[0], 0.0)
        lam = np.where(cens, _mills(z), 0.0)
        w = ((side[0] == OBSERVED) + cens * lam * (z + lam)) * inv_s[0] ** 2
    return neg_h[0], w


def _identified(X, side) -> np.ndarray:
    """Replicates whose observed groups alone give a design of full column rank."""
    obs = (side == OBSERVED).astype(float)
    gram = np.einsum("rg,gp,gq->rpq", obs, X, X)
    eig = np.linalg.eigvalsh(gram)
    return eig[:, 0] > 1e-9 * np.maximum(eig[:, -1], 1e-300)


def _solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(a, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return np.matmul(np.linalg.pinv(a), b[..., None])[..., 0]
