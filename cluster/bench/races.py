"""Stress: compactions racing a sweep, a second driver and another compaction.

``python -m cluster.bench.races [--runs 10] [--only NAME ...] [--keep DIR]`` runs each scenario
``--runs`` times through the real command line (a real local Ray per sweep) and checks, after
each run, what issue 26 asks: every command exited 0, each trial is in the raw rows of the store
exactly once after the last compaction (raw rows across every part, not part names), and
``scaling verify`` exits 0. Scenarios:

- ``sweep+compact``: ``scaling compact`` run over and over while a sweep runs, so some overlap
  the sweep's own compactions (the last one included);
- ``two-drivers``: two ``scaling sweep`` of one config into one store at once (both may train
  a trial; the last compaction keeps one run);
- ``two-compacts``: two ``scaling compact`` at once over a sweep stored with ``--no-compact``.

Prints one line per run and a summary line; exits 1 if any run broke a check.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SWEEP = """
name: race
task: {name: digits}
model: {name: mlp, width: 32, depth: 1}
axes:
  n_train: [50, 100]
  batch_size: [16, 32]
  lr: [0.1, 0.2]
  momentum: 0.9
  seed: [0, 1]
budget: {epochs: 10}
eval: {points: 5}
resources: {cpu: 1}
"""


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cluster.cli", *args]


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(_cmd(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def _finish(procs: list[subprocess.Popen], timeout: float = 600) -> list[tuple[int, str]]:
    out = []
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        out.append((p.returncode, err.strip().splitlines()[-1] if err.strip() else ""))
    return out


def check(results: Path, config: Path) -> list[str]:
    """What is wrong with the store after a run: trials not exactly once in the raw rows, or verify."""
    from scaling.config.sweep import load_config
    from scaling.spec.schema import trial_id
    from scaling.store.writer import Store

    cfg = load_config(config)
    expected = {trial_id(t) for t in cfg.trials()}
    raw = Counter(r["trial_id"] for r in Store(str(results)).raw_table("trials").to_pylist())
    bad = []
    if set(raw) != expected:
        bad.append(f"{len(expected - set(raw))} trial(s) missing, {len(set(raw) - expected)} unknown")
    twice = sum(n > 1 for n in raw.values())
    if twice:
        bad.append(f"{twice} trial(s) stored more than once")
    verify = subprocess.run(_cmd("verify", str(results)), cwd=ROOT, capture_output=True, text=True, timeout=300)
    if verify.returncode != 0:
        bad.append("verify: " + " | ".join(verify.stdout.strip().splitlines()[-3:]))
    return bad


def sweep_and_compact(work: Path, config: Path, template: Path | None) -> list[tuple[int, str]]:
    results = work / "r"
    sweep = _start("sweep", str(config), "--results", str(results), "--quiet")
    codes = []
    while sweep.poll() is None:
        if results.exists():
            codes += _finish([_start("compact", str(results))])
        time.sleep(0.2)
    codes = _finish([sweep]) + codes
    codes += _finish([_start("compact", str(results))])  # one more, after the sweep's own last one
    return codes


def two_drivers(work: Path, config: Path, template: Path | None) -> list[tuple[int, str]]:
    results = work / "r"
    return _finish([_start("sweep", str(config), "--results", str(results), "--quiet") for _ in range(2)])


def two_compacts(work: Path, config: Path, template: Path) -> list[tuple[int, str]]:
    results = work / "r"
    shutil.copytree(template, results)
    return _finish([_start("compact", str(results)) for _ in range(2)])


SCENARIOS = {"sweep+compact": sweep_and_compact, "two-drivers": two_drivers, "two-compacts": two_compacts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.bench.races", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), default=None)
    parser.add_argument("--keep", default=None, metavar="DIR", help="work here and keep the stores")
    args = parser.parse_args(argv)
    base = Path(args.keep or tempfile.mkdtemp(prefix="scaling-races-"))
    base.mkdir(parents=True, exist_ok=True)
    config = base / "race.yaml"
    config.write_text(textwrap.dedent(SWEEP))
    template = None
    names = args.only or list(SCENARIOS)
    if "two-compacts" in names:  # one uncompacted store, copied for every run
        template = base / "uncompacted"
        if not template.exists():
            rc, err = _finish([_start("sweep", str(config), "--results", str(template), "--quiet", "--no-compact")])[0]
            if rc != 0:
                print(f"could not build the uncompacted store: rc {rc}: {err}")
                return 1
    failures = 0
    try:
        for name in names:
            ok = 0
            for i in range(args.runs):
                work = base / f"{name}-{i}"
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir()
                t0 = time.monotonic()
                codes = SCENARIOS[name](work, config, template)
                bad = [f"rc {rc}: {err}" for rc, err in codes if rc != 0] + check(work / "r", config)
                ok += not bad
                failures += bool(bad)
                print(f"{name} run {i + 1}: {len(codes)} command(s), {time.monotonic() - t0:.1f}s: "
                      + ("ok" if not bad else "; ".join(bad)), flush=True)
                if not args.keep and not bad:
                    shutil.rmtree(work, ignore_errors=True)
            print(f"{name}: {ok}/{args.runs} runs clean", flush=True)
    finally:
        if not args.keep and not failures:
            shutil.rmtree(base, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
