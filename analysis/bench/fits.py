"""Benchmark: many learning-curve fits, each with a full bootstrap.

``python -m analysis.bench`` fits ``--curves`` synthetic curves
:math:`y = a x^b + c` (12 points, 5 % log-normal noise) with
``--resamples`` bootstrap resamples each, exactly as
:func:`analysis.fit.powerlaw.fit_power_law` does for a sweep (full fit,
extrapolation check, vectorised bootstrap), and prints the wall time and the
number of fits per second. ``cpu_seconds`` is the CPU time the workers used:
when other processes share the machine, wall time exceeds it. Not a test:
the figure depends on the machine.

``python -m analysis.bench.fits --sweep-coverage REPS`` is the stress run of the prediction
intervals on simulated sweeps (:func:`sweep_coverage`): the tests run two replications.
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


def sweep_coverage(reps: int, *, form: str = "M1", n_boot: int = 200, start: int = 100) -> dict:
    """Prediction intervals of ``form`` on simulated sweeps, scored against new observations.

    Each replication simulates a learning-curve sweep (:mod:`analysis.testing.simulate`,
    preset ``shifted``: a seed shifts every group's optimum at one N, t3 trial noise,
    asymmetric optima; 12 sizes, 15 cells, 5 seeds), fits the family to the frontier of the
    sizes below the third largest (seed replicates, winners chosen again) and predicts the
    largest size. The new observation is that size's frontier measured in the same sweep
    (winner chosen on validation, never used by the fit). One point per sweep, so hits are
    independent: with 150 replications a true 95 % coverage gives fewer than 135 hits with
    P = 0.2 %, and a true 85 % reaches 135 with P = 5.5 %.

    Returns ``{"hits", "band_hits", "narrower", "total"}``: the prediction interval and
    the curve's band holding the observation, and the band narrower than the interval.
    """
    import pyarrow.compute as pc

    from analysis.fit.curves import fit_learning_curves
    from analysis.fit.forms.on_curves import add_forms
    from analysis.testing.simulate import LANDSCAPES, Design, simulate

    ns = np.unique(np.round(np.logspace(np.log10(50), np.log10(1500), 12)).astype(int))
    design = Design.grid(n_trains=ns, batch_sizes=(4, 8, 16, 32, 64), lrs=(0.05, 0.1, 0.2),
                         seeds=range(5))
    out = dict.fromkeys(("hits", "band_hits", "narrower", "total"), 0)
    for rep in range(reps):
        sim = simulate(design, landscape=LANDSCAPES["learning_curve"], noise="shifted",
                       seed=start + rep)
        [whole] = fit_learning_curves(sim.table, metric="error", n_boot=0, power_law=False)
        seen = sim.table.filter(pc.less(sim.table.column("n_train"), int(ns[-3])))
        curves = fit_learning_curves(seen, metric="error", n_boot=n_boot, seed=rep,
                                     power_law=False)
        [c] = add_forms(curves, form=form, predict=[float(ns[-1])], n_boot=n_boot, seed=rep)
        p, new = c.prediction, whole.y[-1]
        out["hits"] += bool(p.pi_low[0] <= new <= p.pi_high[0])
        out["band_hits"] += bool(p.band_low[0] <= new <= p.band_high[0])
        out["narrower"] += bool(p.band_high[0] - p.band_low[0] < p.pi_high[0] - p.pi_low[0])
        out["total"] += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.bench", description=__doc__)
    parser.add_argument("--curves", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--points", type=int, default=12)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes (default: all cores)")
    parser.add_argument("--sweep-coverage", type=int, default=0, metavar="REPS",
                        help="instead: prediction-interval coverage on REPS simulated sweeps")
    args = parser.parse_args(argv)
    if args.sweep_coverage:
        c = sweep_coverage(args.sweep_coverage)
        print(f"M1 95% prediction intervals on {c['total']} simulated sweeps (preset shifted): "
              f"{c['hits']} hold the new observation, the band {c['band_hits']}; band narrower "
              f"in {c['narrower']}")
        return 0
    r = run(args.curves, args.resamples, args.points, args.workers)
    print(f"curves={r['curves']} resamples={r['resamples']} points={r['points']} "
          f"workers={r['workers']} seconds={r['seconds']:.1f} fits={r['fits']} "
          f"fits/s={r['fits_per_s']:.0f} cpu_seconds={r['cpu_seconds']:.1f}")
    print(f"full fits converged: {r['full_fits_converged']}/{r['curves']}; resamples converged: "
          f"{r['resamples_converged']}/{r['curves'] * r['resamples']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
