r"""Check :math:`B_{opt} \propto \varepsilon N/(1-m)` across the groups of a sweep.

Smith & Le (2018) predict that the best batch size is proportional to the
SGD noise scale's numerator. Every axis is tested, jointly:

.. math:: \log B_{opt,g} = c + a \log\varepsilon_g + b \log N_g
          + d \log\frac{1}{1-m_g} + e_g,

fitted by weighted Tobit regression (:mod:`analysis.stats.tobit`): a group whose
best batch size is at the edge of the usable grid contributes the one-sided
bound "beyond the midpoint to its neighbour" instead of being dropped, which
would bias the exponents towards 0. Each group's weight comes from the
variance of its :math:`\ln B_{opt}` over the clustered seed bootstrap (the
whole pipeline, selection included, redone per replicate), stabilised halfway
towards the median because a variance from a handful of seeds is itself noisy;
the overall scale is estimated from the residuals (weighted least squares with
a dispersion factor, McCullagh & Nelder 1989, sec. 9.2), so lack of fit widens
the intervals, with a t quantile on :math:`n_{obs} - p` degrees of freedom
(never below the bootstrap's scale with fewer than 5). That interval treats the
groups' errors as independent, but a seed fixes the init, the nested subset and
the data order of every group at one N, so it can move the *location* of the
optimum of all of them together (not only scale every cell, which cancels in an
argmin): the n_train exponent's model interval then covered 1 in 72-76 % of sweeps
(issue 24). Each exponent's interval therefore comes from the seed-cluster bootstrap:
every replicate redoes the choice, the refinement and the Tobit fit, so shared
effects are in it; its half-width is :math:`t_{S-1}\sqrt{S/(S-1)}` times the bootstrap sd
(unrescaled, n_train's covered 90-91 % on fresh replications: :meth:`_Fit.se_boot`). The
bootstrap cannot see a misspecified law (the same for every seed), which the
residual scale does: when the groups scatter about the fit more than 3x (in
variance) what seed noise explains (``LOF_WIDER``), or some exponent's model se
is 2.5x its bootstrap sd (``SE_RATIO_WIDER``), the interval is the wider of the
two. Measured on :mod:`analysis.testing.simulate` with a seed-level shift of
the optimum (sd 0.25 in ln B) and t3 trial luck, 400 replications: coverage
97.5 / 95.5 / 97.5 % for lr / n_train / 1/(1-m), 96.5 / 93.8 / 96.5 % on 400 fresh ones
(the model's alone: 96.0 / 75.5 / 95.5 %); on the digits preset 94.8 / 97.2 / 97.2 %
(``python -m analysis.bench.calibration``,
``tests/test_analysis_calibration.py``).

Verdict, in this order (margin :math:`\delta`, default 0.25):

1. **consistent** when every exponent's 90 % interval lies inside
   :math:`[1-\delta, 1+\delta]`: two one-sided tests at 5 % per axis
   (Schuirmann 1987), all three axes estimated;
2. **inconsistent** when the joint test that every exponent is 1 rejects at
   5 %: the clustered bootstrap's :math:`\max_j |a^*_j - \hat a_j|/\mathrm{sd}^*_j`
   (which carries the dependence between exponents) fixes the per-axis level
   that keeps the family at 5 % (a bootstrap Sidak step, not a chi-square on a
   covariance from a handful of seeds), and the test rejects when some
   exponent's interval at that level (the wider of model and bootstrap, as
   above) excludes 1; the axes whose interval at the reported level excludes 1
   are named;
3. **inconclusive** otherwise, naming the underpowered axes and roughly how
   much more data each needs (interval half-widths shrink as
   :math:`1/\sqrt{n}`).

The combined slope on :math:`\log(\varepsilon N/(1-m))` and the optimal noise
scale :math:`g_{opt} = \varepsilon N/(B_{opt}(1-m))` (Tobit with the slope
fixed at 1) are reported too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy import stats

import analysis.stats.tobit as tobit
from analysis.tables.cells import Resampling
from analysis.stats.result import num

AXES = ("lr", "n_train", "momentum")
LABEL = {"lr": "lr", "n_train": "n_train", "momentum": "1/(1-momentum)"}
MIN_DOF = 5
"""Below this many residual degrees of freedom the residual scale may not undercut the
seed-bootstrap scale."""
LOF_WIDER = 3.0
"""Lack of fit (mean squared standardised residual) above which the model's interval is
considered beside the seed bootstrap's: groups scatter about the law more than seed noise
explains, which resampling seeds cannot see."""
SE_RATIO_WIDER = 2.5
"""The same when some exponent's model se exceeds its seed-bootstrap sd by this factor (the
lack of fit measured on the exponents themselves; per-group variances are floored)."""
SE_FLOOR = 0.05
"""Smallest se of a group's ln B_opt used in the weights (a group that never moves in the
bootstrap would otherwise get all the weight)."""


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """A value with its confidence interval (and the 90 % one used by the equivalence test)."""

    name: str
    value: float
    ci_low: float
    ci_high: float
    ci90_low: float = float("nan")
    ci90_high: float = float("nan")
    se: float = float("nan")
    """Standard error of the model (groups independent)."""
    se_boot: float = float("nan")
    """Seed-cluster bootstrap sd of the whole pipeline (selection, refinement, fit)."""
    interval: str = "model-t"
    """Which interval is reported: ``cluster-t`` (the seed bootstrap of the whole pipeline,
    t on seeds - 1 df; carries effects a seed shares across groups) or ``model-t`` (Tobit
    information, residual scale, t on n_obs - p df; groups independent), the wider of the
    two when the groups scatter about the law more than seed noise explains."""

    def to_dict(self) -> dict:
        return {"name": self.name, "value": num(self.value), "ci_low": num(self.ci_low),
                "ci_high": num(self.ci_high), "ci90_low": num(self.ci90_low),
                "ci90_high": num(self.ci90_high), "se": num(self.se),
                "se_boot": num(self.se_boot), "interval": self.interval}


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """What the data say about the rule."""

    label: str
    """``consistent``, ``inconsistent`` or ``inconclusive``."""
    axes: tuple[str, ...]
    """Axes whose interval (at the check's level) excludes 1 (for inconsistent) or that are
    underpowered."""
    reason: str

    def to_dict(self) -> dict:
        return {"label": self.label, "axes": list(self.axes), "reason": self.reason}


@dataclass(frozen=True, kw_only=True)
class RuleInput:
    """Per-group optima (full data and bootstrap replicates) and covariates."""

    lr: np.ndarray
    n_train: np.ndarray
    momentum: np.ndarray
    logb: np.ndarray
    """ln B_opt per group (NaN unless observed)."""
    side: np.ndarray
    """:data:`analysis.stats.tobit.OBSERVED`, ``ABOVE``, ``BELOW`` or ``EXCLUDED`` per group."""
    bound: np.ndarray
    """ln of the censoring bound per group."""
    se: np.ndarray
    """Rescaled bootstrap sd of ln B_opt per group."""
    reps_logb: np.ndarray | None
    reps_side: np.ndarray | None
    reps_bound: np.ndarray | None


@dataclass(frozen=True, kw_only=True)
class RuleCheck:
    r"""The joint test of :math:`B_{opt} \propto \varepsilon N/(1-m)`."""

    level: float
    margin: float
    verdict: Verdict
    exponents: tuple[Estimate, ...] = ()
    """Exponents of lr, n_train and 1/(1-momentum), for axes that vary."""
    not_estimated: dict = field(default_factory=dict)
    """Axis -> why its exponent could not be estimated."""
    slope: Estimate | None = None
    """Combined slope on ln(lr*N/(1-m)) (the rule: 1)."""
    intercept: float = float("nan")
    """Intercept of the combined-slope fit (ln B_opt at lr*N/(1-m) = 1)."""
    r2: float = float("nan")
    """R^2 of the combined-slope fit over observed groups."""
    g_opt: Estimate | None = None
    """Optimal noise scale lr*N/(B_opt(1-m)) with the slope fixed at 1."""
    joint: dict = field(default_factory=dict)
    """Joint test: ``statistic``, ``critical``, ``p_value``, ``df`` (t scale)."""
    lack_of_fit: float = float("nan")
    """Mean squared standardised residual of observed groups (about 1 when seed noise explains
    the scatter)."""
    n_groups: int = 0
    n_observed: int = 0
    n_censored: int = 0
    n_excluded: int = 0
    n_boot: int = 0
    n_boot_failed: int = 0
    """Replicates whose Tobit fit failed (left out of the intervals, counted here)."""
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"verdict": self.verdict.to_dict(), "level": self.level, "margin": self.margin,
                "exponents": [e.to_dict() for e in self.exponents],
                "not_estimated": dict(self.not_estimated),
                "slope": None if self.slope is None else self.slope.to_dict(),
                "intercept": num(self.intercept), "r2": num(self.r2),
                "g_opt": None if self.g_opt is None else self.g_opt.to_dict(),
                "joint_test": {k: num(v) for k, v in self.joint.items()},
                "lack_of_fit": num(self.lack_of_fit), "n_groups": self.n_groups,
                "n_observed": self.n_observed, "n_censored": self.n_censored,
                "n_excluded": self.n_excluded, "n_boot": self.n_boot,
                "n_boot_failed": self.n_boot_failed, "notes": list(self.notes)}


def untestable(reason: str, *, level: float = 0.95, margin: float = 0.25, **counts) -> RuleCheck:
    """An inconclusive check that could not even be run, saying why."""
    return RuleCheck(level=level, margin=margin, **counts,
                     verdict=Verdict(label="inconclusive", axes=(), reason=reason))


def _columns(inp: RuleInput, used: np.ndarray):
    """Design columns for the axes that vary and are not collinear; reasons for the rest."""
    cols, names, missing = [np.ones(int(used.sum()))], [], {}
    raw = {"lr": np.log(inp.lr), "n_train": np.log(inp.n_train),
           "momentum": -np.log1p(-inp.momentum)}
    for axis in AXES:
        col = raw[axis][used]
        if np.unique(np.round(col, 12)).size < 2:
            missing[axis] = "does not vary across the groups"
            continue
        trial = np.column_stack(cols + [col])
        if np.linalg.matrix_rank(trial) < trial.shape[1]:
            missing[axis] = f"moves together with {', '.join(names) or 'the intercept'}"
            continue
        cols.append(col)
        names.append(axis)
    return np.column_stack(cols), names, missing


def _sigma(X, y, side, bound, se):
    """Per-group scales for the Tobit fit and the lack of fit against seed noise.

    Relative weights come from each group's seed-bootstrap variance, stabilised
    halfway towards the median (a variance from a handful of seeds is itself noisy, and
    weights from it would make the fit's variance too small); the overall scale
    (dispersion) comes from the residuals of the observed groups, so lack of fit widens
    the intervals.
    """
    obs = side == tobit.OBSERVED
    v = np.maximum(np.where(np.isfinite(se), se, np.nan), SE_FLOOR) ** 2
    mid = np.nanmedian(v[obs]) if np.isfinite(v[obs]).any() else 0.09
    rel = np.sqrt(0.5 * (np.where(np.isfinite(v), v, mid) + mid))
    sigma, lof = rel, float("nan")
    dof = max(int(obs.sum()) - X.shape[1], 1)
    for it in range(3):
        beta = tobit.fit_tobit(X, y[None], side[None], bound[None], sigma).beta[0]
        if not np.all(np.isfinite(beta)):
            break
        r = (y - X @ beta)[obs]
        if it == 0:
            lof = float((r ** 2 / v[obs]).sum() / dof)
        phi = float((r ** 2 / sigma[obs] ** 2).sum() / dof)
        if dof < MIN_DOF:  # a scale from so few residuals can be tiny by chance
            phi = max(phi, 1.0)
        sigma = sigma * np.sqrt(max(phi, 1e-6))
    return sigma, lof


@dataclass(frozen=True)
class _Fit:
    """A Tobit fit: coefficients, covariance, df, bootstrap replicates."""

    beta: np.ndarray
    cov: np.ndarray
    df: float
    reps: np.ndarray | None
    n_failed: int
    res: Resampling | None = None
    use_model: bool = True
    """Whether the model's interval competes with the bootstrap's (lack of fit > LOF_WIDER)."""

    @property
    def ok(self) -> bool:
        return bool(np.all(np.isfinite(self.beta)) and np.all(np.isfinite(self.cov)))

    def se_boot(self) -> np.ndarray:
        """Seed-bootstrap sd of each coefficient (NaN without replicates), rescaled by the
        resampling's small-cluster factor (sqrt(S/(S-1)) for S seeds chosen on validation). Left
        unrescaled, on the assumption that re-choosing each group's best batch size in every
        replicate makes up the bootstrap's shortfall, the n_train exponent covered 92.8 % on the
        400 replications its thresholds were chosen on and 91.0 % / 90.0 % on 400 fresh ones
        (shifted and steep presets, ``analysis.bench.calibration`` with base 170000); rescaled,
        93.8 % fresh and 95.5 % on the first (lr and 1/(1-m): 96.5-97.5 %)."""
        if self.reps is None or self.res is None or self.reps.shape[0] < 10:
            return np.full(self.beta.size, np.nan)
        return self.res.scale * np.std(self.reps, axis=0, ddof=1)

    def half(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """``(half-width, from the bootstrap)`` of each coefficient's interval at ``level``: the
        seed bootstrap's (t on seeds - 1), or the model's (t on ``df``) where there is none;
        with ``use_model`` the wider of the two."""
        model = stats.t.ppf(0.5 + level / 2.0, self.df) * np.sqrt(np.diag(self.cov))
        boot = self.se_boot()
        if self.res is not None:
            boot = stats.t.ppf(0.5 + level / 2.0, max(self.res.df, 1)) * boot
        wider = np.isfinite(boot) & ((boot > model) | (not self.use_model))
        return np.where(wider, boot, model), wider


def _fit(X, inp, used, sigma, offset=None, res=None, use_model=True) -> _Fit:
    r"""Full-data Tobit fit with covariance :math:`I^{-1}` (scales from :func:`_sigma`) and
    :math:`n_{obs} - p` degrees of freedom; replicate fits (the seed bootstrap's intervals
    and the joint test's null)."""
    off = 0.0 if offset is None else offset
    y, side, bound = inp.logb[used] - off, inp.side[used], inp.bound[used] - off
    beta = tobit.fit_tobit(X, y[None], side[None], bound[None], sigma).beta[0]
    p = X.shape[1]
    df = float(max(int((side == tobit.OBSERVED).sum()) - p, 1))
    cov = np.full((p, p), np.nan)
    if np.all(np.isfinite(beta)):
        info, _ = tobit.information(X, beta, y, side, bound, sigma)
        try:
            cov = np.linalg.inv(info)
        except np.linalg.LinAlgError:
            pass
    reps, failed = None, 0
    if inp.reps_logb is not None and np.all(np.isfinite(cov)):
        fit = tobit.fit_tobit(X, inp.reps_logb[:, used] - off, inp.reps_side[:, used],
                              inp.reps_bound[:, used] - off, sigma)
        reps, failed = fit.beta[fit.converged], int((~fit.converged).sum())
    return _Fit(beta=beta, cov=cov, df=df, reps=reps, n_failed=failed, res=res,
                use_model=use_model)


def _estimate(name, fit: _Fit, i: int, level: float) -> Estimate:
    """Coefficient ``i`` with the wider of the model and seed-bootstrap intervals."""
    v = float(fit.beta[i])
    (h, wider), (h90, _) = (tuple(a[i] for a in fit.half(lv)) for lv in (level, 0.90))
    return Estimate(name=name, value=v, ci_low=v - float(h), ci_high=v + float(h),
                    ci90_low=v - float(h90), ci90_high=v + float(h90),
                    se=float(np.sqrt(fit.cov[i, i])), se_boot=float(fit.se_boot()[i]),
                    interval="cluster-t" if wider else "model-t")


def check_rule(inp: RuleInput, res: Resampling | None, *, level: float = 0.95,
               margin: float = 0.25) -> RuleCheck:
    r"""Joint Tobit regression of ln B_opt on every axis of the rule, and the verdict.

    Parameters
    ----------
    inp : RuleInput
        Per-group optima, censoring and covariates, with bootstrap replicates.
    res : analysis.tables.cells.Resampling or None
        Seeds behind the replicates; None without replicates (no intervals, no verdict).
    level : float
        Level of the reported intervals (the equivalence test always uses 90 %).
    margin : float
        Half-width of the equivalence region around 1.

    Returns
    -------
    RuleCheck
        Never raises for degenerate input: the verdict says why there is no test.
    """
    G = inp.logb.size
    valid = np.isfinite(inp.lr) & (inp.lr > 0) & np.isfinite(inp.n_train) & (inp.n_train > 0) \
        & np.isfinite(inp.momentum) & (inp.momentum >= 0) & (inp.momentum < 1)
    used = valid & (inp.side != tobit.EXCLUDED)
    obs = used & (inp.side == tobit.OBSERVED)
    counts = dict(n_groups=G, n_observed=int(obs.sum()),
                  n_censored=int((used & ~obs).sum()), n_excluded=int(G - used.sum()))
    base = dict(level=level, margin=margin, **counts)
    if G == 0:
        return untestable("the sweep has no groups", **base)
    X, names, missing = _columns(inp, used)
    p = X.shape[1]
    if obs.sum() < p + 1:
        return untestable(f"{int(obs.sum())} groups have an interior optimum "
                          f"({counts['n_censored']} at the grid edge, {counts['n_excluded']} left "
                          f"out); {p} coefficients need at least {p + 1} (widen the batch-size "
                          "grid or add groups)", **base)
    if res is None or inp.reps_logb is None:
        return untestable("no intervals without at least 2 seeds per cell", **base)
    sigma, lof = _sigma(X, inp.logb[used], inp.side[used], inp.bound[used], inp.se[used])
    fit = _fit(X, inp, used, sigma, res=res)
    if not fit.ok or fit.reps is None or fit.reps.shape[0] < 10:
        return untestable("the censored regression did not converge", **base)
    with np.errstate(all="ignore"):
        ratio = np.sqrt(np.diag(fit.cov))[1:] / fit.se_boot()[1:]
    # NaN lack of fit (no residuals to judge by): keep the model's interval in the running
    wide = bool(not lof <= LOF_WIDER or np.any(ratio > SE_RATIO_WIDER))
    fit = replace(fit, use_model=wide)
    exps = tuple(_estimate(LABEL[a], fit, i + 1, level) for i, a in enumerate(names))
    slope, intercept, r2, g_opt, extra_failed = _combined(inp, used, sigma, level, res, wide)
    joint = _joint_test(fit, names)
    verdict = _verdict(names, exps, missing, joint, res, margin, int(used.sum()), level)
    notes = []
    if lof > 4.0:
        notes.append(f"groups scatter about the fitted law {np.sqrt(lof):.1f}x more than seed "
                     "noise explains: the power-law form misses something, and the intervals "
                     "hold for these groups only")
    return RuleCheck(**base, verdict=verdict, exponents=exps, not_estimated=missing, slope=slope,
                     intercept=intercept, r2=r2, g_opt=g_opt, joint=joint, lack_of_fit=lof,
                     n_boot=int(inp.reps_logb.shape[0]), n_boot_failed=fit.n_failed + extra_failed,
                     notes=tuple(notes))


def _combined(inp, used, sigma, level, res=None, use_model=True):
    """Combined slope on ln(lr N/(1-m)), its R^2 over observed groups, and g_opt."""
    x = np.log(inp.lr * inp.n_train / (1.0 - inp.momentum))[used]
    X = np.column_stack([np.ones_like(x), x])
    fit = _fit(X, inp, used, sigma, res=res, use_model=use_model)
    obs = inp.side[used] == tobit.OBSERVED
    y = inp.logb[used][obs]
    r2 = float("nan")
    if fit.ok and y.size > 2 and np.ptp(y) > 0:
        r = y - (X @ fit.beta)[obs]
        r2 = float(1.0 - (r ** 2).sum() / ((y - y.mean()) ** 2).sum())
    slope = _estimate("slope", fit, 1, level) if fit.ok else None
    gfit = _fit(np.ones((x.size, 1)), inp, used, sigma, offset=x, res=res, use_model=use_model)
    g_opt = None
    if gfit.ok:
        e = _estimate("ln 1/g_opt", gfit, 0, level)
        g_opt = Estimate(name="g_opt", value=float(np.exp(-e.value)),
                         ci_low=float(np.exp(-e.ci_high)), ci_high=float(np.exp(-e.ci_low)),
                         ci90_low=float(np.exp(-e.ci90_high)), ci90_high=float(np.exp(-e.ci90_low)),
                         interval=e.interval)
    return slope, float(fit.beta[0]), r2, g_opt, fit.n_failed + gfit.n_failed


def _joint_test(fit: _Fit, names) -> dict:
    r"""Max-|t| test that every exponent is 1.

    The clustered bootstrap's :math:`\max_j |a^*_j - \hat a_j|/\mathrm{sd}^*_j` has a 95 %
    quantile that fixes the per-axis level the maximum implies (the dependence between
    exponents comes from the bootstrap; never below 95 %). Each exponent's interval at that
    level is the wider of the model's and the seed bootstrap's (as in :func:`_estimate`), so
    a shift of the optimum that a seed shares across groups cannot make the test reject a
    true rule. The statistic is :math:`\max_j |\hat a_j - 1|/\mathrm{se}^{eff}_j` with
    :math:`\mathrm{se}^{eff}_j` that interval's half-width over the model's t quantile, and
    the test rejects when it exceeds that quantile (some interval excludes 1).
    """
    k = len(names)
    est = fit.beta[1:k + 1]
    df = fit.df
    reps = fit.reps[:, 1:k + 1]
    sd = np.std(reps, axis=0, ddof=1)
    with np.errstate(all="ignore"):
        boot = np.max(np.abs(reps - est) / sd, axis=1)
    q = float(np.quantile(boot, 0.95))
    alpha = min(2.0 * stats.norm.sf(q), 0.05)
    crit = float(stats.t.isf(alpha / 2.0, df))
    se = fit.half(1.0 - alpha)[0][1:k + 1] / crit
    with np.errstate(all="ignore"):
        t_obs = np.abs(est - 1.0) / se
    stat = float(np.max(t_obs))
    z = stats.norm.isf(stats.t.sf(stat, df))
    reached = int(np.sum(boot >= z))
    p_value = (reached + 1.0) / (boot.size + 1.0)  # never 0 (Davison & Hinkley 1997)
    return {"statistic": stat, "critical": crit, "p_value": float(p_value), "df": df,
            "p_floor": reached == 0, "n_boot": int(boot.size)}


def p_text(joint: dict) -> str:
    """The joint test's p-value in words, one way everywhere: ``p = 0.012``, or at the
    bootstrap's floor ``p < 0.001 (no resample of 1000 reached the statistic)``."""
    p = joint["p_value"]
    if joint.get("p_floor"):
        return (f"p < {1.0 / joint['n_boot']:.2g} (no resample of {joint['n_boot']} reached the "
                "statistic)")
    return f"p = {p:.3g}"


def _verdict(names, exps, missing, joint, res, margin, n_groups, level=0.95) -> Verdict:
    by = dict(zip(names, exps))
    lv = f"{level:.0%}"
    within = {a: 1 - margin <= e.ci90_low and e.ci90_high <= 1 + margin for a, e in by.items()}
    if not missing and all(within.values()):
        text = ", ".join(f"{e.name} {e.value:.2f} [{e.ci90_low:.2f}, {e.ci90_high:.2f}]"
                         for e in exps)
        off = [e for e in exps if not e.ci_low <= 1.0 <= e.ci_high]
        aside = "".join(f"; but {e.name}'s {lv} CI ({e.ci_low:.2f} to {e.ci_high:.2f}) excludes 1: "
                        f"a departure smaller than the margin" for e in off)
        return Verdict(label="consistent", axes=(), reason=(
            f"every exponent's 90% CI lies within 1 ± {margin:g}: {text}{aside}"))
    if joint["statistic"] > joint["critical"]:
        bad = tuple(a for a, e in by.items() if not e.ci_low <= 1.0 <= e.ci_high)
        text = "; ".join(f"{by[a].name} exponent {by[a].value:.2f} ({lv} CI {by[a].ci_low:.2f} to "
                         f"{by[a].ci_high:.2f}) excludes 1" for a in bad)
        if not bad:
            text = (f"no single exponent's {lv} CI excludes 1, but together they depart from it")
        small = [by[a].name for a in bad if within[a]]
        aside = (f"; {' and '.join(small)} {'lies' if len(small) == 1 else 'lie'} within 1 ± {margin:g} "
                 f"by the 90% CI (a departure smaller than the margin)") if small else ""
        return Verdict(label="inconsistent", axes=bad, reason=(
            f"{text}; joint test that every exponent is 1: {p_text(joint)}{aside}"))
    parts, weak = [], []
    for a, why in missing.items():
        parts.append(f"{LABEL[a]}: {why}, so its exponent is untested")
        weak.append(a)
    for a, e in by.items():
        if within[a]:
            continue
        weak.append(a)
        parts.append(_power(e, res, margin, n_groups))
    return Verdict(label="inconclusive", axes=tuple(weak), reason="; ".join(parts))


def _power(e: Estimate, res: Resampling, margin: float, n_groups: int) -> str:
    """How much more data would settle one axis: standard errors shrink as 1/sqrt(n), and
    with plenty of data the t quantile becomes a normal one."""
    d = abs(e.value - 1.0)
    se = (e.ci90_high - e.ci90_low) / (2.0 * stats.norm.isf(0.05))  # the wider interval's scale
    if d < margin:
        f = (stats.norm.isf(0.05) * se / (margin - d)) ** 2
        goal = f"fit within 1 ± {margin:g}"
    else:
        f = (stats.norm.isf(0.025) * se / d) ** 2
        goal = "exclude 1"
    f = max(f, 1.0)
    return (f"{e.name} exponent {e.value:.2f}, 90% CI [{e.ci90_low:.2f}, {e.ci90_high:.2f}]: "
            f"underpowered; to {goal} it needs roughly {f:.1f}x the data "
            f"(~{int(np.ceil(res.n_clusters * f))} seeds per cell or "
            f"~{int(np.ceil(n_groups * f))} groups)")
