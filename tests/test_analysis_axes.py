"""Axes are declared, never guessed: the three bugs of guessing, each through the real CLI.

Before the declared schema, analysis/tables/columns.py took every column not on an exclusion
list as an axis. Each test below failed that way:

1. a metric named on the command line (``--metric test_cross_entropy``) of a CSV
   became an axis, so the frontier took the best single row instead of the mean
   over seeds;
2. the trial columns of ``metrics: {sharpness: true}`` (``sharpness_init``,
   ``sharpness_final``) became axes and split every B_opt group into one-row groups;
3. with a budget in steps, a diverged trial stores fewer ``steps``, which became an
   axis and split groups.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from analysis.testing.synthetic import sweep_table, write_store
from conftest import run_cli_here as run_cli


def cli_json(*args) -> dict:
    """The command run in this process (run_cli_here): these tests check what it prints."""
    proc = run_cli(*args, "--json", "--boot", "40")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_a_metric_named_on_the_command_line_is_never_an_axis(tmp_path):
    rng = np.random.default_rng(0)
    ns, seeds = [100, 200, 400, 800, 1600, 3200, 6400], range(4)
    rows = [{"n": n, "seed": s, "test_cross_entropy": 2 * n ** -0.5 + 0.1 + 0.01 * rng.standard_normal()}
            for n in ns for s in seeds]
    pcsv.write_csv(pa.Table.from_pylist(rows), tmp_path / "runs.csv")
    out = cli_json("fit", str(tmp_path / "runs.csv"), "--x", "n", "--metric", "test_cross_entropy")
    curve = out["curves"][0]
    assert curve["over"] == [], "nothing to tune over: the rows of one n are seeds"
    for point in curve["points"]:
        mine = [r["test_cross_entropy"] for r in rows if r["n"] == point["x"]]
        assert point["n_seeds"] == 4 and np.isclose(point["y"], np.mean(mine)), "the mean over seeds"


def bopt_groups(root) -> dict:
    out = cli_json("bopt", str(root), "--metric", "test_acc")
    return {g["label"]: (g["b_best"], g["status"]) for g in out["groups"]}


def test_measured_trial_columns_are_not_axes(tmp_path):
    table = sweep_table(n_trains=(1000, 4000), lrs=(0.05, 0.2), momenta=(0.0, 0.9), seeds=(0, 1, 2), seed=1)
    rng = np.random.default_rng(1)
    sharp = table
    for name in ("sharpness_init", "sharpness_final"):  # measured per trial, as metrics: {sharpness: true} does
        sharp = sharp.set_column(sharp.schema.get_field_index(name), name, pa.array(rng.random(table.num_rows) * 50))
    plain = bopt_groups(write_store(table, str(tmp_path / "plain")))
    with_metrics = bopt_groups(write_store(sharp, str(tmp_path / "sharp")))
    assert len(plain) == 2 * 2 * 2 and with_metrics == plain
    assert sum(status == "ok" for _, status in plain.values()) > 0


def test_steps_taken_are_not_an_axis_under_a_step_budget(tmp_path):
    table = sweep_table(n_trains=(1000, 4000), lrs=(0.05, 0.2), momenta=(0.0, 0.9), seeds=(0, 1, 2),
                        diverge_above=0.2 * 512, seed=2)
    diverged = pc.equal(table.column("status"), "diverged")
    assert pc.sum(diverged).as_py() > 0
    steps = pc.if_else(diverged, pa.scalar(17, pa.int64()), pa.scalar(500, pa.int64()))
    by_steps = table.set_column(table.schema.get_field_index("steps"), "steps", steps)
    by_steps = by_steps.set_column(by_steps.schema.get_field_index("epochs"), "epochs",
                                   pa.nulls(table.num_rows, pa.float64()))
    base = bopt_groups(write_store(table, str(tmp_path / "epochs")))
    assert bopt_groups(write_store(by_steps, str(tmp_path / "steps"))) == base
