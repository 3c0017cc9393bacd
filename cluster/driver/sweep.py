"""Run a sweep on Ray: one Ray task per unit of pending trials, results committed by the worker.

The driver reads which trials are done in one scan of the store, hashes the sweep's
points without building them (:mod:`scaling.config.expand`), and streams the pending trials to
Ray with a bounded number in flight (:mod:`cluster.driver.drive`), so it holds neither every
trial nor every result. Workers commit each finished trial, or each batch of a pack's
members that finished together, as one commit event (:meth:`scaling.store.Store.commit`).
A task whose worker process dies is retried by Ray; a trial whose code raises is retried
too, and after ``retries`` attempts the driver records it as ``failed`` with the error
text. Storage errors are retried for ``--storage-timeout`` seconds and then stop the
sweep (exit 3); they never become ``failed`` rows. The sweep is compacted as it goes and
at the end (:mod:`scaling.store.compaction`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

import cluster.launch.localray as localray
from cluster.launch.connect import connect
from cluster.driver.drive import bound_capacity
from cluster.driver.planner import check_model_size
from cluster.launch.health import Health, failure
from cluster.worker.units import WORKER_IMPORTS, execute_ddp, execute_unit
from scaling.config.sweep import MAX_TRIALS, SweepConfig
from scaling.errors import ConfigError, StorageError, UserError
from scaling.spec.schema import CODE_VERSION
from scaling.store.compaction import COMPACT_EVERY
from scaling.store.resume import Resume, Settled
from scaling.store.uri import STORAGE_TIMEOUT_S, retrying
from scaling.store.writer import Store
from scaling.tasks.resolve import task_data_version

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


def _heap_frozen(run):
    """``run`` with the objects that exist when it starts (Ray, pyarrow, numpy and the rest loaded
    before a sweep: about 80,000) out of the garbage collector's sight until it returns
    (``gc.freeze``). They are never garbage, yet the full collection that building 10,000 trials
    sets off walked them all: 0.04 s of the 10,000-tiny-trial driver's CPU. A heap the caller froze
    stays frozen."""
    import functools
    import gc

    @functools.wraps(run)
    def frozen(*args, **kwargs):
        thaw = gc.get_freeze_count() == 0
        gc.freeze()
        try:
            return run(*args, **kwargs)
        finally:
            if thaw:
                gc.unfreeze()
    return frozen


@_heap_frozen
def run_sweep(cfg: SweepConfig, text: str, results: str, *, address: str | None = None,
              retry_failed: bool = False, allow_large: bool = False, num_cpus: int | None = None,
              engine: str | None = None, progress: bool = True, insecure_ray: bool = False,
              rerun_stale: bool = False, accept_mixed: bool = False,
              storage_timeout: float = STORAGE_TIMEOUT_S, compact: bool = True, snap: bool = False,
              only=None, log=print) -> SweepSummary:
    """Run every trial of ``cfg`` not yet in the store at ``results``.

    Stored trials made by another ``code_version`` or ``data_version`` than this code
    and task would make (see scaling.spec.schema) stop the run with one line, unless
    ``rerun_stale`` (run them again; the new runs are read in their place) or
    ``accept_mixed`` (keep them) says what to do. ``storage_timeout``: seconds a failing
    storage call is retried before the sweep stops (StorageError). ``compact``: compact the
    sweep every ~10,000 new parts and at the end. A config value within 1e-6 (relative) of a
    different stored value of its axis is a warning, or with ``snap`` the stored value
    (:mod:`scaling.config.extend`). ``only``: sorted uint64 trial ids; of the pending trials, run
    only these (an adaptive sweep's round, cluster.rounds)."""
    from scaling.config.expand import scan as scan_all
    from scaling.store.compaction import compact as compact_store
    from scaling.store.resume import resume_state

    t0 = time.monotonic()
    localray.reap_orphans(log)  # before listing the store: a killed run's workers may still write
    check_size(cfg, allow_large)
    check_model_size(cfg)  # counted on torch's meta device: nothing allocated
    store = Store(results, retry_s=storage_timeout)
    for line in store.check_for_sweep(cfg.name):  # refuses --results inside a sweep folder; a renamed one
        log(line)
    keep = ("ok", "diverged", "pruned") if retry_failed else ("ok", "diverged", "pruned", "failed")
    now = (CODE_VERSION, task_data_version(cfg.task))
    resume = (resume_state(store, cfg.name, keep, now, rerun_stale=rerun_stale, accept_mixed=accept_mixed,
                           retry_s=storage_timeout) if not _fresh(store, cfg.name) else FRESH)
    settled = Settled(keep, None if accept_mixed else now)
    if resume.stored:
        cfg = _near_stored(cfg, store, snap, storage_timeout, log)
    store.save_config(cfg.name, text)
    counts = ({"ok": 0, "diverged": 0, "pruned": 0, "failed": 0} if cfg.search.prune  # scaling.training.prune
              else {"ok": 0, "diverged": 0, "failed": 0})

    def scan(cfg, done_ids):
        expansion = scan_all(cfg, done_ids)
        if only is None:
            return expansion
        from scaling.config.expand import isin_sorted

        return replace(expansion, pending_ids=expansion.pending_ids[isin_sorted(expansion.pending_ids, only)])

    def announce(expansion):
        if only is not None:
            log(f"sweep {cfg.name!r}: {len(only)} of its {expansion.total} trials planned this round, "
                f"{len(only) - expansion.pending} already stored, {expansion.pending} to run")
            return
        cut = cfg.skipped()
        cut_text = f" ({cut} combinations with batch_size > n_train left out)" if cut else ""
        stale = f" ({resume.stale} of them stale)" if resume.stale else ""
        log(f"sweep {cfg.name!r}: {expansion.total} trials{cut_text}, {expansion.done} already stored, "
            f"{expansion.pending} to run{stale}")

    last = _Background(lambda: retrying(lambda: compact_store(store, cfg.name), f"compact sweep {cfg.name!r}",
                                        storage_timeout, retry_on=(OSError, StorageError)),
                       "scaling-last-compaction")

    def drive(expansion):
        _drive(cfg, expansion, store, counts, progress, engine or cfg.engine, settled, log,
               COMPACT_EVERY if compact else 0)
        if compact:  # every trial is in: the last compaction runs while Ray shuts down (the session's exit)
            last.start()

    def ray_session(pending: int):
        imports = worker_imports(cfg, pending, num_cpus)
        return localray.session(lambda: connect(address, num_cpus, insecure_ray, imports))

    n = cfg.count()
    try:
        if n >= OVERLAP_TRIALS and resume.stored < n:
            # A large sweep with work left: hash its ids (seconds of Python per million trials) while
            # Ray starts, which mostly waits for its processes; ray.init stays on the main thread.
            expansion = _scan_while(lambda: scan(cfg, resume.done_ids),
                                    ray_session(len(only) if only is not None else n - resume.stored),
                                    announce, drive)
        else:
            expansion = scan(cfg, resume.done_ids)
            announce(expansion)
            if expansion.pending:
                with ray_session(expansion.pending):
                    drive(expansion)
    finally:
        last.join()  # whatever happened, no compaction outlives the call
    if compact:
        last.result()  # its error, or the compaction itself where no sweep ran
    return SweepSummary(name=cfg.name, results=store.uri, total=expansion.total, skipped=expansion.done,
                        counts=counts, wall_s=time.monotonic() - t0)


def worker_imports(cfg: SweepConfig, pending: int, num_cpus: int | None) -> tuple[str, ...]:
    """What a local Ray's workers import as they start (WORKER_IMPORTS: torch and the rest), when the
    sweep's warm-up takes every worker such a Ray starts with (one a CPU): trials on at most one CPU
    each and no GPU, and at least as many ``pending`` trials as CPUs. Else none: a worker no task
    takes would import torch for nothing (2 s of CPU), and one that a task takes imports it then."""
    import os

    cpus = num_cpus or os.cpu_count() or 1
    one_cpu = cfg.resources.gpu == 0 and cfg.resources.cpu * cfg.workers_per_trial <= 1
    return WORKER_IMPORTS if one_cpu and pending >= cpus else ()


class _Background:
    """``run()`` on a thread from ``start()``; ``result()`` joins it and returns what it returned
    or raises what it raised on the caller's thread, or calls ``run()`` itself if it was never
    started."""

    def __init__(self, run, name: str):
        self.run, self.name = run, name
        self.thread = self.value = self.error = None

    def start(self) -> None:
        import threading

        def work():
            try:
                self.value = self.run()
            except BaseException as e:  # noqa: BLE001 (raised again on the caller's thread, by result())
                self.error = e

        self.thread = threading.Thread(target=work, name=self.name)
        self.thread.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()

    def result(self):
        if self.thread is None:
            return self.run()
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.value


FRESH = Resume(0, np.empty(0, np.uint64), 0)
"""What a sweep with no folder in the store resumes from: nothing."""


def _fresh(store: Store, name: str) -> bool:
    """Whether sweep ``name`` has no folder in the store (a first run): nothing to read then, so the
    store's reader is not started (DuckDB's scan, and pandas, which pyarrow imports on its first
    conversion to numpy: a third of a second of the driver's CPU). Any doubt reads the store."""
    import pyarrow.fs as pafs

    try:
        return store.fs.get_file_info(store.sweep_dir(name)).type == pafs.FileType.NotFound
    except Exception:  # noqa: BLE001 (unreachable or odd: resume_state reads it, with retries)
        return False


def _near_stored(cfg: SweepConfig, store: Store, snap: bool, storage_timeout: float, log) -> SweepConfig:
    """Warn about config values that nearly repeat stored ones; with ``snap``, use the stored."""
    from scaling.config.extend import near_stored, snap as snapped
    from scaling.spec.axes import GridAxis
    from scaling.store.resume import stored_values

    floats = [a for a, ax in cfg.axes.items()
              if isinstance(ax, GridAxis) and any(isinstance(v, float) for v in ax.values)]
    if not floats:
        return cfg
    near = near_stored(cfg, stored_values(store, cfg.name, floats, storage_timeout))
    for n in near:
        log(f"snapped: {n.axis} {n.value!r} -> the stored {n.stored!r}" if snap else n.warning())
    return snapped(cfg, near) if snap else cfg


OVERLAP_TRIALS = 50_000
"""Sweeps of at least this many trials hash their ids while Ray starts (run_sweep)."""


def _scan_while(scan_fn, session, announce, drive):
    """Run ``scan_fn`` in a thread while ``session`` (Ray) starts on this one; then announce the
    expansion and drive it if anything is pending. Returns the expansion."""
    scan = _Background(scan_fn, "scan-trial-ids")
    scan.start()
    try:
        with session:
            expansion = scan.result()
            announce(expansion)
            if expansion.pending:
                drive(expansion)
    finally:
        scan.join()  # a failed Ray start: let the scan finish before the error surfaces
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


def _drive(cfg: SweepConfig, expansion, store: Store, counts: dict, progress: bool,
           engine: str, settled: Settled, log, compact_every: int) -> None:
    import ray

    from cluster.driver.drive import drive

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
    capacity, cut = bound_capacity(capacity, total.get("CPU", 1), total.get("memory"), res.cpu)
    if cut:  # Ray then runs at most `capacity` trials at once: each asks for that share of the CPUs
        log(cut)
    cpu = res.cpu if cut is None else max(res.cpu, math.ceil(total.get("CPU", 1) / capacity * 1e4) / 1e4)
    task = ray.remote(execute_unit).options(
        num_cpus=cpu, num_gpus=res.gpu, max_retries=cfg.retries, retry_exceptions=True,
        name="scaling-trial")
    ddp = ray.remote(execute_ddp).options(num_cpus=0, max_retries=cfg.retries, retry_exceptions=True,
                                          name="scaling-ddp-trial")
    health = Health()
    try:
        drive(cfg, expansion, store, counts, progress=progress, engine=engine, settled=settled, log=log,
              capacity=capacity, task=task, ddp=ddp, threads=max(1, int(res.cpu)), device=device,
              compact_every=compact_every, health=health)
    except (ray.exceptions.RayError, ConnectionError, RuntimeError) as e:  # e.g. in the warm-up
        if reason := health.check(force=True):
            raise failure(reason) from e
        raise
