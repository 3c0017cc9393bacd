"""Calibration on the realistic simulator: interval coverage, verdict rates, the winner's curse.

Every sweep here comes from :mod:`analysis.testing.simulate` (shared seed effects, asymmetric
optima, divergence, accuracy quantised to 1/297, optima near the grid edges), with the
designs of ``configs/learning_curve.yaml`` and ``configs/bopt_rule.yaml`` and the noise
presets measured on the digits sweeps of ``make reproduce``. The rule's tests run on the
``shifted`` preset too: a seed also moves the optimum of every group at one N (sd 0.25 in
ln B) and trial luck is t3, which group-independent intervals miss (issue 24). Each run uses
fixed seeds, so the rates are exact for this code; the windows (92-98 % for a 95 % interval)
are what the issue asks, about two binomial sds around 95 % at 400 replications.

Power (binomial arithmetic): at 400 replications an interval whose true coverage is 85 %
reaches 368 (92 %) with probability P(Bin(400, 0.85) >= 368) ~ 6e-5 (mean 340, sd 7.1), so
the window fails it with probability > 0.999; a true 95 % lands in [368, 392] with
probability 0.996.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis.rules.bopt import find_bopt
from analysis.fit.curves import fit_learning_curves
from analysis.bench.calibration import run
from analysis.testing.simulate import LANDSCAPES, PRESETS, Design, design_from_config, simulate

ROOT = Path(__file__).resolve().parents[1]
REPS = 400
BOOT = 200
AXES = {"lr": "lr", "n_train": "n_train", "1/(1-momentum)": "momentum"}


@pytest.fixture(scope="module")
def curve_design():
    return design_from_config(str(ROOT / "configs" / "learning_curve.yaml"))


@pytest.fixture(scope="module")
def rule_design():
    return design_from_config(str(ROOT / "configs" / "bopt_rule.yaml"))


def _curve_runs(design, preset: str, base: int) -> dict:
    land = LANDSCAPES["learning_curve"]
    b, lo, hi, failed = [], [], [], 0
    for rep in range(REPS):
        sim = simulate(design, landscape=land, noise=preset, seed=base + rep)
        [curve] = fit_learning_curves(sim.table, metric="error", offset=False, n_boot=BOOT,
                                      holdout=0, seed=rep)
        v, low, high = curve.fit.param("b")
        b.append(v), lo.append(low), hi.append(high)
        failed += curve.fit.n_boot_failed
    return {"b": np.array(b), "lo": np.array(lo), "hi": np.array(hi), "failed": failed,
            "truth": land.curve[1], "oracle": sim.truth.oracle_exponent(),
            "selection": curve.selection}


def _rule_runs(design, preset: str, base: int) -> dict:
    land = LANDSCAPES["rule"]
    truth_b: dict = {}
    exps = {a: [] for a in AXES.values()}
    labels, b_hits, b_n = [], 0, 0
    for rep in range(REPS):
        sim = simulate(design, landscape=land, noise=preset, seed=base + rep)
        result = find_bopt(sim.table, n_boot=BOOT, seed=rep)
        labels.append(result.rule.verdict.label)
        for e in result.rule.exponents:
            exps[AXES[e.name]].append((e.value, e.ci_low, e.ci_high))
        for g in result.groups:
            if g.status != "ok" or not np.isfinite(g.ci_low):
                continue
            key = (g.n_train, g.lr, g.momentum)
            if key not in truth_b:  # the truth does not depend on the replication
                truth_b[key] = np.exp(sim.truth.log_b_opt(*key, width=128.0))
            b_n += 1
            b_hits += g.ci_low <= truth_b[key] <= g.ci_high
    truth = sim.truth.exponents
    cover = {a: float(np.mean([lo <= truth[a] <= hi for _, lo, hi in v])) for a, v in exps.items()}
    return {"cover": cover, "n": {a: len(v) for a, v in exps.items()}, "labels": labels,
            "b_cover": b_hits / b_n, "b_n": b_n,
            "mean": {a: float(np.mean([x for x, _, _ in v])) for a, v in exps.items()}}


@pytest.fixture(scope="module")
def curves_digits(curve_design):
    return _curve_runs(curve_design, "digits", 10_000)


@pytest.fixture(scope="module")
def curves_noisy(curve_design):
    return _curve_runs(curve_design, "noisy", 20_000)


@pytest.fixture(scope="module")
def rule_digits(rule_design):
    return _rule_runs(rule_design, "digits", 30_000)


@pytest.fixture(scope="module")
def rule_shifted(rule_design):
    """400 replications with the rule exactly true, on the shifted preset (module docstring)."""
    return run("shifted", REPS, boot=BOOT, des=rule_design)


@pytest.mark.slow
@pytest.mark.parametrize("runs", ["curves_digits", "curves_noisy"])
def test_learning_curve_exponent_interval_covers_the_truth(runs, request):
    r = request.getfixturevalue(runs)
    assert r["selection"].startswith("chosen on 1 - val_acc")
    assert abs(r["oracle"] - r["truth"]) < 1e-3  # the best cell is the same at every N
    cover = float(np.mean((r["lo"] <= r["truth"]) & (r["truth"] <= r["hi"])))
    assert 0.92 <= cover <= 0.98, (runs, cover)
    assert r["failed"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("runs", ["curves_digits", "curves_noisy"])
def test_winners_curse_is_gone_when_selecting_on_validation(runs, request):
    """Mean fitted exponent over the first 200 replications within 0.02 of the oracle's."""
    r = request.getfixturevalue(runs)
    mean = float(np.mean(r["b"][:200]))
    assert abs(mean - r["oracle"]) <= 0.02, (runs, mean, r["oracle"])


def test_choosing_on_the_test_set_shows_the_curse_this_guards_against(curve_design):
    """The same check fails when winners are chosen on the numbers that measure them."""
    b = []
    for rep in range(200):
        t = simulate(curve_design, landscape=LANDSCAPES["learning_curve"], noise="noisy",
                     seed=20_000 + rep).table
        t = t.set_column(t.column_names.index("val_acc"), "val_acc", t.column("test_acc"))
        [curve] = fit_learning_curves(t, metric="error", offset=False, n_boot=0, holdout=0)
        b.append(curve.fit.param("b")[0])
    assert np.mean(b) < -0.75 - 0.02, np.mean(b)  # steeper than the oracle's -0.75


@pytest.mark.slow
@pytest.mark.parametrize("runs", ["rule_digits", "rule_shifted"])
def test_b_opt_and_rule_exponent_intervals_cover_the_truth(runs, request):
    r = request.getfixturevalue(runs)
    assert r["b_n"] > 10 * REPS
    assert 0.92 <= r["b_cover"] <= 0.98, (runs, r["b_cover"])
    for axis, cover in r["cover"].items():
        assert r["n"][axis] == REPS
        assert 0.92 <= cover <= 0.98, (runs, axis, cover, r.get("mean"))


@pytest.mark.slow
def test_a_tight_margin_does_not_call_a_true_rule_inconsistent_under_shared_seed_shifts(
        rule_shifted):
    """--margin 0.1 on an exact rule: inconsistent in <= 5 % of 400 sweeps (it was 24.5 % when
    the joint test treated groups as independent)."""
    assert rule_shifted["share"][0.1]["inconsistent"] <= 0.05, rule_shifted["share"]
    assert rule_shifted["share"][0.25]["inconsistent"] <= 0.05, rule_shifted["share"]


@pytest.mark.slow
def test_exact_rule_is_called_consistent(rule_digits):
    """The power to confirm an exact rule (every exponent's interval inside 1 +- 0.25) with 5
    seeds, digits noise: 88.3 % of 400 sweeps since the rule's bootstrap sd carries the
    small-cluster factor sqrt(5/4) (>= 90 % before, with intervals that covered the n_train
    exponent only 90-91 % on fresh replications). The floor, 85 %, is two binomial sds (1.6 %)
    under that: honest intervals cost some of the power to confirm."""
    share = rule_digits["labels"].count("consistent") / REPS
    assert share >= 0.85, share


@pytest.mark.parametrize("noise", ["digits", pytest.param("shifted", marks=pytest.mark.slow)])
def test_rule_without_n_dependence_is_inconsistent_naming_n_train(rule_design, noise):
    """The wider intervals keep the power: N-independent optima are still named (n_train) in
    >= 95 of 100 sweeps, with or without the seed-level shift of the optimum."""
    reps, named = 100, 0
    for rep in range(reps):
        sim = simulate(rule_design, landscape=LANDSCAPES["no_n"], noise=noise, seed=50_000 + rep)
        v = find_bopt(sim.table, n_boot=BOOT, seed=rep).rule.verdict
        named += v.label == "inconsistent" and "n_train" in v.axes
    assert named >= 0.95 * reps, named


def test_six_groups_of_three_seeds_are_inconclusive(rule_design):
    keep = {(400, .25, 0), (400, .25, .9), (400, 1, 0), (1200, .25, .9), (1200, 1, 0),
            (1200, 1, .9)}
    design = Design(configs=tuple(c for c in rule_design.configs if (c[0], c[2], c[3]) in keep),
                    seeds=(0, 1, 2))
    assert {(c[0], c[2], c[3]) for c in design.configs} == keep  # 6 groups, every axis varying
    reps, labels = 100, []
    for rep in range(reps):
        sim = simulate(design, landscape=LANDSCAPES["rule"], seed=60_000 + rep)
        v = find_bopt(sim.table, n_boot=BOOT, seed=rep).rule.verdict
        labels.append(v.label)
        if v.label == "inconclusive":
            assert "underpowered" in v.reason or "does not vary" in v.reason or \
                "need at least" in v.reason, v.reason
    assert labels.count("consistent") <= 0.10 * reps, labels.count("consistent")
    assert labels.count("inconclusive") >= 0.85 * reps, labels.count("inconclusive")


def test_presets_are_named_noise_levels():
    assert set(PRESETS) == {"digits", "noisy", "shifted"}
    assert PRESETS["shifted"].opt_shift_sd == 0.25 and PRESETS["shifted"].trial_df == 3
    assert PRESETS["noisy"].seed_sd > PRESETS["digits"].seed_sd


@pytest.mark.slow
def test_b_opt_is_unbiased_on_an_optimum_three_times_steeper_towards_small_batches(rule_design):
    """A split-parabola bowl, log error rising 3x faster below the optimum than above (the
    audit's case, where the 3-point vertex is off by +0.16 in ln B with no noise), shifted
    preset: over 100 sweeps (~2,200 interior groups) the mean error of ln B_opt is within 0.05
    and >= 90 % of per-group 95 % intervals cover. Even counting each sweep's ~22 groups as one
    (100 effective draws), a true coverage of 85 % reaches 90 % with probability
    P(Bin(100, 0.85) >= 90) ~ 0.07, so it fails with probability >= 0.93."""
    r = run("steep", 100, boot=BOOT, des=rule_design)
    assert r["b_n"] > 15 * 100
    assert abs(r["b_bias"]) <= 0.05, r
    assert r["b_cover"] >= 0.90, r
