"""A store written by the first release resumes with the current code.

tests/fixtures/store_v1 was written by the release before the declared schema
(see its README). Rows without ``code_version``/``data_version`` read as version
"1". The teacher task's data did not change, so its sweep resumes with nothing
rerun; digits gained a validation split (data version 2), so a resume refuses
to mix versions unless told how.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from cluster.driver.sweep import run_sweep
from scaling.config.sweep import load_config
from scaling.errors import UserError
from scaling.store.views import load_tables

FIXTURE = Path(__file__).parent / "fixtures" / "store_v1"


@pytest.fixture()
def old_store(tmp_path) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "store")
    return tmp_path / "store"


def test_the_fixture_is_in_the_old_schema():
    part = next((FIXTURE / "teacher_v1" / "trials").glob("*.parquet"))
    names = pq.read_schema(part).names
    assert "momentum" in names and "code_version" not in names and "val_loss" not in names


def test_an_unchanged_task_resumes_with_nothing_rerun(old_store):
    lines = []
    summary = run_sweep(load_config(FIXTURE / "teacher.yaml"), "", str(old_store), progress=False,
                        log=lines.append)
    assert summary.total == 4 and summary.skipped == 4 and sum(summary.counts.values()) == 0
    assert "4 already stored, 0 to run" in lines[0]
    trials, curves = load_tables(str(old_store))
    assert trials.num_rows == 8 and curves.num_rows > 0
    assert set(trials.column("code_version").to_pylist()) == {None}, "old rows read with null versions"


def test_a_changed_task_refuses_to_mix_versions_unless_told(old_store, tmp_path):
    cfg = load_config(FIXTURE / "digits.yaml")
    with pytest.raises(UserError, match=r"4 of 4 stored trials were made by code 1/data 1, .*/data 2; "
                                        r"pass --rerun-stale .* or --accept-mixed"):
        run_sweep(cfg, "", str(old_store), progress=False, log=lambda *_: None)
    proc = run_cli("sweep", str(FIXTURE / "digits.yaml"), "--results", str(old_store))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "--rerun-stale" in proc.stderr and "Traceback" not in proc.stderr
    summary = run_sweep(cfg, "", str(old_store), progress=False, accept_mixed=True, log=lambda *_: None)
    assert summary.skipped == 4 and sum(summary.counts.values()) == 0


def test_rerun_stale_trains_the_old_trials_again(old_store, ray_local):
    cfg = load_config(FIXTURE / "digits.yaml")
    summary = run_sweep(cfg, "", str(old_store), progress=False, rerun_stale=True, log=lambda *_: None)
    assert summary.counts["ok"] == 4 and summary.skipped == 0
    trials, _ = load_tables(str(old_store))
    digits = [r for r in trials.to_pylist() if r["sweep"] == "digits_v1"]
    assert len(digits) == 4 and {r["data_version"] for r in digits} == {"2"}
    assert all(r["val_acc"] is not None for r in digits)
