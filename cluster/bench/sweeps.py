"""Time the reference sweeps three ways on the same CPUs (or one GPU): ``python -m cluster.bench``.

Two reference sweeps of the MLP: SGD (lr x momentum x seed) and AdamW with warmup and a
cosine schedule (lr x beta2 x seed); and two of other models, which pack through the vmap
backend: a CNN on 16x16 images (SGD, lr x seed) and a byte-level transformer LM (AdamW,
lr x beta2 x seed), 16 trials each, on synthetic data written to a temporary folder.
``--sweeps`` picks them (default all four). Each is timed:

1. packed: ``scaling.training.run.run_pack`` (the stacked backend for the MLP, vmap for the
   others), the trials split into one pack per worker process, with the optimizer update the
   backend picks by default (``scaling.training.optim.fused_pays``: eager for packs this short);
   fused: the same packs with the compiled (fused) optimizer update forced on. The compile is
   outside its timing (each worker runs the fused packs once first); that first run's extra
   seconds over the best are reported as the compile's cost;
2. single: ``scaling.training.run.run_trial``, one trial at a time per worker process;
3. tune: a plain Ray Tune run (``tune.Tuner`` over a grid, a function trainable that
   calls ``run_trial``, Tune's default scheduler and searcher, 1 CPU per trial) on a
   local Ray with as many CPUs.

The engines run in worker pools laid out as ``P processes x T threads`` (the
layouts given by ``--layouts``); every layout uses the same CPUs in all. Worker
start-up (spawning, importing torch, loading the task) is outside the timings,
as are ``ray.init`` and ``ray.shutdown``: the figures time training work only.
The matmul peak is measured in the same pool as the engines, all workers at once.

FLOPs counted: model FLOPs of training, 3x the forward matmul FLOPs (2 per multiply-add,
biases and elementwise work left out) per example seen, plus the forward FLOPs of
every eval (train subset and test set at each eval step). Both engines actually skip
the input gradient of the first layer, so they execute fewer FLOPs than counted;
the report gives that figure too.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context

REFERENCE_SWEEP = {
    "name": "bench",
    "task": {"name": "digits"},
    "model": {"name": "mlp", "width": 256, "depth": 1},
    "axes": {"n_train": [1000], "batch_size": [64], "lr": [0.01, 0.03, 0.1, 0.3],
             "momentum": [0.0, 0.5, 0.9, 0.95], "seed": [0, 1, 2, 3]},
    "budget": {"steps": 300},
    "eval": {"points": 10},
}
"""The reference sweep: a 64-256-10 MLP on digits, batch 64, 300 SGD steps, over lr x momentum
x seed (64 trials), as in the issue that asked for the packed engine."""
ADAMW_SWEEP = {
    **REFERENCE_SWEEP,
    "optimizer": {"name": "adamw", "weight_decay": 0.01},
    "schedule": {"name": "cosine", "warmup_frac": 0.05},
    "axes": {"n_train": [1000], "batch_size": [64], "lr": [1e-4, 3e-4, 1e-3, 3e-3],
             "beta2": [0.95, 0.98, 0.99, 0.999], "seed": [0, 1, 2, 3]},
}
"""The same MLP and budget with AdamW (decoupled weight decay 0.01), 5% warmup and a cosine
schedule, over lr x beta2 x seed (64 trials)."""
CNN_SWEEP = {
    "name": "bench-cnn",
    "task": {"name": "mnist", "data_dir": "{data}"},
    "model": {"name": "cnn", "width": 8, "depth": 2},
    "axes": {"n_train": [1000], "batch_size": [32], "lr": [0.003, 0.006, 0.01, 0.02], "momentum": [0.9],
             "seed": [0, 1, 2, 3]},
    "budget": {"steps": 150},
    "eval": {"points": 3},
}
"""A CNN (8 and 16 channels, 3x3, on 16x16 synthetic images) over lr x seed: 16 trials."""
LM_SWEEP = {
    "name": "bench-lm",
    "task": {"name": "text", "path": "{data}/corpus.txt", "context": 32},
    "model": {"name": "transformer", "width": 32, "depth": 2},
    "optimizer": {"name": "adamw", "weight_decay": 0.01},
    "axes": {"n_train": [800], "batch_size": [16], "lr": [1e-3, 3e-3], "beta2": [0.95, 0.99],
             "seed": [0, 1, 2, 3]},
    "budget": {"steps": 150},
    "eval": {"points": 3},
}
"""A byte-level transformer LM (width 32, 2 blocks, context 32) with AdamW over lr x beta2 x seed."""
SWEEPS = {"sgd": REFERENCE_SWEEP, "adamw": ADAMW_SWEEP, "cnn": CNN_SWEEP, "lm": LM_SWEEP}
QUICK_AXES = {"sgd": {"lr": [0.03, 0.1], "momentum": [0.0, 0.9], "seed": [0, 1]},
              "adamw": {"lr": [3e-4, 1e-3], "beta2": [0.95, 0.999], "seed": [0, 1]},
              "cnn": {"lr": [0.006, 0.01], "seed": [0, 1, 2, 3], "n_train": [250]},
              "lm": {"lr": [1e-3, 3e-3], "beta2": [0.95], "seed": [0, 1, 2, 3], "n_train": [200]}}
QUICK_STEPS = 100
QUICK_EVAL_POINTS = 2
"""A quick run evaluates at the start and the end only (the CNN's and the transformer's evals,
over their training sets too, cost more than their few steps), on a quarter of the CNN's and
the transformer's training sets (QUICK_AXES)."""
QUICK_STEPS_BY = {"cnn": 30, "lm": 15}
"""A quick run's steps where they differ from QUICK_STEPS: the CNN's and the transformer's steps
cost 10-30x an MLP step on a CPU, and a smoke run only shows that every engine runs and agrees."""
GRID_AXES = {"sgd": ("lr", "momentum", "seed"), "adamw": ("lr", "beta2", "seed"), "cnn": ("lr", "seed"),
             "lm": ("lr", "beta2", "seed")}
"""The axes each sweep varies (and Ray Tune searches; the others are fixed in the reference trial)."""


@dataclass(frozen=True, kw_only=True)
class Timing:
    engine: str
    """packed | fused | fused-first (the fused packs' first run, compile included) | single | tune."""
    layout: str
    """How the CPUs were used, e.g. '2 procs x 1 thread'."""
    wall_s: float
    """Wall-clock seconds of training all trials."""
    statuses: dict
    """Status -> number of trials."""
    test_acc: dict = field(default_factory=dict)
    """trial_id -> final test accuracy (for cross-checks between engines)."""
    peak_gflops: float = math.nan
    """fp32 matmul peak measured in the same pool, all workers at once."""


@dataclass(frozen=True, kw_only=True)
class BenchReport:
    quick: bool
    """A smoke run (fewer, shorter trials), not the reference sweep."""
    optimizer: str
    """Which sweep: 'sgd', 'adamw', 'cnn' or 'lm' (SWEEPS)."""
    trial: object
    """The first trial of the sweep (the others differ in GRID_AXES)."""
    n_trials: int
    device: str
    cpus: int
    model_flops: float
    """Counted FLOPs of the whole sweep: training (3x forward) plus eval forwards."""
    train_flops: float
    """The training part of model_flops."""
    executed_flops: float
    """Matmul FLOPs the engines execute (no input gradient for the first layer)."""
    timings: list
    load_avg: float
    """1-minute load average when the bench started (other work skews the figures)."""
    tf32_peak_gflops: float = math.nan
    """On CUDA: the TF32 matmul peak (measured in the driver process; not used by the engines)."""

    def best(self, engine: str) -> Timing | None:
        runs = [t for t in self.timings if t.engine == engine]
        return min(runs, key=lambda t: t.wall_s) if runs else None


def synthetic_data(folder: str) -> str:
    """Write the CNN's and the LM's data into ``folder``: MNIST-format 16x16 images whose
    pattern follows the label (2,000 training, 500 test) and a 40 kB text of repeating words."""
    import gzip  # noqa: F401  (the IDX reader's formats)
    import struct

    import numpy as np

    rng = np.random.default_rng(0)
    for split, n in (("train", 2000), ("t10k", 500)):
        y = rng.integers(0, 10, n)
        x = np.clip(rng.integers(0, 80, (n, 16, 16)) + 16 * y[:, None, None] * (np.arange(16) % 3 == 0), 0, 255)
        for name, array in ((f"{split}-images-idx3-ubyte", x), (f"{split}-labels-idx1-ubyte", y)):
            header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            with open(os.path.join(folder, name), "wb") as f:
                f.write(header + array.astype(np.uint8).tobytes())
    words = [bytes(rng.integers(97, 123, rng.integers(2, 8)).astype(np.uint8)) for _ in range(300)]
    text = b" ".join(words[int(i)] for i in rng.zipf(1.3, 12000) % len(words))[:40000]
    with open(os.path.join(folder, "corpus.txt"), "wb") as f:
        f.write(text)
    return folder


def reference_sweep(quick: bool = False, optimizer: str = "sgd", data: str | None = None) -> dict:
    """A benchmark sweep config; with ``quick`` 8 trials of QUICK_STEPS steps (QUICK_STEPS_BY for the
    CNN and the LM). The CNN and LM sweeps read ``data`` (a folder written by ``synthetic_data``)."""
    raw = copy.deepcopy(SWEEPS[optimizer])
    for key in ("data_dir", "path"):
        if key in raw["task"]:
            raw["task"][key] = raw["task"][key].replace("{data}", data or ".")
    if quick:
        raw["axes"].update(QUICK_AXES[optimizer])
        raw["budget"] = {"steps": QUICK_STEPS_BY.get(optimizer, QUICK_STEPS)}
        raw["eval"] = {"points": QUICK_EVAL_POINTS}
    return raw


def sweep_flops(trials: list) -> tuple[float, float, float]:
    """(training model FLOPs, eval FLOPs, executed training matmul FLOPs) of a list of trials.
    Models other than the MLP: scaling.training.flops.flops_per_example (counted from their layers)."""
    from scaling.training.loop import eval_steps
    from scaling.tasks.resolve import task_shape

    train = evals = executed = 0.0
    for t in trials:
        if t.model != "mlp":
            from scaling.training.flops import flops_per_example

            per, (_, _, _, n_eval) = flops_per_example(t), task_shape(t.task)
            train += per * t.total_steps * t.batch_size
            executed += per * t.total_steps * t.batch_size
            evals += per / 3 * (t.n_train + n_eval) * len(eval_steps(t, t.total_steps))
            continue
        input_dim, n_classes, _, n_eval = task_shape(t.task)
        dims = [input_dim] + [t.width] * t.depth + [n_classes]
        forward = sum(2 * a * b for a, b in zip(dims, dims[1:]))  # per example
        examples = t.total_steps * t.batch_size
        train += 3 * forward * examples
        executed += (3 * forward - 2 * dims[0] * dims[1]) * examples
        points = len(eval_steps(t, t.total_steps))
        evals += forward * (t.n_train + n_eval) * points
    return train, evals, executed


# ---- work done inside the worker processes ----------------------------------

def _init_worker(threads: int, task: dict) -> None:
    import torch

    import scaling.training.backends.stacked  # noqa: F401  (imports outside the timings)
    import scaling.training.backends.vmap  # noqa: F401
    from scaling.tasks.resolve import load_task

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # as the training loop does; the peak is timed in the same state
    load_task(task)


def _pid(_: int) -> int:
    time.sleep(0.3)
    return os.getpid()


def _load(task: dict) -> int:
    """A worker of a pool kept from an earlier sweep loads this sweep's task (outside the timings)."""
    from scaling.tasks.resolve import load_task

    load_task(task)
    return _pid(0)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device: str, seconds: float = 1.5, quick: bool = False) -> float:
    """Best fp32 GFLOP/s of square torch.mm over a few sizes, ``seconds`` in all (``quick``: sizes
    a quarter as wide, each matmul 1/64 of the work, for a smoke run's short ``seconds``)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    sizes = (2048, 4096, 8192) if device.startswith("cuda") else (512, 1024, 2048)
    if quick:
        sizes = tuple(n // 4 for n in sizes)
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        c = torch.mm(a, b)
        _sync(device)
        t0, k = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds / len(sizes):
            torch.mm(a, b, out=c)
            k += 1
            _sync(device)
        best = max(best, 2 * n**3 * k / (time.perf_counter() - t0) / 1e9)
    return best


def _packed_job(packs: list[list], device: str, fused: bool | None = None) -> list[tuple[str, str, float]]:
    """Train the packs: the backend's default update (``fused`` None, as run_pack), or the fused
    (compiled) update forced on or off."""
    from scaling.training.run import run_pack

    if fused is None:
        rows = [r["trial"] for pack in packs for r in run_pack(pack, device=device)]
    else:
        from scaling.training.backends.stacked import StackedBackend
        from scaling.training.backends.vmap import VmapBackend
        from scaling.training.loop import run_members
        from scaling.training.packing import choose_backend

        rows = []
        for pack in packs:
            cls = VmapBackend if choose_backend(pack)[0] == "vmap" else StackedBackend
            rows += [r["trial"] for r in run_members(pack, lambda ts, cls=cls: cls(ts, device, fused=fused),
                                                     engine="packed")]
    return [(r["trial_id"], r["status"], r["test_acc"]) for r in rows]


def _single_job(trial, device: str) -> list[tuple[str, str, float]]:
    from scaling.training.run import run_trial

    row = run_trial(trial, device=device)["trial"]
    return [(row["trial_id"], row["status"], row["test_acc"])]


# ---- timing in the driver -----------------------------------------------------

def split_packs(trials: list, parts: int) -> list[list[list]]:
    """Per worker, the packs it trains: each pack_key group cut into ``parts`` near-equal packs."""
    from scaling.training.packing import pack_key

    groups: dict[tuple, list] = {}
    for t in trials:
        groups.setdefault(pack_key(t), []).append(t)
    out: list[list[list]] = [[] for _ in range(parts)]
    for group in groups.values():
        size = math.ceil(len(group) / parts)
        for i in range(parts):
            if group[i * size:(i + 1) * size]:
                out[i].append(group[i * size:(i + 1) * size])
    return out


def time_pool(trials: list, processes: int, threads: int, device: str, log, *,
              repeat: int = 1, peak_s: float = 1.5, fused: bool = True, quick: bool = False,
              pools: dict | None = None) -> list[Timing]:
    """Time packed, fused (with ``fused``) and single in one pool of ``processes`` workers of
    ``threads`` threads.

    The engines take turns ``repeat`` times and each keeps its fastest run (as timeit
    does: noise from other work only ever adds time). The fused packs run once before the
    timings (the compile, per worker; Inductor's on-disk cache is shared), timed as engine
    ``fused-first``. The peak is measured before and after, and the higher kept (``quick``: on
    smaller matrices). With ``pools`` (a dict the caller shuts down; a quick run's), the pool of
    this layout is kept there for the next sweep, whose task each worker loads before anything
    is timed."""
    layout = f"{processes} proc{'s' if processes > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}"
    packs = [p for p in split_packs(trials, processes) if p]
    jobs = {"packed": (_packed_job, [(p, device) for p in packs]),
            "fused": (_packed_job, [(p, device, True) for p in packs]),
            "single": (_single_job, [(t, device) for t in trials])}
    if not fused:
        del jobs["fused"]

    def run(engine: str) -> tuple[float, list]:
        fn, args = jobs[engine]
        t0 = time.perf_counter()
        futures = [pool.submit(fn, *a) for a in args]
        rows = [row for f in futures for row in f.result()]
        wall = time.perf_counter() - t0
        log(f"  {layout}: {engine} {wall:.2f} s")
        return wall, rows

    kept = pools is not None and (processes, threads) in pools
    pool = pools[(processes, threads)] if kept else ProcessPoolExecutor(
        processes, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(threads, trials[0].task))
    if pools is not None:
        pools[(processes, threads)] = pool
    with contextlib.nullcontext(pool) if pools is not None else pool:
        for _ in range(5):  # start every worker (a kept one loads the task) before timing anything
            if len(set(pool.map(_load, [trials[0].task] * processes) if kept else
                       pool.map(_pid, range(processes)))) == processes:
                break
        peaks = [sum(pool.map(matmul_peak, [device] * processes, [peak_s] * processes, [quick] * processes))]
        best: dict[str, tuple[float, list]] = {}
        if fused:  # each worker compiles the update (with its imports) before anything is timed
            best["fused-first"] = run("fused")
        for _ in range(repeat):
            for engine in jobs:
                wall, rows = run(engine)
                if engine not in best or wall < best[engine][0]:
                    best[engine] = (wall, rows)
        peaks.append(sum(pool.map(matmul_peak, [device] * processes, [peak_s] * processes, [quick] * processes)))
    log(f"  {layout}: fp32 matmul peak {peaks[0]:.1f} GFLOP/s before, {peaks[1]:.1f} after")
    return [_timing(engine, layout, wall, rows, max(peaks)) for engine, (wall, rows) in best.items()]


def _timing(engine: str, layout: str, wall: float, rows, peak: float = math.nan) -> Timing:
    statuses: dict[str, int] = {}
    for _, status, _ in rows:
        statuses[status] = statuses.get(status, 0) + 1
    return Timing(engine=engine, layout=layout, wall_s=wall, statuses=statuses,
                  test_acc={tid: acc for tid, _, acc in rows}, peak_gflops=peak)


def _tune_trainable(config: dict, base, device: str) -> None:
    import torch
    from ray import tune

    from scaling.training.run import run_trial

    torch.set_num_threads(1)
    row = run_trial(base.replace(**config), device=device)["trial"]
    tune.report({"test_acc": row["test_acc"], "diverged": float(row["status"] != "ok"),
                 "trial_id": row["trial_id"]})


def time_tune(trials: list, grid: dict, cpus: int, device: str, log) -> Timing:
    """A plain Ray Tune grid search over ``grid``, 1 CPU per trial, on a local Ray."""
    import ray
    from ray import tune

    gpus = 1 if device.startswith("cuda") else 0
    ray.init(address="local", num_cpus=cpus, num_gpus=gpus, include_dashboard=False,
             log_to_driver=False, logging_level="ERROR")
    try:
        resources = {"cpu": 1, "gpu": gpus / cpus} if gpus else {"cpu": 1}
        trainable = tune.with_resources(tune.with_parameters(_tune_trainable, base=trials[0], device=device),
                                        resources)
        with tempfile.TemporaryDirectory(prefix="bench-tune-") as storage:
            tuner = tune.Tuner(trainable, param_space={k: tune.grid_search(v) for k, v in grid.items()},
                               run_config=tune.RunConfig(name="bench", storage_path=storage, verbose=0))
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr):  # Tune prints where its results are
                results = tuner.fit()
            wall = time.perf_counter() - t0
        rows = [(r.metrics.get("trial_id", ""), "ok" if r.metrics.get("diverged") == 0.0 else
                 ("error" if r.error else "diverged"), r.metrics.get("test_acc", math.nan)) for r in results]
    finally:
        ray.shutdown()
    log(f"  ray tune: {wall:.2f} s")
    return _timing("tune", f"ray, {cpus} CPUs", wall, rows)


def run_bench(*, quick: bool = False, device: str = "cpu", cpus: int = 2, tune_too: bool | None = None,
              layouts: list[tuple[int, int]] | None = None, repeat: int = 1, optimizer: str = "sgd",
              data: str | None = None, fused: bool = True, log=print, pools: dict | None = None) -> BenchReport:
    """Time a benchmark sweep (the quick one with ``quick``) and return the figures; ``pools``:
    see ``time_pool``."""
    from scaling.config.sweep import parse_config

    raw = reference_sweep(quick, optimizer, data)
    trials = parse_config(raw).trials()
    if layouts is None:
        layouts = [(1, cpus)] if device.startswith("cuda") else [(cpus, 1), (1, cpus)]
        layouts = layouts[:1] if quick or optimizer in ("cnn", "lm") else layouts
    load = os.getloadavg()[0]
    log(f"timing {len(trials)} {optimizer} trials on {device} ({cpus} CPUs; load average {load:.2f})")
    timings = []
    for processes, threads in layouts:
        timings += time_pool(trials, processes, threads, device, log, repeat=repeat,
                             peak_s=0.15 if quick else 1.5, fused=fused, quick=quick, pools=pools)
    if tune_too if tune_too is not None else not quick:
        grid = {k: raw["axes"][k] for k in GRID_AXES[optimizer]}
        timings.append(time_tune(trials, grid, cpus, device, log))
    train, evals, executed = sweep_flops(trials)
    tf32 = math.nan
    if device.startswith("cuda"):
        from cluster.bench.roofline import matmul_peak as roofline_peak

        tf32 = roofline_peak(device, 0.6 if quick else 1.5, tf32=True) / 1e9
    return BenchReport(tf32_peak_gflops=tf32, quick=quick, optimizer=optimizer, trial=trials[0],
                       n_trials=len(trials), device=device, cpus=cpus,
                       model_flops=train + evals, train_flops=train, executed_flops=executed + evals,
                       timings=timings, load_avg=load)


def format_report(r: BenchReport) -> str:
    """The report as text: a table, the ratios, and a cross-check of the engines' results."""
    t = r.trial
    how = "SGD" if t.optimizer == "sgd" else f"AdamW, {t.schedule} schedule"
    what = "reference sweep" if t.model == "mlp" else f"{t.model} sweep, packed by the vmap backend"
    lines = ["quick smoke run: too short to time well; run without --quick for the reference figures"
             if r.quick else f"{what} ({how}):",
             f"{r.n_trials} trials of a {t.width}-wide {t.model} ({t.depth} deep) on {t.task['name']}, "
             f"batch {t.batch_size}, "
             f"{t.total_steps} steps, n_train {t.n_train}, {t.eval['points']} eval points, "
             f"over {' x '.join(GRID_AXES[r.optimizer])}; {r.device}, {r.cpus} CPUs",
             f"counted: {r.model_flops / 1e9:.1f} GFLOP = training {r.train_flops / 1e9:.1f} "
             f"(3x forward matmuls) + eval {(r.model_flops - r.train_flops) / 1e9:.1f} (forward); "
             f"executed matmuls {r.executed_flops / 1e9:.1f} GFLOP",
             "",
             f"{'engine':11} {'layout':20} {'wall_s':>8} {'trials/min':>11} {'GFLOP/s':>8} "
             f"{'peak':>7} {'%peak':>6} {'%peak exec':>10}  statuses"]
    for x in r.timings:
        rate = r.model_flops / x.wall_s / 1e9
        pct = 100 * rate / x.peak_gflops if x.peak_gflops == x.peak_gflops else math.nan
        pct_exec = pct * r.executed_flops / r.model_flops
        lines.append(f"{x.engine:11} {x.layout:20} {x.wall_s:8.2f} {60 * r.n_trials / x.wall_s:11.0f} "
                     f"{rate:8.1f} {x.peak_gflops:7.1f} {pct:6.1f} {pct_exec:10.1f}  "
                     + ", ".join(f"{n} {s}" for s, n in sorted(x.statuses.items())))
    packed, single, tune = r.best("packed"), r.best("single"), r.best("tune")
    lines.append("")
    if packed:
        pct = 100 * r.model_flops / packed.wall_s / 1e9 / packed.peak_gflops
        lines.append(f"packed ({packed.layout}): {pct:.0f}% of the measured fp32 matmul peak (target >= 50%)")
        if r.tf32_peak_gflops == r.tf32_peak_gflops:
            tf32 = 100 * r.model_flops / packed.wall_s / 1e9 / r.tf32_peak_gflops
            lines.append(f"packed ({packed.layout}): {tf32:.0f}% of the measured TF32 matmul peak "
                         f"({r.tf32_peak_gflops:.0f} GFLOP/s; the engines run fp32)")
    if packed and single:
        target = {"sgd": " (target >= 8x)", "adamw": " (target >= 4x)"}.get(r.optimizer, "")
        lines.append(f"packed ({packed.layout}) vs single ({single.layout}): "
                     f"{single.wall_s / packed.wall_s:.1f}x faster{target}")
        diffs = [abs(packed.test_acc[k] - v) for k, v in single.test_acc.items() if k in packed.test_acc]
        lines.append(f"cross-check: final test_acc of packed and single equal in "
                     f"{sum(d == 0 for d in diffs)} of {len(diffs)} trials, max |diff| "
                     f"{max(diffs) if diffs else math.nan:.2g} (float rounding differs; trials at the edge "
                     "of stability amplify it)")
    fused = r.best("fused")
    if fused and single and packed:
        first = next((x for x in r.timings if x.engine == "fused-first" and x.layout == fused.layout), None)
        lines.append(f"fused ({fused.layout}) vs single ({single.layout}): {single.wall_s / fused.wall_s:.1f}x "
                     f"faster; fused vs packed (the default update, {packed.layout}): "
                     f"{packed.wall_s / fused.wall_s:.2f}x")
        if first is not None:
            lines.append(f"fused, compile included (its first run in fresh workers, {first.layout}): "
                         f"{first.wall_s:.2f} s, {first.wall_s - fused.wall_s:.1f} s over its best; "
                         f"{packed.wall_s / first.wall_s:.2f}x the default packed run")
        diffs = [abs(fused.test_acc[k] - v) for k, v in packed.test_acc.items() if k in fused.test_acc]
        lines.append(f"cross-check: final test_acc of fused and packed equal in {sum(d == 0 for d in diffs)} "
                     f"of {len(diffs)} trials, max |diff| {max(diffs) if diffs else math.nan:.2g}")
    if packed and tune:
        lines.append(f"packed vs ray tune: {tune.wall_s / packed.wall_s:.1f}x faster (target >= 40x)")
    if r.load_avg > 0.5:
        lines.append(f"warning: load average was {r.load_avg:.2f} at the start; other work skews "
                     "these figures")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"8 trials of {QUICK_STEPS} steps ({QUICK_STEPS_BY['cnn']} for the CNN, "
                             f"{QUICK_STEPS_BY['lm']} for the LM), "
                             f"{QUICK_EVAL_POINTS} evals, one layout, no Ray Tune (a smoke run)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs every engine may use (default 2)")
    parser.add_argument("--tune", action=argparse.BooleanOptionalAction, default=None,
                        help="time Ray Tune too (default: yes, except with --quick)")
    parser.add_argument("--fused", action=argparse.BooleanOptionalAction, default=None,
                        help="time the packs with the fused (compiled) optimizer update forced on too, and "
                             "its compile (default: yes, except with --quick)")
    parser.add_argument("--layouts", default=None, metavar="PxT,...",
                        help="worker layouts to time, e.g. 2x1,1x2 (processes x threads; default: "
                             "both of those on cpu, 2x1 only with --quick, 1x2 on cuda)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of packed and single per layout, the fastest kept (default 1)")
    parser.add_argument("--sweeps", "--optimizer", dest="sweeps", default="sgd,adamw,cnn,lm", metavar="NAMES",
                        help="sweeps to time: sgd and adamw (the reference MLP with SGD, or AdamW + cosine), "
                             "cnn, lm (a CNN and a transformer, packed by the vmap backend); default all "
                             "four; Ray Tune runs with sgd only")
    args = parser.parse_args(argv)
    optimizers = [o.strip() for o in args.sweeps.split(",") if o.strip()]
    if not optimizers or set(optimizers) - set(SWEEPS):
        print(f"error: --sweeps {args.sweeps!r}: choose from {sorted(SWEEPS)}, comma-separated",
              file=sys.stderr)
        return 2
    layouts = _parse_layouts(args.layouts) if args.layouts else None
    if layouts == []:
        print(f"error: --layouts {args.layouts!r} is not a list like 2x1,1x2 (PROCESSESxTHREADS, "
              "both >= 1)", file=sys.stderr)
        return 2
    if args.repeat < 1:
        print(f"error: --repeat {args.repeat} must be at least 1", file=sys.stderr)
        return 2
    if args.device not in ("cpu", "cuda"):
        print(f"error: --device {args.device!r} is not supported; use cpu or cuda", file=sys.stderr)
        return 2
    if args.cpus < 1:
        print(f"error: --cpus {args.cpus} must be at least 1", file=sys.stderr)
        return 2
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda needs a CUDA GPU, and torch.cuda.is_available() is False here",
                  file=sys.stderr)
            return 2
    reports = []
    names = {"sgd": "MLP SGD", "adamw": "MLP AdamW + cosine", "cnn": "CNN (vmap)", "lm": "transformer LM (vmap)"}
    # a quick run keeps its worker pools from one sweep to the next (a torch import per worker)
    pools: dict | None = {} if args.quick else None
    with tempfile.TemporaryDirectory(prefix="bench-data-") as data:
        if {"cnn", "lm"} & set(optimizers):
            synthetic_data(data)
        try:
            for optimizer in optimizers:
                tune_too = args.tune if optimizer == "sgd" else False
                reports.append(run_bench(quick=args.quick, device=args.device, cpus=args.cpus, tune_too=tune_too,
                                         layouts=layouts, repeat=args.repeat, optimizer=optimizer, data=data,
                                         fused=args.fused if args.fused is not None else not args.quick,
                                         log=lambda s: print(s, file=sys.stderr, flush=True), pools=pools))
                print(format_report(reports[-1]) + "\n", flush=True)
        finally:
            for pool in (pools or {}).values():
                pool.shutdown()
    if len(reports) > 1:
        if any(r.best("fused") for r in reports):
            print("vs the single engine, side by side (packed with the default update / fused, compiled "
                  "update / fused with its compile): " + "; ".join(
                      f"{names[r.optimizer]} {_ratio(r):.1f}x / {_ratio(r, 'fused'):.1f}x / "
                      f"{_ratio(r, 'fused-first'):.1f}x" for r in reports))
        print("packed vs single engine, side by side: " + "; ".join(
            f"{names[r.optimizer]} {_ratio(r):.1f}x" for r in reports))
    return 0


def _ratio(r: BenchReport, engine: str = "packed") -> float:
    packed, single = r.best(engine), r.best("single")
    return single.wall_s / packed.wall_s if packed and single else math.nan


def _parse_layouts(text: str) -> list[tuple[int, int]]:
    """'2x1,1x2' -> [(2, 1), (1, 2)]; [] if malformed."""
    try:
        layouts = [tuple(int(v) for v in item.split("x")) for item in text.split(",")]
    except ValueError:
        return []
    return layouts if all(len(lt) == 2 and min(lt) >= 1 for lt in layouts) else []


if __name__ == "__main__":
    sys.exit(main())
