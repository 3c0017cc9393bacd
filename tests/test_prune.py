"""Early stopping inside packs (scaling.training.prune): the config, the rule, the loop, the store."""

from __future__ import annotations

import math

import pytest

from cluster.worker.peers import store_peers
from scaling.config.sweep import config_from_text
from scaling.errors import ConfigError
from scaling.store.writer import Store
from scaling.training.prune import Pruner, pruned_rung, rung_steps
from scaling.training.run import run_pack

SWEEP = """
name: pr
task: {{name: digits}}
model: {{name: mlp, width: 32, depth: 1}}
axes: {{n_train: [200], batch_size: {batch}, lr: [0.01, 0.03, 0.1, 0.3, 1.0, 3.0], seed: [0, 1]}}
budget: {{epochs: 10}}
eval: {{points: 3}}
{search}
"""
PRUNE = "search: {prune: {rungs: [0.2, 0.5], keep: 0.34, bowl: 1}}"


def sweep(batch="[16]", search=PRUNE):
    return config_from_text(SWEEP.format(batch=batch, search=search))


@pytest.mark.parametrize("prune, key", [
    ("{rungs: [0.3, 0.1]}", "search.prune.rungs"), ("{rungs: [0.1, 1.0]}", "search.prune.rungs"),
    ("{rungs: 0.1}", "search.prune.rungs"), ("{keep: 1.5}", "search.prune.keep"),
    ("{keep: '0.3'}", "search.prune.keep"), ("{metric: loss}", "search.prune.metric"),
    ("{group_by: [seed]}", "search.prune.group_by"), ("{group_by: [batch_size]}", "search.prune.group_by"),
    ("{group_by: [widht]}", "search.prune.group_by"), ("{bowl: -1}", "search.prune.bowl"),
    ("{rung: [0.1]}", "search.prune.rung"), ("[0.1]", "search.prune")])
def test_bad_prune_configs_are_one_line_naming_the_key(prune, key):
    with pytest.raises(ConfigError) as e:
        sweep(search=f"search: {{prune: {prune}}}")
    assert e.value.key == key and "\n" not in str(e.value)


def test_the_rule_rides_in_the_trial_and_sets_the_rung_steps():
    plain, pruned = sweep(search="").trials()[0], sweep().trials()[0]
    assert "prune" not in plain.eval and plain.trial_id != pruned.trial_id
    rule = pruned.eval["prune"]
    assert rule["grid"] == {"batch_size": [16], "lr": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]}
    assert pruned.total_steps == 125 and rung_steps(pruned) == [(0, 25), (1, 62)]


def _board(values: dict, keep=0.34, bowl=1, metric="val_loss"):
    """A Pruner whose board holds one group: {(batch_size, lr): [value per seed]}."""
    cfg = config_from_text(SWEEP.format(batch="[2, 4, 8, 16, 32, 64, 128]", search=(
        f"search: {{prune: {{rungs: [0.2], keep: {keep}, bowl: {bowl}, metric: {metric}}}}}")))
    trials = {(t.batch_size, t.lr, t.seed): t for t in cfg.trials()}
    pruner = Pruner(next(iter(trials.values())).eval["prune"])
    for (b, lr), vs in values.items():
        for seed, v in enumerate(vs):
            pruner.post(trials[(b, lr, seed)], 0, v)
    return pruner, trials


def test_keep_the_best_fraction_and_the_bowl_around_the_best():
    # one lr, seven batch sizes; means 1.0 (B=2) ... ; best at B=32 (0.1), then B=4 (0.2)
    means = {2: 0.9, 4: 0.2, 8: 0.5, 16: 0.6, 32: 0.1, 64: 0.7, 128: 0.8}
    pruner, trials = _board({(b, 0.1): [m - 0.01, m + 0.01] for b, m in means.items()})
    stopped = {b for b in means if pruner._stop(trials[(b, 0.1, 0)], 0, means[b], 25)}
    # floor(0.34 * 7) = 2 kept by rank (32, 4), and 16 and 64 next to the best: never pruned
    assert stopped == {2, 8, 128}
    pruner, trials = _board({(b, 0.1): [m, m] for b, m in means.items()}, bowl=0)
    assert {b for b in means if pruner._stop(trials[(b, 0.1, 0)], 0, means[b], 25)} == {2, 8, 16, 64, 128}


def test_seeds_are_averaged_and_accuracies_ranked_larger_first():
    # B=4 has the best seed (0.05) but the worse mean: ranked on the mean, it is the one stopped
    values = {(4, 0.1): [0.05, 0.95], (32, 0.1): [0.3, 0.3], (128, 0.1): [0.35, 0.35]}
    pruner, trials = _board(values, keep=0.34, bowl=0)
    assert pruner._stop(trials[(4, 0.1, 0)], 0, 0.5, 25)
    assert not pruner._stop(trials[(32, 0.1, 0)], 0, 0.3, 25)
    pruner, trials = _board(values, keep=0.34, bowl=0, metric="val_acc")
    assert not pruner._stop(trials[(4, 0.1, 0)], 0, 0.5, 25)  # the largest accuracy is the best


def test_too_few_configurations_at_a_rung_stop_nothing():
    pruner, trials = _board({(4, 0.1): [0.9, 0.9], (32, 0.1): [0.1, 0.1]}, bowl=0)
    assert pruner.min_configs == 3
    assert not pruner._stop(trials[(4, 0.1, 0)], 0, 0.9, 25)


@pytest.mark.slow  # two packs of 12 (19 s under load)
def test_a_pack_stops_members_at_their_rung_and_the_survivors_train_as_without_pruning():
    pruned = run_pack(sweep().trials())
    full = {r["trial"]["trial_id"]: r for r in run_pack(sweep(search="").trials())}
    by_cfg = {(r["trial"]["lr"], r["trial"]["seed"]): r for r in full.values()}
    statuses = [r["trial"]["status"] for r in pruned]
    assert statuses.count("pruned") >= 4 and statuses.count("ok") >= 2
    for r in pruned:
        t = r["trial"]
        seeds = [x["trial"]["status"] for x in pruned if x["trial"]["lr"] == t["lr"]]
        assert len(set(seeds)) == 1, "the seeds of a configuration stop together"
        if t["status"] == "pruned":
            assert pruned_rung(t["error"]) in (1, 2) and t["steps"] in (25, 62)
            assert r["curves"][-1]["step"] == t["steps"] and math.isnan(t["val_loss"])
        else:
            assert t["steps"] == 125 and {25, 62} <= {c["step"] for c in r["curves"]}
            # extra evals at the rungs change no training: the same final loss as the full grid's
            assert t["val_loss"] == pytest.approx(by_cfg[(t["lr"], t["seed"])]["trial"]["val_loss"], rel=1e-5)


def test_a_later_pack_is_ranked_against_the_stored_members_of_its_group(tmp_path):
    """Batch size 16 trains first and is stored; a pack of batch size 32 then reaches its rungs
    with the stored configurations on the board (peers read through a real store view)."""
    cfg = sweep(batch="[16, 32]")
    first = [t for t in cfg.trials() if t.batch_size == 16]
    second = [t for t in cfg.trials() if t.batch_size == 32]
    store = Store(str(tmp_path / "r"))
    store.commit(cfg.name, "u16", run_pack(first))
    peers = store_peers(store, cfg.name, second)
    stored = peers()
    assert len(stored) == len(first) and all(25 in curve for _, curve in stored)
    seen = []

    def spy():
        seen.append(1)
        return peers()

    results = run_pack(second, peers=spy)
    assert seen, "the store was read at a rung"
    errors = [r["trial"]["error"] for r in results if r["trial"]["status"] == "pruned"]
    assert errors and all("of 12 configurations" in e or "configurations" in e for e in errors)
    assert any("of 12 configurations" in e for e in errors), errors  # 6 stored + 6 in the pack


def test_a_pruned_trial_is_never_a_winner_and_is_counted():
    """find_bopt on a table where the best batch size of one group was pruned: that batch size is
    left out (flagged 'pruned'), the group's optimum moves to the best batch size that finished,
    and the outcome counts hold the pruned trials."""
    import numpy as np
    import pyarrow as pa

    from analysis.rules.bopt import find_bopt
    from analysis.testing.synthetic import sweep_table

    table = sweep_table(n_trains=(1000,), batch_sizes=tuple(2 ** i for i in range(3, 10)), lrs=(0.1,),
                        momenta=(0.0,), seeds=(0, 1, 2), noise=0.0, diverge_above=1e9)
    full = find_bopt(table, metric="test_acc", n_boot=0)
    best = full.groups[0].b_best
    status = np.array(table.column("status").to_pylist(), dtype=object)
    status[np.array(table.column("batch_size").to_pylist()) == best] = "pruned"
    pruned = table.set_column(table.column_names.index("status"), "status", pa.array(status.tolist()))
    res = find_bopt(pruned, metric="test_acc", n_boot=0)
    g = res.groups[0]
    assert best not in g.batch_sizes and g.b_best != best
    assert {"batch_size": best, "reason": g.flagged[0]["reason"]} in g.flagged and "pruned" in g.flagged[0]["reason"]
    assert res.outcomes.get("pruned") == 3 and g.outcomes.get("pruned") == 3


def test_with_pruning_the_planner_starts_the_cheapest_units_first():
    from cluster.driver.planner import plan

    def units(search):
        trials = sweep(batch="[4, 16, 64]", search=search).trials()
        return plan(trials, engine="packed", slots=2, memory_bytes=1 << 30, log=lambda *_: None)

    steps = [max(t.total_steps for t in u.trials) for u in units(PRUNE)]
    assert steps == sorted(steps) and steps[0] < steps[-1]
    plain = [max(t.total_steps for t in u.trials) for u in units("")]
    assert plain != sorted(plain), "without pruning the planner keeps the sweep's order"
    single = plan(sweep(batch="[4, 16, 64]").trials(), engine="single", slots=2, memory_bytes=1 << 30)
    assert [u.trials[0].total_steps for u in single] == sorted(u.trials[0].total_steps for u in single)


@pytest.mark.slow  # two packs (6.7 s under load)
def test_on_eval_hears_every_curve_row_as_it_is_recorded():
    """The hook a peer's scheduler (Ray Tune's ASHA) would report through: every curve row of
    every member, in step order, the same rows the results hold; a listener that raises is dropped."""
    from scaling.training.backends.stacked import StackedBackend
    from scaling.training.loop import run_members

    trials = sweep().trials()[:4]
    heard: dict = {}
    results = run_members(trials, lambda ts: StackedBackend(ts, "cpu"), engine="packed",
                          on_eval=lambda t, row: heard.setdefault(t.trial_id, []).append(row))
    assert {r["trial"]["trial_id"]: r["curves"] for r in results} == heard

    def broken(t, row):
        raise RuntimeError("listener gone")

    again = run_members(trials, lambda ts: StackedBackend(ts, "cpu"), engine="packed", on_eval=broken)
    assert [r["trial"]["status"] for r in again] == [r["trial"]["status"] for r in results]


@pytest.mark.slow  # a pack, a single trial and a store (12 s under load)
def test_status_counts_pruned_and_a_single_trial_is_ranked_against_the_store(tmp_path):
    """``scaling status`` counts pruned trials (pending leaves them out), and a trial trained alone
    (engine single: scaling.training.run.run_trial) is ranked against the stored pack."""
    from scaling.status import status_table
    from scaling.training.run import run_trial

    text = SWEEP.format(batch="[16, 32]", search=PRUNE)
    cfg = config_from_text(text)
    store = Store(str(tmp_path / "r"))
    store.save_config(cfg.name, text)
    results = run_pack([t for t in cfg.trials() if t.batch_size == 16])
    store.commit(cfg.name, "u16", results)
    n_pruned = sum(r["trial"]["status"] == "pruned" for r in results)
    row = status_table(str(tmp_path / "r")).to_pylist()[0]
    assert (row["ok"], row["pruned"], row["stored"]) == (12 - n_pruned, n_pruned, 12) and n_pruned
    assert (row["in_config"], row["pending"]) == (24, 12)
    worst = next(t for t in cfg.trials() if t.batch_size == 32 and t.lr == 0.01 and t.seed == 0)
    alone = run_trial(worst, peers=store_peers(store, cfg.name, [worst]))
    assert alone["trial"]["status"] == "pruned" and "of 7 configurations" in alone["trial"]["error"]
