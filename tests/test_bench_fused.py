"""``python -m cluster.bench --fused``: the packs timed with the fused (compiled) optimizer update
beside the default packed run and the single engine, its compile timed apart, in one run."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow  # a compile of AdamW's update: 10-45 s on 2 busy cores
def test_the_bench_times_the_fused_step_beside_packed_and_single():
    proc = subprocess.run([sys.executable, "-m", "cluster.bench", "--quick", "--no-tune", "--fused",
                           "--sweeps", "adamw,sgd"], check=False, capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    rows = [line.split()[0] for line in lines if line.endswith("8 ok")]
    assert rows == ["fused-first", "packed", "fused", "single"] * 2, proc.stdout
    assert proc.stdout.count("fused (2 procs x 1 thread) vs single (2 procs x 1 thread): ") == 2
    assert proc.stdout.count("fused, compile included") == 2
    assert proc.stdout.count("cross-check: final test_acc of fused and packed equal in") == 2
    side = next(line for line in lines if line.startswith("vs the single engine, side by side"))
    figures = side.split(": ", 1)[1].split("; ")
    assert [f.rsplit(" ", 5)[0] for f in figures] == ["MLP AdamW + cosine", "MLP SGD"], side
    assert all(f.count("x") == 3 for f in figures), side
