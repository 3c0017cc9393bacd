"""The sweep driver's loop: stream units to Ray, collect summaries, settle failures, compact.

The pending trials come from :func:`scaling.config.expand.pending_trials`, planned into units a chunk
at a time, so the driver holds only the units of one chunk and those in flight (at most
``2 * capacity + 4`` tasks). Each finished task returns small summaries (trial id, status,
commit event). A unit whose task failed on every attempt is settled from the store (its own
commit events, merged parts: what it committed before failing counts), a failed pack is split
into single trials, and a single trial that still fails is committed as ``failed``. A storage
error a worker could not ride out stops the sweep (:class:`~scaling.errors.StorageError`, exit 3),
and so does a failure of Ray itself (a dead raylet or GCS, a vanished session folder, a cluster
that cannot run a no-op task: :mod:`cluster.launch.health`, exit 4); neither is ever a trial's
``failed`` row. Every ``compact_every`` new parts, a background thread
compacts the sweep (:mod:`scaling.store.compaction`), and once every trial is in, a worker
compacts it when this run wrote WORKER_COMPACT_PARTS parts or more (:func:`compact_task`: the
merge reads and writes every small part, which the driver itself never needs to touch; the
caller's own compaction after it finds nothing left, or merges the few parts of a small run).
With ``progress``, the workers report the steps their units have done as they train
(:mod:`cluster.driver.progress`), so the line moves inside packs.
"""

from __future__ import annotations

import threading
from collections import deque
from itertools import islice

import scaling.store.parts as parts_mod
from cluster.driver.progress import Progress, StepPoller
from scaling.config.expand import CHUNK, pending_trials
from scaling.errors import StorageError, one_line
from scaling.spec.points import Shipped
from scaling.store.resume import unit_runs
from scaling.store.uri import retrying
from scaling.training.loop import failed_row


def drive(cfg, expansion, store, counts: dict, *, progress: bool, engine: str, settled, log,
          capacity: int, task, ddp, threads: int, device: str, compact_every: int, health=None) -> None:
    """Run every pending trial of ``expansion`` on Ray (see the module docstring). ``health``
    (:class:`cluster.launch.health.Health`) is checked as the loop goes and before any trial is
    stored as ``failed``: a broken Ray stops the sweep (ClusterFailure), it fails no trial."""
    import ray

    from cluster.launch.health import failure

    from cluster.driver.planner import Unit

    res, k, root = cfg.resources, cfg.workers_per_trial, store.location
    bar = Progress(expansion.pending, enabled=progress)
    units = _units(cfg, expansion, engine, capacity, log, device=device, threads=threads, planned=bar.plan)
    requeue: deque = deque()
    window = capacity if k > 1 else 2 * capacity + 4  # DDP tasks hold no CPU of their own
    inflight: dict = {}  # ref -> (unit, key of its step reports)
    keys = iter(range(1 << 62))
    compactor = AutoCompactor(store, cfg.name, compact_every, log, cpus=res.cpu)
    steps = StepPoller() if progress else None

    def submit() -> None:
        while len(inflight) < window:
            unit = requeue.popleft() if requeue else next(units, None)
            if unit is None:
                return
            key = next(keys)
            if unit.engine == "ddp":
                ref = ddp.remote(unit.trials[0], cfg.name, root, k, res.cpu, res.gpu > 0, store.retry_s)
            else:
                ref = task.remote(Shipped(unit.trials), unit.engine, cfg.name, root, threads, device, settled, store.retry_s,
                                  steps and steps.handle(key))
            inflight[ref] = (unit, key)

    def finish(status: str) -> None:
        counts[status] += 1
        bar.update(status)

    try:
        submit()
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0 if steps is None else 0.25)
            for ref in ready:
                unit, key = inflight.pop(ref)
                try:
                    summaries = ray.get(ref)
                except ray.exceptions.RayError as e:
                    if health is not None and (reason := health.check(force=True) if isinstance(
                            e, ray.exceptions.RayTaskError) else health.probe()):
                        raise failure(reason) from None
                    again = _settle_failed(cfg, store, unit, e, settled, finish, compactor, log)
                    requeue.extend(Unit(trials, "single") for trials in again)
                    bar.finish_steps(_steps(unit.trials) - sum(_steps(trials) for trials in again), key)
                    continue
                broken = [s["storage_error"] for s in summaries if "storage_error" in s]
                bar.finish_steps(_steps(unit.trials), key)
                for s in summaries:
                    if "status" in s:
                        finish(s["status"])
                compactor.add(2 * len({s["part"] for s in summaries if s.get("part")}))
                if broken:
                    raise StorageError(broken[0])
            if health is not None and (reason := health.check()):
                raise failure(reason)
            submit()
            if steps is not None:
                bar.live_steps(steps.poll([key for _, key in inflight.values()]))
            bar.update(running=min(len(inflight), capacity))
        bar.close()
    finally:
        if steps is not None:
            steps.close()
    compactor.wait()
    compactor.final()


WORKER_BYTES = 1 << 30
"""Memory one trial's worker process is counted to need (Python, torch, the task's data and the
model): the trials a sweep runs at once are bounded by memory as well as by ``resources.cpu``."""
MAX_PER_CPU = 8
"""The most trials that share one CPU at once, however small ``resources.cpu``."""


def bound_capacity(capacity: int, cpus: float, memory_bytes: float | None, cpu: float) -> tuple[int, str | None]:
    """Trials to run at once: ``capacity`` (CPUs over ``resources.cpu``), at most MAX_PER_CPU per CPU
    and one per WORKER_BYTES of the cluster's memory (Ray's ``memory`` resource). A tiny ``cpu``
    (``0.001``: 2,000 trials at once on 2 CPUs) would otherwise start a worker process for every
    task in flight, and the node runs out of memory. Returns the bound and, when it cut, a line
    saying so."""
    most = max(1, int(cpus * MAX_PER_CPU))
    if memory_bytes:
        most = min(most, max(1, int(memory_bytes // WORKER_BYTES)))
    if capacity <= most:
        return capacity, None
    return most, (f"resources: cpu {cpu:g} per trial would run {capacity:,} trials at once on {cpus:g} CPUs; "
                  f"running at most {most} (at most {MAX_PER_CPU} per CPU and one per "
                  f"{WORKER_BYTES >> 30} GiB of memory)")


def _steps(trials) -> int:
    return sum(t.total_steps for t in trials)


def _units(cfg, expansion, engine: str, capacity: int, log, *, device: str, threads: int, planned=None):
    """Units of the pending trials, planned a chunk at a time (the planner logs the first chunk).
    Before the first packed chunk is planned, one worker per slot warms up and measures its node
    (cluster.driver.warmup); the packs of every chunk are sized from that. ``planned(trials, steps)``
    hears each chunk's size and steps as it is planned."""
    from cluster.driver.planner import Unit, plan
    from cluster.driver.warmup import pack_budget, warm_up_sweep

    trials = pending_trials(cfg, expansion)
    quiet = lambda *_: None  # noqa: E731
    first, probe = True, None
    while chunk := list(islice(trials, CHUNK)):
        if planned is not None:
            planned(len(chunk), _steps(chunk))
        if cfg.workers_per_trial > 1:
            if first:
                log(f"engine: ddp, each trial data-parallel over {cfg.workers_per_trial} workers "
                    "(Ray Train TorchTrainer)")
            yield from (Unit((t,), "ddp") for t in chunk)
        else:
            if first and engine == "packed":
                probe = warm_up_sweep(cfg, chunk, capacity, device, threads)
            yield from plan(chunk, engine=engine, slots=capacity, memory_bytes=pack_budget(cfg, capacity, probe),
                            max_members=cfg.packing.max_members, footprints=probe and probe.footprints,
                            problems=probe and probe.problems, log=log if first else quiet)
        first = False


def _settle_failed(cfg, store, unit, error, settled, finish, compactor, log) -> list[tuple]:
    """A unit whose task failed on every attempt: count what it committed, split a pack into single
    trials (returned, to run again), commit the rest as ``failed``."""

    ids = [t.trial_id for t in unit.trials]
    stored = retrying(lambda: unit_runs(store, cfg.name, ids), "read the stored trials", store.retry_s,
                      retry_on=(OSError, StorageError))
    done = {tid: v[0] for tid, v in stored.items() if settled(v)}
    left = [t for t in unit.trials if t.trial_id not in done]
    for status in done.values():  # committed by the attempts before the failure
        finish(status)
    if unit.engine == "packed" and len(left) > 1:
        log(f"a pack of {len(unit.trials)} failed ({describe_error(error)}); "
            f"running its {len(left)} unfinished trials one by one")
        return [(t,) for t in left]
    if not left:
        return []
    text = describe_error(error)
    rows = [{"trial": failed_row(t, text, unit.engine), "curves": []} for t in left]
    store.commit(cfg.name, parts_mod.unit_id([t.trial_id for t in left]), rows)
    compactor.add(2)
    for trial in left:
        log(one_line(f"trial {trial.trial_id} failed: {text}", 300))
        finish("failed")
    return []


class AutoCompactor:
    """Compacts a sweep from a background thread whenever ``every`` new parts have been written
    (0: never during the sweep). A failure is one warning line; the final compaction retries."""

    def __init__(self, store, sweep: str, every: int, log, cpus: float = 1.0):
        self.store, self.sweep, self.every, self.log, self.cpus = store, sweep, every, log, cpus
        self.new = self.total = 0
        self.thread: threading.Thread | None = None

    def add(self, parts: int) -> None:
        self.new += parts
        self.total += parts
        if not self.every or self.new < self.every or (self.thread is not None and self.thread.is_alive()):
            return
        self.new = 0
        self.thread = threading.Thread(target=self._run, name="scaling-compact", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from scaling.store.compaction import compact

        try:
            compact(self.store, self.sweep, everything=False)
        except Exception as e:  # noqa: BLE001 (a warning: the sweep goes on, the final compaction retries)
            self.log(one_line(f"warning: compaction during the sweep failed ({type(e).__name__}: {e}); "
                              "the sweep goes on", 300))

    def wait(self) -> None:
        if self.thread is not None:
            self.thread.join()

    def final(self) -> int | None:
        """The sweep's last compaction, on a worker (a Ray task asking for a trial's CPUs: every
        trial is done, so an idle worker takes it): the merges it made, or None where it failed
        (the caller's compaction, in the driver, then does it and says why if it fails too).
        Nothing when compaction is off (``every`` 0) or this run wrote fewer than
        WORKER_COMPACT_PARTS parts: the caller merges those (cheaper than the task's round trip)."""
        import ray

        if not self.every or self.total < WORKER_COMPACT_PARTS:
            return None
        remote = ray.remote(compact_task).options(num_cpus=self.cpus, max_retries=0, name="scaling-compact")
        try:
            return ray.get(remote.remote(self.store.location, self.store.retry_s, self.sweep))
        except (ray.exceptions.RayError, ConnectionError, RuntimeError):
            return None


WORKER_COMPACT_PARTS = 100
"""Parts a run writes (two a commit event) from which its last compaction runs on a worker: 10,000
tiny trials write about 300, and merging them took half the driver's CPU (0.5-1 s); the 64-trial
reference sweep writes a handful, which the driver merges in less than a task's round trip to a
worker (0.2-0.3 s more after training, measured alternately on the 2-core machine)."""


def compact_task(root: str, retry_s: float | None, sweep: str) -> int:
    """Ray task body: compact ``sweep`` of the store at ``root`` as a sweep's end does (tiers and
    all); returns the number of merges. Run on a worker, so the driver reads no part."""
    from scaling.store.compaction import compact
    from scaling.store.writer import Store

    return len(compact(Store(root, retry_s=retry_s), sweep).merges)


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
