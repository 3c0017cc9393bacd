"""SIGTERM and SIGINT at random moments of a sweep's start-up, through the real command.

``python -m cluster.bench.signals [--runs 20] [--seed 0] [--within 5]`` starts a small sweep
(as the installed ``scaling`` script starts it), sends SIGTERM or SIGINT (alternating) at a
uniformly random moment of its first ``--within`` seconds, and checks what a stop must leave:

- exit code 143 (SIGTERM) or 130 (SIGINT), and exactly one line on stderr, the stop line;
- no process of the sweep still running: every process seen below the driver while it ran
  (polled from /proc every 20 ms: Ray's GCS, raylet, workers, dashboard and runtime-env
  agents), and every process whose environment carries the cluster marker of one of them;
- no record of a running local Ray left for the driver.

Moments are drawn from [0.5 s, --within]: a signal before the interpreter has run a line of
``scaling`` (Python's own start-up: site and the venv's .pth files, 0.1-0.4 s on a busy 2-core
machine) kills it as it would any program, and nothing has started then. Prints one line per run and a tally; exits 1 if any run broke a rule.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cluster.launch.reaper import MARKER, start_time, state_dir

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = [sys.executable, "-P", "-c", "import sys; from cluster.cli import main; sys.exit(main())"]
CONFIG = """\
name: signals
task: {name: digits}
model: {name: mlp, width: 16, depth: 1}
axes: {n_train: [50, 100], batch_size: [16], lr: [0.1], seed: [0, 1]}
budget: {epochs: 3}
eval: {points: 2}
resources: {cpu: 1}
engine: single
"""
START_S = 0.5
"""The earliest moment drawn: Python's own start-up comes before any line of ours."""
STOP_LINE = "finished trials are stored; run the same command again to resume"


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_bytes()
            except OSError:
                continue
            kids.setdefault(int(stat.rsplit(b")", 1)[1].split()[1]), []).append(int(name))
    return kids


def _below(root: int) -> list[int]:
    kids, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def _marker(pid: int) -> bytes | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for item in env.split(b"\0"):
        if item.startswith(MARKER.encode() + b"="):
            return item
    return None


def _marked(markers: set[bytes]) -> dict[int, int]:
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid() and _marker(int(name)) in markers:
            if (t := start_time(int(name))) is not None:
                found[int(name)] = t
    return found


def cmdline(pid: int, limit: int | None = 80) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:limit]
    except OSError:
        return "?"


def program(pid: int) -> str:
    """The file name of the program ``pid`` runs (argv[0]'s last part: ``gcs_server``), whatever
    the length of the folder it was installed in (a clone in a long path pushed Ray's binaries'
    names past a truncated command line, and the signal was never sent)."""
    return Path(cmdline(pid, None).split(" ")[0]).name


def one_run(sig: int, at_s: float, work: Path, timeout_s: float = 180.0, at_process: str | None = None) -> dict:
    """One sweep stopped by ``sig`` ``at_s`` seconds after it started (with ``at_process``, after
    a process running the program of that name first runs below the driver); what it left."""
    config = work / "signals.yaml"
    config.write_text(CONFIG)
    results = work / "r"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    seen: dict[int, int] = {}
    markers: set[bytes] = set()
    t0 = time.monotonic()
    driver = subprocess.Popen([*LAUNCH, "sweep", str(config), "--results", str(results), "--quiet"],
                              cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=_default_sigint)
    sent = False
    clock = None if at_process else t0  # the moment is counted from the start, or from at_process
    while driver.poll() is None and time.monotonic() - t0 < timeout_s:
        for pid in _below(driver.pid):
            if pid not in seen and (t := start_time(pid)) is not None:
                seen[pid] = t
                if (m := _marker(pid)) is not None:
                    markers.add(m)
        if at_process and clock is None and any(program(p) == at_process for p in seen):
            clock = time.monotonic()
        due = clock is not None and time.monotonic() - clock >= at_s
        if not sent and due:
            driver.send_signal(sig)
            sent = True
        time.sleep(0.02)
    if driver.poll() is None:
        driver.kill()
    out, err = driver.communicate()
    time.sleep(0.5)  # processes killed by the driver's clean-up are reaped by init
    left = {p: t for p, t in seen.items() if p != driver.pid and start_time(p) == t}
    left.update(_marked(markers))
    records = [p for p in (state_dir() or Path("/nonexistent")).glob("*.json")
               if _record_driver(p) == driver.pid]
    lines = [line for line in err.splitlines() if line.strip()]
    ok_code = sent and driver.returncode == 128 + sig
    one_line = len(lines) == 1 and lines[0].endswith(STOP_LINE)
    return {"signal": signal.Signals(sig).name, "at_s": round(at_s, 2), "sent": sent, "rc": driver.returncode,
            "stderr_lines": len(lines), "first_line": lines[0][:120] if lines else "",
            "processes_seen": len(seen) - 1, "left_running": [cmdline(p) for p in left],
            "record_left": bool(records), "ok": bool(ok_code and one_line and not left and not records)}


def _default_sigint() -> None:
    """In the child: SIGINT as a terminal gives it (a background shell starts jobs ignoring it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _record_driver(path: Path) -> int | None:
    try:
        return int(json.loads(path.read_text())["driver_pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.bench.signals", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--within", type=float, default=5.0, help="seconds after the start (default: 5)")
    parser.add_argument("--from-process", default=None, metavar="NAME",
                        help="count the moments from when NAME (e.g. gcs_server: Ray starting) first runs")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    bad = 0
    with tempfile.TemporaryDirectory(prefix="scaling-signals-") as tmp:
        for i in range(args.runs):
            sig = (signal.SIGTERM, signal.SIGINT)[i % 2]
            work = Path(tmp) / f"run{i}"
            work.mkdir()
            first = 0.0 if args.from_process else START_S
            r = one_run(sig, rng.uniform(first, args.within), work, at_process=args.from_process)
            bad += not r["ok"]
            since = f" after {args.from_process}" if args.from_process else ""
            print(f"{'ok ' if r['ok'] else 'BAD'} {r['signal']:7} at {r['at_s']:4.2f}s{since}: rc {r['rc']}, "
                  f"{r['stderr_lines']} stderr line(s), {r['processes_seen']} processes seen, "
                  f"{len(r['left_running'])} left {r['left_running'] or ''}"
                  f"{', record left' if r['record_left'] else ''}  {r['first_line']!r}", flush=True)
    print(f"{args.runs - bad} of {args.runs} runs stopped cleanly")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
