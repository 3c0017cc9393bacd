r"""The plan of one round of an adaptive sweep (issue 28): which trials of the config's full grid
to run next, and why.

A scaling-law sweep spends most of its steps far from what the laws read: the batch sizes around
each group's optimum (``scaling bopt``) and the best configuration at each N (``scaling fit``).
An adaptive sweep (``search: {kind: adaptive, rounds: K, budget: 0.33}``) runs K rounds; this
module decides each round's trials from what earlier rounds stored:

- **Round 0**, a coarse grid: every other batch size (the largest included), every other lr
  when there are more than three, the smallest, middle and largest N when there are more than
  three, every value of the other axes, ``ceil(S/2)`` of the S seeds (at least 2, for the seed
  bootstrap); cheapest first within its share of the budget.
- **Round k > 0** reads the fits of the stored trials of rounds ``< k`` with the code of
  ``scaling bopt`` (:func:`analysis.rules.bopt.find_bopt`, the rule's exponents included) and
  ``scaling fit`` (:func:`analysis.fit.curves.fit_learning_curves`), then places, for every
  group of the grid (every axis but batch size and seed), the batch sizes within :data:`BOWL`
  grid steps of its predicted optimum: the group's own refined B_opt when it has one; one grid
  step past its best when that best is at the edge of what was run (the optimum is beyond); else
  the rule's prediction :math:`\ln B = c + \sum_a e_a \ln x_a` with the exponents ``scaling
  bopt`` fitted (censored groups included) and :math:`c` the median offset of the groups with an
  optimum: in practice the prediction from the smaller N, which are cheaper and run first.
- **Seeds**: the round-0 seeds, and every seed in the last round, or as soon as the rule's
  verdict is ``inconclusive`` while at least 3/4 of the groups have an interior optimum (what is
  missing then is precision, not the location of the bowls).
- **Budget**: the candidates are taken in order of priority (grid steps from the predicted
  optimum; then the :data:`TOP` groups of each N by their best mean metric so far, the cells the
  learning curve's frontier is read from; then seed; then the N that narrows a slope in log N
  most; then trial id) while the steps planned so far stay within ``budget * (k + 1) / K``. The variance of a slope fitted on
  :math:`\ln N` is :math:`\sigma^2 / \sum (x - \bar x)^2`, so a point's contribution is
  :math:`(x - \bar x)^2`: the extreme N first. That is the priority of both the rule's N exponent
  and the learning curve's.

Deterministic given its inputs: the stored rows are read in trial-id order, only those of trials
planned in earlier rounds count (a resumed round, with some of its own trials stored, replans
identically), the bootstraps have a fixed seed, and ties are broken by trial id. Trials are
always points of the full grid, so their ids are the full grid's: an adaptive sweep and the full
grid share trials and nothing is trained twice.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analysis import tables
from analysis.errors import AnalysisError
from analysis.stats.result import num

BOWL = 2
"""Grid steps of batch size around a group's predicted optimum that a round places (what B_opt's
refinement reads: the best batch size and two neighbours, with room for the prediction's error)."""
TOP = 3
"""Groups at each N whose bowls come first when the budget binds: the best by their best mean metric
so far (the frontier the learning curve is fitted on); the others follow, seed for seed."""
PLAN_BOOT = 200
"""Bootstrap replicates of the fits a plan reads (their intervals decide only the seeds)."""
PLAN_SEED = 0
"""Seed of those bootstraps: the same store gives the same plan."""
BATCH, SEED = "batch_size", "seed"
RULE_X = {"lr": lambda v: np.log(v), "n_train": lambda v: np.log(v), "1/(1-momentum)": lambda v: -np.log1p(-v)}
"""The rule's exponent names (:mod:`analysis.rules.sgd_rule`) and the log of their regressors."""
RULE_AXIS = {"lr": "lr", "n_train": "n_train", "1/(1-momentum)": "momentum"}


@dataclass(frozen=True, kw_only=True)
class RoundPlan:
    """One round's trials, each with the reason it was placed, and what the plan read."""

    round: int
    """0-based."""
    rounds: int
    budget_steps: int
    """Training steps the whole adaptive sweep may plan."""
    grid_steps: int
    """Training steps of the full grid."""
    grid_trials: int
    planned_steps: int
    """Steps of every trial planned so far, this round's included."""
    trials: tuple[dict, ...]
    """``{trial_id, steps, reason, <axes>}`` in priority order."""
    fits: dict = field(default_factory=dict)
    """What the plan read: the metric, the rule's verdict and exponents, group counts, the
    learning-curve exponent."""
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """Plain Python values (no NaN: JSON has none)."""
        return {"round": self.round, "rounds": self.rounds, "budget_steps": self.budget_steps,
                "grid_steps": self.grid_steps, "grid_trials": self.grid_trials,
                "planned_steps": self.planned_steps, "round_steps": sum(t["steps"] for t in self.trials),
                "n_trials": len(self.trials), "trials": list(self.trials), "fits": self.fits,
                "notes": list(self.notes)}

    def to_json(self) -> bytes:
        """The plan file's bytes: sorted keys, so the same plan is the same bytes."""
        return (json.dumps(self.to_dict(), sort_keys=True, indent=1, allow_nan=False) + "\n").encode()

    def summary(self) -> str:
        """One line: ``round 2 of 3: 180 trials, 31.2% of the grid's steps planned so far``."""
        verdict = (self.fits.get("verdict") or {}).get("label")
        return (f"round {self.round + 1} of {self.rounds}: {len(self.trials)} trials, "
                f"{self.planned_steps / max(self.grid_steps, 1):.1%} of the grid's steps planned so far"
                + (f"; rule {verdict}" if verdict else ""))


@dataclass(frozen=True)
class _Grid:
    ids: np.ndarray
    steps: np.ndarray
    cols: dict
    b_index: np.ndarray
    b_values: np.ndarray
    seed_rank: np.ndarray
    group: np.ndarray
    group_keys: list
    group_axes: tuple
    leverage: np.ndarray


def _grid(grid: pa.Table) -> _Grid:
    for name in ("trial_id", "steps", BATCH, SEED):
        if name not in grid.column_names:
            raise AnalysisError(f"the grid of an adaptive sweep needs a {name!r} column")
    grid = grid.sort_by("trial_id")
    ids = np.array(grid.column("trial_id").to_pylist(), dtype=object)
    if len(set(ids)) != len(ids):
        raise AnalysisError("the grid of an adaptive sweep repeats a trial id")
    cols = {c: np.array(grid.column(c).to_pylist(), dtype=object) for c in grid.column_names
            if c not in ("trial_id", "steps") and len(set(grid.column(c).to_pylist())) > 1}
    cols.setdefault(BATCH, np.array(grid.column(BATCH).to_pylist(), dtype=object))
    cols.setdefault(SEED, np.array(grid.column(SEED).to_pylist(), dtype=object))
    b = cols[BATCH].astype(float)
    b_values = np.unique(b)
    seeds = sorted(set(cols[SEED]))
    group_axes = tuple(c for c in cols if c not in (BATCH, SEED))
    keys = list(zip(*(cols[a] for a in group_axes))) if group_axes else [()] * len(ids)
    group_keys = sorted(set(keys), key=repr)
    at = {k: i for i, k in enumerate(group_keys)}
    leverage = np.zeros(len(ids))
    if "n_train" in cols:
        ln = np.log(cols["n_train"].astype(float))
        values = np.unique(ln)
        leverage = (ln - values.mean()) ** 2
    return _Grid(ids=ids, steps=np.array(grid.column("steps").to_pylist(), dtype=np.int64), cols=cols,
                 b_index=np.searchsorted(b_values, b), b_values=b_values,
                 seed_rank=np.array([seeds.index(s) for s in cols[SEED]]),
                 group=np.array([at[k] for k in keys], dtype=np.int64), group_keys=group_keys,
                 group_axes=group_axes, leverage=leverage)


def first_seeds(n_seeds: int) -> int:
    """Seeds of round 0 (and of later rounds while the verdict is not inconclusive)."""
    return min(n_seeds, max(2, math.ceil(n_seeds / 2)))


def _every_other(n: int, from_top: bool = True) -> np.ndarray:
    i = np.arange(n)
    return ((n - 1 - i) % 2 == 0) if from_top else ((i % 2 == 0) | (i == n - 1))


def _coarse(g: _Grid) -> np.ndarray:
    """Round 0's points (before the budget)."""
    keep = _every_other(g.b_values.size)[g.b_index]
    for axis, pick in (("lr", lambda n: _every_other(n, False)),
                       ("n_train", lambda n: np.isin(np.arange(n), [0, (n - 1) // 2, n - 1]))):
        if axis in g.cols:
            values = np.unique(g.cols[axis].astype(float))
            if values.size > 3:
                keep &= pick(values.size)[np.searchsorted(values, g.cols[axis].astype(float))]
    return keep & (g.seed_rank < first_seeds(int(g.seed_rank.max()) + 1))


def plan_round(grid: pa.Table, stored: pa.Table | None, *, round_index: int, rounds: int,
               budget_steps: int, earlier: list[str] | tuple = (), metric: str | None = None) -> RoundPlan:
    """The trials of round ``round_index`` (0-based) of ``rounds``.

    Parameters
    ----------
    grid : pyarrow.Table
        The config's full grid: ``trial_id``, ``steps`` (a trial's training steps) and one column
        per axis (``batch_size`` and ``seed`` at least).
    stored : pyarrow.Table or None
        The sweep's stored trials (an analysis trials table, :func:`analysis.tables.load.from_store`);
        only the rows of ``earlier`` trials are read.
    round_index, rounds : int
    budget_steps : int
        Training steps the whole adaptive sweep may plan (a fraction of the grid's, or steps).
    earlier : trial ids planned by rounds ``< round_index``.
    metric : str, optional
        What the fits read (default: the task's headline metric, as ``scaling bopt``).

    Returns
    -------
    RoundPlan
    """
    if not 0 <= round_index < rounds:
        raise AnalysisError(f"round {round_index} is not one of the {rounds} rounds")
    g = _grid(grid)
    before = np.isin(g.ids, list(earlier))
    spent = int(g.steps[before].sum())
    cap = budget_steps * (round_index + 1) // rounds - spent
    notes, fits = [], {}
    rows = _rows(stored, earlier)
    if round_index == 0 or rows is None:
        if round_index:
            notes.append("nothing usable stored from earlier rounds: the coarse grid again")
        cand = _coarse(g) & ~before
        order = sorted(np.flatnonzero(cand), key=lambda i: (g.steps[i], g.ids[i]))
        reasons = {i: "coarse grid: every other batch size and lr, the smallest, middle and largest N, "
                   f"{first_seeds(int(g.seed_rank.max()) + 1)} seeds; cheapest first" for i in order}
    else:
        order, reasons, fits = _adaptive(g, rows, before, round_index, rounds, metric, notes)
    chosen, used = [], 0
    for i in order:
        if used + int(g.steps[i]) <= cap:
            chosen.append(i)
            used += int(g.steps[i])
    if len(chosen) < len(order):
        notes.append(f"{len(order) - len(chosen)} candidate trial(s) left out: over this round's share of the "
                     f"budget ({max(cap, 0):,} steps)")
    trials = tuple({"trial_id": str(g.ids[i]), "steps": int(g.steps[i]), "reason": reasons[i],
                    **{a: _plain(g.cols[a][i]) for a in g.cols}} for i in chosen)
    return RoundPlan(round=round_index, rounds=rounds, budget_steps=int(budget_steps),
                     grid_steps=int(g.steps.sum()), grid_trials=int(g.ids.size),
                     planned_steps=spent + used, trials=trials, fits=fits, notes=tuple(notes))


def _rows(stored: pa.Table | None, earlier) -> pa.Table | None:
    """The stored rows of trials planned earlier, in trial-id order; None when none is usable."""
    if stored is None or not len(earlier) or stored.num_rows == 0:
        return None
    rows = stored.filter(pc.is_in(stored.column("trial_id"), pa.array(sorted(earlier))))
    if rows.num_rows == 0 or not pc.any(pc.equal(rows.column("status"), "ok")).as_py():
        return None
    return rows.sort_by("trial_id")


def _adaptive(g: _Grid, rows: pa.Table, before, k: int, rounds: int, metric, notes):
    from analysis.rules.bopt import find_bopt

    metric = metric or tables.headline_metric(rows)
    fits: dict = {"metric": metric, "stored_trials": rows.num_rows}
    try:
        res = find_bopt(rows, metric=metric, n_boot=PLAN_BOOT, seed=PLAN_SEED)
    except AnalysisError as e:
        res = None
        notes.append(f"scaling bopt could not run on the stored trials: {e}")
    lc = _learning_curve(rows, metric)
    if lc:
        fits["learning_curve"] = lc
    centre, why = _centres(g, res, fits)
    verdict = fits.get("verdict", {}).get("label")
    n_seeds = int(g.seed_rank.max()) + 1
    located = fits.get("groups", {}).get("ok", 0) >= 0.75 * len(g.group_keys)
    more = verdict == "inconclusive" and located
    seeds = n_seeds if (k == rounds - 1 or more) else first_seeds(n_seeds)
    if seeds > first_seeds(n_seeds):
        notes.append(f"all {n_seeds} seeds: " + ("the last round" if k == rounds - 1 else
                                                  "the rule's verdict is inconclusive with 3/4 of the groups' "
                                                  "optima located"))
    ring = np.abs(g.b_index - centre[g.group])
    cand = np.flatnonzero((ring <= BOWL) & (g.seed_rank < seeds) & ~before)
    top = _contenders(g, res)
    order = sorted(cand, key=lambda i: (ring[i], not top[g.group[i]], g.seed_rank[i], -g.leverage[i], g.ids[i]))
    reasons = {i: f"{int(ring[i])} grid step(s) from {why[g.group[i]]}"
               + ("" if top[g.group[i]] else f"; not among the best {TOP} groups at its N") for i in order}
    return order, reasons, fits


def _contenders(g: _Grid, res) -> np.ndarray:
    """Per grid group: whether it is among the :data:`TOP` groups of its N by their best mean metric
    (the cells the learning curve's frontier is read from). A group not yet run takes the rank of
    the group with its other values at the nearest N that has one; all are contenders without N."""
    top = np.ones(len(g.group_keys), bool)
    if res is None or "n_train" not in g.group_axes:
        return top
    sign = -1.0 if res.maximize else 1.0
    best = {}
    for x in res.groups:
        if x.means and np.isfinite(x.means).any():
            best[_key(x.key)] = sign * float(np.nanmin(
                sign * np.array(x.means)))
    n_at = g.group_axes.index("n_train")
    score = np.full(len(g.group_keys), np.nan)
    for gi, key in enumerate(g.group_keys):
        value = dict(zip(g.group_axes, key))
        found = best.get(_key(value, res.axes))
        score[gi] = np.nan if found is None else sign * found
    rank = np.full(len(g.group_keys), np.nan)
    ns = np.array([float(k[n_at]) for k in g.group_keys])
    for n in np.unique(ns):
        at = np.flatnonzero((ns == n) & np.isfinite(score))
        rank[at[np.argsort(score[at], kind="stable")]] = np.arange(at.size)
    others = [tuple(v for j, v in enumerate(k) if j != n_at) for k in g.group_keys]
    for gi in np.flatnonzero(~np.isfinite(rank)):
        near = [j for j in range(len(g.group_keys)) if others[j] == others[gi] and np.isfinite(rank[j])]
        if near:
            j = min(near, key=lambda j: (abs(math.log(ns[j]) - math.log(ns[gi])), ns[j]))
            rank[gi] = rank[j]
    return ~(rank >= TOP)  # NaN (no data anywhere): a contender


def _centres(g: _Grid, res, fits: dict) -> tuple[np.ndarray, list]:
    """Per grid group: the index of the batch size its bowl is centred on, and why."""
    lb = np.log(g.b_values)
    middle = (g.b_values.size - 1) // 2
    centre = np.full(len(g.group_keys), middle, dtype=np.int64)
    why = [f"the grid's middle batch size {g.b_values[middle]:g} (nothing to predict from)"] * len(g.group_keys)
    if res is None:
        return centre, why
    def nearest(v):
        return int(np.argmin(np.abs(lb - v)))

    groups = {_key(x.key): x for x in res.groups}
    counts: dict = {}
    for x in res.groups:
        counts[x.status] = counts.get(x.status, 0) + 1
    fits["groups"] = counts
    predict = _rule_predictor(res, fits)
    for gi, key in enumerate(g.group_keys):
        value = dict(zip(g.group_axes, key))
        found = groups.get(_key(value, res.axes))
        if found is not None and found.status == "ok":
            centre[gi], why[gi] = nearest(math.log(found.b_opt)), f"its B_opt {found.b_opt:.3g}"
        elif found is not None and found.status == "edge" and found.b_best > 0:
            step = -1 if found.side == "low" else 1
            centre[gi] = min(max(nearest(math.log(found.b_best)) + step, 0), lb.size - 1)
            why[gi] = f"one step {'below' if step < 0 else 'above'} its best {found.b_best:g} (at the edge run)"
        elif predict is not None:
            v = predict(value)
            if v is not None:
                centre[gi], why[gi] = nearest(v), f"the rule's prediction B = {math.exp(v):.3g}"
    return centre, why


def _rule_predictor(res, fits: dict):
    """ln B of a group from the rule's exponents (``scaling bopt``) and the median offset of the
    groups with an optimum; None without them."""
    rule = res.rule
    if rule is not None:
        fits["verdict"] = rule.verdict.to_dict()
        fits["exponents"] = [{"name": e.name, "value": num(e.value), "ci_low": num(e.ci_low),
                              "ci_high": num(e.ci_high)} for e in rule.exponents]
    exps = {e.name: e.value for e in (rule.exponents if rule is not None else ()) if np.isfinite(e.value)}
    ok = [x for x in res.groups if x.status == "ok" and x.b_opt > 0]
    if not ok:
        return None

    def linear(lr, n, m):
        x = {"lr": lr, "n_train": n, "1/(1-momentum)": m}
        return sum(exps[name] * RULE_X[name](x[name]) for name in exps if np.isfinite(x[name]))

    offset = float(np.median([math.log(x.b_opt) - linear(x.lr, x.n_train, x.momentum) for x in ok]))
    fits["rule_offset"] = num(offset)

    def predict(value: dict):
        x = {name: float(value[RULE_AXIS[name]]) for name in exps if RULE_AXIS[name] in value}
        if len(x) < len(exps):
            return None
        return offset + sum(exps[name] * RULE_X[name](x[name]) for name in exps)

    return predict


def _learning_curve(rows: pa.Table, metric: str) -> dict | None:
    """The learning curve's exponent and interval on the stored trials (``scaling fit``), or None."""
    from analysis.fit.curves import fit_learning_curves

    if "n_train" not in rows.column_names or len(set(rows.column("n_train").to_pylist())) < 3:
        return None
    try:
        curves = fit_learning_curves(rows, metric=metric, n_boot=PLAN_BOOT, seed=PLAN_SEED, holdout=0)
    except AnalysisError:
        return None
    fit = curves[0].fit if curves else None
    if fit is None:
        return None
    b = fit.to_dict()["params"]["b"]
    return {"exponent": num(b["value"]), "ci_low": num(b["ci_low"]), "ci_high": num(b["ci_high"])}


def _key(values: dict, axes=None) -> tuple:
    """A group's key, comparable between the grid and ``scaling bopt``'s groups: its (axis, value)
    pairs sorted by axis, over ``axes`` (default every key of ``values``) present in ``values``."""
    names = values if axes is None else [a for a in axes if a in values]
    return tuple(sorted((a, _plain(values[a])) for a in names))


def _plain(v):
    """A JSON value of an axis value (numpy scalars to Python)."""
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v
