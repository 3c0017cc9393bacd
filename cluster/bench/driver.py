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

   It also says in how many packs of the reference sweeps (SGD, AdamW) and of ``make demo``
   the default rule (``scaling.training.optim.fused_pays``) runs the fused (compiled) update:
   where it is none, those sweeps run the eager step, with no compile, as before it existed.

3. With ``--profile``, where the driver's CPU goes in part 1: cProfile over ``run_sweep``,
   each function's own time summed by what it does (Ray's submit/wait/get, planning and
   expansion, commit events and compaction in the store, progress, the rest), and the
   functions that take the most.

    python -m cluster.bench.driver [--trials 10000] [--engine packed|single] [--no-fixed] [--no-overhead]
                                     [--profile]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import yaml

import cluster.launch.localray as localray
from cluster.launch import reaper
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


def measure(trials: int, engine: str, results: str, profile=None) -> dict:
    raw = tiny_sweep(trials, engine)
    cfg = parse_config(raw)
    with localray.session(lambda: connect(None)):  # Ray up before timing (its start-up is not
        wall0, cpu0 = time.perf_counter(), time.process_time()  # scheduling work), and stopped after
        if profile is not None:
            profile.enable()
        try:
            summary = run_sweep(cfg, yaml.safe_dump(raw), results, progress=False, log=lambda *_: None)
        finally:
            if profile is not None:
                profile.disable()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"trials": summary.total, "ran": sum(summary.counts.values()), "engine": engine,
            "wall_s": wall, "driver_cpu_s": cpu, "driver_share": cpu / wall}


KINDS = (  # (what, substrings of a function's file:name), the first that matches
    ("imports (modules loaded during the sweep)", ("importlib", "marshal.loads", "_imp.create_dynamic",
                                                   ":<module>")),
    ("planning, expansion, trial building", ("cluster/driver/planner", "scaling/config/", "scaling/spec/",
                                             "scaling/training/packing")),
    ("commit events, compaction, store scans", ("scaling/store/", "pyarrow", "duckdb")),
    ("progress", ("cluster/driver/progress",)),
    ("driver loop: submit, wait, results", ("cluster/driver/", "cluster/worker/", "/ray/")),
)


def profile_kinds(profile, top: int = 15) -> str:
    """The profile's own CPU times summed by kind (KINDS). A function in no kind's files (a
    builtin, the standard library) counts for the kind of its main caller, up the call chain."""
    import pstats

    stats = pstats.Stats(profile).stats  # {(file, line, name): (calls, ncalls, own, cumulative, callers)}
    memo: dict = {}

    def kind_of(key, depth: int = 0) -> str:
        if key in memo:
            return memo[key]
        where = f"{key[0]}:{key[2]}"
        kind = next((k for k, marks in KINDS if any(m in where for m in marks)), None)
        callers = stats.get(key, (0, 0, 0, 0, {}))[4]
        if kind is None and callers and depth < 30:
            main = max(callers, key=lambda c: callers[c][2] if isinstance(callers[c], tuple) else 0)
            kind = kind_of(main, depth + 1)
        memo[key] = kind = kind or "other"
        return kind

    by_kind: dict[str, float] = {}
    rows = []
    for key, (_, ncalls, own, cum, _) in stats.items():
        kind = kind_of(key)
        by_kind[kind] = by_kind.get(kind, 0.0) + own
        rows.append((own, ncalls, cum, f"{key[0].split('site-packages/')[-1].split('/main/')[-1]}:{key[1]}({key[2]})"))
    total = sum(by_kind.values()) or 1.0
    lines = [f"driver CPU by kind (cProfile, own CPU time of the main thread, {total:.2f} s in all; the profiler "
             "adds its own cost):"]
    lines += [f"  {k:<42} {v:7.2f} s {100 * v / total:5.1f}%" for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])]
    lines.append(f"top {top} functions by own time: own s, calls, cumulative s")
    lines += [f"  {own:7.3f} {n:8d} {cum:8.3f}  {where}" for own, n, cum, where in sorted(rows, reverse=True)[:top]]
    return "\n".join(lines)


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

    real_stop = localray.stop

    def timed_stop(*args, **kwargs):
        marks["stop0"] = time.perf_counter()
        session = localray._session
        if session is not None:
            marks["ray_cpu"] = ray_cpu_s(reaper.processes_of(session["cluster"], session["session_dir"]))
            marks["stop0"] = time.perf_counter()  # not the CPU count's own time
        try:
            return real_stop(*args, **kwargs)
        finally:
            marks["stop1"] = time.perf_counter()

    runner.connect, localray.stop = timed_connect, timed_stop
    try:
        t0, cpu0 = time.perf_counter(), time.process_time()
        offset = time.time() - t0
        run_sweep(parse_config(raw), yaml.safe_dump(raw), results, progress=False, log=lambda *_: None)
        t_end, cpu = time.perf_counter(), time.process_time() - cpu0
    finally:
        runner.connect, localray.stop = real, real_stop
    trials, curves = load_tables(results)
    step0 = {c["trial_id"]: c["wall_s"] for c in curves.to_pylist() if c["step"] == 0}
    rows = trials.to_pylist()
    start = min(r["start_time"].timestamp() + step0[r["trial_id"]] for r in rows) - offset
    end = max(r["end_time"].timestamp() for r in rows) - offset
    return {"trials": len(rows), "before_ray": marks["ray0"] - t0, "ray_init": marks["ray1"] - marks["ray0"],
            "until_training": start - marks["ray1"], "training": end - start, "after_training": t_end - end,
            "total": t_end - t0, "ray_stop": marks["stop1"] - marks["stop0"], "ray_cpu": marks.get("ray_cpu"),
            "driver_cpu": cpu}


def ray_cpu_s(procs) -> float:
    """CPU seconds (user + system) that the processes ``procs`` (pid -> start time) have used so far."""
    import os
    from pathlib import Path

    total = 0.0
    for pid, start in procs.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[19]) == start:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def fused_packs(raw: dict, slots: int = 2) -> tuple[int, int]:
    """(packs the default rule runs with the fused update, packs) of sweep ``raw`` planned on
    ``slots`` slots as a sweep plans it: ``optim.fused_pays`` over each pack's member-steps and
    its model's parameters (the stacked MLP; SGD's fast path never fuses)."""
    from cluster.driver.planner import plan
    from cluster.worker.sizes import model_params
    from scaling.training.optim import fused_pays

    units = plan(parse_config(raw).trials(), engine="packed", slots=slots, memory_bytes=1 << 30,
                 log=lambda *_: None)
    packs = [u.trials for u in units if u.engine == "packed"]
    return sum(fused_pays(p[0].optimizer, sum(t.total_steps for t in p), model_params(p[0])) for p in packs), len(packs)


def format_fused_rule() -> str:
    from pathlib import Path

    from cluster.bench.sweeps import reference_sweep

    demo = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "demo.yaml").read_text())
    parts = [f"{name}: {' of '.join(map(str, fused_packs(raw)))}" for name, raw in (
        ("reference sweep (SGD)", reference_sweep()), ("reference sweep (AdamW)", reference_sweep(optimizer="adamw")),
        ("make demo", demo))]
    return "fused (compiled) update chosen by the default rule in " + ", ".join(parts) + " packs (2 slots)"


def format_fixed(r: dict) -> str:
    after = r["until_training"] + r["after_training"]
    return (f"fixed cost of the {r['trials']}-trial reference sweep through run_sweep: {r['total']:.2f} s = "
            f"before Ray {r['before_ray']:.2f} + ray.init {r['ray_init']:.2f} + until the packs train "
            f"{r['until_training']:.2f} (workers import torch, load the task; planning, scheduling) + "
            f"training {r['training']:.2f} + after training {r['after_training']:.2f} (results, shutdown); "
            f"fixed cost after Ray is up: {after:.2f} s\n"
            f"  of which Ray's stop {r['ray_stop']:.2f} s; CPU: the Ray processes (workers included) "
            f"{r['ray_cpu'] if r['ray_cpu'] is not None else float('nan'):.2f} s until the stop, the driver "
            f"{r['driver_cpu']:.2f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--engine", choices=["packed", "single"], default="packed")
    parser.add_argument("--fixed", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the reference sweep's fixed cost (default: yes)")
    parser.add_argument("--overhead", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the driver's overhead at --trials tiny trials (default: yes)")
    parser.add_argument("--profile", action="store_true",
                        help="profile the driver during the tiny-trial sweep and say where its CPU goes")
    parser.add_argument("--profile-out", metavar="FILE", help="with --profile, also write the cProfile stats here")
    args = parser.parse_args(argv)
    if args.fixed:
        with tempfile.TemporaryDirectory() as results:
            print(format_fixed(fixed_cost(results)), flush=True)
        print(format_fused_rule(), flush=True)
    if not args.overhead:
        return
    profile = None
    if args.profile:
        import cProfile

        profile = cProfile.Profile(time.process_time)  # CPU seconds, as the share counts them
    with tempfile.TemporaryDirectory() as results:
        r = measure(args.trials, args.engine, results, profile)
    print(f"driver overhead: {r['ran']} tiny trials ({r['engine']} engine) in {r['wall_s']:.1f} s wall; "
          f"driver CPU {r['driver_cpu_s']:.2f} s = {100 * r['driver_share']:.1f}% of wall time "
          f"(target < 5%){' (profiled: slower)' if profile else ''}")
    if profile is not None:
        if args.profile_out:
            profile.dump_stats(args.profile_out)
        print(profile_kinds(profile), flush=True)


if __name__ == "__main__":
    main()
