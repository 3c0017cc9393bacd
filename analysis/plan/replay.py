"""An adaptive sweep replayed on a table where every trial of the grid is already measured (a
simulated sweep, :mod:`analysis.testing.simulate`, or a stored full grid): each round's plan
(:func:`analysis.plan.adaptive.plan_round`) reads only the rows of the trials planned before it,
exactly as the driver's rounds do, so the subset it ends with is what an adaptive sweep of the
same grid would have run (a trial's outcome does not depend on which others run)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from analysis.plan.adaptive import RoundPlan, plan_round

AXES = ("n_train", "batch_size", "lr", "momentum", "width", "seed")
"""Axis columns of a simulated sweep (those that vary become the grid's axes)."""


@dataclass(frozen=True, kw_only=True)
class Replay:
    table: pa.Table
    """The rows of every trial the rounds planned."""
    plans: tuple[RoundPlan, ...]
    steps: int
    grid_steps: int

    @property
    def share(self) -> float:
        return self.steps / self.grid_steps


def grid_of(full: pa.Table, axes=AXES) -> pa.Table:
    """The grid table a plan reads (``trial_id``, ``steps``, axes) of a table of every trial."""
    return full.select(["trial_id", "steps", *[a for a in axes if a in full.column_names]])


def replay(full: pa.Table, *, rounds: int = 3, budget: float = 1 / 3, metric: str | None = None) -> Replay:
    """The subset of ``full`` an adaptive sweep of ``rounds`` rounds within ``budget`` (a fraction
    of the grid's steps) runs."""
    grid = grid_of(full)
    grid_steps = int(pc.sum(grid.column("steps")).as_py())
    budget_steps = int(budget * grid_steps)
    planned: list[str] = []
    plans = []
    for k in range(rounds):
        plan = plan_round(grid, full, round_index=k, rounds=rounds, budget_steps=budget_steps,
                          earlier=planned, metric=metric)
        plans.append(plan)
        planned += [t["trial_id"] for t in plan.trials]
    table = full.filter(pc.is_in(full.column("trial_id"), pa.array(sorted(planned))))
    return Replay(table=table, plans=tuple(plans), steps=plans[-1].planned_steps, grid_steps=grid_steps)
