r"""Check :math:`B_{opt} \propto \varepsilon N/(1-m)` across the groups of a sweep.

Regress :math:`\log B_{opt} = c + s \log(\varepsilon N/(1-m))` by ordinary
least squares over the usable groups (not flagged by :mod:`analysis.bopt`).
The rule predicts :math:`s = 1` (Smith & Le 2018; Smith et al. 2018). The
interval of :math:`s` is the t interval with :math:`n-2` degrees of freedom,
so group-to-group scatter -- seed noise in :math:`B_{opt}` included -- sets
its width. Separately,

.. math:: \log B_{opt} = c + a \log\varepsilon + b \log N + d \log\frac{1}{1-m}

estimates one exponent per axis that varies, and the implied optimal noise
scale :math:`g_{opt} = \varepsilon N / (B_{opt}(1-m))` is the geometric mean
over groups with a t interval on its log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from analysis.fitresult import num

_AXES = (("lr", "log lr"), ("n_train", "log n_train"), ("momentum", "log 1/(1-momentum)"))


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """A value with its confidence interval."""

    name: str
    value: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict:
        return {"name": self.name, "value": num(self.value), "ci_low": num(self.ci_low),
                "ci_high": num(self.ci_high)}


@dataclass(frozen=True, kw_only=True)
class RuleCheck:
    r"""Outcome of the regression of :math:`\log B_{opt}` on :math:`\log(\varepsilon N/(1-m))`."""

    level: float
    n_groups: int
    """Groups in the sweep."""
    n_used: int
    """Groups used in the regression."""
    n_edge: int
    """Groups left out because the best batch size is at the grid edge."""
    n_too_few: int
    """Groups left out because they have fewer than 3 batch sizes."""
    slope: Estimate | None
    """Slope :math:`s`; None when it cannot be estimated."""
    intercept: float
    """Intercept :math:`c`."""
    r2: float
    """:math:`R^2` of the regression."""
    g_opt: Estimate | None
    """Geometric-mean optimal noise scale with its interval."""
    exponents: tuple[Estimate, ...]
    """Separate exponents of lr, n_train and 1/(1-momentum), for axes that vary."""
    not_estimated: dict = field(default_factory=dict)
    """Axis -> why its exponent could not be estimated."""
    consistent: bool | None
    """True/False when the slope interval does / does not contain 1; None when untestable."""
    verdict: str
    """One sentence saying what the data show, or why they cannot show it."""

    def to_dict(self) -> dict:
        """Plain Python values."""
        return {"verdict": self.verdict, "consistent": self.consistent, "level": self.level,
                "slope": None if self.slope is None else num(self.slope.value),
                "slope_ci": None if self.slope is None else
                [num(self.slope.ci_low), num(self.slope.ci_high)],
                "intercept": num(self.intercept), "r2": num(self.r2),
                "g_opt": None if self.g_opt is None else num(self.g_opt.value),
                "g_opt_ci": None if self.g_opt is None else
                [num(self.g_opt.ci_low), num(self.g_opt.ci_high)],
                "exponents": [e.to_dict() for e in self.exponents],
                "not_estimated": dict(self.not_estimated), "n_groups": self.n_groups,
                "n_used": self.n_used, "n_edge": self.n_edge, "n_too_few": self.n_too_few}


def _ols(X: np.ndarray, y: np.ndarray, level: float):
    """Coefficients, their t intervals and :math:`R^2`; intervals NaN without residual dof."""
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    res = y - X @ coef
    dof = y.size - X.shape[1]
    tot = ((y - y.mean()) ** 2).sum()
    r2 = 1.0 - (res ** 2).sum() / tot if tot > 0 else float("nan")
    if dof < 1:
        nan = np.full(coef.size, np.nan)
        return coef, nan, nan.copy(), r2
    cov = (res ** 2).sum() / dof * np.linalg.pinv(X.T @ X)
    half = stats.t.ppf(0.5 + level / 2.0, dof) * np.sqrt(np.maximum(np.diag(cov), 0.0))
    return coef, coef - half, coef + half, r2


def _exponents(used, level) -> tuple[tuple[Estimate, ...], dict]:
    """Per-axis exponents for the axes that vary; reasons for those that cannot be had."""
    logb = np.log([g.b_opt for g in used])
    cols, names, missing = [np.ones(len(used))], [], {}
    for attr, name in _AXES:
        v = np.array([getattr(g, attr) for g in used], float)
        col = -np.log1p(-v) if attr == "momentum" else np.log(v)
        if np.unique(np.round(col, 12)).size < 2:
            missing[attr] = "does not vary across the usable groups"
            continue
        trial = np.column_stack(cols + [col])
        if np.linalg.matrix_rank(trial) < trial.shape[1]:
            missing[attr] = f"moves together with {', '.join(names) or 'the intercept'}"
            continue
        cols.append(col)
        names.append(attr)
    X = np.column_stack(cols)
    if names and logb.size <= X.shape[1]:
        for attr in names:
            missing[attr] = (f"{logb.size} usable groups are too few for "
                             f"{X.shape[1]} coefficients plus an error estimate")
        return (), missing
    coef, lo, hi, _ = _ols(X, logb, level)
    label = {"momentum": "1/(1-momentum)"}
    return tuple(Estimate(name=label.get(n, n), value=float(coef[i + 1]), ci_low=float(lo[i + 1]),
                          ci_high=float(hi[i + 1])) for i, n in enumerate(names)), missing


def check_rule(groups, *, level: float = 0.95) -> RuleCheck:
    r"""Regress :math:`\log B_{opt}` on :math:`\log(\varepsilon N/(1-m))` and give a verdict.

    Parameters
    ----------
    groups : sequence of analysis.bopt.BoptGroup
        All groups; flagged ones are counted and left out.
    level : float
        Confidence level of every interval.

    Returns
    -------
    RuleCheck
        Never raises for degenerate input: the verdict says why there is no test.
    """
    n_edge = sum(g.status == "edge" for g in groups)
    n_few = sum(g.status == "too_few" for g in groups)
    used = [g for g in groups if g.status == "ok" and g.b_opt > 0 and np.isfinite(g.rule_x)
            and g.rule_x > 0]
    base = dict(level=level, n_groups=len(groups), n_used=len(used), n_edge=n_edge,
                n_too_few=n_few)
    x = np.log([g.rule_x for g in used]) if used else np.array([])
    distinct = np.unique(np.round(x, 9)).size
    reason = ""
    if len(groups) == 0:
        reason = "the sweep has no groups"
    elif len(used) < 3 or distinct < 3:
        left = []
        if n_edge:
            left.append(f"{n_edge} with the best batch size at the grid edge (widen the grid)")
        if n_few:
            left.append(f"{n_few} with fewer than 3 batch sizes")
        why = f"; left out: {', '.join(left)}" if left else ""
        reason = (f"{len(used)} of {len(groups)} groups are usable, with {distinct} distinct "
                  f"value(s) of lr*n_train/(1-momentum); the slope needs at least 3{why}")
    if reason:
        return RuleCheck(**base, slope=None, intercept=float("nan"), r2=float("nan"), g_opt=None,
                         exponents=(), not_estimated={}, consistent=None,
                         verdict=f"cannot test the rule: {reason}")
    logb = np.log([g.b_opt for g in used])
    coef, lo, hi, r2 = _ols(np.column_stack([np.ones_like(x), x]), logb, level)
    slope = Estimate(name="slope", value=float(coef[1]), ci_low=float(lo[1]), ci_high=float(hi[1]))
    logg = x - logb
    half = stats.t.ppf(0.5 + level / 2.0, logg.size - 1) * logg.std(ddof=1) / np.sqrt(logg.size)
    g_opt = Estimate(name="g_opt", value=float(np.exp(logg.mean())),
                     ci_low=float(np.exp(logg.mean() - half)),
                     ci_high=float(np.exp(logg.mean() + half)))
    exponents, missing = _exponents(used, level)
    consistent = bool(slope.ci_low <= 1.0 <= slope.ci_high)
    word = "consistent with" if consistent else "inconsistent with"
    verb = "contains" if consistent else "excludes"
    verdict = (f"{word} the rule B_opt ∝ lr*n_train/(1-momentum): slope {slope.value:.3g}, "
               f"{level:.0%} CI [{slope.ci_low:.3g}, {slope.ci_high:.3g}] {verb} 1 "
               f"({len(used)} groups used, {n_edge + n_few} flagged)")
    return RuleCheck(**base, slope=slope, intercept=float(coef[0]), r2=float(r2), g_opt=g_opt,
                     exponents=exponents, not_estimated=missing, consistent=consistent,
                     verdict=verdict)
