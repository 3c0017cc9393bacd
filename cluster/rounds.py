"""An adaptive sweep's rounds (``search: {kind: adaptive, rounds: K, budget: B}``, issue 28).

Each round: read the sweep's stored trials, plan the round (:func:`analysis.plan.adaptive.plan_round`,
a pure function of the config's full grid and the stored rows of the trials earlier rounds
planned), write the plan to ``<sweep>/plans/round-<k>.json`` atomically, and run its trials as an
ordinary sweep (:func:`cluster.driver.sweep.run_sweep` with ``only``: the same resume, packing,
retries and exactly-once commits). A run that is killed and started again replans every round
from the same rows, so each plan comes out the same bytes: the recorded plan is checked against
the new one (a difference, e.g. after ``--retry-failed`` changed a round's rows, is a warning and
the recorded plan is kept: its trials may be stored already).

This module sits in the top-level ``cluster`` row of tests/test_layers.py, which may import
``analysis``: ``cluster.driver`` may not (the sweep driver loads no fitting code).
"""

from __future__ import annotations

import contextlib
import json
import time

import numpy as np
import pyarrow as pa

from cluster.driver.sweep import SweepSummary, run_sweep, worker_imports
from cluster.launch import localray
from cluster.launch.connect import connect
from scaling.config.sweep import SweepConfig
from scaling.errors import UserError
from scaling.status import plan_path
from scaling.store.writer import Store


def grid_table(cfg: SweepConfig, allow_large: bool = False) -> pa.Table:
    """The full grid as the plan reads it: trial id, training steps and every axis (the trials are
    built: an adaptive sweep is bounded by what one driver holds, scaling.config.sweep)."""
    from scaling.config.sweep import MAX_TRIALS

    trials = sorted(cfg.trials(limit=None if allow_large else MAX_TRIALS), key=lambda t: t.trial_id)
    cols = {"trial_id": [t.trial_id for t in trials], "steps": [int(t.total_steps) for t in trials]}
    for axis in dict.fromkeys(("batch_size", "seed", *cfg.axes)):
        cols[axis] = [getattr(t, axis) for t in trials]
    return pa.table(cols)


def _stored(results: str, sweep: str):
    from analysis.errors import AnalysisError
    from analysis.tables.load import load_trials

    try:
        return load_trials(f"{results.rstrip('/')}/{sweep}")
    except AnalysisError:  # nothing stored yet
        return None


def _recorded(store: Store, path: str) -> bytes | None:
    import pyarrow.fs as pafs

    if store.fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with store.fs.open_input_stream(path) as f:
        return f.read()


def plan_of_round(cfg: SweepConfig, grid: pa.Table, k: int, stored=None, earlier=()):
    """Round ``k``'s plan (:func:`analysis.plan.adaptive.plan_round`) over the config's ``grid``
    (:func:`grid_table`), its rounds and budget: what a round runs and what ``scaling sweep
    --dry-run`` shows of round 1. ``stored``: the sweep's trials (read from round 2 on)."""
    from analysis.plan.adaptive import plan_round

    return plan_round(grid, stored if k else None, round_index=k, rounds=cfg.search.n_rounds,
                      budget_steps=_budget(cfg, grid)[0], earlier=earlier)


def _budget(cfg: SweepConfig, grid: pa.Table) -> tuple[int, str]:
    """The sweep's budget in training steps, and the line that announces it."""
    steps = int(sum(grid.column("steps").to_pylist()))
    budget = cfg.search.budget_steps(steps)
    return budget, (f"adaptive sweep {cfg.name!r}: {cfg.search.n_rounds} rounds within {budget:,} training steps "
                    f"({budget / max(steps, 1):.1%} of the full grid's {steps:,}, {grid.num_rows} trials)")


def dry_run(cfg: SweepConfig, results: str, *, allow_large: bool = False, **options):
    """``scaling sweep --dry-run`` of an adaptive sweep: round 1's trials (the coarse grid, planned
    by :func:`plan_of_round` as the run plans it) through the dry run's planner
    (:func:`cluster.driver.dryrun.plan_sweep` with ``only``), and what the later rounds depend on.
    Nothing is written. Returns the SweepPlan."""
    from cluster.driver.dryrun import plan_sweep

    grid = grid_table(cfg, allow_large)
    plan = plan_of_round(cfg, grid, 0)
    rounds = cfg.search.n_rounds
    why = plan.trials[0]["reason"] if plan.trials else "no trial fits its share of the budget"
    lead = [_budget(cfg, grid)[1], f"{plan.summary()}: {why}"]
    if rounds > 1:
        lead.append(f"rounds 2-{rounds} are planned from the results of the rounds before them (the fitted "
                    "B_opt rule and learning curve), so no dry run can show them; below: round 1 only")
    only = np.unique(np.array([int(t["trial_id"], 16) for t in plan.trials], dtype=np.uint64))
    return plan_sweep(cfg, results, allow_large=allow_large, only=only, lead=tuple(lead), **options)


def run_adaptive(cfg: SweepConfig, text: str, results: str, *, log=print, **options) -> SweepSummary:
    """Run the rounds of an adaptive sweep; ``options`` go to every round's ``run_sweep``."""
    t0 = time.monotonic()
    if cfg.search.kind != "adaptive":
        raise UserError(f"sweep {cfg.name!r} is not adaptive (search.kind {cfg.search.kind!r})")
    localray.reap_orphans(log)  # a killed run's workers may still write: before any plan reads the store
    store = Store(results, retry_s=options.get("storage_timeout"))
    grid = grid_table(cfg, options.get("allow_large", False))
    log(_budget(cfg, grid)[1])
    planned: list[str] = []
    counts: dict = {}
    with contextlib.ExitStack() as ray_session:
        ray_session.started = False
        for k in range(cfg.search.n_rounds):
            _round(cfg, text, results, store, grid, k, planned, counts, ray_session, log, options)
    return SweepSummary(name=cfg.name, results=store.uri, total=grid.num_rows,
                        skipped=len(planned) - sum(counts.values()), counts=counts, wall_s=time.monotonic() - t0)


def _round(cfg, text, results, store, grid, k, planned, counts, ray_session, log, options):
    """Plan round ``k``, record its plan, run its trials; ``planned`` and ``counts`` grow."""
    plan = plan_of_round(cfg, grid, k, _stored(results, cfg.name) if k else None, planned)
    data, path = plan.to_json(), plan_path(store, cfg.name, k)
    old = _recorded(store, path)
    plan_ids = [t["trial_id"] for t in plan.trials]
    if old is None:
        store.write_bytes(path, data, f"write the plan of round {k} of {cfg.name!r}")
    elif old == data:
        log(f"round {k + 1}: replanned the same trials as recorded")
    else:
        log(f"warning: round {k + 1}'s plan differs from the one recorded in {path} (the stored trials of "
            "earlier rounds changed, e.g. failed trials run again); the recorded plan is kept")
        plan_ids = [t["trial_id"] for t in json.loads(old)["trials"]]
    log(f"adaptive {plan.summary()}" + (f" ({'; '.join(plan.notes)})" if plan.notes else ""))
    planned += plan_ids
    if not plan_ids:
        return
    if not ray_session.started:  # one Ray for every round, started when one has work
        ray_session.started = True
        imports = worker_imports(cfg, len(plan_ids), options.get("num_cpus"))  # as run_sweep's own Ray
        ray_session.enter_context(localray.session(lambda: connect(
            options.get("address"), options.get("num_cpus"), options.get("insecure_ray", False), imports)))
    only = np.unique(np.array([int(i, 16) for i in plan_ids], dtype=np.uint64))
    summary = run_sweep(cfg, text, results, only=only, log=log, **options)
    for status, n in summary.counts.items():
        counts[status] = counts.get(status, 0) + n
