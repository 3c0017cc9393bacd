"""The simulator has the features its docstring promises, and its truth is where it says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis import tables
from analysis.testing.simulate import LANDSCAPES, Design, design_from_config, linex, simulate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sim():
    design = Design.grid(n_trains=(200, 400, 800, 1600), batch_sizes=2 ** np.arange(11),
                         lrs=(0.25, 0.5, 1.0), momenta=(0.0, 0.9))
    return simulate(design, landscape=LANDSCAPES["rule"], seed=0)


def test_columns_match_the_store_plus_validation(sim):
    from scaling.spec.schema import TRIALS_SCHEMA

    names = set(sim.table.column_names)
    assert {"val_loss", "val_acc", "optimizer"} <= names
    assert {f.name for f in TRIALS_SCHEMA if not f.name.startswith("sharpness")} <= names
    assert set(sim.table.column("optimizer").to_pylist()) == {"sgd"}
    assert "val_acc" not in simulate(Design.grid(n_trains=(100,), batch_sizes=(8,), lrs=(0.1,)),
                                     validation=False).table.column_names


def test_accuracy_is_quantised_to_the_evaluation_set_size(sim):
    fr = tables.frame(sim.table)
    ok = np.isfinite(fr["test_acc"])
    for col, n in (("test_acc", 297), ("val_acc", 300)):
        counts = (1.0 - fr[col][ok]) * n
        np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)


def test_batches_above_n_train_are_not_generated_and_trials_diverge_at_small_batch(sim):
    fr = tables.frame(sim.table)
    assert np.all(fr["batch_size"] <= fr["n_train"])
    status = tables.status(fr)
    div = status == "diverged"
    assert div.any() and np.all(np.isnan(fr["test_acc"][div]))
    # divergence is at large lr/B: below the optimum, never far above it
    ratio = fr["lr"] / ((1 - fr["momentum"]) * fr["batch_size"])
    assert np.median(ratio[div]) > 4 * np.median(ratio[~div])
    collapsed = (status == "ok") & (fr["test_acc"] < 0.2)
    assert collapsed.any()  # most unstable runs are recorded ok at chance, as on digits


def test_a_seed_effect_is_shared_by_every_cell_of_one_size():
    design = Design.grid(n_trains=(400,), batch_sizes=(16, 32, 64), lrs=(0.25, 0.5, 1.0),
                         seeds=range(40))
    fr = tables.frame(simulate(design, seed=1, noise="noisy").table)
    err = np.log(np.maximum(1 - fr["test_acc"], 0.5 / 297))
    cell = fr["batch_size"] * 10 + fr["lr"]
    resid = err.copy()
    for c in np.unique(cell):
        resid[cell == c] -= resid[cell == c].mean()
    per_seed = np.array([resid[fr["seed"] == s].mean() for s in range(40)])
    assert per_seed.std() > 0.2  # the noisy preset's seed sd is 0.3


def test_the_optimum_is_asymmetric_and_the_truth_is_its_argmin(sim):
    assert linex(-0.7, 0.6, 1.5) > 1.5 * linex(0.7, 0.6, 1.5)  # steeper towards small B
    truth = sim.truth.log_b_opt(800, 0.5, 0.0)
    assert truth == pytest.approx(np.log(0.04 * 0.5 * 800), abs=0.01)
    assert sim.truth.exponents == {"lr": 1.0, "n_train": 1.0, "momentum": 1.0}


def test_the_reproduce_configs_give_designs(tmp_path):
    d = design_from_config(str(ROOT / "configs" / "bopt_rule.yaml"))
    assert len(d.seeds) >= 3 and all(b <= n for n, b, *_ in d.configs)
    lc = simulate(design_from_config(str(ROOT / "configs" / "learning_curve.yaml")),
                  landscape=LANDSCAPES["learning_curve"], seed=0)
    assert lc.truth.oracle_exponent() == pytest.approx(-0.75, abs=1e-3)
