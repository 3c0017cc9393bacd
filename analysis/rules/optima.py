r"""Grid optima in two dimensions, (log lr, log B), refined by a quadratic bowl, for many
bootstrap replicates at once (used by :mod:`analysis.rules.joint_optimum`).

Every cell's grid is padded to a common ``(L, K)`` shape; seed weights
``(R, S)`` give cell means ``(R, G, L, K)``; the argbest, the 3 x 3
neighbourhood, the least-squares bowl and the per-axis parabola fallback are
all array operations over ``R x G``. No per-replicate optimiser.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import analysis.stats.tobit as tobit
import analysis.tables.cells as cl


@dataclass(frozen=True, kw_only=True)
class Estimates:
    """Per (replicate, cell): log optimum, censoring side and log bound, for ``lr`` and ``b``."""

    value: dict
    """``{"lr": (R, G), "b": (R, G)}`` refined log optimum (NaN where excluded)."""
    side: dict
    """:data:`analysis.stats.tobit.OBSERVED`, ``ABOVE``, ``BELOW`` or ``EXCLUDED`` per axis."""
    bound: dict
    """Log bound (halfway to the edge's neighbour) for censored entries."""
    best_lr: np.ndarray
    """Grid index of the optimum's lr, ``(R, G)``; -1 when the cell has no eligible point."""
    best_b: np.ndarray


@dataclass(frozen=True)
class Grid:
    """Cells arranged as padded (lr, B) grids; :meth:`estimate` finds the optima."""

    cm: object
    keys: list
    """Cell keys (values of the cell axes)."""
    members: list
    """Cell-matrix rows (grid points) of each cell."""
    index: np.ndarray
    """``(G, L, K)`` cell-matrix row of each eligible grid point, -1 elsewhere."""
    lrs: np.ndarray
    """``(G, L)`` learning rates (NaN padding)."""
    bs: np.ndarray
    """``(G, K)`` batch sizes (NaN padding)."""
    maximize: bool
    validation: bool
    fr: dict = None
    """The trials frame the cell matrix came from."""

    def estimate(self, weights: np.ndarray) -> Estimates:
        """Optima under seed ``weights`` ``(R, S)`` (module docstring)."""
        cm, idx = self.cm, self.index
        sign = 1.0 if self.maximize else -1.0
        sel = cl.gather(cl.weighted_means(cm.sel if self.validation else cm.y, weights), idx)
        ref = cl.weighted_means(cm.y, weights)
        if self.validation:  # both measure the same networks: the mean halves the noise
            ref = 0.5 * (ref + cl.weighted_means(cm.sel, weights))
        return refine(sign * sel, sign * cl.gather(ref, idx), np.log(self.lrs), np.log(self.bs))


def refine(sel: np.ndarray, ref: np.ndarray, u: np.ndarray, v: np.ndarray) -> Estimates:
    """Grid optimum of ``sel`` and its refinement on ``ref`` (both ``(R, G, L, K)``, larger is
    better, NaN where absent) over log learning rates ``u`` ``(G, L)`` and log batch sizes ``v``
    ``(G, K)``: the bowl through the 3 x 3 neighbourhood, or per axis the parabola vertex."""
    R, G, L, K = ref.shape
    k = cl.best_index(sel.reshape(R, G, L * K), True)
    jl, jk = np.where(k >= 0, k // K, -1), np.where(k >= 0, k % K, -1)
    nb = _neighbours(ref, jl, jk)                                         # (R, G, 3, 3)
    uu = _take(np.broadcast_to(u[None], (R, G, L)), jl[..., None] + np.arange(-1, 2))
    vv = _take(np.broadcast_to(v[None], (R, G, K)), jk[..., None] + np.arange(-1, 2))
    out = {}
    for which, t, line in (("lr", uu, nb[..., :, 1]), ("b", vv, nb[..., 1, :])):
        out[which] = _axis(t, line, k >= 0)
    bowl, ok = _bowl(nb, uu, vv)
    both = (out["lr"][1] == tobit.OBSERVED) & (out["b"][1] == tobit.OBSERVED) & ok
    value = {"lr": np.where(both, bowl[..., 0], out["lr"][0]),
             "b": np.where(both, bowl[..., 1], out["b"][0])}
    return Estimates(value=value, side={w: out[w][1] for w in out},
                     bound={w: out[w][2] for w in out}, best_lr=jl, best_b=jk)


def grid_optima(cm, maximize: bool, validation: bool, fr: dict | None = None) -> Grid:
    """:class:`Grid` of a cell matrix whose last two key columns are (lr, batch)."""
    gkeys = list(dict.fromkeys(k[:-2] for k in cm.keys))
    gpos = {k: i for i, k in enumerate(gkeys)}
    members = [[] for _ in gkeys]
    for c, key in enumerate(cm.keys):
        members[gpos[key[:-2]]].append(c)
    lr_vals = [sorted({cm.keys[c][-2] for c in m}) for m in members]
    b_vals = [sorted({cm.keys[c][-1] for c in m}) for m in members]
    L = max(len(v) for v in lr_vals)
    K = max(len(v) for v in b_vals)
    index = np.full((len(gkeys), L, K), -1, np.int64)
    lrs = np.full((len(gkeys), L), np.nan)
    bs = np.full((len(gkeys), K), np.nan)
    for g, m in enumerate(members):
        lrs[g, :len(lr_vals[g])] = lr_vals[g]
        bs[g, :len(b_vals[g])] = b_vals[g]
        for c in m:
            if cm.eligible[c]:
                index[g, lr_vals[g].index(cm.keys[c][-2]), b_vals[g].index(cm.keys[c][-1])] = c
    return Grid(cm, gkeys, members, index, lrs, bs, maximize, validation, fr)


def _take(a, j):
    """``a[..., j]`` along the last axis with NaN where ``j`` is out of range."""
    n = a.shape[-1]
    inside = (j >= 0) & (j < n)
    return np.where(inside, np.take_along_axis(a, np.clip(j, 0, n - 1), -1), np.nan)


def _neighbours(ref, jl, jk):
    """Scores at the optimum and its 8 grid neighbours, ``(R, G, 3, 3)``; NaN where absent."""
    R, G, L, K = ref.shape
    out = np.full((R, G, 3, 3), np.nan)
    r, g = np.meshgrid(np.arange(R), np.arange(G), indexing="ij")
    for a in range(3):
        for b in range(3):
            il, ik = jl + a - 1, jk + b - 1
            inside = (il >= 0) & (il < L) & (ik >= 0) & (ik < K) & (jl >= 0)
            val = ref[r, g, np.clip(il, 0, L - 1), np.clip(ik, 0, K - 1)]
            out[..., a, b] = np.where(inside, val, np.nan)
    return out


def _axis(t, line, found):
    """One axis: ``(log optimum, side, log bound)`` from the three points through the optimum.

    Interior (both neighbours eligible): the parabola vertex; an edge: the grid value,
    censored beyond halfway to its one neighbour; no neighbour: excluded.
    """
    low, high = np.isfinite(line[..., 0]), np.isfinite(line[..., 2])
    centre = t[..., 1]
    tt = np.where(np.isfinite(line), t, np.nan)
    vertex = vertex_log_b(np.where(np.isfinite(tt), tt, centre[..., None]),
                          np.where(np.isfinite(line), line, -np.inf), np.ones_like(centre, int))
    side = np.where(low & high, tobit.OBSERVED,
                    np.where(high, tobit.BELOW, np.where(low, tobit.ABOVE, tobit.EXCLUDED)))
    side = np.where(found, side, tobit.EXCLUDED)
    bound = np.where(side == tobit.BELOW, 0.5 * (centre + t[..., 2]),
                     np.where(side == tobit.ABOVE, 0.5 * (centre + t[..., 0]), np.nan))
    value = np.where(side == tobit.OBSERVED, vertex, np.nan)
    return value, side, bound


def _bowl(nb, uu, vv):
    """Stationary point of the least-squares bowl through the 3 x 3 neighbourhood.

    Returns ``((R, G, 2) log (lr, B), ok)``; ``ok`` where the bowl is concave in the score
    (a maximum) and at least 6 points (5 without a corner: no cross term) were available.
    """
    U = np.broadcast_to(uu[..., :, None], nb.shape) - uu[..., 1, None, None]
    V = np.broadcast_to(vv[..., None, :], nb.shape) - vv[..., None, 1, None]
    w = np.isfinite(nb) & np.isfinite(U) & np.isfinite(V)
    U, V, Z = (np.where(w, a, 0.0).reshape(*a.shape[:-2], 9) for a in (U, V, nb))
    w = w.reshape(*w.shape[:-2], 9).astype(float)
    corner = w[..., [0, 2, 6, 8]].sum(-1) > 0
    cross = U * V * corner[..., None]
    A = np.stack([np.ones_like(U), U, V, U * U, cross, V * V], -1)         # (R, G, 9, 6)
    M = np.einsum("...n,...ni,...nj->...ij", w, A, A)
    M = M + 1e-9 * (np.trace(M, axis1=-2, axis2=-1)[..., None, None] + 1e-300) * np.eye(6)
    rhs = np.einsum("...n,...ni,...n->...i", w, A, Z)
    with np.errstate(all="ignore"):
        c = np.linalg.solve(M, rhs[..., None])[..., 0]
        h11, h12, h22 = 2 * c[..., 3], c[..., 4], 2 * c[..., 5]
        det = h11 * h22 - h12 ** 2
        du = (-h22 * c[..., 1] + h12 * c[..., 2]) / det
        dv = (h12 * c[..., 1] - h11 * c[..., 2]) / det
    ok = (h11 < 0) & (det > 0) & (w.sum(-1) >= np.where(corner, 6, 5)) & np.isfinite(du + dv)
    du = np.clip(du, uu[..., 0] - uu[..., 1], uu[..., 2] - uu[..., 1])
    dv = np.clip(dv, vv[..., 0] - vv[..., 1], vv[..., 2] - vv[..., 1])
    return np.stack([uu[..., 1] + du, vv[..., 1] + dv], -1), ok


def vertex_log_b(t: np.ndarray, scores: np.ndarray, j: np.ndarray | None = None) -> np.ndarray:
    r"""Refined :math:`\log B_{opt}` per row of ``scores`` (larger is better; NaN = absent).

    ``t`` has the shape of ``scores`` (or broadcasts to it); ``j`` is the index
    of the chosen grid point (default: the best score). With it strictly
    inside the grid, the vertex of the parabola through
    :math:`(t_{j-1}, y_{j-1}), (t_j, y_j), (t_{j+1}, y_{j+1})` is

    .. math:: t^* = t_j - \frac{1}{2}\,
              \frac{(t_j-t_{j-1})^2 (y_j-y_{j+1}) - (t_j-t_{j+1})^2 (y_j-y_{j-1})}
                   {(t_j-t_{j-1})(y_j-y_{j+1}) - (t_j-t_{j+1})(y_j-y_{j-1})},

    clipped to :math:`[t_{j-1}, t_{j+1}]`; at the edge, or where the parabola
    opens upwards, :math:`t_j` is returned.
    """
    scores = np.asarray(scores, float)
    t = np.broadcast_to(np.asarray(t, float), scores.shape)
    if j is None:
        j = cl.best_index(scores, True)
    n = np.isfinite(t).sum(-1)
    jj = np.clip(j, 1, np.maximum(n - 2, 1))[..., None]
    pick = lambda a, d: np.take_along_axis(a, np.clip(jj + d, 0, a.shape[-1] - 1), -1)[..., 0]
    t0, t1, t2 = pick(t, -1), pick(t, 0), pick(t, 1)
    y0, y1, y2 = pick(scores, -1), pick(scores, 0), pick(scores, 1)
    num_ = (t1 - t0) ** 2 * (y1 - y2) - (t1 - t2) ** 2 * (y1 - y0)
    den = (t1 - t0) * (y1 - y2) - (t1 - t2) * (y1 - y0)
    with np.errstate(all="ignore"):
        v = np.clip(t1 - 0.5 * num_ / den, t0, t2)
    inside = (j > 0) & (j < n - 1) & (den > 0) & np.isfinite(v)
    tj = np.take_along_axis(t, np.maximum(j, 0)[..., None], -1)[..., 0]
    return np.where(inside, v, tj)
