"""Driver overhead: how much of a sweep's wall time the driver process spends scheduling.

Runs a sweep of 10,000 tiny trials (a few SGD steps each) on a local Ray and
reports the driver's CPU time (``time.process_time``: planning, submitting,
waiting, progress, listing the store once) as a share of the sweep's wall time.

    python -m cluster.bench_driver [--trials 10000] [--engine packed|single]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import yaml

from cluster.runner import connect, run_sweep
from scaling.config import parse_config


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
    connect(None)  # start Ray before timing: its start-up is not scheduling work
    wall0, cpu0 = time.perf_counter(), time.process_time()
    summary = run_sweep(cfg, yaml.safe_dump(raw), results, progress=False, log=lambda *_: None)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"trials": summary.total, "ran": sum(summary.counts.values()), "engine": engine,
            "wall_s": wall, "driver_cpu_s": cpu, "driver_share": cpu / wall}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--engine", choices=["packed", "single"], default="packed")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as results:
        r = measure(args.trials, args.engine, results)
    print(f"driver overhead: {r['ran']} tiny trials ({r['engine']} engine) in {r['wall_s']:.1f} s wall; "
          f"driver CPU {r['driver_cpu_s']:.2f} s = {100 * r['driver_share']:.1f}% of wall time "
          f"(target < 5%)")


if __name__ == "__main__":
    main()
