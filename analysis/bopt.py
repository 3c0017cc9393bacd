r"""The optimal batch size of each group of a sweep, with seed-bootstrap intervals.

Smith & Le (2018, "A Bayesian Perspective on Generalization and Stochastic
Gradient Descent") and Smith et al. (2018, "Don't Decay the Learning Rate,
Increase the Batch Size") predict that the best batch size scales with the
SGD noise scale, :math:`B_{opt} \propto \varepsilon N/(1-m)`. Here trials are
grouped by every axis except ``batch_size`` and ``seed`` (lr, n_train,
momentum and any other that varies). In each group :math:`B_{opt}` is the
batch size with the best mean metric over seeds, refined by the vertex of
the parabola in :math:`\log B` through the best point and its two
neighbours. Its interval redraws the seeds of every batch size with
replacement (variance-rescaled, :func:`analysis.frontier.resampled_means`).
Groups whose best batch size is at the edge of the grid, or
that have fewer than three batch sizes, are flagged and kept out of the rule
check (:mod:`analysis.rule`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from analysis import tables
from analysis.errors import AnalysisError
from analysis.fitresult import num
from analysis.frontier import resampled_means
from analysis.rule import RuleCheck, check_rule

MIN_BATCH_SIZES = 3


@dataclass(frozen=True, kw_only=True)
class BoptGroup:
    """One group's batch-size scan and its optimum."""

    key: dict
    """Values of the grouping axes."""
    label: str
    """``"lr=0.1, n_train=600, momentum=0.9"``."""
    lr: float
    n_train: float
    momentum: float
    rule_x: float
    r""":math:`\varepsilon N/(1-m)` for this group."""
    batch_sizes: tuple[float, ...]
    """Batch sizes with at least one usable trial, ascending."""
    means: tuple[float, ...]
    """Mean metric over seeds at each batch size."""
    n_seeds: tuple[int, ...]
    """Usable trials at each batch size."""
    b_best: float
    """Grid batch size with the best mean (NaN when there is none)."""
    b_opt: float
    """Refined optimum (parabola vertex in log B); NaN for a flagged group."""
    ci_low: float
    """Seed-bootstrap interval of ``b_opt``; NaN with a single seed per batch size."""
    ci_high: float
    status: str
    """``ok``, ``edge`` (best at the grid edge) or ``too_few`` (fewer than 3 batch sizes)."""
    reason: str
    """Why the group is flagged; empty when ``status == "ok"``."""
    outcomes: dict
    """Trials of the group by outcome (ok, diverged, failed, nonfinite)."""

    @property
    def g_opt(self) -> float:
        r"""Optimal noise scale :math:`\varepsilon N/(B_{opt}(1-m))`."""
        return self.rule_x / self.b_opt if self.b_opt > 0 else float("nan")

    def to_dict(self) -> dict:
        """Plain Python values."""
        return {"group": self.key, "label": self.label, "lr": self.lr, "n_train": self.n_train,
                "momentum": self.momentum, "rule_x": num(self.rule_x),
                "batch_sizes": list(self.batch_sizes), "means": [num(m) for m in self.means],
                "n_seeds": list(self.n_seeds), "b_best": num(self.b_best),
                "b_opt": num(self.b_opt), "ci_low": num(self.ci_low),
                "ci_high": num(self.ci_high), "g_opt": num(self.g_opt), "status": self.status,
                "reason": self.reason, "outcomes": self.outcomes}


@dataclass(frozen=True, kw_only=True)
class BoptResult:
    r"""Per-group optima and the check of :math:`B_{opt} \propto \varepsilon N/(1-m)`."""

    metric: str
    maximize: bool
    axes: tuple[str, ...]
    """Axes that define a group."""
    groups: tuple[BoptGroup, ...]
    outcomes: dict
    """All trials considered, by outcome."""
    rule: RuleCheck

    def to_dict(self) -> dict:
        """Plain Python values; the rule check's fields are at the top level."""
        return {"metric": self.metric, "maximize": self.maximize, "axes": list(self.axes),
                "outcomes": self.outcomes, **self.rule.to_dict(),
                "groups": [g.to_dict() for g in self.groups]}


def vertex_log_b(t: np.ndarray, scores: np.ndarray) -> np.ndarray:
    r"""Refined :math:`\log B_{opt}` per row of ``scores`` (larger is better).

    With the best grid point :math:`t_1` strictly inside the grid, the vertex
    of the parabola through :math:`(t_0, y_0), (t_1, y_1), (t_2, y_2)` is

    .. math:: t^* = t_1 - \frac{1}{2}\,
              \frac{(t_1-t_0)^2 (y_1-y_2) - (t_1-t_2)^2 (y_1-y_0)}
                   {(t_1-t_0)(y_1-y_2) - (t_1-t_2)(y_1-y_0)},

    clipped to :math:`[t_0, t_2]`. At the grid edge the grid point is returned.
    """
    rows = np.arange(scores.shape[0])
    i = np.argmax(scores, axis=1)
    j = np.clip(i, 1, t.size - 2)
    t0, t1, t2 = t[j - 1], t[j], t[j + 1]
    y0, y1, y2 = scores[rows, j - 1], scores[rows, j], scores[rows, j + 1]
    num_ = (t1 - t0) ** 2 * (y1 - y2) - (t1 - t2) ** 2 * (y1 - y0)
    den = (t1 - t0) * (y1 - y2) - (t1 - t2) * (y1 - y0)
    with np.errstate(all="ignore"):
        vertex = np.clip(t1 - 0.5 * num_ / den, t0, t2)
    inside = (i > 0) & (i < t.size - 1) & (den != 0) & np.isfinite(vertex)
    return np.where(inside, vertex, t[i])


def _scan(fr, idx, ok, y, maximize, n_boot, level, rng):
    """Batch sizes, means, seeds, refined optimum and its interval for one group."""
    rows = idx[ok[idx]]
    bs = np.unique(fr["batch_size"][rows])
    vals = [y[rows[fr["batch_size"][rows] == b]] for b in bs]
    means = np.array([v.mean() for v in vals])
    seeds = np.array([v.size for v in vals])
    if bs.size < MIN_BATCH_SIZES:
        return bs, means, seeds, np.nan, np.nan, np.nan
    sign = 1.0 if maximize else -1.0
    t = np.log(bs)
    b_opt = _snap(np.exp(vertex_log_b(t, sign * means[None, :])[0]), bs)
    lo = hi = np.nan
    if seeds.max() >= 2 and n_boot > 0:
        reps = np.column_stack([resampled_means(v, n_boot, rng) for v in vals])
        boot = vertex_log_b(t, sign * reps)
        tail = 50.0 * (1.0 - level)
        lo, hi = (_snap(v, bs) for v in np.exp(np.percentile(boot, [tail, 100.0 - tail])))
    return bs, means, seeds, b_opt, lo, hi


def _snap(b: float, grid: np.ndarray) -> float:
    """``b``, or the grid value it equals up to rounding."""
    close = np.isclose(grid, b, rtol=1e-9)
    return float(grid[close][0]) if close.any() else float(b)


def _flag(fr, idx, ok, bs, means, maximize) -> tuple[str, str]:
    if bs.size < MIN_BATCH_SIZES:
        return "too_few", (f"only {bs.size} batch size(s) with usable trials; "
                           f"need {MIN_BATCH_SIZES} to locate an optimum")
    best = int(np.argmax(means) if maximize else np.argmin(means))
    if 0 < best < bs.size - 1:
        return "ok", ""
    side = "smallest" if best == 0 else "largest"
    beyond = fr["batch_size"][idx[~ok[idx]]]
    lost = beyond[(beyond < bs[0]) if best == 0 else (beyond > bs[-1])]
    extra = f" (batch sizes {sorted({int(b) for b in lost})} did not train)" if lost.size else ""
    return "edge", f"best batch size {bs[best]:g} is the {side} usable one{extra}"


def find_bopt(trials: pa.Table, *, metric: str = "test_acc", where: dict | None = None,
              n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> BoptResult:
    """:math:`B_{opt}` per group and the rule check.

    Parameters
    ----------
    trials : pyarrow.Table
        Trials table with ``batch_size``, ``lr`` and ``n_train`` (``momentum``
        defaults to 0 when absent).
    metric : str
        Stored or derived metric; accuracy is maximised, anything else minimised.
    where : dict, optional
        ``{column: value}`` filters applied first.
    n_boot, level, seed
        Seed-bootstrap resamples, interval coverage and generator seed.

    Returns
    -------
    BoptResult
    """
    fr = tables.frame(trials)
    for col in ("batch_size", "lr", "n_train"):
        tables.numeric(fr, col, "column (bopt needs batch_size, lr and n_train)")
    mom = fr["momentum"] if "momentum" in fr else np.zeros(tables.n_rows(fr))
    y = tables.metric(fr, metric)
    maximize = tables.maximize(metric)
    mask = tables.where_mask(fr, where) if where else np.ones(tables.n_rows(fr), bool)
    ok, outcome = tables.usable(fr, y)
    if not (ok & mask).any():
        raise AnalysisError(f"no usable trials for {metric!r}: outcomes "
                            f"{tables.count_by(outcome[mask])}")
    axes = tuple(tables.varying(fr, mask, exclude=("batch_size", "seed")))
    rng = np.random.default_rng(seed)
    groups = []
    for key, idx in tables.groups(fr, mask, axes):
        bs, means, seeds, b_opt, lo, hi = _scan(fr, idx, ok, y, maximize, n_boot, level, rng)
        status, reason = _flag(fr, idx, ok, bs, means, maximize)
        if status != "ok":  # an edge value is a bound, not an estimate
            b_opt = lo = hi = float("nan")
        lr, n, m = fr["lr"][idx[0]], fr["n_train"][idx[0]], mom[idx[0]]
        best = bs[int(np.argmax(means) if maximize else np.argmin(means))] if bs.size else np.nan
        groups.append(BoptGroup(
            key={a: v for a, v in zip(axes, key)}, label=tables.label(axes, key),
            lr=float(lr), n_train=float(n), momentum=float(m),
            rule_x=float(lr * n / (1.0 - m)) if m < 1 else float("nan"),
            batch_sizes=tuple(bs.tolist()), means=tuple(means.tolist()),
            n_seeds=tuple(seeds.tolist()), b_best=float(best), b_opt=b_opt, ci_low=lo,
            ci_high=hi, status=status, reason=reason, outcomes=tables.count_by(outcome[idx])))
    return BoptResult(metric=metric, maximize=maximize, axes=axes, groups=tuple(groups),
                      outcomes=tables.count_by(outcome[mask]),
                      rule=check_rule(groups, level=level))


@dataclass(frozen=True, kw_only=True)
class Collapse:
    """Every usable trial's metric against its noise scale, for the collapse plot."""

    metric: str
    g: np.ndarray
    r"""Noise scale :math:`g = \varepsilon N/(B(1-m))` per trial."""
    y: np.ndarray
    """Metric per trial."""
    n_train: np.ndarray
    """Training-set size per trial (for colouring)."""
    outcomes: dict
    """All trials by outcome; only ``ok`` ones are plotted."""


def collapse(trials: pa.Table, *, metric: str = "test_acc") -> Collapse:
    r"""Metric against :math:`g = \varepsilon N/(B(1-m))` for every usable trial.

    If the noise scale governs training (Smith & Le 2018), curves for
    different (lr, N, B, m) fall onto one curve in this plot.
    """
    fr = tables.frame(trials)
    y = tables.metric(fr, metric)
    for col in ("batch_size", "lr", "n_train"):
        tables.numeric(fr, col, "column (the collapse needs batch_size, lr and n_train)")
    mom = fr["momentum"] if "momentum" in fr else np.zeros(tables.n_rows(fr))
    with np.errstate(all="ignore"):
        g = fr["lr"] * fr["n_train"] / (fr["batch_size"] * (1.0 - mom))
    ok, outcome = tables.usable(fr, y)
    ok &= np.isfinite(g) & (g > 0)
    return Collapse(metric=metric, g=g[ok], y=y[ok], n_train=fr["n_train"][ok],
                    outcomes=tables.count_by(outcome))
