"""The critical batch size: steps to target, the McCandlish trade-off fit and its clustered intervals.

The coverage test draws curves from McCandlish et al.'s model S(B) = S_min + E_min/B with a
seed effect shared by every batch size of a seed and a trial effect on top, evaluated at
log-spaced steps of a curve that is not linear in log step (so locating the crossing has
interpolation error), and with an epochs budget under which the largest batch sizes never
reach the target (censored). The estimator knows none of that.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from analysis.rules.tradeoff import fit_tradeoff, steps_to_target, tradeoff

B = 2.0 ** np.arange(2, 11)  # 4 ... 1024


def curves_to_target(rng, b, s_min, e_min, n_seeds, seed_sd=0.2, noise_sd=0.1, examples=2.2e5, points=12,
                     shift_sd=0.0):
    """(nB, 1, nS) steps to reach loss 1.0 of curves loss(k) = (k/S)^-0.3 seen at log-spaced steps.

    ``seed_sd`` scales every batch size of a seed alike (S_min and E_min together: it cancels in
    B_crit); ``shift_sd`` moves a seed's E_min alone, so the seed shifts its B_crit, shared by every
    batch size (the median seed's B_crit is e_min/s_min)."""
    u = rng.normal(0, seed_sd, n_seeds)
    shift = rng.normal(0, shift_sd, n_seeds) if shift_sd > 0 else np.zeros(n_seeds)
    out = np.empty((len(b), 1, n_seeds))
    for i, bb in enumerate(b):
        budget = int(examples / bb)  # a fixed number of examples: large batches get few steps
        evals = np.concatenate([[0], np.unique(np.round(np.geomspace(1, budget, points)).astype(int))])
        for s in range(n_seeds):
            S = (s_min + e_min * np.exp(shift[s]) / bb) * np.exp(u[s] + rng.normal(0, noise_sd))
            loss = (np.maximum(evals, 1e-9) / S) ** -0.3
            loss[0] = 50.0
            out[i, 0, s] = steps_to_target(evals, loss, 1.0)
    return out


def test_steps_to_target_interpolates_log_step_between_eval_points():
    steps = np.array([0, 10, 100, 1000])
    loss = np.array([5.0, 3.0, 2.0, 1.0])
    assert steps_to_target(steps, loss, 2.0) == pytest.approx(100)
    assert steps_to_target(steps, loss, 1.5) == pytest.approx(np.sqrt(100 * 1000))  # halfway in log step
    assert steps_to_target(steps, loss, 4.0) == pytest.approx(5.0)  # from step 0: linear in step
    assert steps_to_target(steps, loss, 0.5) == np.inf
    assert steps_to_target(steps, [0.2, 0.5, 0.8, 0.9], 0.7, maximize=True) == pytest.approx(10 ** (1 + 2 / 3))
    assert steps_to_target(steps, [5.0, np.nan, np.nan, np.nan], 2.0) == np.inf, "diverged before reaching it"


def test_the_fit_recovers_a_noiseless_tradeoff_exactly():
    s = 300 + 300 * 40 / B
    a, e = fit_tradeoff(B, s[None, :])
    assert a[0] == pytest.approx(300, rel=1e-9) and e[0] / a[0] == pytest.approx(40, rel=1e-9)


def coverage_and_width(seed_sd, shift_sd, reps=400, n_seeds=5):
    """Over ``reps`` replications (each with its own clustered bootstrap of 200 resamples): the
    share of intervals holding the true B_crit (64), the ratio of the interval's implied sd of
    ln B_crit (its half-width over t_{S-1}·√(S/(S-1)), root mean square over replications) to the
    actual sd of ln B̂_crit across replications, and the censored trials."""
    rng = np.random.default_rng(7)
    covered, censored, point, sd = 0, 0, [], []
    k = stats.t.ppf(0.975, n_seeds - 1) * np.sqrt(n_seeds / (n_seeds - 1))
    for r in range(reps):
        steps = curves_to_target(rng, B, 200.0, 200.0 * 64, n_seeds=n_seeds, seed_sd=seed_sd, shift_sd=shift_sd)
        fit = tradeoff(B, steps, n_boot=200, seed=r)
        lo, hi = fit.b_crit.ci_low, fit.b_crit.ci_high
        covered += lo <= 64 <= hi
        censored += fit.n_censored_trials
        point.append(np.log(fit.b_crit.value))
        sd.append(np.log(hi / lo) / 2 / k)
    sd = np.array(sd)
    assert np.isfinite(sd).mean() > 0.99, "intervals open on a side are rare here"
    width = np.sqrt(np.mean(sd[np.isfinite(sd)] ** 2)) / np.std(point, ddof=1)
    return covered / reps, width, censored


@pytest.mark.parametrize("seed_sd, shift_sd", [
    (0.3, 0.0),
    pytest.param(0.0, 0.3, marks=pytest.mark.slow),
], ids=["seed-scales-every-batch-size", "seed-shifts-its-B_crit"])
def test_intervals_cover_the_true_critical_batch_size_and_are_as_wide_as_its_spread(seed_sd, shift_sd):
    """Two kinds of seed effect, shared by every batch size of a seed, that a bootstrap
    resampling each batch size's seeds apart gets wrong in opposite directions:

    - a seed scaling S_min and E_min together cancels in B_crit = E_min/S_min. Resampled apart,
      it no longer cancels: intervals about twice too wide (implied sd 2.3x the spread, coverage
      1.00, measured with that bug planted), where the clustered bootstrap gives 0.96x and 0.97;
    - a seed moving its own E_min (its B_crit, sd 0.3 in ln) does not cancel; resampled apart,
      its effect averages out over batch sizes: 0.69x the spread (coverage 0.93, still inside the
      window, which is why the width is checked too), against 0.92x and 0.95 clustered.

    Coverage window [0.92, 0.98] at 400 replications: a true 95 % lies in it with probability
    > 0.99 (sd 0.011); a true 85 % reaches 0.92 with probability ~6e-5. The width ratio's own
    noise over 400 replications is about 4 % (the spread's sd: 1/√798 = 3.5 %), so [0.8, 1.25]
    holds a calibrated bootstrap (0.92-0.96 here) and excludes both planted failures by > 2.4 sd
    (the shift design, the weaker) and > 25 sd (the scale design)."""
    coverage, width, censored = coverage_and_width(seed_sd, shift_sd)
    assert 0.92 <= coverage <= 0.98, coverage
    assert 0.8 <= width <= 1.25, f"implied sd / actual spread of ln B_crit: {width:.2f}"
    assert censored > 400, "the largest batch sizes ran out of budget in most replications"


def test_too_few_batch_sizes_reaching_the_target_is_one_reason_not_a_fit():
    rng = np.random.default_rng(0)
    # budgets of 15,000 examples: only batch sizes 4 and 8 reach the target
    steps = curves_to_target(rng, B, 200.0, 200.0 * 64, n_seeds=3, seed_sd=0.0, noise_sd=0.0, examples=1.5e4)
    fit = tradeoff(B, steps, n_boot=50)
    assert not fit.ok and fit.reason.startswith("only 2 of 9 batch sizes reach the target")
    assert "\n" not in fit.reason
    assert fit.n_censored_trials > 0 and np.isnan(fit.b_crit.value)
    never = np.full((len(B), 1, 3), np.inf)
    fit = tradeoff(B, never, n_boot=50)
    assert fit.reason.startswith("only 0 of 9 batch sizes") and fit.n_censored_trials == 27


def test_tuning_lr_per_batch_size_picks_the_fastest_on_the_selection_metric():
    rng = np.random.default_rng(3)
    fast = curves_to_target(rng, B, 200.0, 200.0 * 64, n_seeds=4)
    slow = fast * 3
    steps = np.concatenate([slow, fast], axis=1)  # lr 0.1 slow, lr 0.2 fast
    select = np.concatenate([fast, slow], axis=1)  # ... but validation says the opposite
    fit = tradeoff(B, steps, select=select, lrs=np.array([0.1, 0.2]), n_boot=50)
    assert set(fit.lr) == {0.1}, "chosen on the selection metric"
    assert np.allclose(np.array(fit.steps)[np.isfinite(fit.steps)],
                       np.array(tradeoff(B, slow, n_boot=50).steps)[np.isfinite(fit.steps)])


# ---- a sweep's store, through the CLI ------------------------------------------------------------

def write_store(root, *, n_trains=(300, 1200), b=(4, 8, 16, 32, 64, 128, 256), seeds=range(4), schedule="constant",
                b_crit=None, seed=0, noise=0.05):
    """A results store (trials and curves parts, the store's schema) of curves drawn from
    S(B) = S_min + E_min/B with B_crit = 0.05 * n_train (grows with the data), seed effects shared."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from scaling.spec.schema import CURVES_SCHEMA, TRIALS_SCHEMA

    rng = np.random.default_rng(seed)
    u = {s: rng.normal(0, 0.15) for s in seeds}
    trials, curves = [], []
    for n in n_trains:
        crit = b_crit or 0.05 * n
        for bb in b:
            for s in seeds:
                tid = f"n{n}b{bb}s{s}"
                budget = int(40 * n / bb)
                evals = np.concatenate([[0], np.unique(np.round(np.geomspace(1, budget, 25)).astype(int))])
                S = (100 + 100 * crit / bb) * np.exp(u[s] + rng.normal(0, noise))
                loss = 0.1 * (np.maximum(evals, 0.5) / S) ** -0.4  # reaches 0.1 at step S
                trials.append({"sweep": "bc", "trial_id": tid, "run_id": "r" + tid, "status": "ok", "task": "digits",
                               "model": "mlp", "n_train": n, "batch_size": bb, "lr": 0.1, "seed": s,
                               "optimizer": "sgd", "schedule": schedule, "momentum": 0.0, "test_loss": loss[-1],
                               "val_loss": loss[-1], "test_acc": 0.9, "val_acc": 0.9, "train_loss": loss[-1]})
                curves += [{"sweep": "bc", "trial_id": tid, "run_id": "r" + tid, "step": int(k), "test_loss": v,
                            "val_loss": v, "b_simple": crit * 1.2} for k, v in zip(evals, loss)]
    from scaling.store.writer import Store

    Store(str(root)).ensure_sweep("bc")  # marked as a sweep, as the product writes one
    for table, schema, rows in (("trials", TRIALS_SCHEMA, trials), ("curves", CURVES_SCHEMA, curves)):
        folder = root / "bc" / table
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "part-0.parquet")
    return root


def test_bcrit_through_the_cli_gives_every_group_and_target_with_intervals(tmp_path):
    import json

    from conftest import run_cli_here as run_cli

    write_store(tmp_path)
    proc = run_cli("bcrit", str(tmp_path), "--target", "0.1,0.08,0.06", "--json", "--boot", "200",
                   "--plot", str(tmp_path / "se.png"))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [g["label"] for g in out["groups"]] == ["n_train=300"] * 3 + ["n_train=1200"] * 3
    for g in out["groups"]:
        for key in ("b_crit", "s_min", "e_min"):
            assert set(g[key]) == {"value", "ci_low", "ci_high"}
        truth = 0.05 * g["group"]["n_train"]
        assert g["b_crit"]["ci_low"] <= truth * 1.5 and g["b_crit"]["ci_high"] >= truth / 1.5, g["b_crit"]
        assert g["b_simple"] == pytest.approx(1.2 * truth)
    assert 0.5 < out["scaling"]["n_train"]["value"] < 1.5, "B_crit grows with the data, as generated"
    assert (tmp_path / "se.png").stat().st_size > 10_000
    text = run_cli("bcrit", str(tmp_path), "--target", "0.08", "--boot", "100")
    assert text.returncode == 0 and "B_crit" in text.stdout and "n_train=1200" in text.stdout


def test_bcrit_refuses_a_decaying_schedule_and_explains_groups_it_cannot_fit(tmp_path):
    from conftest import run_cli_here as run_cli

    write_store(tmp_path / "cos", schedule="cosine")
    proc = run_cli("bcrit", str(tmp_path / "cos"), "--target", "0.1")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "schedule: constant" in proc.stderr and "Traceback" not in proc.stderr
    write_store(tmp_path / "low")
    proc = run_cli("bcrit", str(tmp_path / "low"), "--target", "0.0001,0.1", "--boot", "50")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.split()[:2][-1:] == ["0.0001"]]
    codes = {line.split()[-1] for line in lines}  # one code in the "no fit" column, explained below the table
    assert len(lines) == 2 and len(codes) == 1 and codes.pop().startswith("nofit")
    flat = " ".join(proc.stdout.split())  # the key may wrap at the width
    assert f"{lines[0].split()[-1]}: only 0 of 7 batch sizes reach the target (the median seed); " \
           "the trade-off needs at least 3 (2 rows)" in flat
    assert "Traceback" not in proc.stderr


def test_bcrit_scaling_censors_an_infinite_b_crit_instead_of_dropping_it(tmp_path, capsys):
    """The largest group's B_crit (0.05 * 76800 = 3840) lies far beyond its batch sizes (<= 128):
    its fit puts S_min <= 0, B_crit = inf. The scaling line keeps it, right-censored at 128, keeps
    every bootstrap replicate, and says so; a --target that is not a number is one line."""
    from analysis import tables
    from analysis.report.rule_text import critical_lines
    from analysis.rules.critical import critical_batch
    from cluster.cli import main

    write_store(tmp_path, n_trains=(300, 1200, 4800, 76800), b=(4, 8, 16, 32, 64, 128), noise=0.1)
    trials, curves = tables.load_sweep(str(tmp_path))
    res = critical_batch(trials, curves, targets=[0.1], n_boot=200, level=0.8, with_bopt=False)
    assert res.groups[-1].fit.b_crit.value == np.inf
    assert res.scaling_counts == {"groups": 4, "left_out": 0, "censored_high": 1, "censored_low": 0,
                                  "replicates": 200, "replicates_drawn": 200}
    [(name, est)] = res.scaling
    assert name == "n_train" and est.ci_low <= 1.0 <= est.ci_high, est
    text = "\n".join(critical_lines(res))
    assert "Tobit over 4 group(s) (1 with B_crit beyond the largest batch size, censored there)" in text
    assert "200 of 200 bootstrap replicates fitted" in text
    assert "80% CI" in text and "95%" not in text
    for bad in ("nan", "inf"):
        assert main(["bcrit", str(tmp_path), "--target", bad]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "--target must be finite" in err, err
