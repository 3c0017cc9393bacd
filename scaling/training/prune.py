"""Early stopping inside packs: successive halving over a group's batch sizes, the bowl kept whole.

A sweep with ``search: {prune: {rungs: [0.1, 0.3], keep: 0.34, metric: val_loss}}`` (see
:class:`scaling.config.sweep.PruneConfig`) carries the rule in each trial's ``eval`` mapping, so
the loop (:mod:`scaling.training.loop`) evaluates every member at its rung steps,
``max(1, round(f * total_steps))`` for each rung fraction ``f``, and asks a :class:`Pruner`
which members stop there.

The rule (successive halving, Jamieson & Talwalkar 2016; asynchronous, ASHA, Li et al. 2020):

- a *group* is the trials that share the ``group_by`` axes (default: every axis but batch_size,
  lr and seed); a *configuration* is a trial without its seed. Seeds of one configuration are
  ranked together by their mean metric at the rung, so a configuration is stopped whole and the
  analysis never sees a cell with some seeds finished and others not;
- at rung ``i``, the configurations of the group that reached rung ``i`` (in this pack, or stored
  by an earlier pack, ``ok`` or ``pruned`` at a later rung) are ranked; the best
  ``max(1, floor(keep * n))`` go on, and so do the configurations within ``bowl`` grid steps of the
  best in batch_size alone or in lr alone (the neighbours the analysis reads B_opt from: a rule
  that would remove them is not applied). With fewer than ``ceil(1 / keep)`` configurations at
  the rung nothing is stopped (ASHA's rule: too few to rank);
- a member whose metric is not finite at a rung is not ranked and goes on (divergence ends it).

A stopped member ends with status ``pruned``, its curve up to the rung step, ``steps`` the rung
step, final outcomes null, and ``error`` saying which rung and why
(``pruned at rung 1 of 2 ...``; :func:`pruned_rung` reads the rung back).

**Groups across packs.** A pack holds one batch size (scaling.training.packing.pack_key), so a
group always spans packs. The decision uses the members of this pack at the rung *and* every
group member the store already holds (``peers``, read from the store when a rung is reached:
cluster.worker.peers.store_peers). With pruning on, the planner (cluster.driver.planner) starts packs in order
of their members' step budgets, cheapest first: under an epoch budget the large batch sizes finish
in seconds, and the expensive small-batch packs reach their rungs when most of their group is
stored. As in ASHA, a decision depends on what has been stored when the rung is reached, so two
runs of a sweep over several workers may stop different members (each trial is still stored
exactly once: a pruned row is a settled result, and a resumed sweep re-runs only what has no row).

No torch here.
"""

from __future__ import annotations

import math
import re
import time

from scaling.spec.schema import as_trial

DEFAULT_FREE = ("batch_size", "lr", "seed")
"""Axes a default group ranks over (batch_size, lr) or averages (seed)."""
READ_SHARE = 4.0
"""The store is read again once this many times the last read's duration has passed since it."""
_RUNG_RE = re.compile(r"^pruned at rung (\d+) of (\d+)")


def rule_of(trial) -> dict | None:
    """The pruning rule a trial carries in its ``eval`` mapping, or None."""
    ev = as_trial(trial).eval
    return ev.get("prune") if isinstance(ev, dict) else None


def rung_steps(trial, rule: dict | None = None) -> list[tuple[int, int]]:
    """(rung index, step) of each rung of ``trial`` before its last step, steps distinct."""
    trial = as_trial(trial)
    rule = rule or rule_of(trial)
    if not rule:
        return []
    steps, out, seen = trial.total_steps, [], set()
    for i, f in enumerate(rule["rungs"]):
        s = max(1, round(f * steps))
        if s < steps and s not in seen:
            seen.add(s)
            out.append((i, s))
    return out


def pruned_rung(error: str | None) -> int | None:
    """The rung (1-based) a ``pruned`` trial stopped at, read from its ``error``; None otherwise."""
    m = _RUNG_RE.match(error or "")
    return int(m.group(1)) if m else None


def group_key(trial, rule: dict) -> tuple:
    values = as_trial(trial).values()
    by = rule.get("group_by")
    if by is not None:
        return tuple((a, values[a]) for a in by)
    return tuple((a, v) for a, v in values.items() if a not in DEFAULT_FREE)


def config_key(trial) -> tuple:
    """The trial without its seed."""
    return tuple((a, v) for a, v in as_trial(trial).values().items() if a != "seed")


class Pruner:
    """Decides, at each rung, which members of a pack stop (see the module docstring).

    ``peers()``, if given, returns ``[(trial, {step: metric value})]`` of the stored trials of the
    sweep: the group members other packs have finished. It is called when a rung is reached; one
    that raises is dropped (decisions go on from this pack's members)."""

    def __init__(self, rule: dict, peers=None):
        self.rule, self.peers = rule, peers
        self.keep, self.metric, self.bowl = float(rule["keep"]), rule["metric"], int(rule.get("bowl", 2))
        self.larger = self.metric.endswith("_acc")
        self.n_rungs = len(rule["rungs"])
        self.min_configs = math.ceil(1 / self.keep - 1e-9)
        self.board: dict = {}  # (group, rung) -> {config: {seed: value}}
        self.last_read: tuple | None = None  # (when it ended, how long it took)

    @classmethod
    def for_trials(cls, trials, peers=None) -> Pruner | None:
        rules = [rule_of(t) for t in trials]
        if not any(rules):
            return None
        return cls(next(r for r in rules if r), peers)

    def post(self, trial, rung: int, value: float) -> None:
        trial = as_trial(trial)
        if not math.isfinite(value):
            return
        g = group_key(trial, self.rule)
        self.board.setdefault((g, rung), {}).setdefault(config_key(trial), {})[trial.seed] = float(value)

    def refresh(self) -> None:
        """Post the stored trials' rung values (``peers``), read again only once the time since the
        last read is READ_SHARE times what that read took: reading the store costs at most about a
        fifth of a pack's time (a read of a few hundred stored trials takes 0.2-0.5 s on a busy CPU,
        a large-batch pack trains in about a second)."""
        if self.peers is None:
            return
        now = time.perf_counter()
        if self.last_read is not None and now - self.last_read[0] < READ_SHARE * self.last_read[1]:
            return
        try:
            stored = self.peers()
        except Exception:  # noqa: BLE001 (the store is a courtesy: decide from this pack alone)
            self.peers = None
            return
        self.last_read = (time.perf_counter(), time.perf_counter() - now)
        for trial, curve in stored:
            rule = rule_of(trial)
            if not rule or rule.get("metric") != self.metric:
                continue
            for i, s in rung_steps(trial, rule):
                if s in curve:
                    self.post(trial, i, curve[s])

    def decide(self, step: int, reached: list) -> dict:
        """``reached``: (position, trial, metrics) of the members at a rung at ``step``. Returns
        {position: why} of those that stop."""
        if not reached:
            return {}
        at = []
        for p, trial, metrics in reached:
            rung = {s: i for i, s in rung_steps(trial, self.rule)}[step]
            value = float(metrics.get(self.metric, math.nan))
            self.post(trial, rung, value)
            at.append((p, trial, rung, value))
        self.refresh()
        out = {}
        for p, trial, rung, value in at:
            if not math.isfinite(value):
                continue
            why = self._stop(trial, rung, value, step)
            if why:
                out[p] = why
        return out

    def _stop(self, trial, rung: int, value: float, step: int) -> str | None:
        configs = self.board.get((group_key(trial, self.rule), rung), {})
        n = len(configs)
        if n < self.min_configs:
            return None
        score = {c: sum(v.values()) / len(v) for c, v in configs.items()}
        order = sorted(score, key=lambda c: (-score[c] if self.larger else score[c], repr(c)))
        k = max(1, math.floor(self.keep * n + 1e-9))
        mine = config_key(trial)
        if mine in order[:k] or self._in_bowl(mine, order[0], list(configs)):
            return None
        frac = self.rule["rungs"][rung]
        why = (f"pruned at rung {rung + 1} of {self.n_rungs} ({frac:g} of the budget, step {step}): "
               f"{self.metric} {score[mine]:.4g} (mean of {len(configs[mine])} seed(s)) is outside the best "
               f"{k} of {n} configurations of its group (best {score[order[0]]:.4g}) and not within "
               f"{self.bowl} grid step(s) of the best")
        return why

    def _in_bowl(self, config: tuple, best: tuple, present: list) -> bool:
        """``config`` differs from ``best`` only in batch_size, or only in lr, by at most ``bowl``
        steps of the grid (the sweep's values; for a drawn axis, the values present)."""
        a, b = dict(config), dict(best)
        diff = [k for k in a if a[k] != b.get(k)]
        if len(diff) != 1 or diff[0] not in ("batch_size", "lr"):
            return not diff
        axis = diff[0]
        grid = (self.rule.get("grid") or {}).get(axis) or sorted({dict(c)[axis] for c in present})
        try:
            return abs(grid.index(a[axis]) - grid.index(b[axis])) <= self.bowl
        except ValueError:
            return False
