"""The peers of issue 28's bench: Optuna's TPE sampler with its Hyperband pruner and Ray Tune's
ASHA, on the same config and at the same training-step budget as the adaptive sweep.

What is fair for the B_opt rule: the rule reads the bowl of each ``scaling bopt`` group (every
axis but batch size and seed), so each peer runs **one study per group** over that group's
batch sizes and seeds, given the group's share of the budget (``budget`` times the group's
grid steps; the same fraction for every group, as the adaptive sweep's). One study over the
whole space would spend its trials near the global optimum and leave most groups without a
bowl, so it is not the comparison (docs/adaptive.md, "Peers").

- A peer trial is one grid point (a batch size and a seed) trained alone through the project's
  loop (:func:`scaling.training.loop.run_members`, the backend ``run_pack`` would choose), which
  reports each evaluation through ``on_eval``; the peer's pruner stops it through the same hook
  (a non-empty string ends the member as ``pruned``). The steps counted are the stored rows'
  ``steps``: a stopped trial counts the steps it ran.
- Trials are launched while the group's steps used are under its budget; a running trial is
  stopped once the group's steps would pass it (``"group budget spent"``), so a group overshoots
  by at most one evaluation interval.
- The seed is not searched: the k-th time a study asks for a batch size it gets that size's
  k-th seed (round robin); a batch size asked after all its seeds ran is told their mean again
  at no cost (so TPE may ask it; the asks are capped at ``MAX_ASKS`` per grid point).
- Trials evaluate on ``EVAL_POINTS`` log-spaced steps (more than a config's few, so that a
  pruner's rungs have a report near them); the epoch, in tenths, is the resource both pruners
  count: Hyperband's and ASHA's rungs sit at 2, 6 and 18 epochs of a 20-epoch budget
  (``min_resource``/``grace_period`` a tenth of the budget, reduction factor 3), where the
  project's own pruning rule has its rungs (0.1, 0.3).

Each peer's rows go to a sweep of their own through the project's store writer, so the bench
reads them with ``scaling bopt`` / ``scaling fit`` like every other row. Imports torch (through
scaling.training), optuna and ray: cluster code.
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from pathlib import Path

import yaml

from scaling.config.sweep import config_from_text
from scaling.store.parts import unit_id
from scaling.store.writer import Store

EVAL_POINTS = 16
"""Log-spaced evaluations of a peer trial (a step ratio of at most 1.75 between two on bopt_rule)."""

REDUCTION = 3
"""Hyperband's and ASHA's reduction factor."""

MAX_ASKS = 3
"""A study asks for at most this many times its group's grid points."""

PEERS = ("optuna", "tune")


def peer_config(base: dict, name: str) -> tuple:
    """The config a peer runs (``base`` without its search section, its own name, EVAL_POINTS
    evaluations) as (text, SweepConfig)."""
    raw = {k: v for k, v in base.items() if k != "search"}
    raw.update(name=name, eval={"points": EVAL_POINTS})
    text = yaml.safe_dump(raw, sort_keys=False)
    return text, config_from_text(text, f"the {name} config")


def groups(cfg) -> dict:
    """The config's trials by ``scaling bopt`` group (every axis of the config but batch size and
    seed), in a stable order: {((axis, value), ...): [trials]}."""
    by = sorted(a for a in cfg.axes if a not in ("batch_size", "seed"))
    out = defaultdict(list)
    for t in cfg.trials():
        columns = t.columns()
        out[tuple((k, columns[k]) for k in by)].append(t)
    return dict(sorted(out.items(), key=lambda kv: repr(kv[0])))


def resource(row: dict) -> int:
    """The resource both pruners count: the epoch, in tenths."""
    return round(row["epoch"] * 10)


def train_one(trial, on_eval):
    """One peer trial through the project's loop; its result ({"trial": row, "curves": [...]}).
    One torch thread, as a sweep's packs on CPU (two threads per trial were 4-30x slower on the
    shared 2-core machine)."""
    import torch

    from scaling.training.loop import run_members
    from scaling.training.packing import choose_backend

    if choose_backend([trial])[0] == "vmap":
        from scaling.training.backends.vmap import VmapBackend as Backend
    else:
        from scaling.training.backends.stacked import StackedBackend as Backend
    torch.set_num_threads(1)
    return run_members([trial], lambda ts: Backend(ts, "cpu"), engine="packed", on_eval=on_eval)[0]


def metric_of(result: dict, metric: str) -> float:
    value = result["trial"].get(metric)
    return value if value is not None and math.isfinite(value) else math.inf


# ---- Optuna ------------------------------------------------------------------------------------

def optuna_group(trials, budget: float, store: Store, sweep: str, *, seed: int, metric: str = "val_loss") -> dict:
    """One Optuna study (TPE + Hyperband) over one group's batch sizes; returns its counts."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    by_b = defaultdict(list)
    for t in sorted(trials, key=lambda t: (t.batch_size, t.seed)):
        by_b[t.batch_size].append(t)
    epochs10 = max(resource({"epoch": t.total_steps * t.batch_size / t.n_train}) for t in trials)
    study = optuna.create_study(  # named: Hyperband's brackets hash the study's name (else a random one)
        study_name=f"{sweep}-{seed}", direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.HyperbandPruner(min_resource=max(1, epochs10 // 10), max_resource=epochs10,
                                              reduction_factor=REDUCTION))
    space = {"batch_size": optuna.distributions.CategoricalDistribution(sorted(by_b))}
    used, ran, values = 0, defaultdict(list), {}
    counts = {"asks": 0, "trained": 0, "pruned": 0, "budget_stopped": 0, "repeats": 0}
    for _ in range(MAX_ASKS * len(trials)):
        if used >= budget:
            break
        ot = study.ask(space)
        counts["asks"] += 1
        b = ot.params["batch_size"]
        if len(ran[b]) == len(by_b[b]):  # every seed of this batch size ran: tell it their mean again
            counts["repeats"] += 1
            study.tell(ot, values[b]) if b in values else study.tell(ot, state=optuna.trial.TrialState.PRUNED)
            continue
        trial = by_b[b][len(ran[b])]
        stopped = {"at": 0}

        def on_eval(t, row, ot=ot, trial=trial, stopped=stopped, used=used):
            if row["step"] == 0:
                return None
            if used + row["step"] >= budget and row["step"] < trial.total_steps:
                stopped["why"] = "budget"
                return "group budget spent"
            if resource(row) <= stopped["at"]:  # Optuna takes one report per (integer) step
                return None
            stopped["at"] = resource(row)
            value = row.get(metric)
            ot.report(value if value is not None and math.isfinite(value) else 1e300, resource(row))
            if ot.should_prune():
                stopped["why"] = "pruned"
                return f"pruned by Optuna's Hyperband at epoch {row['epoch']:.3g}"
            return None

        result = train_one(trial, on_eval)
        store.commit(sweep, unit_id([trial.trial_id]), [result])
        used += result["trial"]["steps"]
        counts["trained"] += 1
        ran[b].append(result)
        if stopped.get("why") == "pruned":
            counts["pruned"] += 1
            study.tell(ot, state=optuna.trial.TrialState.PRUNED)
        elif stopped.get("why") == "budget":
            counts["budget_stopped"] += 1
            study.tell(ot, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(ot, metric_of(result, metric))
        done = [metric_of(r, metric) for r in ran[b] if r["trial"]["status"] == "ok"]
        if done:
            values[b] = sum(done) / len(done)
    return {**counts, "steps": used, "budget": budget}


# ---- Ray Tune ----------------------------------------------------------------------------------

def _tune_trainable(config, trials=None, root=None, sweep=None):
    """A Ray Tune function trainable: one grid point trained through the loop, each evaluation
    reported. When Tune stops the trial (ASHA, its ``max_t``, or the group's budget),
    ``tune.report`` raises SystemExit(0) in this thread: caught here, the member stops as
    ``pruned`` (or ``ok`` at its last step) and its rows are stored; the thread then exits with
    SystemExit(0) itself. Returning instead would make Tune's wrapper report once more
    (``RESULT_DUPLICATE``), and that report waits for a ``train()`` call the stopped trial never
    gets: the thread never ends, which is what made a reused actor hang (``reset_config`` waits
    for it)."""
    from ray import tune

    trial = trials[config["point"]]
    stopped = []

    def on_eval(t, row):
        if resource(row) == 0 or stopped:
            return None
        try:
            tune.report({"val_loss": row["val_loss"], "epoch10": resource(row), "steps": row["step"]})
        except SystemExit:
            stopped.append(row["step"])
            return f"stopped by Ray Tune (ASHA or the group's budget) at epoch {row['epoch']:.3g}"
        return None

    result = train_one(trial, on_eval)
    Store(root).commit(sweep, unit_id([trial.trial_id]), [result])
    if stopped:
        raise SystemExit(0)


TUNE_ENV = {
    "TUNE_FUNCTION_THREAD_TIMEOUT_S": "60",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
}
"""Ray Tune's own settings for the peer (environment variables, read by the driver and, set before
the local Ray starts, by its actors): a reused actor waits up to 60 s (not 2) for the stopped
trial's thread, which stores its rows first, so a slow write on a loaded machine does not fail
the next trial; no CSV/JSON/TensorBoard result files, which nothing reads (the rows go to the
store: they cost the driver ~50 ms of CPU per trial); no progress tables (``verbose=0`` alone
leaves the new output engine's header)."""


def tune_group(trials, budget: float, root: str, sweep: str, *, seed: int, workdir: Path) -> dict:
    """One Ray Tune run (ASHA, grid points in a seeded random order) over one group; its counts.

    ``reuse_actors=True``: a trial reuses the actor (process) of a finished one, as Tune's docs
    advise for short trials; without it every trial started a fresh actor process that imported
    torch, 7-8 s a trial on an idle 2-core machine (29 s under load) against ~0.3 s of training."""
    import logging

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    # the ResultGrid looks for the result files TUNE_ENV turns off, and warns once per trial
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    epochs10 = max(resource({"epoch": t.total_steps * t.batch_size / t.n_train}) for t in trials)
    order = list(range(len(trials)))
    random.Random(seed).shuffle(order)
    last: dict = {}
    pids: set = set()

    def stop_all() -> bool:  # the group's budget, from each trial's last reported steps
        return sum(last.values()) >= budget

    class Budget(tune.Stopper):
        def __call__(self, trial_id, result):
            last[trial_id] = result.get("steps", 0)
            pids.add(result.get("pid"))  # the actor's process (Tune fills it in)
            return False

        def stop_all(self):
            return stop_all()

    t0 = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_tune_trainable, trials=trials, root=root, sweep=sweep),
                            {"cpu": 1}),
        param_space={"point": tune.grid_search(order)},
        tune_config=tune.TuneConfig(
            metric="val_loss", mode="min", reuse_actors=True,
            scheduler=ASHAScheduler(time_attr="epoch10", max_t=epochs10, grace_period=max(1, epochs10 // 10),
                                    reduction_factor=REDUCTION)),
        run_config=tune.RunConfig(name=f"{sweep}-{seed}", storage_path=str(Path(workdir).absolute()),
                                  stop=Budget(), verbose=0))
    grid = tuner.fit()
    return {"launched": len(grid), "reported": len(last), "actors": len(pids), "errors": grid.num_errors,
            "reported_steps": sum(last.values()), "budget": budget, "wall_s": round(time.perf_counter() - t0, 1)}


# ---- both --------------------------------------------------------------------------------------

def _optuna_job(text: str, index: int, budget: float, root: str, seed: int) -> dict:
    """One group's study in a worker process (the config's text in, its counts out)."""
    cfg = config_from_text(text)
    trials = list(groups(cfg).values())[index]
    share = budget * sum(t.total_steps for t in trials)
    return optuna_group(trials, share, Store(root), cfg.name, seed=seed + index)


def run_optuna(text: str, n_groups: int, budget: float, root: str, seed: int, workers: int, log) -> list:
    """Every group's study, ``workers`` groups at a time (one process each; a study is sequential)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if workers <= 1:
        return [_optuna_job(text, i, budget, root, seed) for i in range(n_groups)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(_optuna_job, text, i, budget, root, seed) for i in range(n_groups)]
        out = []
        for i, job in enumerate(jobs):
            out.append(job.result())
            if log:
                log(f"  optuna: group {i + 1} of {n_groups}: {out[-1]}")
        return out


def run_peers(base: dict, results: Path, peers, *, budget: float = 1 / 3, seed: int = 0,
              num_cpus: int | None = None, log=print) -> dict:
    """Run each peer of ``peers`` (of PEERS) on ``base`` (a config mapping) into the sweep
    ``<name>_<peer>`` under ``results``; {peer: {"sweep", "wall_s", "groups": [counts]}}.
    ``num_cpus`` (default: the machine's): Optuna's studies run that many groups at a time,
    Ray Tune's local Ray gets that many CPUs (one trial each)."""
    import os

    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEERS)}")
    results = Path(results).absolute()  # a Tune trial runs in its own folder
    store, out, cpus = Store(str(results)), {}, num_cpus or os.cpu_count() or 1
    for peer in peers:
        sweep = f"{base['name']}_{peer}"
        text, cfg = peer_config(base, sweep)
        store.save_config(sweep, text)
        grouped = groups(cfg)
        t0, counts = time.perf_counter(), []
        if peer == "optuna":
            counts = run_optuna(text, len(grouped), budget, str(results), seed, cpus, log)
        else:
            from cluster.launch import localray

            saved = {k: os.environ.get(k) for k in TUNE_ENV}
            os.environ.update(TUNE_ENV)
            localray.start(cpus)
            try:
                for i, (key, trials) in enumerate(grouped.items()):
                    share = budget * sum(t.total_steps for t in trials)
                    counts.append(tune_group(trials, share, str(results), sweep, seed=seed + i,
                                             workdir=results / "_tune"))
                    if log:
                        log(f"  tune: group {i + 1} of {len(grouped)} {dict(key)}: {counts[-1]}")
            finally:
                localray.stop()
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        out[peer] = {"sweep": sweep, "wall_s": time.perf_counter() - t0, "groups": counts}
    return out
