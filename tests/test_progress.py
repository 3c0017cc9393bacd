"""The progress line moves inside packs (workers report steps as they train), shows an ETA once 5%
of the steps are done, fits 100 columns; `scaling sweep --dry-run`, `scaling --version` and
`python -m scaling`."""

from __future__ import annotations

import functools
import importlib.metadata
import io
import re
import subprocess
import sys
import time

import pytest

from conftest import ROOT, write_config
from cluster.driver.progress import ETA_FROM, LINE_WIDTH, Progress, StepTally
from cluster.worker.units import StepReporter
from scaling.config.sweep import config_from_text, load_config
from scaling.store.parts import unit_id
from scaling.store.writer import Store
from scaling.training.loop import failed_row
from scaling.training.run import run_pack

PACK = [{"task": {"name": "digits"}, "model": {"name": "mlp", "width": 16, "depth": 1}, "n_train": 100,
         "batch_size": 16, "lr": lr, "momentum": 0.9, "seed": 0, "budget": {"steps": 3000},
         "eval": {"points": 3}} for lr in (0.01, 0.03, 0.1)]

PACKED = """
name: packed
task: {name: digits}
model: {name: mlp, width: 32, depth: 1}
axes:
  n_train: 200
  batch_size: 16
  lr: [0.01, 0.02, 0.03, 0.05, 0.07, 0.1]
  momentum: [0.0, 0.9]
  seed: [0, 1, 2, 3]
budget: {steps: STEPS}
eval: {points: 5}
resources: {cpu: 1}
"""
"""48 trials of one pack key: two packs of 24 on the session's 2 CPUs."""


class Stamped(io.StringIO):
    """A non-terminal stream that keeps each line with the time it was written."""

    def __init__(self):
        super().__init__()
        self.lines: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        if text.strip():
            self.lines.append((time.monotonic(), text.strip()))
        return len(text)

    def isatty(self) -> bool:
        return False


# ---- the line -----------------------------------------------------------------------------------

def test_the_line_shows_steps_and_an_eta_only_from_5_percent_and_fits_100_columns():
    bar = Progress(48, stream=Stamped())
    bar.t0 -= 30  # 30 s into the sweep
    bar.plan(48, 480_000)
    bar.live_steps({0: 10_000, 1: 13_000})  # 23k of 480k: under 5%
    bar.update(running=2)
    assert "ETA ?" in bar.line() and "23k/480k steps" in bar.line()
    bar.live_steps({0: 12_000, 1: 12_000})  # 24k: 5%
    assert "ETA ?" not in bar.line() and 24_000 >= ETA_FROM * 480_000
    bar.finish_steps(240_000, 0)  # unit 0 returned: its reports no longer count, its budget does
    for _ in range(24):
        bar.update("ok")
    assert bar.steps_done == 240_000 + 12_000 and "24/48 done" in bar.line()
    big = Progress(7_200_000, stream=Stamped())
    big.t0 -= 50_000
    big.plan(20_000, 20_000 * 12_345)  # one chunk of many planned: the total is extrapolated
    big.counts.update(ok=6_000_000, diverged=1_234, failed=123_456)
    big.finish_steps(10**10)
    for line in (bar.line(), big.line(), Progress(5, stream=Stamped()).line()):
        assert len(line) <= LINE_WIDTH, line
    assert "~" in big.line() and "failed" in big.line()


def test_the_tally_keeps_only_the_units_in_flight():
    tally = StepTally()
    tally.report(("run", 0), 10)
    tally.report(("run", 1), 20)
    tally.report(("other run", 0), 5)
    assert tally.take("run", [1]) == {1: 20}
    tally.report(("run", 0), 11)  # a late report of a unit that returned
    assert tally.take("run", [1, 2]) == {1: 20}
    assert tally.take("other run", [0]) == {0: 5}


# ---- the loop's reports -------------------------------------------------------------------------

def test_the_loop_reports_steps_now_and_then_and_a_failing_report_changes_nothing(one_torch_thread):
    heard = []
    results = run_pack(PACK, on_steps=heard.append)
    total = sum(r["trial"]["steps"] for r in results)
    assert total == 3 * 3000 and {r["trial"]["status"] for r in results} == {"ok"}
    assert heard, "no report in a pack that trains for more than 0.1 s"
    assert len(heard) < 3000 / 10, "reports are throttled, not one a step"
    assert heard == sorted(heard) and heard[-1] <= total

    def broken(_steps):
        raise ConnectionError("the tally is gone")

    again = run_pack(PACK, on_steps=broken)
    assert [r["trial"]["status"] for r in again] == [r["trial"]["status"] for r in results]
    assert [r["trial"]["test_loss"] for r in again] == pytest.approx([r["trial"]["test_loss"] for r in results])


def test_a_reporter_whose_tally_fails_goes_quiet():
    class Gone:
        class report:  # noqa: N801 (stands in for an actor method)
            calls = 0

            @classmethod
            def remote(cls, *args):
                cls.calls += 1
                raise RuntimeError("actor died")

    reporter = StepReporter((Gone(), ("run", 3)), base=100)
    reporter(5)
    reporter(6)
    assert Gone.report.calls == 1 and reporter.tally is None
    StepReporter(None)(5)  # no tally: nothing to do


# ---- a real packed sweep ------------------------------------------------------------------------

SWEEP_S = 60.0
"""How long the ETA test's timed sweep would train at the speed its warm sweep measured. That
speed counts a short sweep's evals and start, so the timed sweep takes about 3/4 of this: 45 s,
where the first ETA comes at about 7% of it (8.5% in a 30 s sweep, 2026-12-07)."""


@pytest.mark.slow
@pytest.mark.alone  # the ETA's moment is timed: no other test's load beside it
def test_a_packed_sweep_of_48_trials_shows_an_eta_within_its_first_tenth(ray_local, tmp_path, monkeypatch):
    """Two packs of 24 on a local Ray with 2 CPUs. A short sweep first warms the Ray workers (cold
    worker processes take seconds to import torch, a fixed cost a minutes-long sweep does not
    notice) and measures how fast two packs train here; the sweep timed then gets the steps that
    take SWEEP_S at that speed, so that the fixed cost of its start and of the steps' reports
    (about 1 s: the warm-up tasks, each pack's first evals) stays well under the 5% of the steps
    the ETA waits for, on a fast machine as on a slow one. (A fixed 100,000 steps a trial took
    45-55 s here on 2026-12-06, and 18 s on 2026-12-07: the start was then 5% of the sweep, and the
    first ETA came at 10.0%.)"""
    import cluster.driver.drive as drive_mod
    from cluster.driver.progress import _fmt_count
    from cluster.driver.sweep import run_sweep
    from scaling.store.views import load_tables

    warm = config_from_text(PACKED.replace("STEPS", "3000").replace("name: packed", "name: warm"))
    run_sweep(warm, "warm", str(tmp_path / "warm"), progress=True, log=lambda *_: None)
    rows = load_tables(str(tmp_path / "warm"))[0].to_pylist()
    rate = sum(r["steps"] for r in rows) / max(r["wall_s"] for r in rows)  # a member's wall_s: its pack's time
    steps = int(min(1e6, max(2e4, round(rate * SWEEP_S / len(rows), -3))))
    stream = Stamped()
    monkeypatch.setattr(drive_mod, "Progress", functools.partial(Progress, stream=stream, every_s=0.1))
    text = PACKED.replace("STEPS", str(steps))
    cfg = config_from_text(text)
    t0 = time.monotonic()
    summary = run_sweep(cfg, text, str(tmp_path / "r"), log=lambda *_: None)
    wall = time.monotonic() - t0
    assert summary.counts == {"ok": 48, "diverged": 0, "failed": 0}
    lines = stream.lines
    assert all(len(line) <= LINE_WIDTH for _, line in lines), max(lines, key=lambda x: len(x[1]))
    first_eta = next(t - t0 for t, line in lines if "ETA ?" not in line)
    print(f"{steps} steps a trial; first ETA at {first_eta:.2f} s of {wall:.2f} s ({100 * first_eta / wall:.1f}%)")
    moving = [line for _, line in lines if "0/48 done" in line and re.search(r"\| [1-9][\d.]*[kM]?/\S+ steps", line)]
    assert moving, "steps counted inside the packs before any trial finished"
    assert first_eta <= 0.1 * wall, (first_eta, wall, lines[:20])
    assert "48/48 done" in lines[-1][1]
    total = _fmt_count(48 * steps)
    assert f"{total}/{total} steps 100%" in lines[-1][1], lines[-1][1]


# ---- dry run, version, python -m scaling --------------------------------------------------------

DRY = """
name: dry
task: {name: digits}
model: {name: mlp, width: 16, depth: 1}
axes:
  n_train: [50, 100]
  batch_size: 16
  lr: [0.1, 0.2, 0.3]
  seed: [0, 1]
budget: {epochs: 4}
eval: {points: 3}
resources: {cpu: 1}
"""


def _scaling(*args: str) -> subprocess.CompletedProcess:
    """The command in a fresh process; its last stdout line says whether ray was imported."""
    code = ("import sys; from cluster.cli import main; rc = main(sys.argv[1:]); "
            "print('ray imported:', 'ray' in sys.modules); sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_dry_run_prints_counts_packs_and_a_time_and_writes_nothing(tmp_path):
    config = write_config(tmp_path, DRY)
    results = tmp_path / "results"
    out = _scaling("sweep", str(config), "--results", str(results), "--dry-run", "--num-cpus", "2")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "sweep 'dry': 12 trials, 0 already stored, 12 to run" in text
    assert "engine: packed, 12 trials in 2 packs; backend stacked" in text
    assert "units: 2 packs (12 trials), 0 single trials; 2 at once on 2 CPUs" in text
    assert "time: " in text and "ray imported: False" in text
    assert not results.exists(), "a dry run writes nothing, not even the store's folder"


def test_dry_run_on_a_resumed_store_counts_the_stored_trials(tmp_path):
    config = write_config(tmp_path, DRY)
    cfg = load_config(config)
    store = Store(str(tmp_path / "results"))
    stored = list(cfg.trials())[:5]
    store.commit("dry", unit_id([t.trial_id for t in stored]),
                 [{"trial": failed_row(t, "RuntimeError: made up"), "curves": []} for t in stored])
    before = sorted(p.name for p in (tmp_path / "results").rglob("*"))
    out = _scaling("sweep", str(config), "--results", str(tmp_path / "results"), "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "12 trials, 5 already stored, 7 to run" in out.stdout
    again = _scaling("sweep", str(config), "--results", str(tmp_path / "results"), "--dry-run", "--retry-failed")
    assert "12 trials, 0 already stored, 12 to run" in again.stdout
    assert sorted(p.name for p in (tmp_path / "results").rglob("*")) == before


def test_dry_run_refuses_a_bad_config_as_a_sweep_does(tmp_path):
    config = write_config(tmp_path, DRY.replace("n_train: [50, 100]", "n_train: [50, 100000]"))
    out = _scaling("sweep", str(config), "--results", str(tmp_path / "r"), "--dry-run")
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "n_train" in out.stderr


def test_version_and_python_m_scaling():
    version = subprocess.run([sys.executable, "-m", "scaling", "--version"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
    assert version.returncode == 0
    assert version.stdout.strip() == f"scaling {importlib.metadata.version('scaling')}"
    helped = subprocess.run([sys.executable, "-m", "scaling", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: scaling")
    assert "sweep" in helped.stdout and "--version" in helped.stdout
    missing = subprocess.run([sys.executable, "-m", "scaling", "sweep", "no-such.yaml", "--dry-run"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")
