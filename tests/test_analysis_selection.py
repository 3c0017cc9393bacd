"""Selection on validation, failed cells, cross-fitting, the clustered bootstrap, input hygiene.

Tables come from :mod:`analysis.testing.simulate` and are then edited to plant the case
each test is about.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

import analysis.tables.cells as cl
from analysis.rules.bopt import find_bopt
from analysis.cli import register
from analysis.fit.curves import fit_learning_curves
from analysis.errors import AnalysisError
from analysis.testing.simulate import LANDSCAPES, Design, simulate
from analysis.testing.synthetic import write_store

SIZES = (100, 200, 400, 800, 1600)


def _curve_table(seed=0, seeds=range(5), sweep="sim", **kw):
    design = Design.grid(n_trains=SIZES, batch_sizes=(8, 16, 32), lrs=(0.03, 0.1, 0.3),
                         momenta=(0.9,), seeds=seeds, **kw)
    return simulate(design, landscape=LANDSCAPES["learning_curve"], seed=seed, sweep=sweep).table


def _set(table, mask, **values):
    """``table`` with ``column = value`` where ``mask``."""
    for name, value in values.items():
        col = np.array(table.column(name).to_pylist(), dtype=object)
        col[mask] = value
        typ = table.schema.field(name).type
        table = table.set_column(table.column_names.index(name), name,
                                 pa.array(col.tolist(), type=typ))
    return table


def _cell(table, n, lr, b):
    n_col = np.array(table.column("n_train").to_pylist())
    lr_col = np.array(table.column("lr").to_pylist())
    b_col = np.array(table.column("batch_size").to_pylist())
    return (n_col == n) & np.isclose(lr_col, lr) & (b_col == b)


def _winner_at(curve, n):
    i = curve.x.index(float(n))
    return curve.chosen[i]["lr"], curve.chosen[i]["batch_size"], curve.y[i]


def test_a_cell_that_wins_on_test_but_loses_on_validation_is_not_selected():
    table = _curve_table()
    [before] = fit_learning_curves(table, metric="error", n_boot=0)
    lr, b, _ = _winner_at(before, 400)
    # a cell that is poor on validation gets a perfect test score
    loser = _cell(table, 400, 0.03, 32) if (lr, b) != (0.03, 32) else _cell(table, 400, 0.3, 8)
    planted = _set(table, loser, test_acc=1.0)
    [after] = fit_learning_curves(planted, metric="error", n_boot=0)
    assert _winner_at(after, 400)[:2] == (lr, b)
    assert after.selection == "chosen on 1 - val_acc, measured on test"
    # without a validation column the same table is cross-fitted, and the planted cell wins
    [blind] = fit_learning_curves(planted.drop_columns(["val_acc", "val_loss"]), metric="error",
                                  n_boot=0)
    assert blind.selection.startswith("cross-fit over seeds (the table has no val_acc column)")
    # ... with error 0, which a log-scale fit cannot take: the point is dropped, naming it
    (zero,) = [d for d in blind.dropped if d["point"] == {"n_train": 400.0}]
    assert (zero["config"]["lr"], zero["config"]["batch_size"]) != (lr, b)
    assert "error = 0 (<= 0)" in zero["reason"] and 400.0 not in blind.x


def test_a_cell_that_diverged_on_4_of_5_seeds_does_not_win():
    table = _curve_table(seed=1)
    [before] = fit_learning_curves(table, metric="error", n_boot=0)
    lr, b, _ = _winner_at(before, 800)
    cell = _cell(table, 800, lr, b)
    seeds = np.array(table.column("seed").to_pylist())
    dead = cell & (seeds > 0)
    planted = _set(table, dead, status="diverged", test_acc=None, val_acc=None, test_loss=None,
                   val_loss=None)
    planted = _set(planted, cell & (seeds == 0), test_acc=1.0, val_acc=1.0)  # a lucky survivor
    [after] = fit_learning_curves(planted, metric="error", n_boot=50)
    assert _winner_at(after, 800)[:2] != (lr, b)
    assert {"point": {"n_train": 800}, "config": {"lr": lr, "batch_size": b},
            "reason": "diverged on 4 of 5 trials"} in after.flagged
    assert after.outcomes["diverged"] == before.outcomes.get("diverged", 0) + 4
    # the same cell in a batch-size scan is left out of the choice too
    scan = find_bopt(planted, metric="test_acc", n_boot=0)
    group = next(g for g in scan.groups if g.key == {"n_train": 800, "lr": lr})
    assert b not in group.batch_sizes and group.b_best != b
    assert any(f["batch_size"] == b for f in group.flagged)


def test_few_seeds_without_validation_are_chosen_on_the_same_seeds_and_say_so():
    table = _curve_table(seeds=range(3)).drop_columns(["val_acc", "val_loss"])
    [curve] = fit_learning_curves(table, metric="test_loss", n_boot=50)
    assert "same seeds" in curve.selection and "optimistic" in curve.selection
    assert curve.fit.interval == "cluster-t"


def test_the_bootstrap_draws_one_seed_set_for_every_cell():
    rng = np.random.default_rng(0)
    level = np.array([[1.0], [2.0], [5.0]])
    seed_effect = rng.normal(0, 1, (1, 6))
    values = level + seed_effect                     # every cell shares the seed effects
    counts = cl.seed_counts(6, 500, rng)
    assert counts.shape == (500, 6) and np.all(counts.sum(1) == 6)
    means = cl.weighted_means(values, counts)
    np.testing.assert_allclose(means[:, 1] - means[:, 0], 1.0)  # differences carry no noise
    np.testing.assert_allclose(means[:, 2] - means[:, 0], 4.0)
    halves = cl.seed_counts(6, 200, rng, strata=cl.halves(6))
    assert np.all(halves[:, ::2].sum(1) == 3) and np.all(halves[:, 1::2].sum(1) == 3)


def test_the_interval_uses_a_t_quantile_and_restores_the_variance_of_a_mean():
    res = cl.resampling(3, "validation")
    assert res.df == 2 and res.scale == pytest.approx(np.sqrt(1.5))
    half = res.half_width(1.0, 0.95)
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * np.sqrt(1.5))
    cross = cl.resampling(10, "cross-fit")
    assert cross.df == 8 and cross.scale == pytest.approx(np.sqrt(10 / 8))


def test_exact_duplicate_rows_are_collapsed_with_a_warning():
    table = _curve_table(seed=2)
    doubled = pa.concat_tables([table, table.slice(0, 40)])
    [clean] = fit_learning_curves(table, metric="error", n_boot=100, seed=1)
    [dup] = fit_learning_curves(doubled, metric="error", n_boot=100, seed=1)
    assert any("collapsed 40 exact duplicate row(s)" in n for n in dup.notes)
    assert dup.y == clean.y and dup.fit.ci_low == clean.fit.ci_low


def test_batches_larger_than_the_training_set_are_flagged():
    design = Design.grid(n_trains=(8, 16, 32, 64), batch_sizes=(4, 8, 16, 32), lrs=(0.03, 0.3),
                         momenta=(0.9,), skip_b_over_n=False)
    table = simulate(design, landscape=LANDSCAPES["learning_curve"], seed=0).table
    [curve] = fit_learning_curves(table, metric="error", n_boot=0)
    assert curve.outcomes["batch > n_train"] == 5 * 2 * (2 + 1)  # (8, 16), (8, 32), (16, 32)
    assert any("batch_size > n_train" in n for n in curve.notes)
    assert all(c["batch_size"] <= x for c, x in zip(curve.chosen, curve.x))
    assert any("batch > n_train" in f["reason"] for f in curve.flagged)


def run(*argv):
    parser = argparse.ArgumentParser(prog="scaling")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("two")
    write_store(_curve_table(seed=3, sweep="alpha"), str(root))
    write_store(_curve_table(seed=4, sweep="beta"), str(root))
    return root


@pytest.mark.parametrize("command", [("fit",), ("bopt",), ("report", "-o", "{tmp}/r.html")])
def test_a_root_with_two_sweeps_is_refused_naming_both(command, two_sweeps, tmp_path, capsys):
    argv = [c.format(tmp=tmp_path) for c in command]
    assert run(argv[0], two_sweeps, *argv[1:], "--boot", "20") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 sweeps (alpha, beta)" in err[0] and "--sweep" in err[0]


def test_sweep_picks_one_and_by_sweep_splits(two_sweeps, tmp_path, capsys):
    assert run("fit", two_sweeps, "--sweep", "beta", "--metric", "error", "--json",
               "--boot", "50") == 0
    [curve] = json.loads(capsys.readouterr().out)["curves"]
    assert curve["fit"] is not None
    assert run("fit", two_sweeps, "--by", "sweep", "--metric", "error", "--json",
               "--boot", "50") == 0
    curves = json.loads(capsys.readouterr().out)["curves"]
    assert [c["group"] for c in curves] == [{"sweep": "alpha"}, {"sweep": "beta"}]
    assert run("bopt", two_sweeps, "--by", "sweep", "--json", "--boot", "20") == 0
    groups = json.loads(capsys.readouterr().out)["groups"]
    assert {g["group"]["sweep"] for g in groups} == {"alpha", "beta"}
    assert run("report", two_sweeps, "--sweep", "alpha", "-o", tmp_path / "a.html",
               "--boot", "20") == 0
    assert run("report", two_sweeps, "--by", "sweep", "-o", tmp_path / "b.html",
               "--boot", "20") == 0
    assert "sweep=beta" in (tmp_path / "b.html").read_text()
    assert run("fit", two_sweeps, "--sweep", "gamma") == 2
    assert "no sweep 'gamma'; the table holds: alpha, beta" in capsys.readouterr().err


def test_prepare_refuses_pooled_sweeps_in_the_api():
    both = pa.concat_tables([_curve_table(sweep="a"), _curve_table(sweep="b")])
    with pytest.raises(AnalysisError, match=r"2 sweeps \(a, b\)"):
        fit_learning_curves(both)
    with pytest.raises(AnalysisError, match="sweeps"):
        find_bopt(both)
