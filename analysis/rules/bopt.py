r"""The optimal batch size of each group of a sweep, with clustered seed-bootstrap intervals.

Smith & Le (2018, "A Bayesian Perspective on Generalization and Stochastic
Gradient Descent") and Smith et al. (2018, "Don't Decay the Learning Rate,
Increase the Batch Size") predict that the best batch size scales with the
SGD noise scale, :math:`B_{opt} \propto \varepsilon N/(1-m)`. Trials are
grouped by every axis except ``batch_size`` and ``seed``. In each group the
best batch size is chosen on the validation metric (on the reported one when
the table has none) among batch sizes with no diverged or failed trial, and
refined between its two neighbours on the mean of the validation and test
metrics: both measure the same trained networks, so the mean halves the
evaluation noise of a location (no metric value is reported from it). The
refinement does not assume a symmetric optimum: it lies halfway between the
vertex of the parabola in :math:`\log B` through the three points and the
optimum of a bowl shape (split parabola or Linex, on the log metric) shared by
every group of the sweep and chosen on their pooled neighbourhoods
(:mod:`analysis.rules.bowl`, which says what it assumes). A best batch size at the edge
of the usable grid is a one-sided bound (the optimum lies beyond the midpoint
to its neighbour), which the rule check (:mod:`analysis.rules.sgd_rule`) treats as
censored.

Intervals: each replicate draws one multiset of seeds for every cell of every
group and redoes the choice and the vertex; the interval of
:math:`\ln B_{opt}` is the estimate :math:`\pm\, t_{S-1}` times the rescaled
bootstrap sd (:mod:`analysis.tables.cells`). Measured on :mod:`analysis.testing.simulate`
(asymmetric optima, shared seed effects, divergence, quantised accuracy),
these cover the true argmin of interior groups in 92-98 % of replications
(``tests/test_analysis_calibration.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

import analysis.stats.tobit as tobit
import analysis.tables.cells as cl
from analysis import tables
from analysis.errors import AnalysisError
from analysis.rules import bowl
from analysis.rules.sgd_rule import RuleCheck, RuleInput, check_rule
from analysis.stats.result import num

MIN_BATCH_SIZES = 3

RULE_COLUMNS = ("lr", "n_train", "momentum")


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
    r""":math:`\varepsilon N/(1-m)` for this group (NaN without the columns)."""
    optimizer: str
    """``sgd`` unless an ``optimizer`` column says otherwise."""
    batch_sizes: tuple[float, ...]
    """Batch sizes eligible for selection (no diverged or failed trial), ascending."""
    means: tuple[float, ...]
    """Mean reported metric over seeds at each eligible batch size."""
    n_seeds: tuple[int, ...]
    b_best: float
    """Eligible batch size with the best selection metric (NaN when there is none)."""
    b_opt: float
    """Refined optimum (parabola vertex in log B); NaN unless ``status == "ok"``."""
    ci_low: float
    ci_high: float
    status: str
    """``ok``, ``edge`` (best at the edge of the usable grid: a bound), ``too_few``."""
    bound: float = float("nan")
    """For an edge group: the optimum is below (``side == "low"``) or above this batch size."""
    side: str = ""
    reason: str = ""
    flagged: tuple[dict, ...] = ()
    """Batch sizes left out of selection, with the reason."""
    outcomes: dict = field(default_factory=dict)

    @property
    def g_opt(self) -> float:
        r"""Optimal noise scale :math:`\varepsilon N/(B_{opt}(1-m))`."""
        return self.rule_x / self.b_opt if self.b_opt > 0 else float("nan")

    def to_dict(self) -> dict:
        """Plain Python values."""
        return {"group": self.key, "label": self.label, "lr": num(self.lr),
                "n_train": num(self.n_train), "momentum": num(self.momentum),
                "optimizer": self.optimizer, "rule_x": num(self.rule_x),
                "batch_sizes": list(self.batch_sizes), "means": [num(m) for m in self.means],
                "n_seeds": list(self.n_seeds), "b_best": num(self.b_best),
                "b_opt": num(self.b_opt), "ci_low": num(self.ci_low),
                "ci_high": num(self.ci_high), "g_opt": num(self.g_opt), "status": self.status,
                "side": self.side, "bound": num(self.bound), "reason": self.reason,
                "flagged": list(self.flagged), "outcomes": self.outcomes}


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
    selection: str
    """How the best batch size was chosen."""
    rule: RuleCheck | None
    """The check of the SGD rule; None when it does not apply (see ``rule_note``)."""
    notes: tuple[str, ...] = ()
    n_boot: int = 0
    rule_note: str = ""
    """Why the SGD rule was not checked (no verdict then): a missing lr, n_train or momentum
    column, or no SGD groups."""
    batch: str = "batch_size"
    """The batch-size column."""
    rule_input: RuleInput | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        """Plain Python values; the rule check's fields are at the top level (``verdict`` None
        when the rule was not checked, with ``rule_note`` saying why)."""
        rule = self.rule.to_dict() if self.rule is not None else {"verdict": None}
        return {"metric": self.metric, "maximize": self.maximize, "axes": list(self.axes),
                "batch": self.batch, "selection": self.selection, "outcomes": self.outcomes,
                "notes": list(self.notes), "n_boot": self.n_boot, **rule,
                "rule_note": self.rule_note, "groups": [g.to_dict() for g in self.groups]}


def _optima(t, sel, rep, j_ok, maximize, shape=None):
    """(ln B estimate, side, ln bound, chosen index, bowl shape) per (replicate, group); the
    shape is chosen on these data when not given (:mod:`analysis.rules.bowl`)."""
    sign = 1.0 if maximize else -1.0
    j = cl.best_index(sign * sel, True)
    n = np.isfinite(t).sum(-1)
    z = bowl.log_scale(rep, maximize)
    if shape is None:
        shape = bowl.pooled_shape(t, z[0], np.where(j_ok, j[0], -1))
    logb = bowl.refined_log_b(t, z, j, shape)
    tt = np.broadcast_to(t, sel.shape)
    at = lambda k: np.take_along_axis(tt, np.clip(k, 0, tt.shape[-1] - 1)[..., None], -1)[..., 0]
    low = 0.5 * (at(np.zeros_like(j)) + at(np.ones_like(j)))      # halfway to the edge's
    last = np.broadcast_to(n, j.shape)
    high = 0.5 * (at(last - 2) + at(last - 1))                     # neighbour, in ln B
    # one threshold decides: an estimate beyond it is censored, as in a Tobit model,
    # whether the choice landed on the edge or next to it with the vertex leaning out
    side = np.where((j == 0) | (logb < low), tobit.BELOW,
                    np.where((j == n - 1) | (logb > high), tobit.ABOVE, tobit.OBSERVED))
    side = np.where(j_ok & (j >= 0), side, tobit.EXCLUDED)
    bound = np.where(side == tobit.BELOW, low, high)
    return logb, side, bound, j, shape


def find_bopt(trials: pa.Table, *, metric: str = "test_acc", where: dict | None = None,
              sweep: str | None = None, by=(), n_boot: int = 1000, level: float = 0.95,
              margin: float = 0.25, seed: int = 0, batch: str = "batch_size", lr: str = "lr",
              maximize: bool | None = None) -> BoptResult:
    """:math:`B_{opt}` per group and the rule check.

    Parameters
    ----------
    trials : pyarrow.Table
        Trials table with ``batch_size``; the rule also needs ``lr``, ``n_train``
        and ``momentum`` and SGD trials (an ``optimizer`` column, if any, ``sgd``).
    metric : str
        Stored or derived metric; accuracy is maximised, anything else minimised.
        The best batch size is chosen on its validation counterpart when present.
    where, sweep, by
        Filters, one sweep of several, and extra grouping columns (``("sweep",)``).
    n_boot, level, seed
        Clustered bootstrap replicates, interval level and generator seed.
    margin : float
        Equivalence margin of the rule's exponents around 1.
    batch, lr : str
        The batch-size and learning-rate columns (any names; nothing is renamed).
    maximize : bool, optional
        Whether larger is better; by default guessed from the name (``*acc*``).

    Returns
    -------
    BoptResult
    """
    if not margin > 0:
        raise AnalysisError(f"--margin must be > 0 (e.g. 0.25), got {margin}")
    prep = cl.prepare(trials, metric, where=where, sweep=sweep, by=by, batch=batch)
    fr = prep.fr
    tables.numeric(fr, batch, f"batch column {batch!r} (bopt needs one; name it with --batch)")
    maximize = tables.maximize(metric) if maximize is None else bool(maximize)
    axes = tuple(dict.fromkeys(tuple(by) + tuple(
        cl.varying(fr, np.flatnonzero(prep.mask), exclude=(batch, "seed")))))
    rows = np.flatnonzero(prep.mask)
    cm = cl.cell_matrix(fr, rows, axes + (batch,), prep.y, prep.sel, prep.outcome)
    gkeys = list(dict.fromkeys(k[:-1] for k in cm.keys))
    gpos = {k: i for i, k in enumerate(gkeys)}
    members = [[] for _ in gkeys]
    for c, k in enumerate(cm.keys):
        members[gpos[k[:-1]]].append(c)
    index = cl.padded([np.array([c for c in m if cm.eligible[c]], int) for m in members])
    t = np.where(index >= 0, np.log(np.array([k[-1] for k in cm.keys], float))[
        np.maximum(index, 0)], np.nan)
    enough = (index >= 0).sum(1) >= MIN_BATCH_SIZES
    S = cm.seeds.size
    method = "validation" if prep.sel is not None else "same seeds"

    def optima(weights, shape=None):
        sel = cl.gather(cl.weighted_means(cm.sel if method == "validation" else cm.y, weights),
                        index)
        rep = cl.weighted_means(cm.y, weights)
        if method == "validation":  # both sets measure the same networks: half the noise
            rep = 0.5 * (rep + cl.weighted_means(cm.sel, weights))
        rep = cl.gather(rep, index)
        return _optima(t, sel, rep, enough, maximize, shape)

    *full, shape = optima(np.ones((1, S)))
    logb, side, bound, j = (a[0] for a in full)
    res, reps = None, None
    if S >= 2 and n_boot > 0:
        reps = optima(cl.seed_counts(S, n_boot, np.random.default_rng(seed)), shape)[:4]
        res = cl.resampling(S, method)
    se = res.scale * np.std(reps[0], axis=0, ddof=1) if reps is not None else np.full(
        len(gkeys), np.nan)
    cols = (lr, "n_train", "momentum")
    groups = _groups(fr, cm, axes, gkeys, members, index, logb, side, bound, j, se, res, level,
                     rows, cols, batch)
    rule, notes, rule_note = _rule(fr, groups, logb, side, bound, se, reps, res, level, margin,
                                   cols)
    selection = (f"chosen on {prep.sel_name}, refined on the mean of {prep.sel_name} and {metric}"
                 if method == "validation" else
                 f"chosen and refined on {metric} ({prep.sel_name})")
    return BoptResult(metric=metric, maximize=maximize, axes=axes, groups=tuple(groups),
                      outcomes=tables.count_by(prep.outcome[prep.mask]), selection=selection,
                      rule=rule[0], notes=prep.notes + tuple(notes), rule_note=rule_note,
                      batch=batch, n_boot=0 if reps is None else n_boot, rule_input=rule[1])


def _groups(fr, cm, axes, gkeys, members, index, logb, side, bound, j, se, res, level, rows,
            cols=RULE_COLUMNS, batch="batch_size"):
    """One :class:`BoptGroup` per group key, from the estimates of :func:`_optima`."""
    out = []
    for g, key in enumerate(gkeys):
        value = dict(zip(axes, key))
        lr, n, m = (_value(fr, name, value, rows) for name in cols)
        opt = value["optimizer"] if "optimizer" in value else (
            fr["optimizer"][rows[0]] if "optimizer" in fr else None)
        opt = "sgd" if opt is None or opt != opt else str(opt)  # null: a first-release row, SGD
        elig = index[g][index[g] >= 0]
        bs = np.array([cm.keys[c][-1] for c in elig], float)
        means = np.nanmean(cm.y[elig], axis=1) if elig.size else np.array([])
        flagged = tuple({batch: _plain(cm.keys[c][-1]), "reason": cm.reasons[c]}
                        for c in members[g] if not cm.eligible[c])
        status, reason, b_opt, lo, hi, bnd, sd = "ok", "", np.nan, np.nan, np.nan, np.nan, ""
        if side[g] == tobit.EXCLUDED:
            status = "too_few"
            reason = (f"only {elig.size} batch size(s) without diverged or failed trials; need "
                      f"{MIN_BATCH_SIZES} to locate an optimum")
        elif side[g] == tobit.OBSERVED:
            b_opt = _snap(np.exp(logb[g]), bs)
            if res is not None and np.isfinite(se[g]):
                half = res.half_width(se[g] / res.scale, level)
                lo, hi = float(np.exp(logb[g] - half)), float(np.exp(logb[g] + half))
        else:
            status, bnd = "edge", float(np.exp(bound[g]))
            sd = "low" if side[g] == tobit.BELOW else "high"
            word = "smallest" if sd == "low" else "largest"
            at_edge = j[g] == (0 if sd == "low" else bs.size - 1)
            where = f"the {word} usable one" if at_edge else \
                f"next to the {word} usable one and the refined optimum lies past halfway to it"
            reason = (f"best batch size {bs[j[g]]:g} is {where}: B_opt is "
                      f"{'below' if sd == 'low' else 'above'} about {bnd:.3g}")
        out.append(BoptGroup(
            key={a: _plain(v) for a, v in zip(axes, key)}, label=tables.label(axes, key),
            lr=lr, n_train=n, momentum=m,
            rule_x=float(lr * n / (1.0 - m)) if np.isfinite(lr * n * m) and m < 1 else float("nan"),
            optimizer=opt, batch_sizes=tuple(float(b) for b in bs),
            means=tuple(float(v) for v in means),
            n_seeds=tuple(int(v) for v in np.isfinite(cm.y[elig]).sum(1)),
            b_best=float(bs[j[g]]) if j[g] >= 0 and elig.size else float("nan"), b_opt=b_opt,
            ci_low=lo, ci_high=hi, status=status, bound=bnd, side=sd, reason=reason,
            flagged=flagged, outcomes=cm.outcomes(members[g])))
    return out


def _value(fr, name, key: dict, rows) -> float:
    """A group's value of ``name``: from its key when the axis varies, else the constant."""
    if name in key:
        return float(key[name]) if key[name] is not None else float("nan")
    col = fr.get(name)
    return float(col[rows[0]]) if col is not None and col.dtype != object else float("nan")


def _rule(fr, groups, logb, side, bound, se, reps, res, level, margin, cols=RULE_COLUMNS):
    """``((RuleCheck | None, RuleInput | None), notes, why not checked)`` over SGD groups.

    The SGD rule is checked only when the lr, n_train and momentum columns are all there and
    some groups are SGD; otherwise there is no verdict, only the reason.
    """
    missing = [c for c in cols if c not in fr or fr[c].dtype == object]
    if missing:
        return (None, None), [], (f"the SGD rule B_opt ∝ lr*N/(1-m) was not checked: it needs "
                                  f"{', '.join(cols)} columns; missing: {', '.join(missing)}")
    sgd = np.array([g.optimizer.lower() == "sgd" for g in groups])
    notes = []
    if not sgd.all():
        other = sorted({g.optimizer for g in groups if g.optimizer.lower() != "sgd"})
        notes.append(f"the SGD rule does not apply to {', '.join(other)} "
                     f"({int((~sgd).sum())} groups): their B_opt is reported per group only")
    if not sgd.any():
        return (None, None), notes, ("the SGD rule B_opt ∝ lr*N/(1-m) was not checked: no "
                                     "group is SGD (an optimizer column says otherwise)")
    keep = np.flatnonzero(sgd)
    arr = lambda name: np.array([getattr(groups[i], name) for i in keep], float)
    inp = RuleInput(lr=arr("lr"), n_train=arr("n_train"), momentum=arr("momentum"),
                    logb=np.where(side[keep] == tobit.OBSERVED, logb[keep], np.nan),
                    side=side[keep], bound=bound[keep], se=se[keep],
                    reps_logb=None if reps is None else reps[0][:, keep],
                    reps_side=None if reps is None else reps[1][:, keep],
                    reps_bound=None if reps is None else reps[2][:, keep])
    return (check_rule(inp, res, level=level, margin=margin), inp), notes, ""


def _snap(b: float, grid: np.ndarray) -> float:
    """``b``, or the grid value it equals up to rounding (exp(log 8) is 7.999...)."""
    close = np.isclose(grid, b, rtol=1e-9)
    return float(grid[close][0]) if close.any() else float(b)


def _plain(v):
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


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


def collapse(trials: pa.Table, *, metric: str = "test_acc", where: dict | None = None,
             sweep: str | None = None) -> Collapse:
    r"""Metric against :math:`g = \varepsilon N/(B(1-m))` for every usable trial.

    If the noise scale governs training (Smith & Le 2018), curves for
    different (lr, N, B, m) fall onto one curve in this plot.
    """
    prep = cl.prepare(trials, metric, where=where, sweep=sweep)
    fr = prep.fr
    for col in ("batch_size", "lr", "n_train"):
        tables.numeric(fr, col, "column (the collapse needs batch_size, lr and n_train)")
    mom = fr["momentum"] if "momentum" in fr else np.zeros(tables.n_rows(fr))
    with np.errstate(all="ignore"):
        g = fr["lr"] * fr["n_train"] / (fr["batch_size"] * (1.0 - mom))
    ok = prep.ok & prep.mask & np.isfinite(g) & (g > 0)
    return Collapse(metric=metric, g=g[ok], y=prep.y[ok], n_train=fr["n_train"][ok],
                    outcomes=tables.count_by(prep.outcome[prep.mask]))
