"""What runs inside Ray tasks on the workers: a unit of trials (one, or a pack) trained and
committed by the worker itself, a trial over several workers (ddp), and the warm-up task.
Every import of torch is inside these functions: the driver imports this module to name
the task bodies for ``ray.remote`` and must stay torch-free."""

from __future__ import annotations

import json
import os
import time

import scaling.store.parts as parts_mod
from cluster.worker.peers import store_peers
from scaling.errors import StorageError
from scaling.spec.points import unship
from scaling.store.resume import Settled
from scaling.store.writer import Store


def execute_trial(trial, sweep: str, root: str, threads: int, device: str) -> dict:
    """Train one trial alone and store its rows; return a small summary."""
    return execute_unit((trial,), "single", sweep, root, threads, device)[0]


def execute_unit(trials, engine: str, sweep: str, root: str, threads: int,
                 device: str, settled: Settled | None = None, retry_s: float | None = None,
                 progress: tuple | None = None) -> list[dict]:
    """Body of a Ray task: train a unit's trials (a tuple of Trials, or them as the driver ships
    them: :class:`scaling.spec.points.Shipped`), committing each as soon as it finishes.

    Members of a pack already committed and ``settled`` (by an earlier attempt of this task,
    even if compacted since) are skipped, so a retried pack resumes where it stopped; a failed
    or stale one (when ``settled`` says so) is trained again. Returns one small summary per
    trial; a storage error past ``retry_s`` seconds ends the list with ``{"storage_error": ...}``
    instead of raising (a retry would train again, and it is no trial's failure).
    ``progress``: (the driver's step tally, an actor handle; this unit's key), told the unit's
    steps done now and then (:class:`StepReporter`).
    """
    import torch

    from scaling.store.resume import Committer, unit_runs

    trials = unship(trials)  # the driver ships them as rows of plain values (scaling.spec.points.Shipped)
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
        steps = StepReporter(progress, sum(t.total_steps for t in trials if t.trial_id in done))
        peers = store_peers(store, sweep, todo)  # None unless the sweep prunes (scaling.training.prune)
        if engine == "packed" and len(todo) > 1:
            from scaling.training.run import run_pack

            committer = Committer(store, sweep, unit)
            try:
                run_pack(todo, device=device, on_result=committer.put, on_steps=steps, peers=peers)
            finally:
                try:
                    committer.close()
                finally:
                    summaries += committer.summaries
        else:
            from scaling.training.run import run_trial

            for trial in todo:
                result = run_trial(trial, device=device, on_steps=steps, peers=peers)
                name = store.commit(sweep, parts_mod.unit_id([trial.trial_id]), [result])
                summaries.append({"trial_id": trial.trial_id, "status": result["trial"]["status"], "part": name})
                steps.base += trial.total_steps
    except StorageError as e:
        summaries.append({"storage_error": str(e)})
    return summaries


class StepReporter:
    """``on_steps`` for the training loop: sends ``base`` plus the steps done to the driver's tally
    (cluster.driver.progress.StepTally), fire and forget: one small actor call now and then, never
    waited on. Without a tally, or once a call fails, it does nothing; training goes on."""

    def __init__(self, progress: tuple | None, base: int = 0):
        self.tally, self.key = progress if progress is not None else (None, None)
        self.base = base

    def __call__(self, steps: int) -> None:
        if self.tally is None:
            return
        try:
            self.tally.report.remote(self.key, self.base + steps)
        except Exception:  # noqa: BLE001 (the tally is gone: progress stops, training does not)
            self.tally = None


def execute_ddp(trial, sweep: str, root: str, workers: int, cpus_per_worker: float,
                use_gpu: bool, retry_s: float | None = None) -> list[dict]:
    """Body of a Ray task (num_cpus=0): one trial data-parallel over ``workers`` Ray Train workers."""
    from cluster.worker.ddp import run_trial_ddp

    result = run_trial_ddp(trial, workers=workers, use_gpu=use_gpu, cpus_per_worker=cpus_per_worker)
    row = result["trial"]
    try:
        name = Store(root, retry_s=retry_s).commit(sweep, parts_mod.unit_id([row["trial_id"]]), [result])
    except StorageError as e:
        return [{"storage_error": str(e)}]
    return [{"trial_id": row["trial_id"], "status": row["status"], "part": name}]


def _available_bytes() -> int | None:
    """MemAvailable of this node (what can be allocated without swapping), or free pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


WORKER_IMPORTS = ("torch", "scaling.training.backends.stacked", "scaling.tasks.resolve")
"""What a sweep's worker imports before its first trial (the warm-up task imports them): a local Ray's
workers import them as they start, while ``ray.init`` still connects (cluster.launch.localray.start).
No pandas: a worker's commits build their tables without it (scaling.store.rows)."""


def warm_worker(task: dict, device: str, threads: int, models: list) -> dict:
    """Body of a warm-up Ray task: import, load the task, and measure memory and footprints.

    ``models``: (model spec, batch size, whether to try vmap on it) of each model the vmap
    backend is to pack; a plug-in's model is built and tried here, on the worker, not in the
    driver (a model that cannot be built, or is too big, fails here as it would in a unit)."""
    t0 = time.perf_counter()
    import importlib

    for name in WORKER_IMPORTS:  # loaded already where the worker started with them
        importlib.import_module(name)
    import torch

    from scaling.tasks.resolve import load_task

    torch.set_num_threads(threads)
    load_task(task)
    footprints, problems = [], []
    for model, batch_size, check in models:
        from scaling.training.measure import footprint, model_problem

        key = (json.dumps(task, sort_keys=True), json.dumps(model, sort_keys=True))
        problem = model_problem(task, model, batch_size) if check else None
        problems.append((key, problem))
        if problem is None:
            footprints.append((key, footprint(task, model)))
    gpu_free = None
    if device.startswith("cuda") and torch.cuda.is_available():
        gpu_free = int(torch.cuda.mem_get_info()[0])
    node = None
    try:
        import ray

        node = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001  (outside Ray: the tests call this directly)
        pass
    return {"node": node, "pid": os.getpid(), "available_bytes": _available_bytes(), "gpu_free_bytes": gpu_free,
            "footprints": footprints, "problems": problems, "warm_s": time.perf_counter() - t0}
