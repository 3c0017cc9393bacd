"""Run a sweep on Ray: one Ray task per unit of pending trials, results committed by the worker.

The driver reads which trials are done in one scan of the store, hashes the sweep's
points without building them (:mod:`scaling.expand`), and streams the pending trials to
Ray with a bounded number in flight (:mod:`cluster.drive`), so it holds neither every
trial nor every result. Workers commit each finished trial, or each batch of a pack's
members that finished together, as one commit event (:meth:`scaling.store.Store.commit`).
A task whose worker process dies is retried by Ray; a trial whose code raises is retried
too, and after ``retries`` attempts the driver records it as ``failed`` with the error
text. Storage errors are retried for ``--storage-timeout`` seconds and then stop the
sweep (exit 3); they never become ``failed`` rows. The sweep is compacted as it goes and
at the end (:mod:`scaling.compaction`).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

from cluster import localray
from scaling import parts as parts_mod
from scaling.compaction import COMPACT_EVERY
from scaling.config import MAX_TRIALS, SweepConfig
from scaling.errors import ConfigError, StorageError, UserError
from scaling.schema import CODE_VERSION, row_versions
from scaling.storage import STORAGE_TIMEOUT_S, retrying
from scaling.store import Store
from scaling.tasks import task_data_version

LARGE_LIMIT = 10_000_000
"""The most trials a sweep may have, even with --allow-large."""


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


@dataclass(frozen=True)
class Settled:
    """Which stored runs count as done: a status in ``statuses`` and, unless ``versions`` is
    None, made by those (code, data) versions. The driver and the workers use the same rule."""

    statuses: tuple = ("ok", "diverged", "failed")
    versions: tuple | None = None

    def __call__(self, stored: tuple) -> bool:
        status, code, data = stored
        return status in self.statuses and (self.versions is None or row_versions(code, data) == self.versions)


def execute_trial(trial, sweep: str, root: str, threads: int, device: str) -> dict:
    """Train one trial alone and store its rows; return a small summary."""
    return execute_unit((trial,), "single", sweep, root, threads, device)[0]


def execute_unit(trials: tuple, engine: str, sweep: str, root: str, threads: int,
                 device: str, settled: Settled | None = None, retry_s: float | None = None) -> list[dict]:
    """Body of a Ray task: train a unit's trials, committing each as soon as it finishes.

    Members of a pack already committed and ``settled`` (by an earlier attempt of this task,
    even if compacted since) are skipped, so a retried pack resumes where it stopped; a failed
    or stale one (when ``settled`` says so) is trained again. Returns one small summary per
    trial; a storage error past ``retry_s`` seconds ends the list with ``{"storage_error": ...}``
    instead of raising (a retry would train again, and it is no trial's failure).
    """
    import torch

    from scaling.resume import Committer, unit_runs

    torch.set_num_threads(threads)
    store = Store(root, retry_s=retry_s)
    settled = settled or Settled()
    unit = parts_mod.unit_id([t.trial_id for t in trials])
    summaries: list[dict] = []
    try:
        stored = unit_runs(store, sweep, [t.trial_id for t in trials]) if len(trials) > 1 else {}
        done = {tid: v[0] for tid, v in stored.items() if settled(v)}
        todo = [t for t in trials if t.trial_id not in done]
        summaries += [{"trial_id": tid, "status": status} for tid, status in done.items()]
        if engine == "packed" and len(todo) > 1:
            from scaling.packed import run_pack

            committer = Committer(store, sweep, unit)
            try:
                run_pack(todo, device=device, on_result=committer.put)
            finally:
                try:
                    committer.close()
                finally:
                    summaries += committer.summaries
        else:
            from scaling.train import run_trial

            for trial in todo:
                result = run_trial(trial, device=device)
                name = store.commit(sweep, parts_mod.unit_id([trial.trial_id]), [result])
                summaries.append({"trial_id": trial.trial_id, "status": result["trial"]["status"], "part": name})
    except StorageError as e:
        summaries.append({"storage_error": str(e)})
    return summaries


def execute_ddp(trial, sweep: str, root: str, workers: int, cpus_per_worker: float,
                use_gpu: bool, retry_s: float | None = None) -> list[dict]:
    """Body of a Ray task (num_cpus=0): one trial data-parallel over ``workers`` Ray Train workers."""
    from cluster.ddp import run_trial_ddp

    result = run_trial_ddp(trial, workers=workers, use_gpu=use_gpu, cpus_per_worker=cpus_per_worker)
    row = result["trial"]
    try:
        name = Store(root, retry_s=retry_s).commit(sweep, parts_mod.unit_id([row["trial_id"]]), [result])
    except StorageError as e:
        return [{"storage_error": str(e)}]
    return [{"trial_id": row["trial_id"], "status": row["status"], "part": name}]


def describe_error(exc: BaseException) -> str:
    """One readable line from a Ray error: the trial's own exception where there is one."""
    import ray.exceptions as rex

    if isinstance(exc, rex.RayTaskError):
        cause = exc.cause if exc.cause is not None else exc
        if type(cause).__name__ in ("WorkerGroupError", "ControllerError", "TrainingFailedError"):
            inner = [line.strip() for line in str(cause).strip().splitlines() if line.strip()]
            return f"{type(cause).__name__}: {inner[-1] if inner else ''}"
        text = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {text[-1] if text else ''}".strip()
    if isinstance(exc, rex.WorkerCrashedError):
        return "WorkerCrashedError: the worker process died on every attempt"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def connect(address: str | None, num_cpus: int | None = None, insecure_ray: bool = False) -> bool:
    """Join a cluster at ``address`` (or RAY_ADDRESS), or start a local Ray. True if started here."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return False
    localray.check_num_cpus(num_cpus, address)
    common = dict(log_to_driver=False, logging_level="ERROR", configure_logging=True)
    if address:
        localray.check_auth_mode(insecure_ray)
        check_reachable(address)
        _use_token_if_available()
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError) as e:
            chain = f"{e} {e.__cause__}".lower()
            hint = ("; the cluster uses token authentication: set RAY_AUTH_MODE=token with the token in "
                    "~/.ray/auth_token or RAY_AUTH_TOKEN") if "authtoken" in chain or "auth_token" in chain else ""
            raise UserError(f"cannot join the Ray cluster at {address!r}: "
                            f"{str(e).strip().splitlines()[0]}{hint}") from None
        localray.rearm_signals()
        return False
    localray.start(num_cpus, insecure=insecure_ray, **common)
    return True


def _use_token_if_available() -> None:
    """Ray 2.60 clusters use token auth when a token exists; join them with it, as `ray start` does."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(path):
        os.environ["RAY_AUTH_MODE"] = "token"


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, when nothing listens at a Ray address (ray.init would wait minutes)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise UserError(f"cannot reach a Ray cluster at {address!r} ({e.strerror or e}); "
                        "is the head node up (ray start --head), and is the port open?") from None


def run_sweep(cfg: SweepConfig, text: str, results: str, *, address: str | None = None,
              retry_failed: bool = False, allow_large: bool = False, num_cpus: int | None = None,
              engine: str | None = None, progress: bool = True, insecure_ray: bool = False,
              rerun_stale: bool = False, accept_mixed: bool = False,
              storage_timeout: float = STORAGE_TIMEOUT_S, compact: bool = True, log=print) -> SweepSummary:
    """Run every trial of ``cfg`` not yet in the store at ``results``.

    Stored trials made by another ``code_version`` or ``data_version`` than this code
    and task would make (see scaling.schema) stop the run with one line, unless
    ``rerun_stale`` (run them again; the new runs are read in their place) or
    ``accept_mixed`` (keep them) says what to do. ``storage_timeout``: seconds a failing
    storage call is retried before the sweep stops (StorageError). ``compact``: compact the
    sweep every ~10,000 new parts and at the end."""
    from scaling.compaction import compact as compact_store
    from scaling.expand import scan
    from scaling.resume import resume_state

    t0 = time.monotonic()
    localray.reap_orphans(log)  # before listing the store: a killed run's workers may still write
    check_size(cfg, allow_large)
    store = Store(results, retry_s=storage_timeout)
    keep = ("ok", "diverged") if retry_failed else ("ok", "diverged", "failed")
    now = (CODE_VERSION, task_data_version(cfg.task))
    resume = resume_state(store, cfg.name, keep, now, rerun_stale=rerun_stale, accept_mixed=accept_mixed,
                          retry_s=storage_timeout)
    settled = Settled(keep, None if accept_mixed else now)
    store.save_config(cfg.name, text)
    counts = {"ok": 0, "diverged": 0, "failed": 0}

    def announce(expansion):
        cut = cfg.skipped()
        cut_text = f" ({cut} combinations with batch_size > n_train left out)" if cut else ""
        stale = f" ({resume.stale} of them stale)" if resume.stale else ""
        log(f"sweep {cfg.name!r}: {expansion.total} trials{cut_text}, {expansion.done} already stored, "
            f"{expansion.pending} to run{stale}")

    def drive(expansion):
        _drive(cfg, expansion, store, counts, progress, engine or cfg.engine, settled, log,
               COMPACT_EVERY if compact else 0)

    n = cfg.count()
    if n >= OVERLAP_TRIALS and resume.stored < n:
        # A large sweep with work left: hash its ids (seconds of Python per million trials) while
        # Ray starts, which mostly waits for its processes; ray.init stays on the main thread.
        expansion = _scan_while(lambda: scan(cfg, resume.done_ids),
                                localray.session(lambda: connect(address, num_cpus, insecure_ray)),
                                announce, drive)
    else:
        expansion = scan(cfg, resume.done_ids)
        announce(expansion)
        if expansion.pending:
            with localray.session(lambda: connect(address, num_cpus, insecure_ray)):
                drive(expansion)
    if compact:
        retrying(lambda: compact_store(store, cfg.name), f"compact sweep {cfg.name!r}", storage_timeout,
                 retry_on=(OSError, StorageError))
    return SweepSummary(name=cfg.name, results=store.uri, total=expansion.total, skipped=expansion.done,
                        counts=counts, wall_s=time.monotonic() - t0)


OVERLAP_TRIALS = 50_000
"""Sweeps of at least this many trials hash their ids while Ray starts (run_sweep)."""


def _scan_while(scan_fn, session, announce, drive):
    """Run ``scan_fn`` in a thread while ``session`` (Ray) starts on this one; then announce the
    expansion and drive it if anything is pending. Returns the expansion."""
    import threading

    box: dict = {}

    def work():
        try:
            box["expansion"] = scan_fn()
        except BaseException as e:  # raised again on this thread, below
            box["error"] = e

    thread = threading.Thread(target=work, name="scan-trial-ids", daemon=True)
    thread.start()
    try:
        with session:
            thread.join()
            if "error" in box:
                raise box["error"]
            expansion = box["expansion"]
            announce(expansion)
            if expansion.pending:
                drive(expansion)
    finally:
        thread.join()  # a failed Ray start: let the scan finish before the error surfaces
    return expansion


def check_size(cfg: SweepConfig, allow_large: bool) -> None:
    """Refuse a sweep over MAX_TRIALS trials without --allow-large, and over LARGE_LIMIT with it
    (counted, never expanded)."""
    n = cfg.count()
    if n > LARGE_LIMIT:
        raise ConfigError("axes", f"the sweep expands to {n:,} trials, over the most a sweep may have "
                          f"({LARGE_LIMIT:,}, even with --allow-large); split it into several sweeps")
    if n > MAX_TRIALS and not allow_large:
        raise ConfigError("axes", f"the sweep expands to {n:,} trials, over the limit of {MAX_TRIALS:,}; "
                          "shrink the axes or pass --allow-large if you mean it")


def _warm_up(cfg: SweepConfig, pending: list, capacity: int, device: str, threads: int):
    """Warm one worker per slot (imports, the task loaded) and measure their nodes (cluster.warmup)."""
    import json

    from cluster.warmup import warm_up
    from scaling.packing import choose_backend, needs_vmap_check

    specs = {json.dumps(t.model_spec, sort_keys=True): t for t in pending}
    models = [(t.model_spec, t.batch_size, needs_vmap_check(t)) for t in specs.values()
              if choose_backend([t])[0] == "vmap"]
    return warm_up(cfg.task, models, workers=min(capacity, len(pending)), device=device, threads=threads,
                   options={"num_cpus": cfg.resources.cpu, "num_gpus": cfg.resources.gpu})


def memory_budget(cfg: SweepConfig, slots: int, probe=None) -> int:
    """Per-pack memory: from the config, else what the warm-up measured on the workers' nodes
    (cluster.warmup.memory_budget), else a share of this node's available memory."""
    if cfg.packing.memory_mb is not None:
        return int(cfg.packing.memory_mb * 2**20)
    if probe is not None and probe.reports:
        import ray

        from cluster.warmup import memory_budget

        nodes = {n["NodeID"]: n["Resources"].get("CPU", 1) for n in ray.nodes() if n.get("Alive")}
        measured = memory_budget(probe, cpus_per_pack=cfg.resources.cpu, gpus_per_pack=cfg.resources.gpu,
                                 node_cpus=nodes)
        if measured is not None:
            return max(64 << 20, measured)
    if cfg.resources.gpu > 0:
        return 8 << 30  # not measurable from the driver; set packing.memory_mb for your GPUs
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        available = 8 << 30
    return max(256 << 20, available // (4 * max(1, slots)))


_memory_budget = memory_budget


def _drive(cfg: SweepConfig, expansion, store: Store, counts: dict, progress: bool,
           engine: str, settled: Settled, log, compact_every: int) -> None:
    import ray

    from cluster.drive import drive

    res = cfg.resources
    device = "cuda" if res.gpu > 0 else "cpu"
    total = ray.cluster_resources()
    k = cfg.workers_per_trial
    capacity = int(total.get("CPU", 1) // (res.cpu * k))
    if res.gpu > 0:
        capacity = min(capacity, int(total.get("GPU", 0) // (res.gpu if k == 1 else k)))
    if capacity < 1:
        raise UserError(f"the Ray cluster has {total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs, "
                        f"too few for one trial (resources: cpu={res.cpu:g}, gpu={res.gpu:g}, "
                        f"workers_per_trial={k}); lower resources or join a bigger cluster with --address")
    task = ray.remote(execute_unit).options(
        num_cpus=res.cpu, num_gpus=res.gpu, max_retries=cfg.retries, retry_exceptions=True,
        name="scaling-trial")
    ddp = ray.remote(execute_ddp).options(num_cpus=0, max_retries=cfg.retries, retry_exceptions=True,
                                          name="scaling-ddp-trial")
    drive(cfg, expansion, store, counts, progress=progress, engine=engine, settled=settled, log=log,
          capacity=capacity, task=task, ddp=ddp, threads=max(1, int(res.cpu)), device=device,
          compact_every=compact_every)
