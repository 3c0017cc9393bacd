r"""Compute-optimal allocation :math:`N_{opt} \propto C^a` two ways, side by side.

**Approach 2** (IsoFLOP profiles; Hoffmann et al. 2022, "Training
Compute-Optimal Large Language Models", §3.2): rows are grouped into compute
budgets :math:`C`; within each, a parabola
:math:`L = p_0 + p_1 \ell + p_2 \ell^2` in :math:`\ell = \log N` locates the
loss minimum :math:`\log N_{opt}(C) = -p_1 / (2 p_2)` (:math:`p_2 > 0`),
and least squares of :math:`\log N_{opt}` on :math:`\log C` across budgets
gives :math:`a`. The parabola is a second-order approximation whose bias
grows with the asymmetry of the profile (Besiroglu et al. 2024; Epoch AI).

**Approach 3** (parametric; Hoffmann et al. 2022, §3.3): the joint fit
:math:`L = E + A/N^\alpha + B/D^\beta` of :mod:`analysis.fit.joint` with
:math:`C \propto N D` gives :math:`N_{opt} \propto C^{\beta/(\alpha+\beta)}`,
so :math:`a = \beta/(\alpha+\beta)`.

Both use one paired bootstrap, so the interval of the difference
:math:`a_3 - a_2` accounts for their correlation. On a plain table rows are
redrawn within each budget and the same redraw refits the parabolas and the
joint law (percentile intervals). On a sweep (a table with a ``status``
column) the points are the frontier's best configurations, and the unit of
resampling is the seed, which fixes the init and the data order of every
configuration: a replicate draws one multiset of seeds for the whole sweep,
chooses every winner again (:mod:`analysis.tables.frontier`) and refits both
approaches on the replicate's frontier; intervals are the estimate
:math:`\pm\, t_{S-1}` times the replicates' sd (``cluster-t``). Resampling
frontier points as if they were independent rows would ignore that one seed
moves all of them. ``C`` is a
FLOPs column when there is one (``train_flops`` on this project's sweeps),
else :math:`6 N D` (Kaplan et al. 2020), and the result says which.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from analysis.errors import AnalysisError
from analysis.stats.result import num
from analysis.fit.joint import JointFit, fit_joint
from analysis.stats.robust import batched_lm, percentile_interval, resample_counts

BUDGET_TOL = 0.02
"""Rows whose log10 C differ by less than this (about 5 %) share a budget."""


@dataclass(frozen=True, kw_only=True)
class Budget:
    """One IsoFLOP profile."""

    flops: float
    """Compute budget C (geometric mean over its rows)."""
    n_points: int
    """Rows in the budget."""
    n_opt: float | None
    """Parabola minimum in N; None when the profile has no minimum (p2 <= 0) or too few N."""
    inside: bool
    """Whether the minimum lies within the sampled N (otherwise it is extrapolated)."""


@dataclass(frozen=True, kw_only=True)
class ComputeOptimal:
    """The exponent a of N_opt ∝ C^a by Approach 2 and Approach 3, and their difference."""

    a2: float | None
    """Approach 2 exponent (IsoFLOP parabolas); None with fewer than 2 usable budgets."""
    a2_ci: tuple[float, float]
    """Its percentile-bootstrap interval."""
    a3: float
    r"""Approach 3 exponent :math:`\beta/(\alpha+\beta)`."""
    a3_ci: tuple[float, float]
    """Its interval."""
    diff: float | None
    """a3 - a2."""
    diff_ci: tuple[float, float]
    """Paired-bootstrap interval of the difference."""
    level: float
    """Coverage of the intervals."""
    budgets: tuple[Budget, ...]
    """The IsoFLOP profiles found."""
    flops_source: str
    """Where C comes from: a column, or 6*N*D."""
    n_points: int
    """Rows used."""
    n_boot: int
    """Bootstrap resamples drawn."""
    resampling: str = "rows redrawn within budgets, paired; percentile intervals"
    """What the bootstrap redraws (seeds on a sweep, rows otherwise) and how intervals are
    built."""
    notes: tuple[str, ...] = ()
    """Caveats: extrapolated minima, profiles without a minimum, dropped resamples."""
    joint: JointFit = field(repr=False, compare=False, default=None)

    def to_dict(self) -> dict:
        def pair(p):
            return [num(p[0]), num(p[1])]
        return {"a2": None if self.a2 is None else num(self.a2), "a2_ci": pair(self.a2_ci),
                "a3": num(self.a3), "a3_ci": pair(self.a3_ci),
                "diff": None if self.diff is None else num(self.diff),
                "diff_ci": pair(self.diff_ci), "level": self.level,
                "budgets": [{"flops": b.flops, "n_points": b.n_points,
                             "n_opt": None if b.n_opt is None else num(b.n_opt),
                             "inside": b.inside} for b in self.budgets],
                "flops_source": self.flops_source, "n_points": self.n_points,
                "n_boot": self.n_boot, "resampling": self.resampling, "notes": list(self.notes),
                "joint": None if self.joint is None else self.joint.to_dict()}


def budgets_of(flops) -> np.ndarray:
    """Budget label per row: sorted log10 C split where neighbours differ by > ``BUDGET_TOL``."""
    lc = np.log10(np.asarray(flops, float))
    order = np.argsort(lc)
    labels = np.empty(lc.size, int)
    labels[order] = np.concatenate([[0], np.cumsum(np.diff(lc[order]) > BUDGET_TOL)])
    return labels


def isoflop_minima(log_n, loss, labels, weights):
    r"""Parabola minima :math:`\log N_{opt}` per budget and weighting, ``(R, K)``; NaN if none.

    Only budgets with at least 3 distinct N are fitted; ``weights`` has shape
    ``(R, n)`` (bootstrap counts); ``loss`` is ``(n,)`` or ``(R, n)`` (one per replicate).
    """
    loss = np.broadcast_to(np.asarray(loss, float), weights.shape)
    out = []
    for k in np.unique(labels):
        idx = labels == k
        ell = log_n[idx]
        if np.unique(ell).size < 3:
            continue
        m = ell.mean()
        X = np.stack([np.ones_like(ell), ell - m, (ell - m) ** 2], -1)
        W = weights[:, idx]
        M = np.einsum("rm,mi,mj->rij", W, X, X) + 1e-12 * np.eye(3)
        v = np.einsum("rm,mi,rm->ri", W, X, loss[:, idx])
        distinct = ((W > 0)[:, :, None] & (ell[:, None] == np.unique(ell)[None, :])[None]) \
            .any(1).sum(1)
        with np.errstate(all="ignore"):
            p = np.linalg.solve(M, v[..., None])[..., 0]
            opt = m - p[:, 1] / (2.0 * p[:, 2])
        out.append(np.where((p[:, 2] > 0) & (distinct >= 3), opt, np.nan))
    return np.column_stack(out) if out else np.empty((weights.shape[0], 0))


def _slopes(log_c, log_nopt):
    """Least-squares slope of each row of ``log_nopt`` on ``log_c``; NaN if a row has < 2 finite."""
    ok = np.isfinite(log_nopt)
    w = ok.astype(float)
    cnt = w.sum(1)
    with np.errstate(all="ignore"):
        mc = (w * log_c).sum(1) / cnt
        mn = np.where(ok, log_nopt, 0.0).sum(1) / cnt
        dc = (log_c - mc[:, None]) * w
        slope = (dc * (np.where(ok, log_nopt, 0.0) - mn[:, None])).sum(1) / (dc * dc).sum(1)
    return np.where(cnt >= 2, slope, np.nan)


def compute_optimal(n, d, loss, *, flops=None, flops_source: str | None = None,
                    n_boot: int = 400, level: float = 0.95, delta: float = 1e-3,
                    seed: int = 0, replicates=None, resampling=None) -> ComputeOptimal:
    """Approach 2 and Approach 3 exponents of :math:`N_{opt} \\propto C^a` with paired intervals.

    Parameters
    ----------
    n, d, loss : array_like
        Positive model size, data size and loss per row.
    flops : array_like, optional
        Compute per row; :math:`6 N D` when omitted.
    flops_source : str, optional
        How to describe where ``flops`` came from in the result.
    n_boot, level, seed
        Bootstrap resamples (rows redrawn within budgets), interval coverage, seed.
    delta : float
        Huber threshold of the joint fit (1e-3: Hoffmann et al. 2022).
    replicates : array_like, optional
        ``(R, n)`` losses of seed-bootstrap replicates (a sweep's frontier, winners chosen
        again), with ``resampling`` (:class:`analysis.tables.cells.Resampling`): both
        approaches are refitted on each and intervals are cluster-t; ``n_boot`` is ignored.

    Returns
    -------
    ComputeOptimal
    """
    n, d, loss = (np.asarray(v, float).ravel() for v in (n, d, loss))
    if flops is None:
        flops, flops_source = 6.0 * n * d, "6*N*D (no FLOPs column given)"
    flops = np.asarray(flops, float).ravel()
    if flops.size != n.size or not np.all(np.isfinite(flops) & (flops > 0)):
        raise AnalysisError("the FLOPs column must be finite and > 0 on every row; did you pass "
                            "a log-transformed column?")
    joint = fit_joint(n, d, loss, n_boot=0, level=level, delta=delta, seed=seed)
    labels = budgets_of(flops)
    log_n = np.log(n)
    if replicates is not None:
        reps = np.asarray(replicates, float)
        reps = reps[np.all(np.isfinite(reps) & (reps > 0), axis=1)]
        n_boot = reps.shape[0]
        counts = np.ones((n_boot, n.size))
        ys = np.vstack([loss[None], reps])
    else:
        counts = resample_counts(n.size, n_boot, np.random.default_rng(seed), strata=labels)
        ys = loss
    a2, nopt, keys = _approach2(log_n, ys, flops, labels, counts)
    a3 = _approach3(joint, log_n, np.log(d), np.log(ys[1:] if replicates is not None else ys),
                    counts)
    budgets, notes = _budgets(labels, flops, log_n, nopt[0], keys)
    boot2, boot3 = a2[1:], a3[1:]
    pair = np.isfinite(boot2) & np.isfinite(boot3)
    if n_boot and (~np.isfinite(boot2)).sum() > 0.05 * n_boot:
        notes.append(f"{int((~np.isfinite(boot2)).sum())} of {n_boot} resamples had a profile "
                     "without a minimum; Approach 2's interval uses the rest")
    a2_full = float(a2[0]) if np.isfinite(a2[0]) else None
    if a2_full is None:
        notes.append("Approach 2 needs at least 2 budgets with 3+ distinct N and a loss minimum")
    if flops_source and not flops_source.startswith("6*N*D"):
        notes.append("Approach 3's a = beta/(alpha+beta) assumes C proportional to N*D")
    if replicates is not None and resampling is not None:
        ci = lambda est, boot: _cluster_ci(est, boot, resampling, level)
        how = (f"seeds redrawn ({resampling.n_clusters} seeds, winners chosen again), paired; "
               f"estimate ± t_{resampling.df} x replicate sd")
    else:
        ci = lambda est, boot: _ci(boot, level)
        how = "rows redrawn within budgets, paired; percentile intervals"
    diff = None if a2_full is None else float(a3[0] - a2[0])
    return ComputeOptimal(
        a2=a2_full, a2_ci=ci(a2_full, boot2), a3=float(a3[0]), a3_ci=ci(float(a3[0]), boot3),
        diff=diff, diff_ci=ci(diff, (boot3 - boot2)[pair]), level=level,
        budgets=tuple(budgets), flops_source=flops_source or "given", n_points=int(n.size),
        n_boot=int(n_boot), resampling=how, notes=tuple(notes), joint=joint)


def _approach2(log_n, loss, flops, labels, counts):
    """``(a per weighting, log N_opt per weighting and budget, budgets)``; row 0: the data."""
    W = np.vstack([np.ones((1, log_n.size)), counts])
    nopt = isoflop_minima(log_n, loss, labels, W)
    keys = [k for k in np.unique(labels) if np.unique(log_n[labels == k]).size >= 3]
    log_c = np.array([np.log(flops[labels == k]).mean() for k in keys])
    return _slopes(log_c, nopt), nopt, keys


def _approach3(joint, log_n, log_d, log_loss, counts):
    """beta/(alpha+beta) of the joint fit (row 0) and of its refits on ``counts``, warm-started."""
    R = counts.shape[0]
    sol = batched_lm(joint.model, np.broadcast_to(joint.theta, (R, joint.theta.size)),
                     (log_n, log_d), log_loss, counts, delta=joint.delta, max_iter=100)
    nat = joint.model.natural(np.vstack([joint.theta, sol.theta]))
    a3 = nat[:, 4] / (nat[:, 2] + nat[:, 4])
    a3[1:][~np.isfinite(sol.value)] = np.nan
    return a3


def _cluster_ci(estimate, values, resampling, level) -> tuple[float, float]:
    """Estimate ± t quantile x sd of the finite replicate values (NaN with fewer than 10)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if estimate is None or v.size < 10:
        return float("nan"), float("nan")
    lo, hi = resampling.interval(float(estimate), v, level)
    return float(lo), float(hi)


def _ci(values, level) -> tuple[float, float]:
    """Percentile interval of the finite values (NaN with fewer than 10)."""
    v = np.asarray(values, float)
    lo, hi = percentile_interval(v[np.isfinite(v)][:, None], level)
    return float(lo[0]), float(hi[0])


def _budgets(labels, flops, log_n, nopt_full, keys):
    budgets, notes = [], []
    for k in np.unique(labels):
        idx = labels == k
        c = float(np.exp(np.log(flops[idx]).mean()))
        opt = None
        inside = False
        if k in keys:
            v = nopt_full[keys.index(k)]
            if np.isfinite(v):
                opt = float(np.exp(v))
                inside = bool(log_n[idx].min() <= v <= log_n[idx].max())
                if not inside:
                    notes.append(f"the minimum at C = {c:.3g} lies outside the sampled N "
                                 "(extrapolated from the parabola)")
            else:
                notes.append(f"the profile at C = {c:.3g} has no minimum (the parabola opens "
                             "downwards); left out")
        budgets.append(Budget(flops=c, n_points=int(idx.sum()), n_opt=opt, inside=inside))
    return budgets, notes


def compute_optimal_table(table, *, n: str, d: str, loss: str, flops: str | None = None,
                          n_boot: int = 400, level: float = 0.95, delta: float = 1e-3,
                          seed: int = 0) -> ComputeOptimal:
    """:func:`compute_optimal` from a table; C from ``flops``, else ``train_flops``, else 6*N*D.

    A table with a ``status`` column is a sweep: its failed and diverged trials are
    counted and left out, and each (N, D) point is the best configuration of the other
    axes, chosen on validation or cross-fitted over seeds (:mod:`analysis.tables.frontier`),
    with C the mean over that point's usable rows. Any other table is used row by row.
    """
    from analysis import tables

    fr = tables.frame(table)
    nv, dv = tables.numeric(fr, n, "--n column"), tables.numeric(fr, d, "--d column")
    y = tables.metric(fr, loss)
    source, cv = None, None
    if flops is not None:
        cv, source = tables.numeric(fr, flops, "--flops column"), f"column {flops!r}"
    elif "train_flops" in fr and fr["train_flops"].dtype != object \
            and np.isfinite(fr["train_flops"]).any():
        cv, source = fr["train_flops"], "column 'train_flops' (stored by the sweep)"
    notes, reps, res = [], None, None
    if "status" in table.column_names:
        nv, dv, y, cv, note, reps, res = _sweep_points(table, n, d, loss, cv, n_boot, seed)
        notes.append(note)
        if reps is None:
            notes.append("one seed per point: rows are redrawn within budgets instead of seeds, "
                         "so the intervals ignore what a seed shares across points")
    else:
        ok, outcome = tables.usable(fr, y)
        ok, _, warn = tables.nonpositive(fr, y, ok, outcome, loss)
        notes += [warn.removeprefix("warning: ")] if warn else []
        ok &= np.isfinite(nv) & np.isfinite(dv) & (np.isfinite(cv) if cv is not None else True)
        rows = np.flatnonzero(ok)
        nv, dv, y, cv = nv[rows], dv[rows], y[rows], None if cv is None else cv[rows]
    if y.size < 6:
        raise AnalysisError(f"need at least 6 usable rows with {n}, {d} and {loss}, "
                            f"got {y.size}")
    out = compute_optimal(nv, dv, y, flops=cv, flops_source=source, n_boot=n_boot, level=level,
                          delta=delta, seed=seed, replicates=reps, resampling=res)
    return dataclasses.replace(out, notes=tuple(notes) + out.notes)


def _sweep_points(table, n, d, loss, cv, n_boot=0, seed=0):
    """``(N, D, loss, C, note, replicates, resampling)`` of a sweep's frontier at each (N, D);
    replicates are the frontier under seed-bootstrap draws (None with one seed)."""
    import analysis.tables.cells as cl
    from analysis import tables
    from analysis.tables.frontier import frontier, positive_points

    prep = cl.prepare(table, loss)
    fr = prep.fr
    nv, dv = fr[n], fr[d]
    ok = prep.ok & prep.mask & np.isfinite(nv) & np.isfinite(dv)
    if cv is not None:
        ok &= np.isfinite(cv)
    outcome = np.where(prep.ok & ~ok & prep.mask, "nonfinite", prep.outcome)
    front = frontier(fr, np.flatnonzero(prep.mask & np.isfinite(nv) & np.isfinite(dv)), (n, d),
                     prep.y, outcome=outcome, maximize=tables.maximize(loss), n_boot=n_boot,
                     rng=np.random.default_rng(seed), sel=prep.sel, sel_name=prep.sel_name)
    front, zero = positive_points(front, fr, np.flatnonzero(prep.mask & np.isfinite(nv)
                                                            & np.isfinite(dv)), loss)
    pn, pd = front.points[:, 0], front.points[:, 1]
    c = None
    if cv is not None:
        c = np.array([np.mean(cv[ok & (nv == a) & (dv == b)]) for a, b in zip(pn, pd)])
    over = f"best over {', '.join(front.over)}: {front.selection}" if front.over else \
        "one configuration per point"
    note = (f"sweep: {pn.size} (N, D) points, each the mean over seeds of its {over}; trials: "
            + ", ".join(f"{k} {v}" for k, v in tables.count_by(outcome[prep.mask]).items()))
    note = (zero + "; " if zero else "") + note
    return pn, pd, front.y, c, note, front.replicates, front.resampling
