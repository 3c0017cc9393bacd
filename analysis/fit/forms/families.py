r"""The curve families M1-M4 of Alabdulmohsin et al. (2022), each a :class:`Profiled` form.

``x`` is a scale (data seen, model size) and ``y`` a loss or error rate that
falls with ``x``. The families, each written from its paper:

- M1 :math:`y = b\,x^{c}`;
- M2 :math:`y = b\,x^{c} + e_\infty` (Hestness et al. 2017);
- M3 :math:`y = e_\infty + b\,(x^{-1} + g)^{-c}` (Bansal et al. 2022);
- M4 :math:`(y - e_\infty)/(e_0 - y)^{\alpha} = b\,x^{c}`;
- BNSL :math:`y = a + b\,x^{-c_0}(1 + (x/d_1)^{1/f_1})^{-c_1 f_1}`
  (Caballero et al. 2023), in :mod:`analysis.fit.forms.bnsl`.

M1-M4 are as in Alabdulmohsin, Neyshabur and Zhai (2022, "Revisiting Neural
Scaling Laws in Language and Vision", arXiv 2209.06640), with :math:`c \le 0`
for a falling curve; BNSL is the broken neural scaling law with one break of
Caballero, Gupta, Rish and Krueger (2023, arXiv 2210.14891), where
:math:`c_0, c_1 > 0` fall.

**Fitting M1-M4 the paper's way.** Each form is linear after a transform,

.. math:: \log(y - e_\infty) - \alpha \log(e_0 - y) = \log b + c \log x
          \qquad (\text{M3: } \log(y - e_\infty) = \log b - c \log(x^{-1} + g)),

and the paper minimises the squared error of that equation (its reference
code alternates linear least squares with gradient and Newton steps on
:math:`e_\infty, e_0`, started at :math:`e_\infty = \min y - m` and
:math:`e_0` at the upper bound). Here the nonlinear parameters
(:math:`e_\infty`, :math:`e_0`, :math:`g`) are profiled: for fixed values
the linear ones solve a sign-constrained least squares exactly
(:math:`c \le 0`, :math:`\alpha \ge 0`) on a log-spaced grid, for many
bootstrap weightings at once; a steepest descent over the grid from the
paper's starting point, then local zooms, find the minimum the paper's
local search finds. The objective is nearly flat along a ridge of
(:math:`e_\infty, \alpha, e_0`); its global minimum often sits at
:math:`e_\infty = 0` and extrapolated worse on a development split of the
benchmark (fitted points only, see :mod:`analysis.bench.extrapolation`).
The paper's constraints hold:
:math:`\mathrm{low} \le e_\infty \le \min y - m` and
:math:`\max y + m \le e_0 \le \mathrm{high} + m`, with the margin
:math:`m = 10^{-3} \max y` (the reference code uses :math:`10^{-3}` for error
rates). Without ``high``, :math:`e_0` is free above the data, as the paper
does for log-perplexity.

**Fitting BNSL** minimises the squared log error (Caballero et al. fit the
MSLE) with :func:`analysis.stats.robust.batched_lm`, started from a grid over
(:math:`c_0, c_1, d_1, f_1`) with :math:`a, b \ge 0` solved by least squares.
"""

from __future__ import annotations

import numpy as np

from analysis.fit.forms.base import BIASED, Profiled


class M1(Profiled):
    r""":math:`y = b\,x^c`: least squares of :math:`\log y` on :math:`\log x`, :math:`c \le 0`."""

    name, formula, names = "M1", "y = b*x^c", ("b", "c")
    signs = (0, -1)

    def _design(self, u, ctx):
        lx = ctx["lx"] - ctx["m"]
        A = np.stack([np.ones_like(lx), lx], -1)
        shape = u.shape[:-1]
        t = np.log(ctx["y"])
        return np.broadcast_to(A, shape + A.shape), np.broadcast_to(t, shape + t.shape)

    def _natural(self, u, beta, ctx):
        return np.column_stack([np.exp(beta[:, 0] - beta[:, 1] * ctx["m"]), beta[:, 1]])

    def predict(self, params, x):
        p = np.atleast_2d(params)
        lx = np.log(np.asarray(x, float))
        out = np.exp(np.log(p[:, :1]) + p[:, 1:2] * lx)
        return out if np.ndim(params) == 2 else out[0]


class M2(Profiled):
    r""":math:`y = b\,x^c + e_\infty`: :math:`\log(y - e_\infty)` on :math:`\log x`."""

    no_interval = BIASED
    name, formula, names = "M2", "y = b*x^c + e_inf", ("b", "c", "e_inf")
    signs, coarse, q = (0, -1), 41, 1
    start = (0.0,)  # e_inf just below min y, as in the reference code

    def _design(self, u, ctx):
        e = self._e_inf(u[..., 0], ctx)
        lx = ctx["lx"] - ctx["m"]
        t = np.log(ctx["y"] - e[..., None])
        A = np.stack(np.broadcast_arrays(np.ones_like(t), lx), -1)
        return A, t

    def _natural(self, u, beta, ctx):
        return np.column_stack([np.exp(beta[:, 0] - beta[:, 1] * ctx["m"]), beta[:, 1],
                                self._e_inf(u[:, 0], ctx)])

    def predict(self, params, x):
        p = np.atleast_2d(params)
        lx = np.log(np.asarray(x, float))
        out = p[:, 2:3] + np.exp(np.log(p[:, :1]) + p[:, 1:2] * lx)
        return out if np.ndim(params) == 2 else out[0]


class M3(Profiled):
    r""":math:`y = e_\infty + b\,(x^{-1} + g)^{-c}`; :math:`e_\infty` and :math:`g \ge 0` profiled.

    :math:`g` runs log-spaced over :math:`[10^{-4}/x_{max},\ 10/x_{min}]`:
    below it the form is M2, above it the curve is flat over the data.
    """

    no_interval = BIASED
    name, formula, names = "M3", "y = e_inf + b*(1/x + g)^(-c)", ("b", "c", "g", "e_inf")
    signs, coarse, q = (0, 1), 21, 2
    start = (1.0, 0.0)  # e_inf at the lower bound, g near 0: the paper's M3 (e_inf = 0)

    def _context(self, x, y, low, high):
        ctx = self._base(x, y, low, high)
        ctx["g_lo"], ctx["g_hi"] = 1e-4 / ctx["xmax"], 10.0 / ctx["xmin"]
        return ctx

    def _g(self, u, ctx):
        return ctx["g_lo"] * (ctx["g_hi"] / ctx["g_lo"]) ** u

    def _design(self, u, ctx):
        e, g = self._e_inf(u[..., 0], ctx), self._g(u[..., 1], ctx)
        L = np.log(np.exp(-ctx["lx"]) + g[..., None])
        L = L - L.mean(-1, keepdims=True)
        t = np.log(ctx["y"] - e[..., None])
        return np.stack(np.broadcast_arrays(np.ones_like(t), L), -1), t

    def _natural(self, u, beta, ctx):
        e, g = self._e_inf(u[:, 0], ctx), self._g(u[:, 1], ctx)
        mean_l = np.log(np.exp(-ctx["lx"])[None, :] + g[:, None]).mean(1)
        return np.column_stack([np.exp(beta[:, 0] - beta[:, 1] * mean_l), -beta[:, 1], g, e])

    def predict(self, params, x):
        p = np.atleast_2d(params)
        inv = 1.0 / np.asarray(x, float)
        out = p[:, 3:4] + np.exp(np.log(p[:, :1]) - p[:, 1:2] * np.log(inv + p[:, 2:3]))
        return out if np.ndim(params) == 2 else out[0]


class M4(Profiled):
    r""":math:`(y - e_\infty)/(e_0 - y)^\alpha = b\,x^c` with :math:`\alpha \ge 0`, :math:`c \le 0`.

    :math:`(e_\infty, e_0)` are profiled on a log-spaced grid; for fixed
    values, :math:`\log b, c, \alpha` solve
    :math:`\log(y - e_\infty) = \log b + c\log x + \alpha\log(e_0 - y)` by
    constrained least squares, the paper's fitting space. A prediction solves
    the implicit equation for :math:`y \in (e_\infty, e_0)`, where its left
    side rises monotonically from 0 to :math:`\infty` (:func:`solve_m4`).
    """

    no_interval = BIASED
    name, formula, names = "M4", "(y - e_inf)/(e_0 - y)^alpha = b*x^c", \
        ("b", "c", "alpha", "e_inf", "e_0")
    signs, coarse, q = (0, -1, 1), 21, 2

    def _start(self, ctx):
        """The reference code's start: e_inf just below min y; e_0 at the upper bound.

        Without an upper bound e_0 starts just above max y, where the
        reference code's start (1) is projected for a loss above 1.
        """
        return (0.0, 1.0 if ctx["bounded"] else 0.0)

    def _e_0(self, u, ctx):
        return ctx["ymax"] + ctx["d0_lo"] * (ctx["d0_hi"] / ctx["d0_lo"]) ** u

    def _design(self, u, ctx):
        e, e0 = self._e_inf(u[..., 0], ctx), self._e_0(u[..., 1], ctx)
        lx = ctx["lx"] - ctx["m"]
        t = np.log(ctx["y"] - e[..., None])
        la = np.log(e0[..., None] - ctx["y"])
        return np.stack(np.broadcast_arrays(np.ones_like(t), lx, la), -1), t

    def _natural(self, u, beta, ctx):
        return np.column_stack([np.exp(beta[:, 0] - beta[:, 1] * ctx["m"]), beta[:, 1],
                                beta[:, 2], self._e_inf(u[:, 0], ctx), self._e_0(u[:, 1], ctx)])

    def predict(self, params, x):
        p = np.atleast_2d(params)
        log_f = np.log(p[:, :1]) + p[:, 1:2] * np.log(np.asarray(x, float))
        out = solve_m4(log_f, p[:, 2:3], p[:, 3:4], p[:, 4:5])
        return out if np.ndim(params) == 2 else out[0]


def solve_m4(log_f, alpha, e_inf, e_0, iters: int = 64):
    r"""Solve :math:`(y - e_\infty)/(e_0 - y)^\alpha = f` for :math:`y \in (e_\infty, e_0)`.

    With :math:`y = e_\infty + D\,\sigma(z)`, :math:`D = e_0 - e_\infty`, the
    equation reads :math:`z + (\alpha - 1)\,\mathrm{softplus}(z) = \log f -
    (1 - \alpha)\log D`, whose left side is strictly increasing in :math:`z`
    for :math:`\alpha > 0`; bisection on :math:`z \in [-800, 800]` finds
    the root to double precision. At :math:`\alpha = 0` the form is M2,
    :math:`y = e_\infty + f`, which may exceed :math:`e_0`. All arguments
    broadcast.
    """
    alpha = np.broadcast_to(alpha, np.broadcast_shapes(np.shape(log_f), np.shape(alpha)))
    D = e_0 - e_inf
    with np.errstate(all="ignore"):
        K = log_f - (1.0 - alpha) * np.log(D)
        lo = np.full(np.shape(K), -800.0)
        hi = np.full(np.shape(K), 800.0)
        for _ in range(iters):
            z = 0.5 * (lo + hi)
            h = z + (alpha - 1.0) * np.logaddexp(0.0, z)
            up = h < K
            lo = np.where(up, z, lo)
            hi = np.where(up, hi, z)
        z = 0.5 * (lo + hi)
        y = e_inf + D / (1.0 + np.exp(-z))
        return np.where(alpha > 0, y, e_inf + np.exp(log_f))  # alpha = 0: M2, y = e_inf + f
