r"""The interface every curve family shares, and the profiled least-squares engine of M1-M4.

:class:`Form` is the interface: ``fit`` (one fit), ``refit`` (one fit per
row of bootstrap weights, vectorised), ``bootstrap`` and ``predict``.
:class:`Profiled` fits a family that is linear in some parameters once the
others are fixed: the others are profiled on a grid (then a local descent
and zooms), the linear ones solved exactly by :func:`wls`, a sign-constrained
weighted least squares, for every grid point and every bootstrap weighting
at once. The families themselves live in :mod:`analysis.fit.forms.families` and
:mod:`analysis.fit.forms.bnsl`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from analysis.stats.robust import resample_counts

TOL = 1e-6
"""Relative improvement of the last zoom below which a profiled fit has converged (ftol) ..."""

XTOL = 1e-6
"""... or the zoom's step in the unit grid coordinates below which it has (xtol), the two
tests of :func:`scipy.optimize.least_squares`."""

MARGIN = 1e-3
"""Relative margin :math:`m/\\max y`: :math:`e_\\infty` stays below, :math:`e_0` above the data."""


@dataclass(frozen=True, kw_only=True)
class Fitted:
    """One fit of one form."""

    params: np.ndarray
    """Natural parameters, in the order of the form's ``names``."""
    objective: float
    """The minimised objective (sum of squares in the form's fitting space)."""
    converged: bool
    """Whether the optimiser met its tolerance (for M1-M4: the last, finest zoom improved the
    objective by less than :data:`TOL` of itself; for BNSL: Levenberg-Marquardt's own test)."""


class Form:
    """Interface shared by every family; subclasses set the class attributes."""

    name: str = ""
    """Short name, e.g. ``"M4"``."""
    formula: str = ""
    """The formula in plain text."""
    names: tuple[str, ...] = ()
    """Parameter names."""
    no_interval: str = ""
    """Why the family's parameters get no interval (empty: percentile intervals of a pairs
    bootstrap of the points, measured to cover)."""

    @property
    def n_params(self) -> int:
        return len(self.names)

    def fit(self, x, y, *, low: float = 0.0, high: float | None = None) -> Fitted:
        """Fit to points ``(x, y)``; ``low``/``high`` bound the metric (e.g. 0 and 1)."""
        params, value, ok = self.refit(x, y, np.ones((1, np.size(x))), low=low, high=high)
        return Fitted(params=params[0], objective=float(value[0]), converged=bool(ok[0]))

    def refit(self, x, y, weights, *, low=0.0, high=None, start=None):
        """Fit once per row of ``weights`` (shape ``(R, n)``, bootstrap counts).

        Returns ``(params (R, p), objective (R,), converged (R,))``.
        """
        raise NotImplementedError

    def predict(self, params, x) -> np.ndarray:
        """``y`` at ``x`` for each row of ``params``: shape ``(R, len(x))`` (or ``(len(x),)``)."""
        raise NotImplementedError

    def bootstrap(self, x, y, params, *, low=0.0, high=None, n_boot: int = 200,
                  seed: int = 0) -> np.ndarray:
        """Parameters refitted on ``n_boot`` pairs-bootstrap resamples (Efron & Tibshirani 1993).

        Resamples with fewer distinct ``x`` than parameters are dropped, as are
        refits that fail; returns shape ``(R', p)``.
        """
        x = np.asarray(x, float)
        counts = resample_counts(x.size, n_boot, np.random.default_rng(seed))
        inverse = np.unique(x, return_inverse=True)[1]
        onehot = inverse[:, None] == np.arange(inverse.max() + 1)
        counts = counts[((counts @ onehot) > 0).sum(1) >= self.n_params + 1]
        if counts.shape[0] == 0:
            return np.empty((0, self.n_params))
        boot, _, _ = self.refit(x, y, counts, low=low, high=high, start=params)
        return boot[np.all(np.isfinite(boot), axis=1)]


def wls(A, t, w, signs):
    r"""Sign-constrained weighted least squares :math:`\min_\beta \sum_i w_i (t_i - A_i\beta)^2`.

    ``A`` has shape ``(..., n, k)``, ``t`` ``(..., n)`` and ``w`` ``(..., n)``
    (broadcast). ``signs[j]`` is +1 (:math:`\beta_j \ge 0`), -1
    (:math:`\beta_j \le 0`) or 0 (free). Every subset of the constrained
    coefficients is clamped to 0 in turn; the feasible subset solution with
    the least sum of squares is the constrained optimum (a convex QP's
    solution is the unconstrained solution on its free set). Returns
    ``(beta (..., k), sse (...))``; ``sse`` is ``inf`` where no subset is
    feasible or the data are degenerate.
    """
    A, t, w = np.broadcast_arrays(A, t[..., None], w[..., None])
    t, w = t[..., 0], w[..., 0]
    Aw = A * w[..., None]
    M = np.einsum("...ni,...nj->...ij", Aw, A)
    v = np.einsum("...ni,...n->...i", Aw, t)
    tt = np.einsum("...n,...n->...", w * t, t)
    return _subset_solve(M, v, tt, signs)


def _subset_solve(M, v, tt, signs):
    k = M.shape[-1]
    cons = [j for j in range(k) if signs[j]]
    best = np.full(M.shape[:-2], np.inf)
    beta = np.full(M.shape[:-1], np.nan)
    for clamp in itertools.product((False, True), repeat=len(cons)):
        free = [j for j in range(k) if not (j in cons and clamp[cons.index(j)])]
        Mf = M[..., free, :][..., :, free]
        ridge = 1e-12 * np.trace(Mf, axis1=-2, axis2=-1)[..., None, None] + 1e-300
        with np.errstate(all="ignore"):
            try:
                bf = np.linalg.solve(Mf + ridge * np.eye(len(free)), v[..., free, None])[..., 0]
            except np.linalg.LinAlgError:
                bf = (np.linalg.pinv(Mf) @ v[..., free, None])[..., 0]
            sse = np.maximum(tt - (bf * v[..., free]).sum(-1), 0.0)
        b = np.zeros(M.shape[:-1])
        b[..., free] = bf
        ok = np.all(np.isfinite(b), axis=-1) & np.isfinite(sse)
        for j in cons:
            ok &= signs[j] * b[..., j] >= -1e-12
        better = ok & (sse < best)
        best = np.where(better, sse, best)
        beta = np.where(better[..., None], b, beta)
    return beta, best


def _wls_shared(A, t, W, signs):
    """:func:`wls` for one design shared by all weightings: ``A (G, n, k)``, ``W (R, n)``.

    Returns ``(beta (R, G, k), sse (R, G))``.

    Sums go through BLAS (``tensordot``), which is what makes a grid of
    hundreds of profiled values times hundreds of resamples cheap.
    """
    P = A[..., :, None] * A[..., None, :]
    M = np.tensordot(W, P, axes=(1, 1))
    v = np.tensordot(W, A * t[..., None], axes=(1, 1))
    tt = W @ (t * t).T
    return _subset_solve(M, v, tt, signs)


BIASED = ("its fit searches e_inf from just below the smallest y (the paper's local search), "
          "which biases the exponent by more than the bootstrap spread on noisy curves: 95% "
          "percentile intervals of M2's c held the truth in 85% of simulated curves at 1% noise "
          "and 30% at 3% (docs/curve-families.md); the power law (scaling fit without --form) "
          "gives an exponent interval")
"""Why M2-M4 and BNSL give no parameter intervals."""


class Profiled(Form):
    """A form linear in some parameters once ``q`` others are fixed (profiled on a grid).

    Subclasses give ``signs`` (constraints of the linear coefficients),
    ``coarse`` (grid points per profiled parameter), ``_context``,
    ``_design(u, ctx) -> (A, t)`` for grid coordinates ``u`` in [0, 1]^q and
    ``_natural(u, beta, ctx)``.
    """

    signs: tuple[int, ...] = ()
    coarse: int = 1
    q: int = 0
    zooms: int = 12
    """Zooms at most; they stop once every row's last zoom gained less than :data:`TOL`."""
    start: tuple[float, ...] | None = None
    """Grid coordinates of the paper's starting point; None searches the whole grid."""

    def _start(self, ctx):
        return self.start

    chunk: int = 20_000
    """Rows x points solved at once; bigger batches are split to bound memory."""

    def refit(self, x, y, weights, *, low=0.0, high=None, start=None):
        W = np.atleast_2d(np.asarray(weights, float))
        rows = max(1, self.chunk // W.shape[1])
        if W.shape[0] > rows:
            parts = [self.refit(x, y, W[i:i + rows], low=low, high=high)
                     for i in range(0, W.shape[0], rows)]
            return tuple(np.concatenate(p) for p in zip(*parts))
        ctx = self._context(np.asarray(x, float), np.asarray(y, float), low, high)
        R = W.shape[0]
        grid = np.stack(np.meshgrid(*[np.linspace(0, 1, self.coarse)] * self.q, indexing="ij"),
                        -1).reshape(-1, self.q) if self.q else np.zeros((1, 0))
        with np.errstate(all="ignore"):
            A, t = self._design(grid, ctx)
            beta, sse = _wls_shared(A, t, W, self.signs)
        first = self._start(ctx)
        k = np.argmin(sse, axis=1) if first is None else self._descend(sse, first)
        rows = np.arange(R)
        u, beta, sse = grid[k], beta[rows, k], sse[rows, k]
        settled = np.ones(R, bool)  # linear-only forms are solved exactly
        if self.q:
            u, beta, sse, settled = self._zoom(u, beta, sse, ctx, W)
        params = self._natural(u, beta, ctx)
        ok = np.isfinite(sse) & np.all(np.isfinite(params), axis=1) & settled
        return params, sse, ok

    def _descend(self, sse, start):
        """Grid index reached by steepest descent from ``start``: a local search, as the paper's."""
        c, q = self.coarse, self.q
        R = sse.shape[0]
        at = np.tile(np.rint(np.asarray(start) * (c - 1)).astype(int), (R, 1))
        steps = np.array([s for s in itertools.product((-1, 0, 1), repeat=q) if any(s)])

        def flat(ix):
            return np.ravel_multi_index(tuple(np.moveaxis(ix, -1, 0)), (c,) * q)

        rows = np.arange(R)
        for _ in range(c * q * 4):
            cand = np.clip(at[:, None, :] + steps[None], 0, c - 1)
            vals = np.take_along_axis(sse, flat(cand), axis=1)
            j = np.argmin(vals, axis=1)
            move = vals[rows, j] < sse[rows, flat(at)]
            if not move.any():
                break
            at[move] = cand[rows, j][move]
        return flat(at)

    def _zoom(self, u, beta, sse, ctx, W):
        """Local grids around each row's best point, each finer by 1/3, until the last zoom
        gains less than :data:`TOL` of the objective or its step falls below :data:`XTOL`.

        Returns ``(u, beta, sse, converged)``.
        """
        step = 1.0 / (self.coarse - 1)
        rows = np.arange(u.shape[0])
        offsets = np.stack(np.meshgrid(*[np.linspace(-1, 1, 5)] * self.q, indexing="ij"),
                           -1).reshape(-1, self.q)
        done = np.zeros(u.shape[0], bool)
        for _ in range(self.zooms):
            U = np.clip(u[:, None, :] + step * offsets[None], 0.0, 1.0)
            with np.errstate(all="ignore"):
                A, t = self._design(U, ctx)
                b, s = wls(A, t, W[:, None, :], self.signs)
            k = np.argmin(s, axis=1)
            better = (s[rows, k] < sse) & ~done  # a settled row stays put: batch-independent
            gain = np.where(better, sse - s[rows, k], 0.0)
            u = np.where(better[:, None], U[rows, k], u)
            beta = np.where(better[:, None], b[rows, k], beta)
            sse = np.where(better, s[rows, k], sse)
            done |= ((gain > 0) & (gain <= TOL * np.abs(sse))) | (step <= XTOL)
            step /= 3.0
            if np.all(done | ~np.isfinite(sse)):
                break
        return u, beta, sse, done

    @staticmethod
    def _base(x, y, low, high):
        """Shared context: centred log x and the log-spaced ranges of e_inf and e_0."""
        lx = np.log(x)
        margin = MARGIN * float(y.max())
        floor = max(0.0, low - margin)                     # e_inf >= max(0, low - m)
        d_hi = float(y.min()) - floor                      # e_inf = min y - d
        d_lo = min(margin, 0.5 * d_hi)
        top = (high + margin) if high is not None else 1e3 * float(y.max())
        d0_hi = max(top - float(y.max()), 1.0001 * margin)  # e_0 = max y + d0
        return {"lx": lx, "m": float(lx.mean()), "y": y, "ymin": float(y.min()), "ymax": float(y.max()),
                    "d_lo": d_lo, "d_hi": d_hi, "d0_lo": margin, "d0_hi": d0_hi, "bounded": high is not None,
                    "xmin": float(x.min()), "xmax": float(x.max())}

    @staticmethod
    def _e_inf(u, ctx):
        """u = 0: just below the smallest y; u = 1: the lower bound (log-spaced in between)."""
        return ctx["ymin"] - ctx["d_lo"] * (ctx["d_hi"] / ctx["d_lo"]) ** u

    def _context(self, x, y, low, high):
        return self._base(x, y, low, high)
