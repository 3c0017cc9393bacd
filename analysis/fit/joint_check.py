r"""Extrapolation check, predictions and warnings for the joint law :math:`L(N, D)`.

**Extrapolation check** (as for learning curves; Alabdulmohsin et al. 2022):
the points with the largest compute :math:`N D` (the largest 20 % of distinct
values by default, ``--holdout K``) are held out, the law is refitted on the
rest alone (its Huber threshold given, or chosen on the rest), and the held-out
points are scored by the RMSE of :math:`\log(\hat L/L)`, beside the refit's
in-sample RMSE. A held-out prediction <= 0 makes the score undefined.

**Predictions** at new :math:`(N, D)`: the confidence band of the law is the
percentile interval of :math:`\log \hat L_b(N, D)` over the fit's bootstrap
refits :math:`b`; the prediction interval for a new observation adds a
residual drawn from the fit's log residuals, inflated by :math:`\sqrt{n/(n-p)}`
(Davison & Hinkley 1997, Algorithm 6.4), and, past the data, an extrapolation
error :math:`\kappa\,\log(N D / \max N_i D_i)\,z_b` with
:math:`z_b \sim N(0, 1)`. :math:`\kappa^2 = \sum r_i^2 / \sum \ell_i^2` is
measured by the check: :math:`r_i` the held-out log errors, :math:`\ell_i` how
far past the refit's largest :math:`N D` they lie (as in
:mod:`analysis.fit.forms.selection`). Without a check the interval leaves that error out
and says so.

**Warnings**: a term :math:`A/N^\alpha` with :math:`A\alpha \le 0` rises with
:math:`N` (or is unbounded below when both are negative); :math:`E < 0` makes
the law fall below 0 at large scale; a held-out error more than 3x the
in-sample one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.errors import AnalysisError
from analysis.stats.result import num
from analysis.fit.forms.fit import HOLDOUT_FLOOR, HOLDOUT_RATIO
from analysis.fit.joint import LAWS, check_joint, solve_joint


def law_value(params, n, d) -> np.ndarray:
    """:math:`E + A N^{-\\alpha} + B D^{-\\beta}` from natural parameters, unclamped."""
    e, a, al, b, be = params
    with np.errstate(all="ignore"):
        return e + a * np.asarray(n, float) ** -al + b * np.asarray(d, float) ** -be


def _rmse(pred, obs) -> float | None:
    pred = np.asarray(pred, float)
    if pred.size == 0 or not np.all(np.isfinite(pred) & (pred > 0)):
        return None
    return float(np.sqrt(np.mean((np.log(pred) - np.log(obs)) ** 2)))


@dataclass(frozen=True, kw_only=True)
class JointHoldout:
    """The law refitted without the largest-compute points, scored on them."""

    n: tuple[float, ...]
    """N of the held-out points."""
    d: tuple[float, ...]
    """D of the held-out points."""
    rmse_log: float | None
    """RMSE of log(pred/true) on them; None when a prediction is undefined (<= 0)."""
    in_sample_rmse_log: float | None
    """RMSE-log of the refit on the points it was fitted to."""
    delta: float
    """Huber threshold of the refit."""
    kappa: float | None
    """Extrapolation error sd per unit of log(N D) past the refit's data."""
    n_undefined: int = 0
    form: str = "E + A/N^alpha + B/D^beta"
    """The law refitted (:data:`analysis.fit.joint.LAWS`)."""

    @property
    def ratio(self) -> float | None:
        if self.rmse_log is None or not (self.in_sample_rmse_log or 0) > 0:
            return None
        return self.rmse_log / self.in_sample_rmse_log

    def to_dict(self) -> dict:
        return {"form": self.form, "n": list(self.n), "d": list(self.d),
                "rmse_log": None if self.rmse_log is None else num(self.rmse_log),
                "in_sample_rmse_log": None if self.in_sample_rmse_log is None
                else num(self.in_sample_rmse_log),
                "ratio": None if self.ratio is None else num(self.ratio),
                "delta": num(self.delta),
                "kappa": None if self.kappa is None else num(self.kappa),
                "n_undefined": self.n_undefined}


def joint_holdout(n, d, y, *, delta: float | None, holdout: int | None = None,
                  law: str = "chinchilla"):
    """``(JointHoldout | None, note)``: the check of the module docstring."""
    n, d, y = (np.asarray(v, float) for v in (n, d, y))
    c = n * d
    cs = np.unique(c)
    k = max(1, int(round(0.2 * cs.size))) if holdout is None else int(holdout)
    if k <= 0:
        return None, "extrapolation check turned off"
    if k >= cs.size:
        return None, f"--holdout {k} would hold out every one of the {cs.size} compute values"
    train = c < cs[-k]
    try:
        check_joint(n[train], d[train], y[train], n_params=5 if law == "chinchilla" else 4)
    except AnalysisError as e:
        return None, f"too few points left after holding out the {k} largest N*D ({e})"
    model, sol, used = solve_joint(n[train], d[train], y[train], delta, law)
    params = model.chinchilla(sol.theta)[0]
    pred = law_value(params, n[~train], d[~train])
    ok = np.isfinite(pred) & (pred > 0)
    rmse = _rmse(pred, y[~train]) if ok.all() else None
    kappa = None
    if rmse is not None:
        ell = np.log(c[~train] / c[train].max())
        r = np.log(pred) - np.log(y[~train])
        kappa = float(np.sqrt(np.sum(r ** 2) / np.sum(ell ** 2))) if np.sum(ell ** 2) > 0 else None
    return JointHoldout(n=tuple(float(v) for v in n[~train]), d=tuple(float(v) for v in d[~train]),
                        rmse_log=rmse, in_sample_rmse_log=_rmse(law_value(params, n[train], d[train]),
                                                                y[train]),
                        delta=float(used), kappa=kappa, n_undefined=int((~ok).sum()),
                        form=LAWS[law][0]), ""


def joint_warnings(fit, check: JointHoldout | None) -> list[str]:
    """Warnings about a :class:`analysis.fit.joint.JointFit` and its check (module docstring)."""
    e, a, al, b, be = fit.chinchilla_params
    form = fit.form.split(",")[0]
    out = []
    for name, coef, exp in ((fit.n_name, a, al), (fit.d_name, b, be)):
        if coef < 0 and exp < 0:
            out.append(f"the fitted {form} is unbounded below in {name} "
                       "(a negative coefficient with a negative exponent): predictions at "
                       "large scale are undefined")
        elif coef * exp <= 0:
            out.append(f"the fitted {form} rises with {name} (coefficient "
                       f"{coef:.3g}, exponent {exp:.3g}) although the loss should fall")
    if e < 0:
        out.append(f"the fitted {form} has E = {e:.3g} < 0: it falls below 0 "
                   "at large N and D, where predictions are undefined")
    if check is not None and check.rmse_log is None:
        out.append(f"{check.n_undefined} of {len(check.n)} held-out predictions are undefined "
                   "(<= 0), so the held-out error is undefined")
    elif check is not None and check.ratio is not None and check.ratio > HOLDOUT_RATIO \
            and check.rmse_log > HOLDOUT_FLOOR:
        out.append(f"the held-out RMSE-log ({check.rmse_log:.3g}) is {check.ratio:.1f}x the "
                   f"in-sample one ({check.in_sample_rmse_log:.3g}): the law describes the data "
                   "better than it extrapolates")
    return out


@dataclass(frozen=True, kw_only=True)
class JointPrediction:
    """Predictions of the joint law at new (N, D), with a band and a prediction interval."""

    n: tuple[float, ...]
    d: tuple[float, ...]
    y: tuple[float | None, ...]
    """Best-fit loss; None where undefined (<= 0)."""
    band_low: tuple[float | None, ...]
    band_high: tuple[float | None, ...]
    pi_low: tuple[float | None, ...]
    pi_high: tuple[float | None, ...]
    level: float
    beyond: tuple[float, ...]
    """``N D / max(N_i D_i)`` of the fitted points (<= 1: within the data's compute)."""
    warnings: tuple[str, ...] = ()
    form: str = "E + A/N^alpha + B/D^beta"

    def to_dict(self) -> dict:
        def vals(t):
            return [None if v is None else num(v) for v in t]
        return {"form": self.form, "n": list(self.n), "d": list(self.d),
                "y": vals(self.y), "band_low": vals(self.band_low),
                "band_high": vals(self.band_high), "pi_low": vals(self.pi_low),
                "pi_high": vals(self.pi_high), "level": self.level, "beyond": list(self.beyond),
                "warnings": list(self.warnings)}


def joint_predict(fit, n_new, d_new, *, check: JointHoldout | None = None,
                  level: float | None = None, seed: int = 0) -> JointPrediction:
    """Predict at ``(n_new, d_new)`` with a band and a prediction interval (module docstring)."""
    level = fit.level if level is None else float(level)
    n_new, d_new = (np.atleast_1d(np.asarray(v, float)).ravel() for v in (n_new, d_new))
    if n_new.shape != d_new.shape or not np.all(np.isfinite(n_new) & (n_new > 0)
                                                & np.isfinite(d_new) & (d_new > 0)):
        raise AnalysisError("--predict wants N and D > 0 at every point, e.g. "
                            "--predict N=1e9,D=2e10")
    y = law_value(fit.chinchilla_params, n_new, d_new)
    ok = np.isfinite(y) & (y > 0)
    warn = []
    if (~ok).any():
        warn.append(f"{int((~ok).sum())} of {y.size} predictions are undefined (the fitted law "
                    "is <= 0 there): reported as undefined")
    beyond = n_new * d_new / np.max(fit.n * fit.d)
    nan = np.full(y.size, np.nan)
    band, pi = (nan, nan), (nan, nan)
    boot = fit.boot_theta
    if boot is None or boot.shape[0] < 10:
        warn.append("too few bootstrap resamples for intervals (refit with more --boot)")
    else:
        X = (np.log(n_new), np.log(d_new))
        with np.errstate(all="ignore"):
            L = fit.model.log_pred(boot, X, jac=False)[0]
            inside = fit.model.log_pred(fit.theta[None, :], (np.log(fit.n), np.log(fit.d)),
                                        jac=False)[0][0]
        res = inside - np.log(fit.y)
        p = fit.model.n_params
        res = (res - res.mean()) * np.sqrt(res.size / max(res.size - p, 1))
        rng = np.random.default_rng(seed)
        noise = rng.choice(res, size=L.shape, replace=True)
        past = np.maximum(np.log(beyond), 0.0)
        if check is not None and check.kappa is not None:
            noise = noise + check.kappa * past * rng.standard_normal(L.shape)
        elif past.any():
            warn.append("no extrapolation check to measure the extrapolation error: prediction "
                        "intervals past the data's compute leave it out")
        tail = 0.5 * (1.0 - level)
        b = np.quantile(L, [tail, 1 - tail], axis=0, method="nearest")
        p = np.quantile(L + noise, [tail, 1 - tail], axis=0, method="nearest")
        band = np.exp(b)
        pi = np.exp([np.minimum(p[0], b[0]), np.maximum(p[1], b[1])])

    def ends(v):
        return tuple(float(a) if k and np.isfinite(a) and a > 0 else None for a, k in zip(v, ok))
    return JointPrediction(n=tuple(n_new.tolist()), d=tuple(d_new.tolist()),
                           y=tuple(float(v) if k else None for v, k in zip(y, ok)),
                           band_low=ends(band[0]), band_high=ends(band[1]), pi_low=ends(pi[0]),
                           pi_high=ends(pi[1]), level=level,
                           beyond=tuple(float(v) for v in beyond), warnings=tuple(warn),
                           form=fit.form)


def parse_points(items, n_name: str, d_name: str) -> tuple[list[float], list[float]]:
    """``["N=1e9,D=2e10", ...]`` -> ``([1e9, ...], [2e10, ...])``; the column names work too, and
    so do compute and token multiplier (``C=1.2e21,M=640``: :math:`N = \\sqrt{C/(6M)}`,
    :math:`D = MN`) or ``N=...,M=...``."""
    ns, ds = [], []
    example = (f"--predict N=VALUE,D=VALUE (or {n_name}=...,{d_name}=..., or C=...,M=..., "
               "N=...,M=...), e.g. --predict N=1e9,D=2e10 or --predict N=1.4e9,M=640")
    for item in items or ():
        got = {}
        for part in str(item).split(","):
            key, sep, val = part.partition("=")
            key = key.strip()
            which = {"N": "n", n_name: "n", "D": "d", d_name: "d", "C": "c", "M": "m"}.get(key)
            try:
                value = float(val) if sep and which else None
            except ValueError:
                value = None
            if which is None or value is None or which in got:
                raise AnalysisError(f"--predict wants {example}; got {item!r}")
            got[which] = value
        if "c" in got and "m" in got and len(got) == 2 and got["c"] > 0 and got["m"] > 0:
            n = float(np.sqrt(got["c"] / (6.0 * got["m"])))
            got = {"n": n, "d": got["m"] * n}
        elif "n" in got and "m" in got and len(got) == 2:
            got = {"n": got["n"], "d": got["m"] * got["n"]}
        if set(got) != {"n", "d"}:
            raise AnalysisError(f"--predict {item!r} needs N and D (or C and M, or N and M), "
                                "e.g. N=1e9,D=2e10")
        ns.append(got["n"])
        ds.append(got["d"])
    return ns, ds
