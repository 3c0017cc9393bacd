"""Where results go, and what happens when storage misbehaves, through the real command line.

- unknown or mistyped URI schemes are refused (exit 2, one line, nothing written anywhere);
- ``gs://`` with an unreachable endpoint is an error within seconds (exit 3), not a hang;
- a short storage outage (injected by a filesystem wrapper in the driver and every worker)
  leaves no ``failed`` row; one longer than ``--storage-timeout`` stops the sweep with exit 3,
  and a plain resume then completes every trial;
- sweep names the layout uses are refused; a folder is a sweep by the marker the product
  writes, never by its name;
- ``verify --repair`` never follows a symlinked sweep folder out of the store;
- ``scaling query``: duplicate column names, NaN in JSON, time and memory flags.

Cloud URIs run with the variables that stop the SDKs' credential and metadata-server lookups
(:data:`conftest.NO_CLOUD`), so no test traffic leaves loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import NO_CLOUD, ROOT, SMALL_SWEEP, run_cli, run_cli_here, write_config
from faulty_fs import set_outage
from scaling.config.sweep import load_config
from scaling.errors import StoreError
from scaling.store.uri import SCHEMES, open_filesystem
from scaling.store.writer import Store

TESTS = Path(__file__).resolve().parent


def one_line_error(proc, code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return lines[0]


# ---- URIs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("uri, words", [
    ("s3a://bucket/x", "did you mean s3://"), ("S3://bucket/x", "did you mean s3://"),
    ("s3:/bucket/x", "needs two slashes"), ("weird://x", "known schemes are file://, s3://"),
    ("gs:bucket", "needs two slashes"), ("hdfs://namenode:8020/x", "needs a Java runtime"),
    pytest.param("file://relative/x", "a file:// URI takes an absolute path", marks=pytest.mark.slow),
])
def test_unknown_or_mistyped_schemes_are_refused(tmp_path, uri, words):
    config = write_config(tmp_path, SMALL_SWEEP)
    for argv in (["sweep", str(config), "--results", uri, "--quiet"], ["status", uri], ["query", uri, "SELECT 1"]):
        proc = subprocess.run([sys.executable, "-m", "cluster.cli", *argv], capture_output=True, text=True,
                              cwd=tmp_path, timeout=120, env={**os.environ, **NO_CLOUD, "PYTHONPATH": str(ROOT)})
        assert words in one_line_error(proc, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"], "nothing was written locally"


def test_a_relative_file_uri_is_one_line_and_localhost_works(tmp_path):
    """file://relative/x reads 'relative' as a host (a traceback before); file://localhost/abs is local.
    (``scaling sweep --results file://relative/x``, 15 s before it gets there, is a slow case of
    test_unknown_or_mistyped_schemes_are_refused.)"""
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "status", "file://relative/x"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "a file:// URI takes an absolute path" in one_line_error(proc, 2)
    assert "write it without the scheme: relative/x" in proc.stderr
    assert open_filesystem(f"file://localhost{tmp_path}")[1:] == (str(tmp_path), True)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-", min_size=1,
               max_size=8), st.sampled_from(["://", ":/", ":", ":///"]), st.text(min_size=0, max_size=12))
def test_any_uri_is_a_known_scheme_a_local_path_or_refused(scheme, sep, rest):
    root = f"{scheme}{sep}{rest}"
    try:
        fs, path, local = open_filesystem(root)
    except StoreError as e:
        assert "\n" not in str(e) and "results store" in str(e)
        return
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"{root!r}: {type(e).__name__}: {e}")
    if not scheme[0].isalpha():
        assert local, "not a URI: a local path"
    else:
        assert (scheme in SCHEMES and sep == "://"), f"{root!r} was accepted as {type(fs).__name__}"


def test_gs_with_an_unreachable_endpoint_is_an_error_in_seconds_not_a_hang(tmp_path):
    port = _closed_port()
    uri = f"gs://bucket/results?endpoint_override=127.0.0.1:{port}&scheme=http"
    start = time.monotonic()
    proc = run_cli("status", uri, timeout=60, env={**NO_CLOUD, "HOME": str(tmp_path)})
    assert "cannot reach the results store" in one_line_error(proc, 3)
    assert time.monotonic() - start < 45, "bounded by the GCS retry limit, not a hang"


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- storage outages ----------------------------------------------------------------------------

OUTAGE_SWEEP = SMALL_SWEEP.replace("epochs: 10", "epochs: 30").replace("n_train: [50, 100]", "n_train: [100, 300]")


def outage_env(window: Path) -> dict:
    return {"SCALING_FS_WRAPPER": "faulty_fs:wrap", "SCALING_TEST_OUTAGE": str(window),
            "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}"}


def start_sweep(config: Path, results: Path, env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cluster.cli", "sweep", str(config), "--results", str(results),
                             "--quiet", "--engine", "single", *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env})


def wait_for_parts(results: Path, n: int = 1, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    folder = results / "small" / "trials"
    while time.monotonic() < deadline:
        if folder.exists() and len(list(folder.glob("*.parquet"))) >= n:
            return
        time.sleep(0.05)
    raise AssertionError("no trial was committed")


def statuses(results: Path) -> list[str]:
    return Store(str(results)).raw_table("trials").column("status").to_pylist()


def assert_every_trial_ok(results: Path, config: Path) -> None:
    from scaling.store.views import open_store

    expected = {t.trial_id for t in load_config(config).trials()}
    with open_store(str(results)) as view:
        kept = view.sql("SELECT trial_id, status FROM trials").to_pylist()
    assert {r["trial_id"] for r in kept} == expected and {r["status"] for r in kept} == {"ok"}


@pytest.mark.slow
def test_a_short_storage_outage_leaves_no_failed_row(tmp_path):
    config, results, window = write_config(tmp_path, OUTAGE_SWEEP), tmp_path / "r", tmp_path / "outage"
    driver = start_sweep(config, results, outage_env(window), "--storage-timeout", "3")
    wait_for_parts(results)
    set_outage(window, 2.4)  # what a results folder that is unwritable for 2.4 s does
    out, err = driver.communicate(timeout=600)
    assert driver.returncode in (0, 3), err[-3000:]
    assert "Traceback" not in err
    assert "failed" not in statuses(results), "a storage error is not a trial's failure"
    assert driver.returncode == 0 and "0 failed" in out, "a bound of 3 s rides out 2.4 s (issue 26: ~T/2 before)"
    hits = Path(f"{window}.hits").read_text().splitlines()
    assert any("/small/" in h for h in hits), "commits ran into the outage"
    again = run_cli("sweep", str(config), "--results", str(results), "--quiet", env=outage_env(window))
    assert again.returncode == 0 and "16 were already stored" in again.stdout, again.stderr
    assert_every_trial_ok(results, config)


@pytest.mark.slow
def test_an_outage_past_the_bound_stops_the_sweep_with_exit_3_and_resume_completes(tmp_path):
    config, results, window = write_config(tmp_path, OUTAGE_SWEEP), tmp_path / "r", tmp_path / "outage"
    driver = start_sweep(config, results, outage_env(window), "--storage-timeout", "1")
    wait_for_parts(results)
    set_outage(window, 600)
    driver.wait(timeout=600)
    err = driver.stderr.read()
    line = one_line_error(subprocess.CompletedProcess([], driver.returncode, "", err), 3)
    assert "results store failed for 1 s" in line and "run the same command to resume" in line
    window.unlink()
    assert "failed" not in statuses(results)
    done = len(set(Store(str(results)).raw_table("trials").column("trial_id").to_pylist()))
    again = run_cli("sweep", str(config), "--results", str(results), "--quiet", env=outage_env(window))
    assert again.returncode == 0, again.stderr
    assert f"{done} were already stored" in again.stdout
    assert_every_trial_ok(results, config)


def test_retrying_rides_out_an_outage_up_to_the_bound_not_half_of_it():
    """--storage-timeout T: a store that fails for 0.8 T from the first failure is ridden out (the
    backoff's last wait is cut to end at the bound, then one more try); one that keeps failing
    raises StorageError no sooner than T."""
    from scaling.errors import StorageError
    from scaling.store.uri import retrying

    for bound in (0.5, 1.0):
        calls, t0 = [], time.monotonic()

        def flaky():
            calls.append(time.monotonic())
            if time.monotonic() - t0 < 0.8 * bound:
                raise OSError("outage")
            return "ok"

        assert retrying(flaky, "write x", bound) == "ok", bound
        t1 = time.monotonic()
        with pytest.raises(StorageError, match=f"failed for {bound:g} s: cannot write x"):
            retrying(lambda: (_ for _ in ()).throw(OSError("down")), "write x", bound)
        assert time.monotonic() - t1 >= bound


# ---- sweeps and names ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["trials", "curves", "quarantine", "Trials", "sweep.yaml"])
def test_sweep_names_the_layout_uses_are_refused(tmp_path, name):
    config = write_config(tmp_path, SMALL_SWEEP.replace("name: small", f"name: {name}"))
    proc = run_cli("sweep", str(config), "--results", str(tmp_path / "r"))
    assert "the store's layout uses" in one_line_error(proc, 2)
    assert not (tmp_path / "r").exists()


def test_a_folder_is_a_sweep_by_its_marker_not_its_name(tmp_path):
    """An earlier release let a sweep be called `trials`: then the whole root looked like one sweep
    folder and every other sweep vanished. Now both show, each by what marks it."""
    from test_store import TRIAL, result

    import pyarrow as pa
    import pyarrow.parquet as pq

    Store(str(tmp_path)).write_result("demo", result(TRIAL))
    old = tmp_path / "trials"  # an earlier release's sweep named trials: its sweep.yaml marks it
    Store(str(tmp_path)).write_result("x", result({**TRIAL, "seed": 1}), part="p")
    (tmp_path / "x").rename(old)
    (old / "_sweep.json").unlink()
    (old / "sweep.yaml").write_text("name: trials")
    for part in old.glob("*/p.parquet"):
        t = pq.read_table(part)
        pq.write_table(t.set_column(t.column_names.index("sweep"), "sweep", pa.array(["trials"] * len(t))), part)
    proc = run_cli_here("status", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[:2] for line in proc.stdout.splitlines()[2:4]] == [["demo", "1"], ["trials", "1"]]


def test_repair_never_follows_a_symlinked_sweep_folder_out_of_the_store(tmp_path):
    from test_store import TRIAL, result

    outside, store = tmp_path / "outside", tmp_path / "store"
    Store(str(outside)).write_result("victim", result(TRIAL))
    part = next((outside / "victim" / "trials").glob("*.parquet"))
    part.write_bytes(b"broken")
    store.mkdir()
    (store / "victim").symlink_to(outside / "victim")
    before = sorted(p.relative_to(outside) for p in outside.rglob("*"))
    proc = run_cli_here("verify", str(store), "--repair")
    assert "resolves outside the store" in proc.stdout
    assert sorted(p.relative_to(outside) for p in outside.rglob("*")) == before, "nothing moved out there"


# ---- query ------------------------------------------------------------------------------------

def test_query_cli_refuses_duplicate_names_writes_null_for_nan_and_takes_bounds(tmp_path):
    from test_store import TRIAL, result

    r = result(TRIAL)
    r["trial"]["test_loss"] = float("nan")
    Store(str(tmp_path)).write_result("s", r)
    dup = run_cli_here("query", str(tmp_path), "SELECT a.lr, b.lr FROM trials a, trials b")
    assert "more than one column named 'lr'" in one_line_error(dup, 2)
    ok = run_cli_here("query", str(tmp_path), "SELECT test_loss, lr FROM trials", "--format", "json",
                 "--timeout", "60", "--memory", "1GB")
    assert ok.returncode == 0 and json.loads(ok.stdout) == {"test_loss": None, "lr": 0.1}, ok.stderr
    slow = run_cli_here("query", str(tmp_path), "SELECT count(*) FROM range(1000000000) a, range(1000000000) b "
                   "WHERE a.range + b.range < 0", "--timeout", "0.5")
    assert "--timeout" in one_line_error(slow, 2)
    assert "--memory" in one_line_error(run_cli_here("query", str(tmp_path), "SELECT 1", "--memory", "lots"), 2)


def test_status_of_a_missing_store_is_one_line(tmp_path):
    assert "no results store" in one_line_error(run_cli_here("status", str(tmp_path / "nope")), 2)
