"""``scaling serve`` at scale and beside a sweep: ``python -m cluster.bench.serve``.

1. **Open and refresh.** The store benchmark's 100k-trial store (:mod:`cluster.bench.store`:
   commit events of 50 trials, compacted; 100 curve points each) is served; "open" is the wall
   time from starting the server to the answers to everything a sweep's page asks for first
   (the page, ``meta``, ``progress``, ``table``, ``parcoords``, ``curves`` and ``laws``, which
   answers at once and fits in the background); "refresh" is the same after one new commit
   event, the server having drawn the page once (``refresh_share=1``: reread at once); "laws"
   is the time until the background fits of the laws are ready, after the open.
   Targets (issue 27): open < 3 s, refresh < 1 s.
2. **Beside a sweep.** The reference sweep (:data:`cluster.bench.sweeps.REFERENCE_SWEEP`: the
   64-trial MLP sweep over lr x momentum x seed; ``--config`` for another) run by ``scaling
   sweep`` alone and with ``scaling serve`` on its store and a client that behaves as an open
   page (polls the version every 2 s, as ``app.js`` does, and, when it changed, asks for every
   panel; asks for the laws again while they are being fitted), ``--repeats`` pairs (default
   20: what resolves 5 %), the order inside each pair alternating (alone first, then served first) so a drift of the
   machine's load falls on both sides. The sweeps join one running Ray that the benchmark starts
   (``--ray joined``, the default): the serving cannot change how long Ray takes to start and
   stop, and those seconds scatter by about one from run to run, which hid a few percent;
   ``--ray embedded`` times the whole command, each sweep starting its own Ray. Printed: each pair's walls and their difference, the
   median of each side, the median paired difference with its range and a 95 % t interval of
   the mean difference (so whether 5 % is resolved can be read off), the serving's CPU (the
   server's threads, the client and the fitting process) as a share of one core, and the load
   average before and after. Target (issue 27): < 5 % more wall time.

Timings on a shared machine are noisy: compare the columns of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request


def reference_config() -> str:
    """The reference sweep (:mod:`cluster.bench.sweeps`) as the YAML ``scaling sweep`` reads."""
    import yaml

    from cluster.bench.sweeps import REFERENCE_SWEEP

    return yaml.safe_dump(REFERENCE_SWEEP, sort_keys=False)


PANELS = ("meta", "progress", "table", "parcoords", "laws", "curves")
"""What a sweep's page asks for when it opens or the sweep changed (``app.js``: ``refresh``)."""


def _get(base: str, token: str, path: str) -> bytes:
    sep = "&" if "?" in path else "?"
    try:
        with urllib.request.urlopen(f"{base}{path}{sep}token={token}", timeout=600) as r:
            return r.read()
    except urllib.error.HTTPError as e:  # a panel that says why it has nothing (400) is an answer
        if e.code != 400:
            raise
        return e.read()


def _first_view(base: str, token: str, sweep: str) -> None:
    _get(base, token, f"/sweep?name={sweep}")
    for what in PANELS:
        _get(base, token, f"/api/{what}?sweep={sweep}")


def _laws_ready(base: str, token: str, sweep: str, timeout: float = 600) -> float:
    """Seconds until the page's laws are fitted (none pending)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if not json.loads(_get(base, token, f"/api/laws?sweep={sweep}"))["pending"]:
            break
        time.sleep(0.1)
    return time.perf_counter() - t0


def open_and_refresh(root: str, sweep: str = "bench") -> dict:
    from analysis.serve import make_server, serve_in_thread
    from cluster.bench.store import design
    from scaling.config.sweep import parse_config
    from scaling.spec.schema import PointIds
    from scaling.store.writer import Store

    t0 = time.perf_counter()
    srv = make_server(root, port=0, refresh_share=1.0)
    serve_in_thread(srv)
    base = srv.url.split("/?")[0]
    try:
        _first_view(base, srv.token, sweep)
        opened = time.perf_counter() - t0
        laws = _laws_ready(base, srv.token, sweep)
        # one new commit event: the trial the store benchmark leaves out (its last seed)
        cfg = parse_config(design(100))
        point = next(p for p in cfg.points() if p["seed"] == 99)
        row = {**point, "trial_id": PointIds(cfg.make, tuple(cfg.axes))(point),
               "run_id": "bench-serve", "status": "ok", "test_loss": 1.0, "test_acc": 0.5,
               "steps": 500}
        Store(root).write_result(sweep, {"trial": row, "curves": [{"step": 0, "test_loss": 2.0}]})
        t1 = time.perf_counter()
        _get(base, srv.token, f"/api/version?sweep={sweep}")
        _first_view(base, srv.token, sweep)
        refreshed = time.perf_counter() - t1
        laws_again = _laws_ready(base, srv.token, sweep)
        loads, delta = srv.source.loads, srv.source.delta_loads
    finally:
        srv.shutdown()
        srv.server_close()
    return {"open_s": opened, "refresh_s": refreshed, "reads": loads, "delta_reads": delta,
            "laws_s": laws, "laws_again_s": laws_again}


class Viewer(threading.Thread):
    """An open page, without a browser: polls the version and, when it changed, every panel."""

    def __init__(self, base: str, token: str, sweep: str, every_s: float = 2.0):
        super().__init__(daemon=True)
        self.base, self.token, self.sweep, self.every_s = base, token, sweep, every_s
        self.stop = threading.Event()
        self.refreshes = 0

    def run(self) -> None:
        seen, pending = None, False
        while not self.stop.wait(self.every_s):
            try:
                v = json.loads(_get(self.base, self.token, f"/api/version?sweep={self.sweep}"))
                if v["trial_parts"] and v["version"] != seen:
                    meta = json.loads(_get(self.base, self.token, f"/api/meta?sweep={self.sweep}"))
                    if meta.get("version") == v["version"]:
                        seen = v["version"]
                    for what in PANELS[1:]:
                        body = _get(self.base, self.token, f"/api/{what}?sweep={self.sweep}")
                        if what == "laws":
                            pending = json.loads(body).get("pending", False)
                    self.refreshes += 1
                elif pending:  # as the page does while the laws are fitted
                    pending = json.loads(_get(self.base, self.token,
                                              f"/api/laws?sweep={self.sweep}")).get("pending", False)
            except OSError:
                continue


def _process_cpu(pid: int) -> float:
    """CPU seconds (user and system) a running process has used, from /proc; 0 when unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def sweep_wall(config: str, results: str, served: bool, sweep: str,
               address: list[str] = ()) -> tuple[float, int, float]:
    """(wall seconds of ``scaling sweep`` on a fresh store, page refreshes, CPU seconds the serving
    used: this process's (the server's threads and the client's) and the fitting process's),
    with or without a served, viewed page; ``address``: ``["--address", A]`` to join a running
    Ray, or nothing for the sweep's own local Ray."""
    shutil.rmtree(results, ignore_errors=True)
    os.makedirs(results)
    viewer, srv = None, None
    cpu0 = time.process_time()
    if served:
        from analysis.serve import make_server, serve_in_thread

        srv = make_server(results, port=0)
        serve_in_thread(srv)
        viewer = Viewer(srv.url.split("/?")[0], srv.token, sweep)
        viewer.start()
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "sweep", config, "--results", results,
                        "--quiet", *address], check=False, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"the sweep failed: {r.stderr.strip().splitlines()[-1:]}")
    cpu = 0.0
    if viewer is not None:
        viewer.stop.set()
        viewer.join()
        proc = srv.source.fitter._proc if srv.source.fitter is not None else None
        cpu = time.process_time() - cpu0 + (_process_cpu(proc.pid) if proc is not None else 0.0)
        srv.shutdown()
        srv.server_close()
        srv.source.close(wait_s=120)  # a round of fits under way ends before the next sweep is timed
    return wall, viewer.refreshes if viewer else 0, cpu


def config_info(path: str) -> tuple[int | str, str]:
    """(trials a sweep config expands to, its sweep's name)."""
    from scaling.config.sweep import load_config

    cfg = load_config(path)
    return cfg.count(), cfg.name


def paired(alone: list[float], served: list[float]) -> dict:
    """Median of each side, and the paired differences served/alone - 1 (in %): each one, their
    median and range, and a 95 % t interval of their mean (the pairs are independent runs)."""
    import numpy as np
    from scipy import stats

    a, s = np.array(alone), np.array(served)
    d = 100 * (s / a - 1)
    n = d.size
    half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return {"alone_median": float(np.median(a)), "served_median": float(np.median(s)),
            "diffs": d.tolist(), "median": float(np.median(d)), "low": float(d.min()),
            "high": float(d.max()), "mean": float(d.mean()), "ci": (float(d.mean()) - half,
                                                                     float(d.mean()) + half)}


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


@contextlib.contextmanager
def ray_for_sweeps(mode: str):
    """The ``--address`` arguments of the sweeps: one running Ray for every sweep of the
    benchmark (``joined``: started here, on this machine's cores, without a dashboard), or none
    (``embedded``: each ``scaling sweep`` starts and stops its own, as a first run does)."""
    if mode == "embedded":
        yield []
        return
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": os.cpu_count() or 1,
                                                             "include_dashboard": False})
    try:
        cluster.wait_for_nodes()
        yield ["--address", cluster.address]
    finally:
        cluster.shutdown()


def beside_sweep(config: str, work: str, repeats: int, ray_mode: str = "joined") -> list[tuple[str, str, str]]:
    """Time the sweep alone and served, ``repeats`` alternating pairs; print and return rows."""
    with ray_for_sweeps(ray_mode) as address:
        return _beside_sweep(config, work, repeats, ray_mode, address)


def _beside_sweep(config: str, work: str, repeats: int, ray_mode: str,
                  address: list[str]) -> list[tuple[str, str, str]]:
    n_trials, name = config_info(config)
    load0 = _load()
    alone, served, views, cpu = [], [], 0, []
    for i in range(repeats):
        for side in ((False, True) if i % 2 == 0 else (True, False)):
            wall, n, used = sweep_wall(config, os.path.join(work, "r"), side, name, address)
            (served if side else alone).append(wall)
            if side:
                views += n
                cpu.append(used / wall)
        print(f"pair {i + 1} ({'alone first' if i % 2 == 0 else 'served first'}): alone "
              f"{alone[-1]:.1f} s, served {served[-1]:.1f} s, {100 * (served[-1] / alone[-1] - 1):+.1f}%; "
              f"serving used {100 * cpu[-1]:.1f}% of one core; load {_load()}", flush=True)
    p = paired(alone, served)
    where = ("on one running Ray, joined with --address (Ray's start and stop are outside the "
             "times)" if address else "each starting its own local Ray (Ray's start and stop inside the times)")
    print(f"sweeps {where}", flush=True)
    print(f"the {n_trials}-trial sweep alone: median {p['alone_median']:.1f} s; served and viewed "
          f"({views} page refreshes): median {p['served_median']:.1f} s. Paired differences "
          f"{', '.join(f'{v:+.1f}' for v in p['diffs'])}%: median {p['median']:+.1f}% (range "
          f"{p['low']:+.1f} to {p['high']:+.1f}%), mean {p['mean']:+.1f}% (95% t interval "
          f"{p['ci'][0]:+.1f} to {p['ci'][1]:+.1f}%); target < 5%", flush=True)
    print(f"the serving used {', '.join(f'{100 * c:.1f}%' for c in cpu)} of one core during the "
          "served sweeps (CPU seconds of the server's threads, the client and the fitting process "
          "over the sweep's wall time; the sweep itself runs on every core)", flush=True)
    print(f"load average (1, 5, 15 min) before {load0}, after {_load()}: other work on the machine "
          "adds scatter to every wall time", flush=True)
    what = (f"the {n_trials}-trial sweep {name!r} served and viewed vs alone ({repeats} pairs, "
            f"{'joined Ray' if address else 'own Ray'}, "
            "median paired difference, range, 95% t interval of the mean)")
    return [(what, (f"{p['median']:+.1f}% ({p['low']:+.1f} to {p['high']:+.1f}; "
                    f"{p['ci'][0]:+.1f} to {p['ci'][1]:+.1f})"), "< 5%"),
            ("medians alone / served", f"{p['alone_median']:.1f} s / {p['served_median']:.1f} s", "-"),
            ("CPU the serving used during those sweeps (of one core)",
             ", ".join(f"{100 * c:.1f}%" for c in cpu), "-")]


def table(rows: list[tuple[str, str, str]]) -> str:
    """The figures side by side: what, measured, target."""
    rows = [("scaling serve", "measured", "target")] + rows
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.bench.serve",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None,
                        help="a 100k-trial store built before (cluster.bench.store's; default: build one)")
    parser.add_argument("--config", default=None,
                        help="the sweep run beside the server (default: the 64-trial reference sweep)")
    parser.add_argument("--repeats", type=int, default=20,
                        help="pairs of sweeps, alone and served, alternating (default 20: fewer cannot resolve 5%%)")
    parser.add_argument("--skip", choices=("store", "sweep"), default=None)
    parser.add_argument("--ray", choices=("joined", "embedded"), default="joined",
                        help="the sweeps join one running Ray started by the benchmark (default: "
                             "Ray's start, about a second of scatter, out of the times), or each "
                             "starts its own (embedded)")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="bench-serve-")
    rows: list[tuple[str, str, str]] = []
    try:
        if args.skip != "store":
            root = args.store
            if root is None:
                from cluster.bench.store import build_store
                from scaling.store.compaction import compact
                from scaling.store.writer import Store

                root = os.path.join(work, "s100k")
                print("building the 100k-trial store ...", flush=True)
                build_store(root, 100, pair_trials=50, merged=False, skip_seed=99)
                compact(Store(root), "bench")
            r = open_and_refresh(root)
            rows.append(("open the 100k-trial sweep (every panel's first answer)", f"{r['open_s']:.2f} s",
                         "< 3 s"))
            rows.append(("refresh after one new part", f"{r['refresh_s']:.2f} s", "< 1 s"))
            rows.append(("the laws fitted in the background, after the open / the refresh",
                         f"{r['laws_s']:.1f} s / {r['laws_again_s']:.1f} s", "-"))
            print(f"100k trials: open {r['open_s']:.2f} s (target < 3), refresh after one new "
                  f"part {r['refresh_s']:.2f} s (target < 1); {r['reads']} reads, {r['delta_reads']} "
                  f"of the new parts only; laws ready {r['laws_s']:.1f} s after the open and "
                  f"{r['laws_again_s']:.1f} s after the refresh", flush=True)
        if args.skip != "sweep":
            config = args.config or os.path.join(work, "reference.yaml")
            if args.config is None:
                with open(config, "w") as f:
                    f.write(reference_config())
            rows += beside_sweep(config, work, args.repeats, args.ray)
        if rows:
            print(table(rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
