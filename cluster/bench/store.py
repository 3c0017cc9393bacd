"""The results store at scale: latency and peak memory of reading it, resuming and expanding.

``python -m cluster.bench.store`` builds two stores of one sweep design (20 n_train values ×
50 cells (5 batch sizes × 10 learning rates) × seeds), with synthetic results:

- **100k** trials (100 seeds): as a sweep writes them, commit events of 50 trials (curves part,
  then trials part, named by the store's own rules), then compacted as the driver does at the
  end of a sweep;
- **1M** trials × 100 curve points (1,000 seeds; 100M curve rows): written directly in the
  store's schema as the 20 merged pairs a compaction leaves.

For each it runs, each in a fresh process (peak RSS of that process): ``scaling status``; a
trials aggregate; a curves aggregate joined with trials; ``scaling fit --x n_train``; the start
of a resume (command start to the first trial submitted to Ray, the store missing 1,000 trials);
and the driver's expansion (hashing every trial, then building and planning them all). It prints
one table. At most about 10 minutes and 1 GB of disk (``--scale small`` for a quick look).
Figures depend on the machine: compare columns of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np
import pyarrow as pa

N_TRAIN = [25, 31, 38, 46, 56, 69, 85, 104, 128, 156, 192, 235, 288, 353, 433, 531, 651, 798, 979, 1200]
POINTS = 100
TRIALS_SQL = "SELECT n_train, min(test_loss) FROM trials GROUP BY 1 ORDER BY 1"
CURVES_SQL = ("SELECT t.n_train, c.step, avg(c.test_loss) AS test_loss FROM curves c JOIN trials t "
              "USING (sweep, trial_id, run_id) GROUP BY ALL ORDER BY ALL")


def design(seeds: int, name: str = "bench") -> dict:
    return {"name": name, "task": {"name": "digits"}, "model": {"name": "mlp", "width": 16, "depth": 1},
            "axes": {"n_train": N_TRAIN, "batch_size": [1, 2, 4, 8, 16], "lr": {"log": [0.01, 1.0], "num": 10},
                     "seed": {"linear": [0, seeds - 1], "num": seeds}},
            "budget": {"steps": 500}, "eval": {"points": POINTS}}


# ---- building stores ----------------------------------------------------------------------------

def _rows(cfg, points: list[dict], rng) -> tuple[pa.Table, pa.Table]:
    """Trials and curves of some points, vectorised, in the declared schema."""
    from scaling.spec.schema import CODE_VERSION, CURVES_SCHEMA, PointIds, TRIALS_SCHEMA

    ids = PointIds(cfg.make, tuple(cfg.axes))
    n = len(points)
    tid = np.array([ids(p) for p in points])
    rid = np.array([uuid.uuid4().hex for _ in range(n)])
    n_train = np.array([p["n_train"] for p in points])
    lr = np.array([p["lr"] for p in points])
    batch = np.array([p["batch_size"] for p in points])
    floor = 0.05 + 3.0 * n_train ** -0.5 + 0.2 * np.abs(np.log10(lr) + 1) + 0.01 * np.log2(batch)
    final = np.round(floor * rng.lognormal(0, 0.05, n), 4)
    cols = {"sweep": [cfg.name] * n, "trial_id": tid, "run_id": rid, "task": ["digits"] * n, "model": ["mlp"] * n,
            "width": np.full(n, 16), "depth": np.full(n, 1), "n_train": n_train, "batch_size": batch, "lr": lr,
            "optimizer": ["sgd"] * n, "momentum": np.zeros(n), "weight_decay": np.zeros(n),
            "seed": np.array([p["seed"] for p in points]), "budget_steps": np.full(n, 500), "status": ["ok"] * n,
            "steps": np.full(n, 500), "examples_seen": 500 * batch, "test_loss": final, "train_loss": final * 0.8,
            "val_loss": final * 1.01, "test_acc": np.round(1 - final / 3, 4), "val_acc": np.round(1 - final / 3, 4),
            "code_version": [CODE_VERSION] * n, "data_version": ["2"] * n, "engine": ["packed"] * n,
            "backend": ["stacked"] * n, "wall_s": np.round(rng.uniform(1, 5, n), 2)}
    trials = pa.table({f.name: pa.array(cols[f.name]).cast(f.type) if f.name in cols else pa.nulls(n, f.type)
                       for f in TRIALS_SCHEMA}, schema=TRIALS_SCHEMA)
    k = np.tile(np.arange(POINTS), n)
    i = np.repeat(np.arange(n), POINTS)
    loss = np.round(final[i] * (1 + 4.0 / (1 + k)), 4)
    m = n * POINTS
    ccols = {"sweep": pa.array([cfg.name]).take(np.zeros(m, np.int64)), "trial_id": pa.array(tid).take(i),
             "run_id": pa.array(rid).take(i), "step": 5 * k, "epoch": np.round(5 * k * batch[i] / n_train[i], 3),
             "examples_seen": 5 * k * batch[i], "lr_now": lr[i], "train_loss": loss * 0.8, "val_loss": loss * 1.01,
             "test_loss": loss, "test_acc": np.round(1 - loss / 3, 4), "wall_s": np.round(0.01 * k, 2)}
    curves = pa.table({f.name: pa.array(ccols[f.name]).cast(f.type) if f.name in ccols else pa.nulls(m, f.type)
                       for f in CURVES_SCHEMA}, schema=CURVES_SCHEMA)
    return trials, curves


def build_store(root: str, seeds: int, *, pair_trials: int, merged: bool, skip_seed: int | None = None) -> dict:
    """Write the design's trials to ``root`` in pairs of ``pair_trials`` trials: commit events
    (``<unit>-<run_id>``) or, with ``merged``, the pairs a compaction leaves."""
    import yaml

    import scaling.store.parts as parts_mod
    from scaling.config.sweep import parse_config
    from scaling.store.writer import Store

    raw = design(seeds)
    cfg = parse_config(raw)
    store = Store(root)
    store.save_config(cfg.name, yaml.safe_dump(raw))
    rng = np.random.default_rng(0)
    batch, written = [], 0
    t0 = time.perf_counter()
    for point in cfg.points():
        if skip_seed is not None and point["seed"] == skip_seed:
            continue
        batch.append(point)
        if len(batch) == pair_trials:
            written += _write_pair(store, cfg, batch, rng, merged, parts_mod)
            batch = []
    if batch:
        written += _write_pair(store, cfg, batch, rng, merged, parts_mod)
    return {"trials": written, "seconds": time.perf_counter() - t0, "config": raw}


def _write_pair(store, cfg, points, rng, merged, parts_mod) -> int:
    trials, curves = _rows(cfg, points, rng)
    name = f"merged-{uuid.uuid4().hex}" if merged else parts_mod.commit_name(
        parts_mod.unit_id(trials.column("trial_id").to_pylist()), trials.column("run_id")[0].as_py())
    if merged:
        trials = trials.sort_by("trial_id")
    store.write_stream(f"{store.table_dir(cfg.name, 'curves')}/{name}.parquet", curves.schema, curves.to_batches())
    store.write_stream(f"{store.table_dir(cfg.name, 'trials')}/{name}.parquet", trials.schema, trials.to_batches())
    return trials.num_rows


# ---- measuring ----------------------------------------------------------------------------------

LAUNCH = ("import json, os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); _, st, ru = os.wait4(p.pid, 0); "
          "print(json.dumps({'peak_kb': ru.ru_maxrss}), flush=True); sys.exit(os.waitstatus_to_exitcode(st))")
"""Runs a command and prints its peak RSS: started from this small process, the command's peak is its
own (a child forked from the benchmark's big process would count the benchmark's pages too)."""


def measure(argv: list[str], timeout: float = 300) -> dict:
    """Run a command in a fresh process: wall seconds and that process's peak RSS (MB)."""
    out_file, err_file = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # pipes would fill up and block
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, *argv], stdout=out_file, stderr=err_file,
                            start_new_session=True)
    deadline = start + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            os.killpg(proc.pid, 9)
            pid, status, usage = os.wait4(proc.pid, 0)
            return {"seconds": None, "rss_mb": usage.ru_maxrss / 1024, "error": "timeout"}
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    out_file.seek(0)
    err_file.seek(0)
    out, err = out_file.read().decode(errors="replace"), err_file.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    peaks = [json.loads(line)["peak_kb"] for line in out.splitlines() if line.startswith("{\"peak_kb\"")]
    result = {"seconds": seconds, "rss_mb": (peaks[-1] if peaks else usage.ru_maxrss) / 1024, "out": out}
    if proc.returncode != 0:
        result["error"] = (err.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:200]
    marks = [json.loads(line) for line in out.splitlines() if line.startswith("{\"mark\"")]
    if marks:
        result["seconds"] = marks[-1]["seconds"]
    return result


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cluster.cli", *args]


def resume_start(root: str, config: str) -> None:
    """(In a fresh process.) Run ``scaling sweep`` on ``root``; print the seconds from here to the
    first trial submitted to Ray, and stop there."""
    t0 = time.perf_counter()
    import cluster.driver.drive as drive_mod

    real = drive_mod.drive

    class FirstSubmit:
        def __init__(self, task):
            self.task = task

        def remote(self, *args, **kwargs):
            print(json.dumps({"mark": "first submit", "seconds": time.perf_counter() - t0}), flush=True)
            os._exit(0)

    def patched(*args, **kwargs):
        kwargs["task"], kwargs["ddp"] = FirstSubmit(kwargs["task"]), FirstSubmit(kwargs["ddp"])
        return real(*args, **kwargs)

    drive_mod.drive = patched
    from cluster.cli import main

    rc = main(["sweep", config, "--results", root, "--quiet", "--ray-network", "host", "--num-cpus", "2",
               "--allow-large"])
    sys.exit(rc or 1)  # reaching here means no trial was submitted: the measurement failed


def expansion(config: str) -> None:
    """(In a fresh process.) Hash every trial of the sweep, then build and plan them all."""
    from cluster.driver.planner import plan
    from scaling.config.sweep import load_config
    from scaling.config.expand import CHUNK, pending_trials, scan

    cfg = load_config(config)
    t0 = time.perf_counter()
    exp = scan(cfg)
    hashed = time.perf_counter() - t0
    units, chunk = 0, []
    for trial in pending_trials(cfg, exp):
        chunk.append(trial)
        if len(chunk) == CHUNK:
            units += len(plan(chunk, engine="packed", slots=2, memory_bytes=1 << 30, log=lambda *_: None))
            chunk = []
    units += len(plan(chunk, engine="packed", slots=2, memory_bytes=1 << 30, log=lambda *_: None))
    print(json.dumps({"mark": "expanded", "seconds": time.perf_counter() - t0, "hash_s": hashed,
                      "trials": exp.total, "units": units}), flush=True)


def run_all(scales: dict, workdir: str, log=print) -> dict:
    results = {}
    for label, seeds in scales.items():
        root = os.path.join(workdir, label)
        log(f"[{label}] building the store ...")
        if seeds >= 1000:
            built = build_store(root, seeds, pair_trials=50_000, merged=True, skip_seed=seeds - 1)
            compact_s = None
        else:
            built = build_store(root, seeds, pair_trials=50, merged=False, skip_seed=seeds - 1)
            from scaling.store.compaction import compact
            from scaling.store.writer import Store

            t0 = time.perf_counter()
            compact(Store(root), "bench")
            compact_s = time.perf_counter() - t0
        config = os.path.join(workdir, f"{label}.yaml")
        import yaml

        with open(config, "w") as f:
            yaml.safe_dump(built["config"], f)
        files = len(os.listdir(os.path.join(root, "bench", "trials")))
        size = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(root) for n in ns) / 2**20
        log(f"[{label}] {built['trials']:,} trials written in {built['seconds']:.0f} s"
            + (f", compacted in {compact_s:.0f} s" if compact_s is not None else "")
            + f"; {files} trials part(s), {size:,.0f} MB")
        row = {"store": {"trials": built["trials"], "files": files, "mb": size, "compact_s": compact_s}}
        steps = {
            "status": cli("status", root),
            "trials aggregate": cli("query", root, TRIALS_SQL),
            "curves aggregate joined with trials": cli("query", root, CURVES_SQL, "--format", "csv"),
            "scaling fit --x n_train": cli("fit", root, "--x", "n_train"),
            "resume start (to the first trial submitted)": [sys.executable, "-m", "cluster.bench.store",
                                                            "--resume-start", root, config],
            "driver expansion (hash, build, plan every trial)": [sys.executable, "-m", "cluster.bench.store",
                                                                  "--expansion", config],
        }
        for what, argv in steps.items():
            row[what] = measure(argv, timeout=300)
            if what.startswith("resume"):
                from cluster.launch.reaper import reap_orphans

                reap_orphans()  # the measured driver stopped at its first submit, leaving its Ray
            r = row[what]
            log(f"[{label}] {what}: " + (f"{r['seconds']:.2f} s" if r["seconds"] is not None else "-")
                + f", {r['rss_mb']:,.0f} MB" + (f" ({r['error']})" if "error" in r else ""))
        results[label] = row
        shutil.rmtree(root, ignore_errors=True)
    return results


def table(results: dict) -> str:
    labels = list(results)
    whats = [k for k in next(iter(results.values())) if k != "store"]
    head = ["what"] + [f"{label}: seconds, peak RSS" for label in labels]
    rows = [head]
    for what in whats:
        cells = [what]
        for label in labels:
            r = results[label][what]
            cells.append((f"{r['seconds']:.2f} s" if r["seconds"] is not None else "timeout")
                         + f", {r['rss_mb']:,.0f} MB" + (" (error)" if r.get("error") and r["seconds"] else ""))
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    stores = "; ".join(f"{label}: {r['store']['trials']:,} trials stored, {r['store']['files']} trials part(s), "
                       f"{r['store']['mb']:,.0f} MB" for label, r in results.items())
    return "\n".join(lines + [stores])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.bench.store", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["full", "small"], default="full",
                        help="full: 100k and 1M trials; small: 10k and 100k (a quick look)")
    parser.add_argument("--workdir", default=None, help="where to build the stores (default: a temporary folder)")
    parser.add_argument("--resume-start", nargs=2, metavar=("ROOT", "CONFIG"), help=argparse.SUPPRESS)
    parser.add_argument("--expansion", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.resume_start:
        resume_start(*args.resume_start)
        return 0
    if args.expansion:
        expansion(args.expansion)
        return 0
    scales = {"100k": 100, "1M": 1000} if args.scale == "full" else {"10k": 10, "100k": 100}
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-store-")
    try:
        results = run_all(scales, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"results store at scale ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}):")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
