"""What keeps the sweep driver's CPU low (issue 29; ``python -m cluster.bench.driver`` measures it):
a first run reads nothing of the store before it plans, the last compaction runs on a worker,
and the driver's own compaction after it finds nothing left. Real local Ray, real Parquet."""

from __future__ import annotations

import pytest
from conftest import SMALL_SWEEP, write_config

import cluster.driver.sweep as runner
from cluster.driver import drive
from scaling.config.sweep import load_config
from scaling.store import compaction, resume
from scaling.store.writer import Store


@pytest.mark.slow  # two sweeps: 6-16 s
def test_a_first_run_skips_the_resume_scan_and_a_worker_compacts(ray_local, tmp_path, monkeypatch):
    path = write_config(tmp_path, SMALL_SWEEP)
    cfg, text, results = load_config(path), path.read_text(), str(tmp_path / "results")
    scans, local = [], []
    real_scan, real_compact = resume.resume_state, compaction.compact

    def scan(*args, **kwargs):
        scans.append(args[1])
        return real_scan(*args, **kwargs)

    def compact(*args, **kwargs):  # in this (the driver's) process only: a Ray worker imports its own
        report = real_compact(*args, **kwargs)
        local.append(report)
        return report

    monkeypatch.setattr(resume, "resume_state", scan)
    monkeypatch.setattr(compaction, "compact", compact)
    monkeypatch.setattr(drive, "WORKER_COMPACT_PARTS", 2)  # this small sweep writes a few parts
    first = runner.run_sweep(cfg, text, results, progress=False, log=lambda *_: None)
    assert first.counts["ok"] == 16 and scans == [], "a first run reads nothing of the store"
    store = Store(results)
    assert [len(store.parts("small", t)) for t in ("trials", "curves")] == [1, 1], "compacted"
    assert len(local) == 1 and local[0].merges == (), "the driver's compaction found a worker's merge done"

    again = runner.run_sweep(cfg, text, results, progress=False, log=lambda *_: None)
    assert scans == ["small"] and again.skipped == 16 and sum(again.counts.values()) == 0

    # below WORKER_COMPACT_PARTS parts, the driver merges them itself
    monkeypatch.setattr(drive, "WORKER_COMPACT_PARTS", 10_000)
    local.clear()
    grown_path = write_config(tmp_path, SMALL_SWEEP.replace("seed: [0, 1]", "seed: [0, 1, 2]"), "grown.yaml")
    grown = load_config(grown_path)
    third = runner.run_sweep(grown, grown_path.read_text(), results, progress=False, log=lambda *_: None)
    assert third.counts["ok"] == 8 and len(local) == 1 and len(local[0].merges) == 1


def test_the_last_compaction_falls_back_to_the_driver_when_the_worker_fails(ray_local, tmp_path, monkeypatch):
    """A compaction task that fails (here: the store's root is not one) leaves it to the driver."""

    class Broken:
        location, retry_s = str(tmp_path / "missing"), None

    compactor = drive.AutoCompactor(Broken(), "small", 10, log=lambda *_: None)
    compactor.total = drive.WORKER_COMPACT_PARTS
    assert compactor.final() is None
    monkeypatch.setattr(drive, "compact_task", lambda *a: pytest.fail("compaction is off"))
    assert drive.AutoCompactor(Store(str(tmp_path)), "small", 0, log=lambda *_: None).final() is None
