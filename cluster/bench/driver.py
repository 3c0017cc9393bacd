"""Driver overhead and a sweep's fixed cost: ``python -m cluster.bench.driver``.

1. Driver overhead: a sweep of 10,000 tiny trials (a few SGD steps each) on a local
   Ray; the driver's CPU time (``time.process_time``: planning, submitting, waiting,
   progress, listing the store once) as a share of the sweep's wall time.
2. Fixed cost: the 64-trial reference sweep (cluster.bench) through ``run_sweep``, as
   ``scaling sweep`` runs it, split into: before Ray (config, store), ``ray.init``, from
   Ray up to the first pack training (workers importing torch, the task loaded, planning,
   scheduling), training (the first pack's step 0 to the last member's end), and after
   training (results, shutdown, reaping). The fixed cost after Ray is up is the third
   part plus the last.

    python -m cluster.bench.driver [--trials 10000] [--engine packed|single] [--no-fixed]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import yaml

import cluster.launch.localray as localray
from cluster.launch.connect import connect
from cluster.driver.sweep import run_sweep
from scaling.config.sweep import parse_config


def tiny_sweep(trials: int, engine: str) -> dict:
    seeds = max(1, trials // 200)
    return {
        "name": "driver-bench",
        "task": {"name": "digits"},
        "model": {"name": "mlp", "width": 8, "depth": 1},
        "axes": {"n_train": {"log": [20, 1000], "num": 10}, "batch_size": [8],
                 "lr": {"log": [0.01, 0.5], "num": 10}, "momentum": [0.0, 0.9],
                 "seed": list(range(seeds))},
        "budget": {"steps": 5},
        "eval": {"points": 2},
        "engine": engine,
    }


def measure(trials: int, engine: str, results: str) -> dict:
    raw = tiny_sweep(trials, engine)
    cfg = parse_config(raw)
    with localray.session(lambda: connect(None)):  # Ray up before timing (its start-up is not
        wall0, cpu0 = time.perf_counter(), time.process_time()  # scheduling work), and stopped after
        summary = run_sweep(cfg, yaml.safe_dump(raw), results, progress=False, log=lambda *_: None)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"trials": summary.total, "ran": sum(summary.counts.values()), "engine": engine,
            "wall_s": wall, "driver_cpu_s": cpu, "driver_share": cpu / wall}


def fixed_cost(results: str) -> dict:
    """Seconds of each part of the 64-trial reference sweep through ``run_sweep`` (module doc)."""
    import cluster.driver.sweep as runner
    from cluster.bench.sweeps import reference_sweep
    from scaling.store.views import load_tables

    raw = {**reference_sweep(), "name": "fixed-cost"}
    marks: dict[str, float] = {}
    real = runner.connect

    def timed_connect(*args, **kwargs):
        marks["ray0"] = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            marks["ray1"] = time.perf_counter()

    runner.connect = timed_connect
    try:
        t0 = time.perf_counter()
        offset = time.time() - t0
        run_sweep(parse_config(raw), yaml.safe_dump(raw), results, progress=False, log=lambda *_: None)
        t_end = time.perf_counter()
    finally:
        runner.connect = real
    trials, curves = load_tables(results)
    step0 = {c["trial_id"]: c["wall_s"] for c in curves.to_pylist() if c["step"] == 0}
    rows = trials.to_pylist()
    start = min(r["start_time"].timestamp() + step0[r["trial_id"]] for r in rows) - offset
    end = max(r["end_time"].timestamp() for r in rows) - offset
    return {"trials": len(rows), "before_ray": marks["ray0"] - t0, "ray_init": marks["ray1"] - marks["ray0"],
            "until_training": start - marks["ray1"], "training": end - start, "after_training": t_end - end,
            "total": t_end - t0}


def format_fixed(r: dict) -> str:
    after = r["until_training"] + r["after_training"]
    return (f"fixed cost of the {r['trials']}-trial reference sweep through run_sweep: {r['total']:.2f} s = "
            f"before Ray {r['before_ray']:.2f} + ray.init {r['ray_init']:.2f} + until the packs train "
            f"{r['until_training']:.2f} (workers import torch, load the task; planning, scheduling) + "
            f"training {r['training']:.2f} + after training {r['after_training']:.2f} (results, shutdown); "
            f"fixed cost after Ray is up: {after:.2f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--engine", choices=["packed", "single"], default="packed")
    parser.add_argument("--fixed", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the reference sweep's fixed cost (default: yes)")
    args = parser.parse_args(argv)
    if args.fixed:
        with tempfile.TemporaryDirectory() as results:
            print(format_fixed(fixed_cost(results)), flush=True)
    with tempfile.TemporaryDirectory() as results:
        r = measure(args.trials, args.engine, results)
    print(f"driver overhead: {r['ran']} tiny trials ({r['engine']} engine) in {r['wall_s']:.1f} s wall; "
          f"driver CPU {r['driver_cpu_s']:.2f} s = {100 * r['driver_share']:.1f}% of wall time "
          f"(target < 5%)")


if __name__ == "__main__":
    main()
