"""Before planning: warm one worker per slot (imports, the task loaded), measure what each
node has, and turn that into the memory a pack may plan for. Runs in the driver; the
warm-up task's body lives with the other task bodies in :mod:`cluster.worker.units`."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from cluster.worker.units import warm_worker
from scaling.config.sweep import SweepConfig


def warm_up_sweep(cfg: SweepConfig, pending: list, capacity: int, device: str, threads: int):
    """Warm one worker per slot (imports, the task loaded) and measure their nodes (cluster.driver.warmup)."""

    from scaling.training.packing import choose_backend, needs_vmap_check

    specs = {(t.model, t.width, t.depth, t.heads): t for t in pending}  # what model_spec holds: one a model
    models = [(t.model_spec, t.batch_size, needs_vmap_check(t)) for t in specs.values()
              if choose_backend([t])[0] == "vmap"]
    return warm_up(cfg.task, models, workers=min(capacity, len(pending)), device=device, threads=threads,
                   options={"num_cpus": cfg.resources.cpu, "num_gpus": cfg.resources.gpu})


def pack_budget(cfg: SweepConfig, slots: int, probe=None) -> int:
    """Per-pack memory: from the config, else what the warm-up measured on the workers' nodes
    (cluster.driver.warmup.memory_budget), else a share of this node's available memory."""
    if cfg.packing.memory_mb is not None:
        return int(cfg.packing.memory_mb * 2**20)
    if probe is not None and probe.reports:
        import ray


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
        """(task JSON, model JSON) -> footprint, for ``cluster.driver.planner.plan``."""
        out: dict = {}
        for r in self.reports:
            for key, value in r["footprints"]:
                out[tuple(key)] = value
        return out


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
