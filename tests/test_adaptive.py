"""Adaptive sweeps (issue 28): the config, the plan (analysis.plan.adaptive) on simulated sweeps,
and the rounds on real local Ray through the real CLI, killed mid-round and resumed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import ROOT, ray_trial_pids, run_cli_here, write_config

from analysis.plan.adaptive import plan_round
from analysis.plan.replay import grid_of, replay
from analysis.rules.bopt import find_bopt
from analysis.testing.simulate import LANDSCAPES, Design, simulate
from scaling.config.sweep import config_from_text
from scaling.errors import ConfigError
from scaling.store.writer import Store

BOPT_DESIGN = Design.grid(n_trains=(200, 400, 800, 1200), batch_sizes=[2 ** i for i in range(11)],
                          lrs=(0.25, 0.5, 1.0), momenta=(0.0, 0.9), seeds=range(5))
"""configs/bopt_rule.yaml's grid (24 groups, 11 batch sizes, 5 seeds)."""


@pytest.fixture(scope="module")
def sims():
    return [simulate(BOPT_DESIGN, landscape=LANDSCAPES["rule"], seed=s) for s in range(4)]


BASE = (ROOT / "configs" / "bopt_rule.yaml").read_text()


@pytest.mark.parametrize("search, key", [
    ("{kind: adaptive, rounds: 0}", "search.rounds"),
    ("{kind: adaptive, rounds: 2.5}", "search.rounds"),
    ("{kind: adaptive, budget: 1.5}", "search.budget"),
    ("{kind: adaptive, budget: '0.3'}", "search.budget"),
    ("{kind: adaptive, budget: {steps: 0}}", "search.budget.steps"),
    ("{kind: adaptive, budget: {fraction: 0.3}}", "search.budget"),
    ("{kind: adaptive, rnds: 2}", "search.rnds"),
    ("{rounds: 2}", "search.rounds"),
    ("{kind: random, budget: 0.3}", "search.budget"),
    ("{kind: adaptiv}", "search.kind"),
])
def test_a_bad_adaptive_search_is_one_line_naming_the_key(search, key):
    with pytest.raises(ConfigError) as e:
        config_from_text(BASE + f"search: {search}\n")
    assert f"'{key}'" in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_an_adaptive_sweep_needs_several_batch_sizes():
    fixed = BASE.replace("batch_size: {log2: [1, 1024]}", "batch_size: 32")
    assert "batch_size: 32" in fixed
    with pytest.raises(ConfigError, match="'search.kind': 'adaptive' needs a batch_size axis"):
        config_from_text(fixed + "search: {kind: adaptive}\n")
    config_from_text(fixed)  # a grid without one is fine


def test_an_adaptive_config_has_the_full_grids_trials_and_budget():
    full = config_from_text(BASE)
    adaptive = config_from_text(BASE + "search: {kind: adaptive, rounds: 4, budget: 0.25}\n")
    assert sorted(t.trial_id for t in adaptive.trials()) == sorted(t.trial_id for t in full.trials())
    assert adaptive.search.n_rounds == 4 and adaptive.search.budget_steps(1000) == 250
    steps = config_from_text(BASE + "search: {kind: adaptive, budget: {steps: 12345}}\n")
    assert steps.search.n_rounds == 3 and steps.search.budget_steps(10 ** 9) == 12345
    pruned = config_from_text(BASE + "search: {kind: adaptive, prune: {rungs: [0.2], keep: 0.5}}\n")
    assert pruned.search.prune.keep == 0.5 and pruned.trials()[0].eval["prune"]["rungs"] == [0.2]


def test_a_plan_reads_only_the_trials_of_earlier_rounds_and_is_the_same_bytes(sims):
    """Round 2's plan from the rows of rounds 0 and 1, whatever else is stored (a killed round's
    own trials, trials of another sweep of the grid), in any row order: the same bytes."""
    full = sims[0].table
    grid = grid_of(full)
    budget = int(pc.sum(grid.column("steps")).as_py() / 3)
    earlier = []
    for k in range(2):
        plan = plan_round(grid, full, round_index=k, rounds=3, budget_steps=budget, earlier=earlier)
        earlier += [t["trial_id"] for t in plan.trials]
    only_earlier = full.filter(pc.is_in(full.column("trial_id"), pa.array(earlier)))
    shuffled = full.take(np.random.default_rng(1).permutation(full.num_rows))
    a = plan_round(grid, only_earlier, round_index=2, rounds=3, budget_steps=budget, earlier=earlier)
    b = plan_round(grid, shuffled, round_index=2, rounds=3, budget_steps=budget, earlier=earlier)
    assert a.to_json() == b.to_json()
    ids = [t["trial_id"] for t in a.trials]
    assert ids and not set(ids) & set(earlier) and set(ids) <= set(grid.column("trial_id").to_pylist())
    assert a.planned_steps <= budget
    assert all(t["reason"] for t in a.trials)
    data = json.loads(a.to_json())
    assert data["fits"]["verdict"]["label"] in ("consistent", "inconsistent", "inconclusive")
    assert {e["name"] for e in data["fits"]["exponents"]} == {"lr", "n_train", "1/(1-momentum)"}


def test_round_0_is_the_coarse_grid_cheapest_first(sims):
    grid = grid_of(sims[0].table)
    total = int(pc.sum(grid.column("steps")).as_py())
    plan = plan_round(grid, None, round_index=0, rounds=3, budget_steps=total // 3)
    b = {t["batch_size"] for t in plan.trials}
    assert b <= {1, 4, 16, 64, 256, 1024} and 1024 in b, b  # every other batch size, the largest included
    dear = {t["n_train"] for t in plan.trials if t["batch_size"] == 1}
    assert dear and 1200 not in dear, dear  # cheapest first: B = 1 only at small N
    assert {t["n_train"] for t in plan.trials} == {200, 400, 1200}
    assert {t["seed"] for t in plan.trials} == {0, 1, 2}
    assert plan.planned_steps <= total // 9


@pytest.mark.slow
def test_adaptive_reaches_the_full_grids_rule_at_a_third_of_its_steps(sims):
    """The cheap version of `python -m cluster.bench.adaptive --simulate` (docs/adaptive.md quotes
    200-600 replications): on the simulator's rule landscape (asymmetric Linex bowl, seed effects
    shared across groups, collapse to chance below the optimum: not the rule fit's own model), 4 replications of
    3 rounds within a third of the grid's steps. Each replication: at most 1/3 of the steps,
    the same verdict, and the exponents' interval width at most 1.25x the full grid's on
    average. Coverage of the 12 true exponents: >= 10 (at the nominal 95%, P(<= 9 of 12) = 2%)."""
    ratios, hits = [], 0
    for sim in sims:
        rep = replay(sim.table, rounds=3, budget=1 / 3, metric="error")
        assert rep.share <= 1 / 3
        full = find_bopt(sim.table, metric="error", n_boot=400)
        ad = find_bopt(rep.table, metric="error", n_boot=400)
        assert ad.rule.verdict.label == full.rule.verdict.label
        truth = {"lr": 1.0, "n_train": 1.0, "1/(1-momentum)": 1.0}
        for f, a in zip(full.rule.exponents, ad.rule.exponents):
            ratios.append((a.ci_high - a.ci_low) / (f.ci_high - f.ci_low))
            hits += a.ci_low <= truth[a.name] <= a.ci_high
    assert np.mean(ratios) <= 1.25, ratios
    assert hits >= 10, hits


AD = """
name: ad
task: {{name: digits}}
model: {{name: mlp, width: 32, depth: 1}}
axes:
  n_train: [100, 200, 400]
  batch_size: {{log2: [2, 32]}}
  lr: [0.25, 0.5]
  momentum: [0.0, 0.9]
  seed: [0, 1]
budget: {{epochs: {epochs}}}
eval: {{points: 3}}
search: {{kind: adaptive, rounds: 3, budget: 0.4}}
engine: packed
packing: {{max_members: 4}}
resources: {{cpu: 1}}
"""


def test_a_dry_run_of_an_adaptive_sweep_shows_round_1_not_the_grid(tmp_path):
    """`scaling sweep --dry-run` of an adaptive config: its budget, round 1's trials (the coarse
    grid, as plan_round plans it from a grid built here from the config's trials) and their units;
    the later rounds said to depend on results; nothing written. The same config as a plain grid
    shows every trial."""
    text = AD.format(epochs=3)
    results = tmp_path / "r"
    dry = run_cli_here("sweep", str(write_config(tmp_path, text)), "--results", str(results), "--dry-run",
                       "--num-cpus", "2")
    assert dry.returncode == 0, dry.stderr
    out = " ".join(dry.stdout.split())  # lines are wrapped at the terminal's width
    cfg = config_from_text(text)
    trials = cfg.trials()
    grid = pa.table({"trial_id": [t.trial_id for t in trials], "steps": [t.total_steps for t in trials],
                     **{a: [getattr(t, a) for t in trials] for a in ("n_train", "batch_size", "lr", "momentum", "seed")}})
    steps = sum(t.total_steps for t in trials)
    plan = plan_round(grid, None, round_index=0, rounds=3, budget_steps=int(0.4 * steps))
    first = len(plan.trials)
    assert 0 < first < len(trials)
    assert f"adaptive sweep 'ad': 3 rounds within {int(0.4 * steps):,} training steps" in out, out
    assert "round 1 of 3: " in out and "coarse grid" in out and "rounds 2-3 are planned from the results" in out
    assert f"round 1 of sweep 'ad': {first} of its {len(trials)} trials, 0 already stored, {first} to run" in out
    assert f"steps: {sum(t['steps'] for t in plan.trials):,} over the trials" in out, out
    assert not results.exists(), "a dry run writes nothing"
    grid_text = text.replace("search: {kind: adaptive, rounds: 3, budget: 0.4}\n", "")
    plain = run_cli_here("sweep", str(write_config(tmp_path, grid_text, "grid.yaml")), "--results", str(results),
                         "--dry-run", "--num-cpus", "2")
    assert f"sweep 'ad': {len(trials)} trials, 0 already stored, {len(trials)} to run" in plain.stdout
    assert "round 1" not in plain.stdout


def _plans(results) -> dict:
    folder = results / "ad" / "plans"
    return {p.name: p.read_bytes() for p in sorted(folder.glob("round-*.json"))} if folder.exists() else {}


def _raw_ids(results) -> list:
    return [r["trial_id"] for r in Store(str(results)).raw_table("trials").to_pylist() if r["sweep"] == "ad"]


@pytest.mark.slow
@pytest.mark.serial  # a local Ray and a killed driver: in an xdist Ray group (conftest)
def test_a_sigkilled_adaptive_sweep_replans_identically_and_stores_each_trial_once(tmp_path):
    """The driver is SIGKILLed by PID in the middle of round 2; its plan files are then removed, so
    the rerun plans every round again from the store: the same bytes, and every planned trial has
    exactly one raw row (none outside the plans). A third run replans the same and runs nothing;
    `scaling status` shows the last round."""
    config = write_config(tmp_path, AD.format(epochs=3))
    results = tmp_path / "r"
    dry = run_cli_here("sweep", str(config), "--results", str(results), "--dry-run")  # round 1, as the run plans it
    assert dry.returncode == 0, dry.stderr
    cmd = [sys.executable, "-m", "cluster.cli", "sweep", str(config), "--results", str(results), "--quiet"]
    driver = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, killed = time.monotonic() + 240, False
    while not killed and time.monotonic() < deadline and driver.poll() is None:
        if "round-1.json" in _plans(results) and ray_trial_pids(driver.pid):
            os.kill(driver.pid, signal.SIGKILL)
            killed = True
        time.sleep(0.05)
    driver.communicate(timeout=60)
    assert killed, "saw round 2 running"
    before = _plans(results)
    round1 = [t["trial_id"] for t in json.loads(before["round-1.json"])["trials"]]
    stored = set(_raw_ids(results))
    assert round1 and not set(round1) <= stored, "killed mid-round: some of round 2's trials unstored"
    for name in before:
        (results / "ad" / "plans" / name).unlink()
    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    after = _plans(results)
    assert set(after) == {"round-0.json", "round-1.json", "round-2.json"}
    assert all(after[name] == data for name, data in before.items()), "replanned identically"
    first = json.loads(after["round-0.json"])
    shown = " ".join(dry.stdout.split())
    assert (f"round 1 of sweep 'ad': {first['n_trials']} of its {first['grid_trials']} trials" in shown
            and f"steps: {first['round_steps']:,} over the trials" in shown), shown
    planned = [t["trial_id"] for data in after.values() for t in json.loads(data)["trials"]]
    assert len(planned) == len(set(planned))
    assert sorted(_raw_ids(results)) == sorted(planned), "each planned trial stored exactly once"
    third = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert third.returncode == 0, third.stderr[-2000:]
    assert third.stdout.count("replanned the same trials as recorded") == 3, third.stdout
    assert "ran 0 trials" in third.stdout and sorted(_raw_ids(results)) == sorted(planned)
    status = run_cli_here("status", str(results))
    assert status.returncode == 0, status.stderr
    row = status.stdout.splitlines()[2].split()
    assert row[:1] == ["ad"] and "round 3/3" in status.stdout, status.stdout
    assert row[6:8] == [str(len(planned)), "0"], status.stdout  # in_config: the planned trials; none pending
    page = tmp_path / "report.html"  # the report shows the rounds as recorded
    report = run_cli_here("report", str(results), "-o", str(page), "--boot", "20")
    assert report.returncode == 0, report.stderr
    html = page.read_text()
    plans = [json.loads(after[f"round-{k}.json"]) for k in range(3)]
    assert f"3 of 3 rounds planned: {len(planned)} of {plans[-1]['grid_trials']} grid trials" in html
    assert f"{len(planned)} of the planned trials are stored" in html
    for plan in plans:
        share = plan["planned_steps"] / plan["grid_steps"]
        assert (f"<tr><td>{plan['round'] + 1}</td><td>{plan['n_trials']}</td><td>{plan['round_steps']:,}</td>"
                f"<td>{plan['planned_steps']:,} ({share:.1%})</td>") in html


def test_the_simulator_bench_counts_what_it_prints(tmp_path, capsys):
    """`python -m cluster.bench.adaptive --simulate 2 --boot 20 --json FILE`: the JSON's counts agree
    with each other and with the table printed (coverage = count / replications; the verdict pairs
    add up to the replications, the same-verdict ones to `same_verdict`)."""
    from cluster.bench.adaptive import main

    out = tmp_path / "sim.json"
    assert main(["--simulate", "2", "--boot", "20", "--noise", "shifted", "--first-seed", "1003",
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    text = capsys.readouterr().out
    assert res["reps"] == 2 and res["first_seed"] == 1003 and res["n_boot"] == 20 and "seeds 1003-1004" in text
    assert sum(res["verdicts"].values()) == 2
    assert res["same_verdict"] == sum(n for k, n in res["verdicts"].items() if len(set(k.split(" -> "))) == 1)
    assert 0 < res["share_mean"] <= res["share_max"] <= 1 / 3 + 1e-9
    for name in ("lr", "n_train", "1/(1-momentum)"):
        a = res["axes"][name]
        for kind in ("full", "adaptive"):
            assert 0 <= a[f"covered_{kind}"] <= 2 and a[f"coverage_{kind}"] == a[f"covered_{kind}"] / 2
            assert f"{a[f'coverage_{kind}']:.1%} ({a[f'covered_{kind}']}/2)" in text
