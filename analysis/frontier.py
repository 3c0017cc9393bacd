r"""The tuning frontier: at each point, the best mean-over-seeds over the other axes.

Hestness et al. (2017) tune hyperparameters at every training-set size and fit
the learning curve to the best results. Here a *point* is one value of the
point columns (e.g. ``n_train``, or ``(N, D)`` for a joint fit); a *cell* is
one configuration of the remaining axes at that point. The frontier value is

.. math:: y^*(x) = \mathrm{best}_{\text{cell}}\;\frac{1}{|S|}\sum_{s \in S} y(x, \text{cell}, s)

over seeds :math:`S`. Bootstrap replicates redraw the seeds of the winning
cell at each point with replacement. The winner is held fixed: choosing it
again in every replicate would bootstrap a minimum over noisy means, which is
biased towards better values and inconsistent (Andrews 2000,
"Inconsistency of the bootstrap when a parameter is on the boundary").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis import tables


@dataclass(frozen=True, kw_only=True)
class Frontier:
    """Best-configuration points of a sweep, ready for a fit."""

    point_cols: tuple[str, ...]
    """Columns that define a point, e.g. ``("n_train",)``."""
    points: np.ndarray
    """Point coordinates, shape ``(P, len(point_cols))``."""
    y: np.ndarray
    """Mean metric over seeds of the winning configuration at each point."""
    n_seeds: np.ndarray
    """Trials averaged at each point."""
    chosen: tuple[dict, ...]
    """Winning configuration (values of ``over``) at each point."""
    over: tuple[str, ...]
    """Axes optimised over; empty for a fixed configuration."""
    n_cells: np.ndarray
    """Configurations compared at each point."""
    replicates: np.ndarray | None
    """Seed-bootstrap replicates of ``y`` (winning cells fixed), shape ``(R, P)``;
    None when some winning cell has a single trial."""


def frontier(fr: dict[str, np.ndarray], rows: np.ndarray, point_cols, y: np.ndarray, *,
             maximize: bool, n_boot: int, rng: np.random.Generator) -> Frontier:
    """Frontier over ``rows`` (indices of usable trials) of metric ``y``.

    Parameters
    ----------
    fr : dict of ndarray
        Trials frame (:func:`analysis.tables.frame`).
    rows : ndarray of int
        Usable trials (status ok, finite metric).
    point_cols : sequence of str
        Numeric columns that define a point.
    y : ndarray
        Metric for every row of ``fr``.
    maximize : bool
        Whether larger ``y`` is better.
    n_boot : int
        Seed-bootstrap replicates; built only when every winning cell has at
        least two trials (otherwise the caller resamples points).
    rng : numpy.random.Generator

    Returns
    -------
    Frontier
    """
    point_cols = tuple(point_cols)
    over = tuple(tables.varying(fr, rows, exclude=point_cols + ("seed",)))
    pts, ys, ns, chosen, ncell, cells_at = [], [], [], [], [], []
    for key, idx in tables.groups(fr, rows, point_cols):
        cells = tables.groups(fr, idx, over)
        means = np.array([y[c].mean() for _, c in cells])
        k = int(np.argmax(means) if maximize else np.argmin(means))
        pts.append([float(v) for v in key])
        ys.append(means[k])
        ns.append(cells[k][1].size)
        chosen.append({name: _plain(v) for name, v in zip(over, cells[k][0])})
        ncell.append(len(cells))
        cells_at.append(y[cells[k][1]])
    reps = None
    if ns and min(ns) >= 2 and n_boot > 0:
        reps = np.column_stack([resampled_means(v, n_boot, rng) for v in cells_at])
    return Frontier(point_cols=point_cols, points=np.array(pts, float).reshape(-1, len(point_cols)),
                    y=np.array(ys, float), n_seeds=np.array(ns, int), chosen=tuple(chosen),
                    over=over, n_cells=np.array(ncell, int), replicates=reps)


def resampled_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    r"""Bootstrap means of ``values`` (k seeds), rescaled to the right variance.

    The plain bootstrap mean has variance :math:`\frac{k-1}{k}\,s^2/k`, a
    third too small with three seeds; :math:`\bar y + \sqrt{k/(k-1)}\,
    (\bar y^* - \bar y)` restores :math:`s^2/k` (the rescaling bootstrap of
    Rao & Wu 1988, "Resampling inference with complex survey data").
    """
    k = values.size
    mean = values.mean()
    draws = values[rng.integers(0, k, (n_boot, k))].mean(1)
    return mean + np.sqrt(k / (k - 1.0)) * (draws - mean) if k > 1 else draws


def _plain(v):
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v
