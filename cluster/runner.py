"""Run a sweep on Ray: one Ray task per pending trial, results written by the worker.

The driver expands the config, asks the store which trials are already done,
and submits the rest with a bounded number in flight, so it never holds all
results (only a small summary per trial). A task whose worker process dies is
retried by Ray; a trial whose code raises is retried too, and after
``retries`` attempts the driver records it as ``failed`` with the error text.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

from cluster import localray
from cluster.progress import Progress
from scaling.config import MAX_TRIALS, SweepConfig
from scaling.errors import UserError, one_line
from scaling.loop import failed_row
from scaling.schema import CODE_VERSION, row_versions
from scaling.store import Store
from scaling.tasks import task_data_version


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
                 device: str, settled: Settled | None = None) -> list[dict]:
    """Body of a Ray task: train a unit's trials, storing each as soon as it finishes.

    Members already stored and ``settled`` (by an earlier attempt of this task) are
    skipped, so a retried pack resumes where it stopped; a failed or stale one (when
    ``settled`` says so) is trained again. Returns one small summary per trial.
    """
    import torch

    torch.set_num_threads(threads)
    store = Store(root)
    settled = settled or Settled()
    stored = store.statuses(sweep, [t.trial_id for t in trials]) if len(trials) > 1 else {}
    done = {tid: v[0] for tid, v in stored.items() if settled(v)}
    todo = [t for t in trials if t.trial_id not in done]
    summaries = [{"trial_id": tid, "status": status} for tid, status in done.items()]

    def keep(result: dict) -> None:
        store.write_result(sweep, result)
        row = result["trial"]
        summaries.append({"trial_id": row["trial_id"], "status": row["status"]})

    if engine == "packed" and len(todo) > 1:
        from scaling.packed import run_pack

        run_pack(todo, device=device, on_result=keep)
    else:
        from scaling.train import run_trial

        for trial in todo:
            keep(run_trial(trial, device=device))
    return summaries


def execute_ddp(trial, sweep: str, root: str, workers: int, cpus_per_worker: float,
                use_gpu: bool) -> list[dict]:
    """Body of a Ray task (num_cpus=0): one trial data-parallel over ``workers`` Ray Train workers."""
    from cluster.ddp import run_trial_ddp

    result = run_trial_ddp(trial, workers=workers, use_gpu=use_gpu, cpus_per_worker=cpus_per_worker)
    Store(root).write_result(sweep, result)
    return [{"trial_id": result["trial"]["trial_id"], "status": result["trial"]["status"]}]


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
              rerun_stale: bool = False, accept_mixed: bool = False, log=print) -> SweepSummary:
    """Run every trial of ``cfg`` not yet in the store at ``results``.

    Stored trials made by another ``code_version`` or ``data_version`` than this code
    and task would make (see scaling.schema) stop the run with one line, unless
    ``rerun_stale`` (run them again; the new runs are read in their place) or
    ``accept_mixed`` (keep them) says what to do."""
    t0 = time.monotonic()
    localray.reap_orphans(log)  # before listing the store: a killed run's workers may still write
    trials = cfg.trials(limit=None if allow_large else MAX_TRIALS)
    store = Store(results)
    keep = ("ok", "diverged") if retry_failed else ("ok", "diverged", "failed")
    stored = store.finished(cfg.name, keep)
    stale = _stale(cfg, stored, rerun_stale, accept_mixed)
    settled = Settled(keep, None if accept_mixed else (CODE_VERSION, task_data_version(cfg.task)))
    store.save_config(cfg.name, text)
    pending = [t for t in trials if t.trial_id not in stored or t.trial_id in stale]
    skipped = len(trials) - len(pending)
    cut = cfg.skipped()
    cut_text = f" ({cut} combinations with batch_size > n_train left out)" if cut else ""
    log(f"sweep {cfg.name!r}: {len(trials)} trials{cut_text}, {skipped} already stored, "
        f"{len(pending)} to run" + (f" ({len(stale)} of them stale)" if stale else ""))
    counts = {"ok": 0, "diverged": 0, "failed": 0}
    if pending:
        with localray.session(lambda: connect(address, num_cpus, insecure_ray)):
            _drive(cfg, pending, store, counts, progress, engine or cfg.engine, settled, log)
    return SweepSummary(name=cfg.name, results=store.uri, total=len(trials), skipped=skipped,
                        counts=counts, wall_s=time.monotonic() - t0)


def _stale(cfg: SweepConfig, stored: dict, rerun_stale: bool, accept_mixed: bool) -> set:
    """Trial ids to run again because another code or data version made them (see run_sweep)."""
    now = (CODE_VERSION, task_data_version(cfg.task))
    old = {tid: row_versions(cv, dv) for tid, (_, cv, dv) in stored.items()}
    stale = {tid for tid, v in old.items() if v != now}
    if not stale or accept_mixed:
        return set()
    if rerun_stale:
        return stale
    versions = ", ".join(f"code {c}/data {d}" for c, d in sorted({old[t] for t in stale}))
    raise UserError(f"sweep {cfg.name!r}: {len(stale)} of {len(stored)} stored trials were made by "
                    f"{versions}, this code and task make code {now[0]}/data {now[1]}; pass --rerun-stale "
                    "to train them again, or --accept-mixed to keep them beside new ones")


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


def _memory_budget(cfg: SweepConfig, slots: int, probe=None) -> int:
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


def _drive(cfg: SweepConfig, pending: list, store: Store, counts: dict, progress: bool,
           engine: str, settled: Settled, log) -> None:
    import ray

    from cluster.planner import Unit, plan

    res = cfg.resources
    device = "cuda" if res.gpu > 0 else "cpu"
    threads = max(1, int(res.cpu))
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
    root = store.uri if not store.local else store.root
    if k > 1:
        log(f"engine: ddp, each trial data-parallel over {k} workers (Ray Train TorchTrainer)")
        units = [Unit((t,), "ddp") for t in pending]
    else:
        probe = _warm_up(cfg, pending, capacity, device, threads) if engine == "packed" else None
        units = plan(pending, engine=engine, slots=capacity, memory_bytes=_memory_budget(cfg, capacity, probe),
                     max_members=cfg.packing.max_members, footprints=probe and probe.footprints,
                     problems=probe and probe.problems, log=log)
    bar = Progress(len(pending), enabled=progress)
    # DDP tasks hold no CPU themselves and would start controllers that wait for workers
    window = capacity if k > 1 else 2 * capacity + 4
    queue = list(reversed(units))
    inflight: dict = {}

    def submit() -> None:
        while len(inflight) < window and queue:
            unit = queue.pop()
            if unit.engine == "ddp":
                ref = ddp.remote(unit.trials[0], cfg.name, root, k, res.cpu, res.gpu > 0)
            else:
                ref = task.remote(unit.trials, unit.engine, cfg.name, root, threads, device, settled)
            inflight[ref] = unit

    def finish(status: str) -> None:
        counts[status] += 1
        bar.update(status)

    submit()
    while inflight:
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
        for ref in ready:
            unit = inflight.pop(ref)
            try:
                for summary in ray.get(ref):
                    finish(summary["status"])
            except ray.exceptions.RayError as e:
                ids = [t.trial_id for t in unit.trials]
                stored = {tid: v[0] for tid, v in store.statuses(cfg.name, ids).items() if settled(v)}
                left = [t for t, tid in zip(unit.trials, ids) if tid not in stored]
                for status in stored.values():  # stored by the attempts before the failure
                    finish(status)
                if unit.engine == "packed" and len(left) > 1:
                    log(f"a pack of {len(unit.trials)} failed ({describe_error(e)}); "
                        f"running its {len(left)} unfinished trials one by one")
                    queue.extend(Unit((t,), "single") for t in left)
                    continue
                error = describe_error(e)
                for trial in left:
                    store.write_result(cfg.name, {"trial": failed_row(trial, error, unit.engine), "curves": []})
                    log(one_line(f"trial {trial.trial_id} failed: {error}", 300))
                    finish("failed")
        submit()
        bar.update(running=min(len(inflight), capacity))
    bar.close()
