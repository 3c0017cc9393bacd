"""Warm the workers before a sweep's units, and measure what the planner needs from them.

Right after Ray is up, the driver runs one warm-up task per slot it will use
(:func:`warm_up`), with the trials' own resources, so each lands on its own
worker process. Each (:func:`warm_worker`) does the one-off work of a worker:
imports torch, the backends and the runner, sets torch's threads and loads the
task (cached in the process: every unit it then runs finds the data loaded),
and reports what only the node that runs a pack can measure:

- the node's available memory (``MemAvailable``), and on CUDA the GPU's free
  memory (``torch.cuda.mem_get_info``): the planner's per-pack budget comes from
  these, not from the driver's node;
- the footprint of each model the vmap backend will pack (parameters, and the
  bytes autograd saves per example, from a real forward pass), which
  ``scaling.packing.estimate_pack_bytes`` needs and the driver could only get by
  importing torch itself; and for a plug-in's own model or loss, whether vmap
  can batch it at all (``scaling.vmapped.vmap_problem``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

MEMORY_HEADROOM = 2
"""A node's available memory is shared by the packs it runs at once, with this factor to spare."""
GPU_SHARE = 0.9
"""The share of a GPU's free memory its packs may plan to use."""


@dataclass(frozen=True)
class Probe:
    """What the warm-up tasks measured, one report per worker."""

    reports: list = field(default_factory=list)
    wall_s: float = 0.0
    """Seconds from submitting the warm-up tasks to the last report."""

    @property
    def problems(self) -> dict | None:
        """(task JSON, model JSON) -> why vmap cannot pack it (None: it can), as the workers
        found; None when no worker reported (the planner then checks in the driver)."""
        if not self.reports:
            return None
        out: dict = {}
        for r in self.reports:
            for key, value in r["problems"]:
                out[tuple(key)] = value
        return out

    @property
    def footprints(self) -> dict:
        """(task JSON, model JSON) -> footprint, for ``cluster.planner.plan``."""
        out: dict = {}
        for r in self.reports:
            for key, value in r["footprints"]:
                out[tuple(key)] = value
        return out


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


def warm_worker(task: dict, device: str, threads: int, models: list) -> dict:
    """Body of a warm-up Ray task: import, load the task, and measure memory and footprints.

    ``models``: (model spec, batch size, whether to try vmap on it) of each model the vmap
    backend is to pack; a plug-in's model is built and tried here, on the worker, not in the
    driver (a model that cannot be built, or is too big, fails here as it would in a unit)."""
    t0 = time.perf_counter()
    import torch

    import cluster.runner  # noqa: F401  (what every unit's function lives in)
    import scaling.packed  # noqa: F401
    from scaling.tasks import load_task

    torch.set_num_threads(threads)
    load_task(task)
    footprints, problems = [], []
    for model, batch_size, check in models:
        from scaling.vmapped import footprint, model_problem

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


def warm_up(task: dict, models: list, *, workers: int, device: str, threads: int, options: dict) -> Probe:
    """Run ``workers`` warm-up tasks at once (Ray ``options``: the trials' resources) and wait."""
    import ray

    t0 = time.perf_counter()
    remote = ray.remote(warm_worker).options(name="scaling-warm-up", max_retries=1, **options)
    refs = [remote.remote(task, device, threads, models) for _ in range(max(1, workers))]
    reports = []
    for ref in refs:
        try:
            reports.append(ray.get(ref))
        except ray.exceptions.RayError:
            continue  # a worker that cannot warm up: the units will say why
    return Probe(reports, time.perf_counter() - t0)


def memory_budget(probe: Probe, *, cpus_per_pack: float, gpus_per_pack: float, node_cpus: dict) -> int | None:
    """Bytes one pack may plan for, on the tightest node probed (None if nothing was measured).

    On CUDA: the GPU's free memory times GPU_SHARE, split among the packs one GPU holds
    (a fractional ``gpu`` per trial). On CPU: the node's available memory split among
    the packs it runs at once (its CPUs over ``cpus_per_pack``), with MEMORY_HEADROOM."""
    budgets = []
    for r in probe.reports:
        if gpus_per_pack > 0 and r["gpu_free_bytes"]:
            per_gpu = max(1, int(1 / gpus_per_pack)) if gpus_per_pack < 1 else 1
            budgets.append(int(r["gpu_free_bytes"] * GPU_SHARE) // per_gpu)
        elif r["available_bytes"]:
            packs = max(1, int(node_cpus.get(r["node"], os.cpu_count() or 1) // max(cpus_per_pack, 1e-9)))
            budgets.append(r["available_bytes"] // (MEMORY_HEADROOM * packs))
    return min(budgets) if budgets else None
