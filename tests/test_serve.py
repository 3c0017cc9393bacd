"""scaling serve: the token, the loopback bind, escaping, the cache per store version, and (slow)
the page in a real headless Chromium following a real local sweep."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from analysis.serve import make_server, serve_in_thread
from scaling.store.writer import Store

HOSTILE = "<img src=x onerror=alert(1)>"


def _trial(i: int, *, lr: float, n_train: int, batch: int, seed: int, status="ok", error=None,
           run: str = "r0") -> dict:
    """A stored trial (trials row and curve rows) whose error falls as a power law of n_train."""
    end = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=10 * i)
    err = 0.5 * (n_train / 100) ** -0.5 * (1 + 0.3 * abs(np.log(batch / 32))) + 0.01 * seed
    steps = 4 * n_train // batch
    row = {"trial_id": f"{i:016x}", "run_id": f"{run}{i:06d}", "status": status, "error": error,
           "task": "digits", "model": "mlp", "n_train": n_train, "batch_size": batch, "lr": lr,
           "momentum": 0.0, "optimizer": "sgd", "seed": seed, "steps": steps,
           "examples_seen": steps * batch, "test_acc": 1 - err, "test_loss": err * 3,
           "train_loss": err * 2, "val_loss": err * 3, "val_acc": 1 - err, "wall_s": 1.0,
           "start_time": end - timedelta(seconds=5), "end_time": end, "code_version": "1",
           "data_version": "1", "config": json.dumps({"lr": lr, "note": HOSTILE})}
    curves = [{"step": s, "examples_seen": s * batch, "test_loss": err * 3 * (1 + 2 / (1 + s)),
               "test_acc": 1 - err * (1 + 2 / (1 + s)), "train_loss": err * 2}
              for s in range(0, steps + 1, max(steps // 4, 1))]
    return {"trial": row, "curves": curves}


def _store(root, sweep: str = "grid", lrs=(0.1,), first: int = 0) -> Store:
    """A real store (the writer's commits): n_train x batch x seed at each of ``lrs``, with trial
    ids from ``first`` on; one trial fails."""
    store = Store(str(root))
    i = first
    for lr in lrs:
        for n in (100, 200, 400, 800):
            for b in (8, 32, 128):
                for seed in (0, 1):
                    i += 1
                    bad = lr == 0.1 and n == 800 and b == 128 and seed == 1
                    store.write_result(sweep, _trial(i, lr=lr, n_train=n,
                                                     batch=b, seed=seed,
                                                     status="failed" if bad else "ok",
                                                     error=f"boom {HOSTILE}" if bad else None))
    return store


@pytest.fixture
def server(tmp_path):
    _store(tmp_path / "results")
    srv = make_server(str(tmp_path / "results"), port=0, refresh_share=1.0)  # reread at once
    serve_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


def _get(url: str, method: str = "GET", headers=None):
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def _base(srv) -> str:
    return srv.url.split("/?")[0]


def test_every_request_needs_the_token_and_nothing_is_writable(server):
    base, token = _base(server), server.token
    paths = ["/", "/sweep?name=grid", "/static/plotly.min.js", "/static/app.js",
             "/api/sweeps", "/api/version?sweep=grid", "/api/table?sweep=grid", "/nowhere"]
    for path in paths:
        sep = "&" if "?" in path else "?"
        assert _get(base + path)[0] == 403, path
        assert _get(f"{base}{path}{sep}token={token[:-1]}x")[0] == 403, path
        assert _get(base + path, headers={"X-Scaling-Token": token + "x"})[0] == 403, path
    status, body, headers = _get(server.url)
    assert status == 200 and "grid" in body
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "no-referrer" and headers["Cache-Control"] == "no-store"
    status, js, _ = _get(f"{base}/static/plotly.min.js?token={token}")
    assert status == 200 and len(js) > 1_000_000, "plotly.js comes from the installed package"
    assert _get(f"{base}/api/sweeps", headers={"X-Scaling-Token": token})[0] == 200
    for method in ("POST", "PUT", "DELETE"):
        assert _get(f"{base}/api/sweeps?token={token}", method=method)[0] == 405


def test_store_values_are_escaped_and_sql_filters_are_sandboxed(server, tmp_path):
    base, token = _base(server), server.token
    status, body, _ = _get(f"{base}/api/progress?sweep=grid&token={token}")
    assert status == 200
    progress = json.loads(body)
    assert progress["trials"] == 24 and progress["counts"] == {"ok": 23, "failed": 1}
    assert progress["failures"][0]["error"] == f"boom {HOSTILE}"  # JSON, shown with textContent
    status, body, _ = _get(f"{base}/api/trial?sweep=grid&id={1:016x}&token={token}")
    assert json.loads(body)["config"]["note"] == HOSTILE
    # a sweep named like markup is escaped in the page that lists it
    Store(str(tmp_path / "results")).ensure_sweep("a&b<i>")
    _, index, _ = _get(server.url)
    assert "a&amp;b&lt;i&gt;" in index and "<i>" not in index
    # the training-curve filter runs in the analysis' SQL sandbox: no file access
    where = urllib.request.quote("read_text('/etc/passwd') IS NOT NULL")
    status, body, _ = _get(f"{base}/api/curves?sweep=grid&where={where}&token={token}")
    assert status == 400 and "root:" not in body
    status, body, _ = _get(f"{base}/api/curves?sweep=grid&where=n_train%3D800&token={token}")
    curves = json.loads(body)
    assert status == 200 and curves["lines"] == 3  # the three batch sizes at n_train 800
    names = [t.get("name", "") for t in curves["figure"]["data"]]
    assert any("batch_size=128" in n for n in names)


def _run(capsys, *argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a `scaling` analysis command, run in this process."""
    import argparse

    from analysis.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    capsys.readouterr()
    code = args.func(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _printed(capsys, *argv) -> str:
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    return out


@pytest.mark.slow
def test_the_laws_are_what_fit_bopt_and_bcrit_print(server, tmp_path, capsys):
    base, token = _base(server), server.token

    def fitted():
        laws = json.loads(_get(f"{base}/api/laws?sweep=grid&token={token}")[1])
        return None if laws["pending"] else laws

    laws = _wait("the laws, fitted in the background", fitted)
    # the page shows what `scaling fit` and `scaling bopt` print, word for word (one code path)
    for key, command in (("learning_curve", "fit"), ("bopt", "bopt")):
        assert "error" not in laws[key], laws[key]
        printed = _printed(capsys, command, str(tmp_path / "results"))
        assert " ".join("\n".join(laws[key]["text"]).split()) == " ".join(printed.split())
    # B_crit at the target the page chose, as `scaling bcrit --target T` prints it
    command = laws["bcrit"]["command"].split()
    assert command[:3] == ["scaling", "bcrit", "RESULTS"], laws["bcrit"]
    printed = _printed(capsys, "bcrit", str(tmp_path / "results"), *command[3:])
    assert " ".join("\n".join(laws["bcrit"]["text"]).split()) == " ".join(printed.split())
    assert all(laws[k]["figure"]["data"] for k in ("learning_curve", "bopt", "bcrit"))
    # the fitting process (a sweep past FIT_APART_ROWS trials) gives the same laws, via JSON
    from analysis.serve import panels
    from analysis.serve.fitter import Fitter

    _, trials, curves, _ = server.source.tables("grid")
    fitter = Fitter()
    try:
        for key, name in ((("fit", "n_train", None), "learning_curve"), (("bopt", None), "bopt")):
            here = json.loads(json.dumps(panels.compute_law(key, trials, curves), default=str))
            assert fitter.run(key, trials, curves) == here
            assert here["text"] == laws[name]["text"]
    finally:
        fitter.close()


def test_a_refresh_reads_again_only_after_a_new_part(server, tmp_path):
    base, token, src = _base(server), server.token, server.source
    _get(f"{base}/api/progress?sweep=grid&token={token}")
    loads = src.loads
    version = json.loads(_get(f"{base}/api/version?sweep=grid&token={token}")[1])["version"]
    for what in ("progress", "table", "parcoords", "meta", "progress"):
        _get(f"{base}/api/{what}?sweep=grid&token={token}")
    assert src.loads == loads, "nothing changed: nothing read again"
    _store(tmp_path / "results", lrs=(0.3,), first=100)  # new parts arrive
    after = json.loads(_get(f"{base}/api/version?sweep=grid&token={token}")[1])
    assert after["version"] != version and after["trial_parts"] == 48
    progress = json.loads(_get(f"{base}/api/progress?sweep=grid&token={token}")[1])
    assert progress["trials"] == 48 and src.loads == loads + 1


def test_a_sweep_folder_and_a_sweep_with_no_trial_yet(tmp_path):
    _store(tmp_path / "results")
    Store(str(tmp_path / "results")).ensure_sweep("starting")
    srv = make_server(str(tmp_path / "results" / "grid"), port=0)  # one sweep folder as the root
    serve_in_thread(srv)
    try:
        base, token = _base(srv), srv.token
        assert "(this folder)" in _get(srv.url)[1]
        assert json.loads(_get(f"{base}/api/progress?sweep=&token={token}")[1])["trials"] == 24
    finally:
        srv.shutdown()
        srv.server_close()
    srv = make_server(str(tmp_path / "results"), port=0)
    serve_in_thread(srv)
    try:
        base, token = _base(srv), srv.token
        meta = json.loads(_get(f"{base}/api/meta?sweep=starting&token={token}")[1])
        assert meta["empty"] == "no trial has finished yet"
        status, body, _ = _get(f"{base}/api/laws?sweep=starting&token={token}")
        assert status == 200 and json.loads(body)["learning_curve"]["error"]
        status, body, _ = _get(f"{base}/api/meta?sweep=nosuch&token={token}")
        assert status == 400 and "'grid'" in json.loads(body)["error"]  # the sweeps there are
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_sweep_with_curves_too_large_to_read_whole_shows_its_trials(tmp_path):
    from analysis.errors import AnalysisError
    from analysis.serve import panels
    from analysis.serve.store import Source

    _store(tmp_path / "results")
    src = Source(str(tmp_path / "results"), curves_whole_bytes=0)
    progress = panels.progress(src, "grid")
    assert progress["trials"] == 24 and progress["figure"]["data"]  # the times are the trials'
    assert progress["eta"]["text"] == "unknown"  # a store of hand-written trials: no sweep.yaml
    assert len(panels.table(src, "grid")["rows"]) == 24
    with pytest.raises(AnalysisError, match="too much to read whole"):
        panels.curves(src, "grid", "")
    assert src.tables("grid")[2] is None  # no curve was read


def test_a_sweep_is_reread_only_within_its_share_of_a_core(tmp_path):
    from analysis.serve.store import Source

    _store(tmp_path / "results")
    src = Source(str(tmp_path / "results"), refresh_share=0.001)  # wait 999x the last read's cost
    first, trials, _, _ = src.tables("grid")
    assert trials.num_rows == 24 and src.loads == 1
    _store(tmp_path / "results", lrs=(0.3,), first=100)
    assert src.version("grid").digest != first
    version, trials, _, _ = src.tables("grid")
    assert (version, trials.num_rows, src.loads) == (first, 24, 1), "too soon: the last version"
    src.refresh_share = 1.0
    version, trials, _, _ = src.tables("grid")
    assert version == src.version("grid").digest and trials.num_rows == 48 and src.loads == 2


def _same(a, b) -> None:
    """Two reads of a store hold the same rows (the columns of the first), in any order."""
    keys = [(k, "ascending") for k in ("sweep", "trial_id", "step") if k in a.column_names]
    a, b = a.sort_by(keys), b.sort_by(keys)
    assert a.num_rows == b.num_rows
    assert a.to_pylist() == b.select(a.column_names).to_pylist()


def test_a_refresh_reads_only_the_new_parts_and_equals_a_full_read(tmp_path):
    """New parts are read alone and merged by the store's rule of which run is kept, with their
    curves: the tables equal one read of everything, runs that win and runs that lose included;
    a compaction (every part rewritten, the same runs) reads everything and recomputes nothing."""
    from analysis.serve import panels
    from analysis.serve.store import Source
    from analysis.tables.load import load_parts
    from scaling.store.compaction import compact

    root = str(tmp_path / "results")
    store = _store(tmp_path / "results")
    src = Source(root, refresh_share=1.0)
    first = panels.progress(src, "grid")
    assert (src.loads, src.delta_loads, first["counts"]) == (1, 0, {"ok": 23, "failed": 1})
    # new trials only: the columns the panels read are the last ones and the new rows
    store.write_result("grid", _trial(150, lr=0.2, n_train=100, batch=8, seed=0))
    grown = panels._frame(src, "grid")
    assert src._entry("grid").appended is not None and src.delta_loads == 1
    fresh = panels.tables.frame(src.tables("grid")[1].select(list(grown)))
    assert list(grown) == list(fresh) and grown.axes == fresh.axes
    for k in grown:
        assert np.array_equal(grown[k], fresh[k], equal_nan=grown[k].dtype != object), k
    # a second run of trial 2 that fails (the ok run stays), a rerun of the failed trial 24 that
    # is ok (it wins), and two new trials
    store.write_result("grid", _trial(2, lr=0.1, n_train=100, batch=8, seed=1, status="failed",
                                      error="second run", run="r9"))
    store.write_result("grid", _trial(24, lr=0.1, n_train=800, batch=128, seed=1, run="r9"))
    for i in (200, 201):
        store.write_result("grid", _trial(i, lr=0.3, n_train=100, batch=8, seed=i - 200))
    _, trials, curves, _ = src.tables("grid")
    assert (src.loads, src.delta_loads) == (3, 2)
    assert src._entry("grid").appended is None, "a run replaced: the columns are built again"
    whole = load_parts(os.path.join(root, "grid"))
    _same(trials, whole[0])
    _same(curves, whole[1])
    assert panels.progress(src, "grid")["counts"] == {"ok": 27}
    bopt_before = panels._frame(src, "grid")
    compact(store, "grid")
    _, trials, _, _ = src.tables("grid")
    assert (src.loads, src.delta_loads) == (4, 2), "parts vanished: everything read again"
    _same(trials, whole[0])
    assert panels._frame(src, "grid") is bopt_before, "the same runs: nothing computed again"


def test_slow_results_are_computed_in_the_background_and_shown_stale_meanwhile(tmp_path):
    """The laws' mechanism with a stand-in computation: nothing before the first result, the
    last result marked not current while the new trials are fitted, and a next round only after
    its share of a core."""
    from analysis.serve.store import Source

    store = _store(tmp_path / "results")
    src = Source(str(tmp_path / "results"), refresh_share=1.0)
    calls = []

    def rows(trials, _curves):
        calls.append(trials.num_rows)
        time.sleep(0.1)
        return trials.num_rows

    ask = lambda: src.slow_result("grid", "rows", rows)
    assert ask()[:2] == (None, False)
    assert _wait("the first result", lambda: ask()[1], timeout=30) and ask()[0] == 24
    assert ask()[2]["trials"] == 24 and calls == [24]
    _store(tmp_path / "results", lrs=(0.3,), first=100)
    value, current, _ = ask()
    assert (value, current) == (24, False), "the last result while the new one is computed"
    assert _wait("the new result", lambda: ask()[1], timeout=30) and ask()[0] == 48
    # within a share of a core: the next round waits 999x what the last one cost
    src.refresh_share = 0.001
    store.write_result("grid", _trial(300, lr=0.3, n_train=100, batch=8, seed=5))
    src.refresh_share = 1.0
    src.tables("grid")  # read at once
    src.refresh_share = 0.001
    time.sleep(0.5)
    assert ask()[:2] == (48, False) and calls == [24, 48], "too soon: not computed yet"


GRID_CONFIG = """name: grid
task: {name: digits}
model: {name: mlp}
axes:
  n_train: [100, 200, 400, 800]
  batch_size: [8, 32, 128]
  lr: [0.1, 0.3, 1.0]
  seed: [0, 1]
"""
"""The config of ``_store``'s trials at three learning rates: 66 trials (the 6 with batch size 128
over 100 examples are left out; ``_store`` writes them all the same, 72 rows)."""


def test_a_running_sweep_is_followed_at_a_smaller_share_and_at_the_usual_one_once_its_last_trial_is_in(tmp_path):
    """While trials are still to come, a read waits (1 / running share - 1) times what the last
    cost, and so does a round of the laws; once the tables hold every trial the config expands to,
    the waiting round starts within about a second of the sweep's end (``ending_s``: the share is
    looked at again), not after its long wait. (The reads are forced here by raising the running
    share for one call.)"""
    from analysis.serve.store import Source

    root = tmp_path / "results"
    _store(root)  # 24 of 66
    (root / "grid" / "sweep.yaml").write_text(GRID_CONFIG)
    src = Source(str(root), refresh_share=0.5, running_share=0.001, ending_s=1.0)
    calls = []

    def rows(trials, _curves):
        calls.append(trials.num_rows)
        time.sleep(0.1)
        return trials.num_rows

    def read_now():
        src.running_share = 0.5
        src.tables("grid")
        src.running_share = 0.001

    ask = lambda: src.slow_result("grid", "rows", rows)
    assert ask()[:2] == (None, False)
    assert _wait("the first result", lambda: ask()[1], timeout=30) and calls == [24]
    assert src.expected("grid") == 66 and src.running("grid") and src.share("grid") == 0.001
    _store(root, lrs=(0.3,), first=100)  # 48 of 66: still running
    loads = src.loads
    src.tables("grid")
    assert src.loads == loads, "running: the next read waits 999x what the last cost"
    read_now()
    assert src.loads == loads + 1
    assert ask()[:2] == (24, False)
    time.sleep(1.5)
    assert ask()[:2] == (24, False) and calls == [24], "running: the next round waits ~100 s"
    _store(root, lrs=(1.0,), first=200)  # 72 rows, 66 expected: the sweep is done
    read_now()
    ended = time.monotonic()
    assert not src.running("grid") and src.share("grid") == 0.001, "the sweep's own end first"
    assert _wait("the usual share", lambda: src.share("grid") == 0.5, timeout=5)
    assert time.monotonic() - ended >= 1.0
    assert _wait("the round after the last trial", lambda: ask()[1], timeout=5), calls
    assert ask()[0] == 72 and calls == [24, 72]


def test_closing_the_source_ends_its_background_fits_after_the_current_one(tmp_path):
    """The server's stop (and the benchmark, between the sweeps it times) closes the source: the
    fit under way ends, the next one queued never starts, and ``wait_s`` waits for the thread."""
    import threading

    from analysis.serve.store import Source

    root = tmp_path / "results"
    _store(root)
    src = Source(str(root), refresh_share=1.0)
    started, threads = [], []

    def slow(trials, _curves):
        started.append(trials.num_rows)
        threads.append(threading.current_thread())  # this source's thread (other tests' may run)
        time.sleep(0.5)
        return trials.num_rows

    assert src.slow_result("grid", "first", slow)[:2] == (None, False)
    assert src.slow_result("grid", "second", slow)[:2] == (None, False)
    assert _wait("the first fit", lambda: started, timeout=10)
    src.close(wait_s=10)
    assert started == [24], "the second fit started after the close"
    assert not threads[0].is_alive(), "close(wait_s) returned before the fits' thread ended"


@pytest.mark.slow  # 4 s: a process start and the analysis' imports
def test_the_fitting_process_answers_in_json_and_stops_with_the_server(server):
    from analysis.errors import AnalysisError
    from analysis.serve.fitter import NICE

    fitter = server.source.fitter
    _, trials, _, _ = server.source.tables("grid")
    with pytest.raises(AnalysisError, match="too much to read whole"):
        fitter.run(("bcrit",), trials, None)  # its error, one line, across the process
    with pytest.raises(AnalysisError, match="unknown law"):
        fitter.run(("nope",), trials.slice(0, 0), None)
    proc = fitter._proc
    assert proc.poll() is None, "one process kept for the next job"
    # fits yield the cores to a sweep: nice 19, the idle class, and a session (so an autogroup) of
    # its own whose nice is 19 too; this session's autogroup (a terminal's) is left as it was
    read = lambda path: Path(path).read_text()
    assert int(read(f"/proc/{proc.pid}/stat").rsplit(")", 1)[1].split()[16]) == NICE == 19
    assert os.sched_getscheduler(proc.pid) == os.SCHED_IDLE
    assert os.getsid(proc.pid) == proc.pid != os.getsid(0)
    if os.path.exists(f"/proc/{proc.pid}/autogroup"):
        assert read(f"/proc/{proc.pid}/autogroup").split()[-1] == str(NICE)
        assert read(f"/proc/{proc.pid}/autogroup") != read("/proc/self/autogroup")
    # it exits by itself once its stdin closes (what the server's close does first, and what a dead
    # server's pipe does); it runs only on idle CPU, so under a busy machine that can take seconds,
    # and the server's own close gives it 5 s before it kills it
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0, "it exits by itself when its stdin closes"
    with pytest.raises(AnalysisError, match="unknown law"):
        fitter.run(("nope",), trials.slice(0, 0), None)  # a new process for the next job
    again = fitter._proc
    assert again is not proc and again.poll() is None
    server.server_close()
    assert fitter._proc is None and again.poll() is not None, "the server's close ends its fitting process"


def test_the_eta_counts_the_remaining_trials_at_the_recent_rate(tmp_path):
    from analysis.serve import panels
    from analysis.serve.store import Source

    ms = lambda s: np.datetime64(0, "ms") + (np.asarray(s) * 1000).astype("timedelta64[ms]")
    # 30 trials: one every 10 s, then the last 20 one every 2 s (the rate changed)
    ends = np.r_[np.arange(10) * 10.0, 90 + 2 * np.arange(1, 21)]
    recent = panels.recent_rate(ms(ends), np.full(ends.size, 100.0))
    assert recent["trials_per_s"] == pytest.approx(0.5) and recent["steps_per_s"] == pytest.approx(50)
    eta = panels.eta(60, recent, now=ends[-1] + 40)
    assert eta["seconds"] == pytest.approx(120 - 40) and eta["text"] == "80 s"
    assert panels.eta(60, recent, now=ends[-1] + 600).get("stalled")
    assert panels.eta(0, recent, now=0)["text"] == "done"
    assert panels.eta(None, recent, now=0)["why"].startswith("the sweep's config")
    # a pack's trials commit at one time: the window grows to hold several commit times
    packs = np.repeat(np.arange(1, 11) * 60.0, 8)
    assert panels.recent_rate(ms(packs), None)["trials_per_s"] == pytest.approx(8 / 60)
    too_few = panels.recent_rate(ms([1.0, 2.0, 3.0]), None)
    assert too_few is None and panels.eta(5, too_few, now=0)["text"] == "unknown"
    # through a store whose config expands to 44 trials (48 less batch 128 > n_train 100, as
    # `scaling status` counts them): 20 remain; its trials ended long ago
    store = _store(tmp_path / "results")
    store.save_config("grid", "name: grid\ntask: {name: digits}\nmodel: {name: mlp}\naxes:\n"
                              "  n_train: [100, 200, 400, 800]\n  batch_size: [8, 32, 128]\n"
                              "  lr: [0.1, 0.3]\n  seed: [0, 1]\n")
    progress = panels.progress(Source(str(tmp_path / "results")), "grid")
    assert (progress["expected"], progress["remaining"]) == (44, 20)
    assert progress["recent"]["trials_per_s"] == pytest.approx(0.1)
    assert progress["eta"]["stalled"] and progress["eta"]["text"].startswith("stalled?")


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc writes them) of sockets listening on ``port``."""
    found = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(name):
            continue
        with open(name) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                addr, state = fields[1], fields[3]
                if state == "0A" and int(addr.rsplit(":", 1)[1], 16) == port:
                    found.append(addr.rsplit(":", 1)[0])
    return found


def test_it_listens_on_loopback_only_by_default(server):
    port = server.server_address[1]
    addrs = _listening(port)
    assert addrs == ["0100007F"], addrs  # 127.0.0.1, and nothing on any other address or IPv6


def _cli(capsys, *argv) -> tuple[int, str]:
    code, _, err = _run(capsys, *argv)
    return code, err


def test_cli_mistakes_are_one_line(tmp_path, capsys):
    code, err = _cli(capsys, "serve", str(tmp_path / "missing"))
    assert code == 2 and err.startswith("error: no results directory") and err.count("\n") == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, err = _cli(capsys, "serve", str(tmp_path), "--port", str(busy.getsockname()[1]))
    assert code == 2 and "cannot listen on 127.0.0.1" in err and err.count("\n") == 1, err
    code, err = _cli(capsys, "serve", str(tmp_path), "--port", "70000")
    assert code == 2 and "--port must be between 0 and 65535" in err


# ---- a real browser on a real sweep -----------------------------------------------------------

SWEEP = """
name: live
task: {name: digits}
model: {name: mlp, width: 16, depth: 1}
engine: single
axes:
  n_train: [60, 120]
  batch_size: 16
  lr: LRS
  momentum: 0.0
  seed: 0
budget: {epochs: 3}
eval: {points: 4}
resources: {cpu: 1}
"""


def _browser():
    """A headless Chromium driven by Selenium, or a skip naming what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                    "(pip install -e .[dev])")
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("no Chromium and chromedriver on PATH (.ci/run installs Debian's chromium "
                    "and chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--enable-unsafe-swiftshader", "--window-size=1300,3000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def _wait(what, check, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_the_page_follows_a_real_sweep_in_a_browser(ray_local, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from cluster.driver.sweep import run_sweep
    from scaling.config.sweep import config_from_text

    results = str(tmp_path / "results")
    first = SWEEP.replace("LRS", "[0.1]")
    run_sweep(config_from_text(first), first, results, progress=False, log=lambda *_: None)
    srv = make_server(results, port=0, poll_s=0.5)
    serve_in_thread(srv)
    browser = _browser()
    try:
        t0 = time.monotonic()
        browser.get(srv.url)
        browser.find_element(By.LINK_TEXT, "live").click()
        js = browser.execute_script
        count = lambda: js("const c = document.getElementById('progress-cards');"
                           "return c ? Number(c.dataset.trials) : 0")
        assert _wait("the first trials", lambda: count() == 2)
        assert _wait("the training curves", lambda: js(
            "const f = document.getElementById('curves-fig'); return f && Number(f.dataset.lines)")) == 2
        opened = time.monotonic() - t0
        # more trials commit while the page is open: a resumed sweep with two more lr values
        more = SWEEP.replace("LRS", "[0.1, 0.4, 0.8]")
        done = threading.Event()
        thread = threading.Thread(target=lambda: (run_sweep(config_from_text(more), more, results,
                                                            progress=False, log=lambda *_: None),
                                                  done.set()))
        thread.start()
        seen = {_wait("a rising count", lambda: count() if count() > 2 else 0, timeout=300)}
        thread.join(timeout=300)
        assert done.is_set()
        assert _wait("every trial", lambda: count() == 6)
        assert _wait("the ETA", lambda: js("return document.getElementById('progress-cards')"
                                           ".dataset.eta")) == "done"  # the stored config's 6
        seen.add(6)
        assert min(seen) > 2
        # filter by an axis: lr = 0.8, a value that did not exist when the page opened
        select = _wait("the lr filter with its new value", lambda: next(
            (e for e in browser.find_elements(By.CSS_SELECTOR, "select[data-axis='lr']")
             if "0.8" in [o.get_attribute("value") for o in Select(e).options]), None))
        Select(select).select_by_value("0.8")
        legend = lambda: js("const f = document.getElementById('curves-fig');"
                            "return f && f.data ? f.data.filter(t => t.name).map(t => t.name) : []")

        def lr_filtered():
            names = legend()
            return names if len(names) == 2 and not any("lr=" in n for n in names) else None

        names = _wait("the curves of lr=0.8 alone", lr_filtered)
        assert len(names) == 2  # one line per n_train, lr fixed by the filter
        rows = lambda: js("return document.querySelectorAll('#trial-table tr.row').length")
        assert rows() == 6
        # a range on the parallel coordinates' lr axis filters the table and the curves
        Select(browser.find_element(By.CSS_SELECTOR, "select[data-axis='lr']")).select_by_value("")
        _wait("every curve again", lambda: len(legend()) == 6)
        js("Plotly.restyle(document.getElementById('parcoords-fig'), "
           "{'dimensions[1].constraintrange': [[0.7, 0.9]]})")
        names = _wait("the curves inside the range", lr_filtered)
        assert "BETWEEN" in browser.find_element(By.ID, "curve-sql").get_attribute("value")
        assert _wait("the table inside the range", lambda: rows() == 2)
        severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
        print(f"page live with curves {opened:.1f} s after opening")
    finally:
        browser.quit()
        srv.shutdown()
        srv.server_close()


@pytest.mark.slow  # imports the bench's sweeps (torch): 5-8 s under load
def test_the_serving_bench_runs_the_reference_sweep():
    import yaml

    from cluster.bench import serve as bench
    from scaling.config.sweep import parse_config

    cfg = parse_config(yaml.safe_load(bench.reference_config()))
    assert cfg.count() == 64 and cfg.name == "bench"  # make bench's reference sweep


def test_the_serving_bench_pairs_its_runs():
    """cluster.bench.serve summarises paired differences: a shift common to both runs of a pair
    (the machine's load) drops out."""
    from cluster.bench import serve as bench

    alone = [100.0, 150.0, 80.0, 120.0]
    p = bench.paired(alone, [a * 1.04 for a in alone])
    assert p["median"] == pytest.approx(4.0) and p["low"] == pytest.approx(4.0)
    assert p["ci"] == pytest.approx((4.0, 4.0))
    assert p["alone_median"] == pytest.approx(110.0)
    p = bench.paired(alone, [104.0, 150.0, 88.0, 120.0])  # +4, 0, +10, 0 %
    assert p["median"] == pytest.approx(2.0) and p["ci"][0] < 0 < p["ci"][1]
    assert p["high"] == pytest.approx(10.0)
