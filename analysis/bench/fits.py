"""Benchmark: many learning-curve fits, each with a full bootstrap.

``python -m analysis.bench`` fits ``--curves`` synthetic curves
:math:`y = a x^b + c` (12 points, 5 % log-normal noise) with
``--resamples`` bootstrap resamples each, exactly as
:func:`analysis.fit.powerlaw.fit_power_law` does for a sweep (full fit,
extrapolation check, vectorised bootstrap), and prints the wall time and the
number of fits per second. ``cpu_seconds`` is the CPU time the workers used:
when other processes share the machine, wall time exceeds it. Not a test:
the figure depends on the machine.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def synthetic_curves(n_curves: int, n_points: int, seed: int = 0):
    """``(x, ys)``: shared ``x`` and one noisy power law per row of ``ys``."""
    rng = np.random.default_rng(seed)
    x = np.logspace(2, 5, n_points)
    a = rng.uniform(1.0, 20.0, (n_curves, 1))
    b = rng.uniform(-0.8, -0.2, (n_curves, 1))
    c = rng.uniform(0.0, 0.5, (n_curves, 1))
    ys = (a * x ** b + c) * np.exp(0.05 * rng.standard_normal((n_curves, n_points)))
    return x, ys


def _fit_many(args) -> tuple[int, int, int, float]:
    x, ys, n_boot, seed = args
    from analysis.fit.powerlaw import fit_power_law

    cpu = time.process_time()
    converged = boot_ok = 0
    for i, y in enumerate(ys):
        fit = fit_power_law(x, y, n_boot=n_boot, seed=seed + i)
        converged += fit.converged
        boot_ok += fit.n_boot_converged
    return len(ys), converged, boot_ok, time.process_time() - cpu


def run(n_curves: int = 1000, n_boot: int = 1000, n_points: int = 12, workers: int = 1) -> dict:
    """Fit the curves and return the measured figures as a dict."""
    x, ys = synthetic_curves(n_curves, n_points)
    chunks = [(x, part, n_boot, 1000 * k) for k, part in
              enumerate(np.array_split(ys, max(1, workers))) if len(part)]
    start = time.perf_counter()
    if workers > 1:
        from multiprocessing import get_context
        with get_context("spawn").Pool(workers) as pool:
            parts = pool.map(_fit_many, chunks)
    else:
        parts = [_fit_many(chunk) for chunk in chunks]
    seconds = time.perf_counter() - start
    done = sum(p[0] for p in parts)
    fits = done * (n_boot + 1)
    return {"curves": done, "resamples": n_boot, "points": n_points, "workers": workers,
            "seconds": seconds, "fits": fits, "fits_per_s": fits / seconds,
            "full_fits_converged": sum(p[1] for p in parts),
            "resamples_converged": sum(p[2] for p in parts),
            "cpu_seconds": sum(p[3] for p in parts)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.bench", description=__doc__)
    parser.add_argument("--curves", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--points", type=int, default=12)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes (default: all cores)")
    args = parser.parse_args(argv)
    r = run(args.curves, args.resamples, args.points, args.workers)
    print(f"curves={r['curves']} resamples={r['resamples']} points={r['points']} "
          f"workers={r['workers']} seconds={r['seconds']:.1f} fits={r['fits']} "
          f"fits/s={r['fits_per_s']:.0f} cpu_seconds={r['cpu_seconds']:.1f}")
    print(f"full fits converged: {r['full_fits_converged']}/{r['curves']}; resamples converged: "
          f"{r['resamples_converged']}/{r['curves'] * r['resamples']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
