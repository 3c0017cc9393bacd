r"""An asymmetric refinement of the best batch size: a bowl shape shared by a sweep's groups.

The vertex of the parabola through the best grid point and its two neighbours
(:func:`analysis.rules.optima.vertex_log_b`) assumes a symmetric optimum. When the
metric rises faster towards small batches than towards large ones (SGD noise at
small B, divergence below), the vertex leans to the flat side: +0.10 to +0.19 in
:math:`\ln B` with no noise when the loss rises 3x faster below the optimum on a
doubling grid, +0.07 to +0.12 on a Linex bowl (issue 24).

Here the metric is first put on a log scale (:math:`-\ln(1-\text{acc})`, i.e.
log error, for a maximised metric in (0, 1); :math:`-\ln y` for a positive
minimised one; unchanged otherwise), and every group :math:`g` is modelled near
its best point as

.. math:: z_g(t) = c_g - a_g\, q_\theta(t - v_g),\qquad t = \ln B,

with one shape :math:`q_\theta` for the whole sweep, either a split parabola
(:math:`q = r\,d^2` below the optimum, :math:`d^2` above) or a Linex bowl
(:math:`q = (e^{-\lambda d} + \lambda d - 1)/\lambda^2`, symmetric at
:math:`\lambda = 0`). The shape is chosen once per sweep, on the full data, by
the least mean relative misfit (root of the squared error over the group's own
range, squared) of every group's four points :math:`t_{j-1} \dots t_{j+2}` (the
best point, both neighbours and the next larger batch size, where no divergence
lurks), over a grid of :math:`r \in [1/8, 8]` and :math:`\lambda \in [-4, 4]`;
each group has one degree of freedom left for it. Each group's shape-based
optimum is the exact fit of that shape through its three points around the best
one (profiled on a grid of 41 values between the neighbours, refined by a
parabola through the profile).

With 5 seeds and 24 groups the chosen shape is noisy from sweep to sweep (split
ratios 3-8 on a true 3; Linex 0.75-4 on a true 1.5), and the shape-based optimum
alone over-corrects: mean error -0.10 in ln B and 88.7 % per-group coverage on
the split bowl. The estimate is therefore halfway (``SHRINK``) between the
symmetric vertex and the shape-based optimum, a shrinkage towards the symmetric
fit whose weight was chosen on :mod:`analysis.testing.simulate`, where the two
err in opposite directions on both bowls. It is redone
in every bootstrap replicate with the shape held fixed, so the shape's own
uncertainty is not in the intervals.

Assumes: one bowl shape for every group of a sweep, in :math:`\ln B` on the log
metric scale (location and depth free per group); that shape is close to a split
parabola or a Linex bowl over the four points; fewer than 3 groups with four
usable points fall back to the symmetric parabola, as does a group whose three
points are not concave under the shape. Measured on
:mod:`analysis.testing.simulate` (``python -m analysis.bench.calibration``, 400
sweeps each, shifted noise preset, 2026-12-06): on the split bowl 3x steeper
below, mean error -0.020 in ln B and 94.1 % per-group coverage (the vertex alone:
+0.06; the shape alone, 60 sweeps: -0.10 and 88.7 %); on the Linex bowl -0.001
and 94.9 % (the vertex alone: +0.085 and 95.4 %). With no noise the shape alone is
exact on both (-0.006 and +0.002; the vertex +0.16 and +0.10).
"""

from __future__ import annotations

import numpy as np

from analysis.rules.optima import vertex_log_b

SPLIT = np.exp(np.linspace(np.log(1 / 8), np.log(8), 37))
"""Ratios r of the split parabola's curvature below the optimum to that above."""
LINEX = np.linspace(-4.0, 4.0, 33)
"""Linex asymmetries (positive: steeper towards small batches)."""
SHAPES = tuple([("split", float(r)) for r in SPLIT] + [("linex", float(v)) for v in LINEX])
SYMMETRIC = ("split", 1.0)
SHRINK = 0.5


def log_scale(values: np.ndarray, maximize: bool) -> np.ndarray:
    """Scores (larger is better) on the log scale the bowl is modelled on (module docstring)."""
    v = np.asarray(values, float)
    fin = v[np.isfinite(v)]
    with np.errstate(all="ignore"):
        if maximize and fin.size and np.all((fin > 0) & (fin < 1)):
            return -np.log1p(-v)
        if not maximize and fin.size and np.all(fin > 0):
            return -np.log(v)
    return v if maximize else -v


def _q(d, shape):
    kind, p = shape
    if kind == "split":
        return d * d * np.where(d < 0, p, 1.0)
    if abs(p) < 1e-9:
        return 0.5 * d * d
    x = np.minimum(-p * d, 50.0)
    return (np.exp(x) - x - 1.0) / p ** 2


def _points(t, s, j, offsets):
    """``(t, score, present)`` at ``j + offsets`` along the last axis (zeros where absent)."""
    K = s.shape[-1]
    jj = j[..., None] + np.asarray(offsets)
    inside = (jj >= 0) & (jj < K) & (j[..., None] >= 0)
    jc = np.clip(jj, 0, K - 1)
    tt = np.take_along_axis(np.broadcast_to(t, s.shape), jc, -1)
    yy = np.take_along_axis(s, jc, -1)
    w = inside & np.isfinite(tt) & np.isfinite(yy)
    return np.where(w, tt, 0.0), np.where(w, yy, 0.0), w.astype(float)


def _profile(tt, yy, w, shape, nv=41):
    """Squared error over v between the first and third point of ``yy = c - a q(t - v)``
    (least squares in c and a; inf where a <= 0); returns ``(v grid, sse)``.

    The sums run point by point over arrays of the grid's shape, in the order numpy sums a
    short last axis, so the result is that of the broadcast ``(..., nv, points)`` form to the
    bit, at a fraction of its temporaries (B_opt's bootstrap calls this for every replicate).
    """
    lo, hi = tt[..., 0], tt[..., 2]
    v = lo[..., None] + (hi - lo)[..., None] * np.linspace(0.0, 1.0, nv)
    n = tt.shape[-1]
    q = [-_q(tt[..., k, None] - v, shape) for k in range(n)]
    W = [w[..., k, None] for k in range(n)]
    y = [yy[..., k, None] for k in range(n)]
    Wq = [W[k] * q[k] for k in range(n)]  # (W q) q and (W q) y: the broadcast form's products
    s0 = _total([np.broadcast_to(W[k], v.shape) for k in range(n)])
    s1, s2 = _total(Wq), _total([Wq[k] * q[k] for k in range(n)])
    b0, b1 = _total([W[k] * y[k] for k in range(n)]), _total([Wq[k] * y[k] for k in range(n)])
    with np.errstate(all="ignore"):
        det = s0 * s2 - s1 * s1
        c = (s2 * b0 - s1 * b1) / det
        a = (s0 * b1 - s1 * b0) / det
        sse = _total([W[k] * (y[k] - c - a * q[k]) ** 2 for k in range(n)])
    return v, np.where((a > 0) & np.isfinite(sse), sse, np.inf)


def _total(terms):
    """``terms[0] + terms[1] + ...``, left to right (numpy's order for a short axis's sum)."""
    out = terms[0] + 0.0
    for term in terms[1:]:
        out += term
    return out


def _argmin(v, sse):
    """The grid minimum refined by a parabola through it and its neighbours; and its value."""
    nv = v.shape[-1]
    k = np.argmin(sse, -1)
    at = lambda kk: np.take_along_axis(sse, np.clip(kk, 0, nv - 1)[..., None], -1)[..., 0]
    s0, s1, s2 = at(k - 1), at(k), at(k + 1)
    with np.errstate(all="ignore"):
        den = s0 - 2.0 * s1 + s2
        off = np.where((k > 0) & (k < nv - 1) & np.isfinite(den) & (den > 0),
                       0.5 * (s0 - s2) / den, 0.0)
    step = v[..., 1] - v[..., 0]
    return np.take_along_axis(v, k[..., None], -1)[..., 0] + np.clip(off, -0.5, 0.5) * step, s1


def pooled_shape(t, scores, j) -> tuple[str, float]:
    """The bowl shape that fits every group's four points best, pooled (module docstring).

    ``t`` ``(G, K)`` ln batch sizes, ``scores`` ``(G, K)`` (larger is better, log scale),
    ``j`` ``(G,)`` index of each group's best point.
    """
    tt, yy, w = _points(t, scores, j, (-1, 0, 1, 2))
    four = w.sum(-1) == 4
    if four.sum() < 3:
        return SYMMETRIC
    tt, yy, w = tt[four], yy[four], w[four]
    scale = np.max(np.abs(yy - yy[..., 1:2]), -1) ** 2  # the data's own scale, shape-free
    ok = scale > 0
    if ok.sum() < 3:
        return SYMMETRIC
    totals = []
    for shape in SHAPES:
        _, sse = _profile(tt[ok], yy[ok], w[ok], shape, nv=161)
        m = np.min(sse, -1)
        totals.append(float(np.mean(np.sqrt(np.where(np.isfinite(m), m / scale[ok], 1.0)))))
    return SHAPES[int(np.argmin(totals))]


def refined_log_b(t, scores, j, shape) -> np.ndarray:
    """ln B_opt per row: the shape's exact fit through the best point and its neighbours,
    between them; :func:`analysis.rules.optima.vertex_log_b` where that is not possible."""
    scores = np.asarray(scores, float)
    tt, yy, w = _points(t, scores, j, (-1, 0, 1))
    v, sse = _argmin(*_profile(tt, yy, w, shape))
    ok = (w.sum(-1) == 3) & np.isfinite(sse)
    sym = vertex_log_b(t, scores, j)
    return np.where(ok, sym + SHRINK * (v - sym), sym)
