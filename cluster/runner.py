"""Run a sweep on Ray: one Ray task per pending trial, results written by the worker.

The driver expands the config, asks the store which trials are already done,
and submits the rest with a bounded number in flight, so it never holds all
results (only a small summary per trial). A task whose worker process dies is
retried by Ray; a trial whose code raises is retried too, and after
``retries`` attempts the driver records it as ``failed`` with the error text.
"""

from __future__ import annotations

import math
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from cluster.progress import Progress
from scaling import __version__
from scaling.config import MAX_TRIALS, SweepConfig, config_columns, trial_id
from scaling.store import Store


@dataclass(frozen=True, kw_only=True)
class SweepSummary:
    name: str
    """Sweep name."""
    results: str
    """Where the results are (the store root)."""
    total: int
    """Trials in the sweep."""
    skipped: int
    """Trials already stored, not run again."""
    counts: dict = field(default_factory=dict)
    """Status -> number of trials run now."""
    wall_s: float = 0.0
    """Wall-clock seconds of this run."""


def execute_trial(trial: dict, sweep: str, root: str, threads: int, device: str) -> dict:
    """Body of the Ray task: train one trial, store its rows, return a small summary."""
    import torch

    from scaling.train import run_trial

    torch.set_num_threads(threads)
    result = run_trial(trial, device=device)
    Store(root).write_result(sweep, result)
    row = result["trial"]
    return {"trial_id": row["trial_id"], "status": row["status"], "test_acc": row["test_acc"]}


def failed_row(trial: dict, error: str) -> dict:
    """The trial row of a trial that raised on every attempt (written by the driver)."""
    now = datetime.now(timezone.utc)
    return {**config_columns(trial), "run_id": uuid.uuid4().hex, "status": "failed",
            "error": error[:4000], "steps": 0, "examples_seen": 0,
            "train_loss": math.nan, "test_loss": math.nan, "test_acc": math.nan, "wall_s": 0.0,
            "host": socket.gethostname(), "start_time": now, "end_time": now,
            "version": __version__, "engine": "single"}


def describe_error(exc: BaseException) -> str:
    """One readable line from a Ray error: the trial's own exception where there is one."""
    import ray.exceptions as rex

    if isinstance(exc, rex.RayTaskError):
        cause = exc.cause if exc.cause is not None else exc
        text = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {text[-1] if text else ''}".strip()
    if isinstance(exc, rex.WorkerCrashedError):
        return "WorkerCrashedError: the worker process died on every attempt"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Join a cluster at ``address`` (or RAY_ADDRESS), or start a local Ray. True if started here."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return False
    common = dict(log_to_driver=False, logging_level="ERROR", configure_logging=True)
    if address:
        ray.init(address=address, **common)
        return False
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
             dashboard_host="127.0.0.1", **common)
    return True


def run_sweep(cfg: SweepConfig, text: str, results: str, *, address: str | None = None,
              retry_failed: bool = False, allow_large: bool = False, num_cpus: int | None = None,
              progress: bool = True, log=print) -> SweepSummary:
    """Run every trial of ``cfg`` not yet in the store at ``results``."""
    t0 = time.monotonic()
    trials = cfg.trials(limit=None if allow_large else MAX_TRIALS)
    store = Store(results)
    store.save_config(cfg.name, text)
    keep = ("ok", "diverged") if retry_failed else ("ok", "diverged", "failed")
    stored = store.finished(cfg.name, keep)
    pending = [t for t in trials if trial_id(t) not in stored]
    skipped = len(trials) - len(pending)
    log(f"sweep {cfg.name!r}: {len(trials)} trials, {skipped} already stored, {len(pending)} to run")
    counts = {"ok": 0, "diverged": 0, "failed": 0}
    if pending:
        started = connect(address, num_cpus)
        try:
            _drive(cfg, pending, store, counts, progress)
        finally:
            if started:
                import ray

                ray.shutdown()
    return SweepSummary(name=cfg.name, results=store.uri, total=len(trials), skipped=skipped,
                        counts=counts, wall_s=time.monotonic() - t0)


def _drive(cfg: SweepConfig, pending: list[dict], store: Store, counts: dict, progress: bool) -> None:
    import ray

    res = cfg.resources
    device = "cuda" if res.gpu > 0 else "cpu"
    threads = max(1, int(res.cpu))
    total = ray.cluster_resources()
    capacity = int(total.get("CPU", 1) // res.cpu)
    if res.gpu > 0:
        capacity = min(capacity, int(total.get("GPU", 0) // res.gpu))
    if capacity < 1:
        raise RuntimeError(f"the cluster has {total.get('CPU', 0)} CPUs and {total.get('GPU', 0)} GPUs, "
                           f"too few for one trial (resources: cpu={res.cpu}, gpu={res.gpu})")
    task = ray.remote(execute_trial).options(
        num_cpus=res.cpu, num_gpus=res.gpu, max_retries=cfg.retries, retry_exceptions=True,
        name="scaling-trial")
    root = store.uri if not store.local else store.root
    bar = Progress(len(pending), enabled=progress)
    window = 2 * capacity + 4
    queue = iter(pending)
    inflight: dict = {}

    def submit() -> None:
        while len(inflight) < window:
            trial = next(queue, None)
            if trial is None:
                return
            inflight[task.remote(trial, cfg.name, root, threads, device)] = trial

    submit()
    while inflight:
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
        for ref in ready:
            trial = inflight.pop(ref)
            try:
                status = ray.get(ref)["status"]
            except ray.exceptions.RayError as e:
                store.write_result(cfg.name, {"trial": failed_row(trial, describe_error(e)), "curves": []})
                status = "failed"
            counts[status] += 1
            bar.update(status)
        submit()
        bar.update(running=min(len(inflight), capacity))
    bar.close()
