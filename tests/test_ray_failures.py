"""Ray itself failing under a sweep (issue 26, items 3 and 7), through the real command line:
SIGKILL of the local raylet, and separately of the GCS, mid-sweep. The sweep stops with its own
exit code (4) and one line, stores no trial as ``failed``, and the next run reruns every trial
that had not committed, each stored exactly once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, write_config
from test_security import SWEEP, cmdline, snapshot, stored_ids, sweep_cmd, wait_for
from scaling.config.sweep import load_config
from scaling.spec.schema import trial_id
from scaling.store.writer import Store

pytestmark = pytest.mark.slow


def ray_process(driver: subprocess.Popen, name: str) -> int:
    def find():
        return next((p for p in snapshot(driver.pid) if Path(cmdline(p).split(" ")[0]).name == name), None)
    return wait_for(find, 120, name, driver)


@pytest.mark.parametrize("victim", ["raylet", "gcs_server"])
def test_a_dead_raylet_or_gcs_stops_the_sweep_in_one_line_and_fails_no_trial(tmp_path, victim):
    # long enough that the larger trials still train when the first one is stored (with 15 epochs a
    # quiet machine finished all six before the GCS's death mattered: rc 0, six ok)
    config = write_config(tmp_path, SWEEP.format(name="infra", n_train=[50, 100, 800], seeds=[0, 1],
                                                 epochs=60))
    results = tmp_path / "r"
    driver = subprocess.Popen(sweep_cmd(config, results), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    wait_for(lambda: stored_ids(results, "infra"), 240, "a finished trial", driver)
    os.kill(ray_process(driver, victim), signal.SIGKILL)
    killed = time.monotonic()
    out, err = driver.communicate(timeout=300)
    took = time.monotonic() - killed
    print(f"{victim} killed: exit {driver.returncode} after {took:.1f}s; stderr: {err.strip()}")
    assert driver.returncode == 4, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in out + err, err
    name = {"raylet": "raylet", "gcs_server": "GCS"}[victim]
    assert re.match(rf"error: the local Ray's {name} \(pid \d+\) died \(killed by signal 9\); .*"
                    r"none is marked failed.*run the same command again", err), err
    rows = Store(str(results)).raw_table("trials").to_pylist()
    assert rows and {r["status"] for r in rows} == {"ok"}, "no trial stored as failed"
    before = len({r["trial_id"] for r in rows})

    rerun = subprocess.run(sweep_cmd(config, results), cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr
    assert f"6 trials, {before} already stored, {6 - before} to run" in rerun.stdout, rerun.stdout
    expected = {trial_id(t) for t in load_config(config).trials()}
    raw = Store(str(results)).raw_table("trials").to_pylist()
    assert sorted(r["trial_id"] for r in raw) == sorted(expected), "each trial exactly once"
    assert {r["status"] for r in raw} == {"ok"}
