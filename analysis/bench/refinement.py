r"""Bias of the (lr, B) optimum's refinement on simulated grids with asymmetric optima.

``bopt --over lr`` refines each cell's grid optimum by a quadratic bowl in
:math:`(\log \eta, \log B)` (:func:`analysis.rules.optima.refine`). A quadratic fitted to an
asymmetric valley puts its vertex on the shallow side, so the refined :math:`\log B_{opt}` is
biased; this bench measures how much, beside the raw grid argmin, on grids unlike the bowl:

- the loss of a cell is :math:`0.06\,g(u, k_u) + 0.04\,g(v, k_v) + c\,uv` with
  :math:`g(t, k) = (e^{kt} - 1 - kt)/(k^2/2)` (:math:`t^2` near 0, :math:`e^{|k|}` times steeper
  on one side a unit away), :math:`u, v` the log distances to the true optimum, and a cross
  term :math:`c` (lr and B interact); the true optimum is the stationary point
  :math:`u = v = 0`;
- the true optima are spread uniformly over a grid step (every offset from the grid equally
  likely), and the grid is either ``1.66x`` per batch step (as ``tests/lrgrid.py``) or
  powers of two;
- trial noise (sd ``noise`` in the loss) is added for the noisy rows.

The **bias** is the mean of :math:`\log \hat B - \log B_{opt}` over the cells, the **worst**
its largest absolute value; the **exponent** rows move :math:`B_{opt} \propto D^{0.5}` across
a fixed grid over 12 values of D and fit the exponent from the refined and the raw optima.

Run: ``python -m analysis.bench.refinement`` (a few seconds); ``tests/test_analysis_refinement.py``
runs the acceptance rows (the 2:1 asymmetric grid: bias <= 0.1 in ln B).
"""

from __future__ import annotations

import numpy as np

from analysis.rules.optima import refine

LR_STEP = np.log(1.8)
"""Log spacing of the learning rates (1.8x per step)."""


def g(t, k):
    r""":math:`(e^{kt} - 1 - kt)/(k^2/2)`: :math:`t^2` near 0, steeper for :math:`kt > 0`."""
    return (np.exp(k * t) - 1.0 - k * t) / (0.5 * k * k)


def loss_surface(u_grid, v_grid, u_opt, v_opt, *, k_u=0.9, k_v=-1.5, cross=0.012, curv_b=0.04):
    """``(G, L, K)`` loss of every cell's (lr, B) grid (module docstring)."""
    U = u_grid[None, :, None] - np.asarray(u_opt)[:, None, None]
    V = v_grid[None, None, :] - np.asarray(v_opt)[:, None, None]
    curv_b = np.broadcast_to(np.asarray(curv_b, float), np.shape(u_opt))[:, None, None]
    return 0.06 * g(U, k_u) + curv_b * g(V, k_v) + cross * U * V


def bias(*, b_step: float, k_v: float, cross: float = 0.012, noise: float = 0.0,
         cells: int = 400, seed: int = 0) -> dict:
    """Bias and worst error in ln B of the refined optimum and of the grid argmin (module
    docstring), over ``cells`` true optima spread uniformly over one grid step."""
    rng = np.random.default_rng(seed)
    L, K = 7, 7
    u_grid, v_grid = LR_STEP * np.arange(L), b_step * np.arange(K)
    u_opt = rng.uniform(2.5 * LR_STEP, 3.5 * LR_STEP, cells)
    v_opt = rng.uniform(2.5 * b_step, 3.5 * b_step, cells)
    loss = loss_surface(u_grid, v_grid, u_opt, v_opt, k_v=k_v, cross=cross)
    loss = loss + noise * rng.standard_normal(loss.shape)
    score = -loss[None]
    est = refine(score, score, np.broadcast_to(u_grid, (cells, L)),
                 np.broadcast_to(v_grid, (cells, K)))
    refined = est.value["b"][0] - v_opt
    argmin = v_grid[est.best_b[0]] - v_opt
    return {"refined_bias": float(np.nanmean(refined)),
            "refined_worst": float(np.nanmax(np.abs(refined))),
            "argmin_bias": float(np.mean(argmin)), "argmin_worst": float(np.max(np.abs(argmin))),
            "half_step": 0.5 * b_step, "excluded": int(np.isnan(refined).sum())}


def exponent(*, b_step: float, k_v: float, flatter: float = 0.0, noise: float = 2e-4,
             seed: int = 0) -> dict:
    """The B_opt exponent of D (true 0.5) from refined and raw optima over 12 values of D on a
    fixed grid; ``flatter`` > 0 makes the valley in B flatter as D grows (curvature ~ D^-flatter),
    so the asymmetry per grid step changes with D."""
    rng = np.random.default_rng(seed)
    d = np.geomspace(1.0, 1000.0, 12)
    L, K = 9, 12
    u_grid, v_grid = LR_STEP * np.arange(L), b_step * np.arange(K)
    v_opt = 1.2 * b_step + 0.5 * np.log(d)
    u_opt = 4.0 * LR_STEP - 0.1 * np.log(d)
    loss = loss_surface(u_grid, v_grid, u_opt, v_opt, k_v=k_v, curv_b=0.04 * d ** -flatter)
    loss = loss + noise * rng.standard_normal(loss.shape)
    score = -loss[None]
    est = refine(score, score, np.broadcast_to(u_grid, (d.size, L)),
                 np.broadcast_to(v_grid, (d.size, K)))
    X = np.column_stack([np.ones(d.size), np.log(d)])
    out = {}
    for name, v in (("refined", est.value["b"][0]), ("argmin", v_grid[est.best_b[0]])):
        ok = np.isfinite(v)
        out[name] = float(np.linalg.lstsq(X[ok], v[ok], rcond=None)[0][1])
    return out


GRIDS = (("1.66x", np.log(1.66)), ("2x", np.log(2.0)))
ASYMMETRY = (0.7, 1.5, 2.5)
"""``|k_v|``: a grid step on the steep side costs about e^(|k_v| * step) times the other side."""


def main() -> int:
    print("bias of log B_opt on simulated lr x B grids with asymmetric optima "
          "(400 cells each; analysis/bench/refinement.py)")
    print(f"{'grid':>6} {'|k_v|':>5} {'steep':>6} {'noise':>6}  {'refined bias':>12} "
          f"{'worst':>6}  {'argmin bias':>11} {'worst':>6}")
    for grid, step in GRIDS:
        for k in ASYMMETRY:
            for sign in (1, -1):
                for noise in (0.0, 1e-3):
                    r = bias(b_step=step, k_v=sign * k, noise=noise)
                    side = "large" if sign > 0 else "small"
                    print(f"{grid:>6} {k:>5.1f} {side:>6} {noise:>6g}  {r['refined_bias']:>+12.3f} "
                          f"{r['refined_worst']:>6.3f}  {r['argmin_bias']:>+11.3f} "
                          f"{r['argmin_worst']:>6.3f}")
    print("\nB_opt exponent of D (true 0.5), 12 values of D on a fixed grid")
    print(f"{'grid':>6} {'k_v':>5} {'flatter':>7}  {'refined':>7} {'argmin':>7}")
    for grid, step in GRIDS:
        for k in (-1.5, 1.5):
            for flatter in (0.0, 0.3):
                r = exponent(b_step=step, k_v=k, flatter=flatter)
                print(f"{grid:>6} {k:>+5.1f} {flatter:>7.1f}  {r['refined']:>7.3f} "
                      f"{r['argmin']:>7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
