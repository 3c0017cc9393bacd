"""``scaling sweep --dry-run``: what a sweep would run, without starting Ray or training anything.

The config, the task's data and the store are checked as the real run checks them (a stale store
stops a dry run as it stops a sweep), the pending trials are planned into units by the same
planner (cluster.driver.planner) for this machine's CPUs, and the time is estimated from the
steps and FLOPs of each unit (:func:`estimate_seconds`): a rough figure, the progress line's ETA
during the run is measured. Nothing is written: not the config, not a trial.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass, field, replace
from itertools import islice, pairwise

from cluster.driver.drive import bound_capacity
from cluster.driver.planner import check_model_size
from cluster.driver.progress import fmt_duration
from scaling.config.expand import CHUNK, isin_sorted, pending_trials, scan
from scaling.config.sweep import SweepConfig
from scaling.spec.schema import CODE_VERSION
from scaling.store.resume import resume_state
from scaling.store.uri import STORAGE_TIMEOUT_S
from scaling.store.writer import Store
from scaling.tasks.resolve import load_task, task_data_version, task_shape

STEP_OVERHEAD_S = 4e-4
"""Seconds a pack (or a single trial) spends on one step besides its FLOPs: launches, the
update, evals spread over the steps (docs/speed.md: 0.45 ms for a 64-member MLP pack at B = 1)."""

FLOPS_PER_SLOT = 5e10
"""Training FLOP/s one slot sustains on a small MLP (docs/speed.md: the reference sweep's packs
reach about 50 GFLOP/s a core)."""


@dataclass(frozen=True, kw_only=True)
class SweepPlan:
    """What ``scaling sweep`` would do now (cluster.driver.dryrun.plan_sweep)."""

    name: str
    """Sweep name."""
    results: str
    """The store it reads."""
    total: int
    """Trials in the sweep."""
    stored: int
    """Trials already stored, which would not run again."""
    pending: int
    """Trials that would run."""
    stale: int
    """Stored trials of another code or data version that would run again (--rerun-stale)."""
    cpus: int
    """CPUs planned for: --num-cpus, else this machine's."""
    slots: int
    """Units run at once on those CPUs."""
    packs: int
    """Packed units."""
    packed_trials: int
    """Trials in those packs."""
    singles: int
    """Units of one trial (single engine, unpackable, ddp)."""
    trial_steps: int
    """Optimizer steps of the pending trials, summed over trials."""
    unit_steps: int
    """Steps of the units (a pack steps once for all its members)."""
    estimate_s: float | None
    """Rough seconds of training after Ray is up (None: a model whose FLOPs are unknown here)."""
    notes: tuple = field(default_factory=tuple)
    """What the planner said (engine, backends, why some trials run single)."""
    planned: int | None = None
    """An adaptive sweep's round 1: the trials its plan holds (None: every trial of the sweep)."""
    lead: tuple = field(default_factory=tuple)
    """Lines before the counts (an adaptive sweep's budget, round 1's plan, what decides the rest)."""

    def lines(self, address: str | None = None) -> list[str]:
        """The dry run's report, one short line each."""
        stale = f" ({self.stale} of them stale)" if self.stale else ""
        where = "this machine's; a cluster's differ" if address else "this machine's or --num-cpus"
        counts = (f"sweep {self.name!r}: {self.total} trials, {self.stored} already stored, {self.pending} to run"
                  if self.planned is None else
                  f"round 1 of sweep {self.name!r}: {self.planned} of its {self.total} trials, "
                  f"{self.planned - self.pending} already stored, {self.pending} to run")
        out = [*self.lead, counts + stale, *self.notes,
               (f"units: {self.packs} packs ({self.packed_trials} trials), {self.singles} single trials; "
               f"{self.slots} at once on {self.cpus} CPUs ({where})"),
               f"steps: {self.trial_steps:,} over the trials, {self.unit_steps:,} over the units"]
        if self.estimate_s is None:
            out.append("time: no estimate (a model other than the MLP: its FLOPs are counted on the workers)")
        else:
            about = "under 1s" if self.estimate_s < 1 else f"about {fmt_duration(self.estimate_s)}"
            out.append(f"time: {about} of training once Ray is up (rough: "
                       f"{STEP_OVERHEAD_S * 1e3:g} ms a step, {FLOPS_PER_SLOT / 1e9:g} GFLOP/s a slot)")
        out.append("dry run: Ray not started, nothing trained or written")
        return out


def plan_sweep(cfg: SweepConfig, results: str, *, engine: str | None = None, num_cpus: int | None = None,
               retry_failed: bool = False, allow_large: bool = False, rerun_stale: bool = False,
               accept_mixed: bool = False, storage_timeout: float = STORAGE_TIMEOUT_S,
               snap: bool = False, only=None, lead: tuple = ()) -> SweepPlan:
    """Check and plan ``cfg`` against the store at ``results`` as ``run_sweep`` would; write nothing.
    ``only``: sorted uint64 trial ids, of the pending trials plan only these (as ``run_sweep``'s:
    an adaptive sweep's round, cluster.rounds.dry_run, which gives the ``lead`` lines)."""
    from cluster.driver.planner import plan
    from cluster.driver.sweep import _near_stored, check_size
    from cluster.driver.warmup import pack_budget

    check_size(cfg, allow_large)
    check_model_size(cfg)  # counted on torch's meta device: nothing allocated
    load_task(cfg.task)  # the data, as a worker loads it (a plug-in's errors surface here)
    store = Store(results, retry_s=storage_timeout)
    warned = store.check_for_sweep(cfg.name)  # as run_sweep: refuses --results inside a sweep folder
    keep = ("ok", "diverged", "pruned") if retry_failed else ("ok", "diverged", "pruned", "failed")
    now = (CODE_VERSION, task_data_version(cfg.task))
    resume = resume_state(store, cfg.name, keep, now, rerun_stale=rerun_stale, accept_mixed=accept_mixed,
                          retry_s=storage_timeout)  # reads only: a store not there stays not there
    near: list[str] = []
    if resume.stored:
        cfg = _near_stored(cfg, store, snap, storage_timeout, near.append)
    expansion = scan(cfg, resume.done_ids)
    stored = expansion.done
    if only is not None:
        expansion = replace(expansion, pending_ids=expansion.pending_ids[isin_sorted(expansion.pending_ids, only)])
    engine = engine or cfg.engine
    k = cfg.workers_per_trial
    cpus = num_cpus or os.cpu_count() or 1
    slots = max(1, int(cpus // (cfg.resources.cpu * k)))
    notes: list[str] = [*warned, *near]
    slots, cut = bound_capacity(slots, cpus, _ray_memory(), cfg.resources.cpu)
    if cut:
        notes.append(cut)
    if k > 1:
        notes.append(f"engine: ddp, each trial data-parallel over {k} workers (Ray Train TorchTrainer)")
    budget = pack_budget(cfg, slots) if engine == "packed" and k == 1 else 0
    packs = packed = singles = trial_steps = unit_steps = 0
    costs: list[float | None] = []
    trials = pending_trials(cfg, expansion)
    first = True
    while chunk := list(islice(trials, CHUNK)):
        units = [((t,), "single") for t in chunk] if k > 1 else [
            (u.trials, u.engine) for u in plan(chunk, engine=engine, slots=slots, memory_bytes=budget,
                                               max_members=cfg.packing.max_members,
                                               log=notes.append if first else lambda *_: None)]
        first = False
        for members, kind in units:
            packs, packed = packs + (kind == "packed"), packed + len(members) * (kind == "packed")
            singles += kind != "packed"
            trial_steps += sum(t.total_steps for t in members)
            unit_steps += max(t.total_steps for t in members)
            costs.append(unit_seconds(members))
    if cfg.search.prune is not None:
        notes.append(f"pruning: members stop at rungs {list(cfg.search.prune.rungs)} of their budget "
                     "(scaling.training.prune); the steps and time below are those of the full grid, an upper bound")
    return SweepPlan(name=cfg.name, results=store.uri, total=expansion.total,
                     stored=stored,
                     pending=expansion.pending, stale=resume.stale, cpus=cpus, slots=slots, packs=packs,
                     packed_trials=packed, singles=singles, trial_steps=trial_steps,
                     unit_steps=unit_steps, estimate_s=estimate_seconds(costs, slots), notes=tuple(notes),
                     planned=None if only is None else len(only), lead=tuple(lead))


def unit_seconds(members) -> float | None:
    """Rough seconds to train one unit: its steps times (STEP_OVERHEAD_S plus its FLOPs a step at
    FLOPS_PER_SLOT). None for a model other than the MLP, whose FLOPs need torch to count."""
    t = members[0]
    if t.model != "mlp":
        return None
    input_dim, n_classes, _, _ = task_shape(t.task)
    dims = [input_dim] + [t.width] * t.depth + [n_classes]
    flops_per_example = 6.0 * sum(a * b for a, b in pairwise(dims))  # forward 2, backward 4 per weight
    steps = max(m.total_steps for m in members)
    flops_per_step = flops_per_example * sum(m.batch_size for m in members)
    return steps * (STEP_OVERHEAD_S + flops_per_step / FLOPS_PER_SLOT)


def _ray_memory() -> int | None:
    """The ``memory`` a local Ray would offer its tasks: 70% of this machine's available memory."""
    try:
        return int(0.7 * os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError):
        return None


def estimate_seconds(costs: list, slots: int) -> float | None:
    """Wall seconds of units of these costs on ``slots`` workers: the longest-first greedy schedule."""
    if any(c is None for c in costs):
        return None
    loads = [0.0] * max(1, slots)
    for c in sorted(costs, reverse=True):
        heapq.heapreplace(loads, loads[0] + c)  # the least loaded slot takes the next unit
    return max(loads)
