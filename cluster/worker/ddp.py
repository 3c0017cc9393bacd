"""Run one trial data-parallel across k workers with Ray Train's TorchTrainer (DDP).

``run_trial_ddp(trial, workers=k)`` trains exactly the model that
:func:`scaling.training.run.run_trial` trains, with the global batch B split over k
workers (gloo on CPUs, NCCL on GPUs), and returns the same rows with
``engine: "ddp"``. What keeps the two equal, up to float rounding:

- every worker builds the same initial weights (``build_model`` from the seed),
  the same training subset (``subset_indices``) and the same stream of global
  batches (``BatchStream``); worker r of k takes the contiguous slice
  ``[r B/k, (r+1) B/k)`` of each global batch;
- each worker's loss is the mean cross-entropy over its B/k examples and DDP
  averages the gradients over the k workers, so the update is the gradient of
  the mean over all B examples: the same SGD step as one worker on the full
  batch;
- every worker runs the one training loop (:mod:`scaling.training.loop`) with the ``ddp``
  backend, :class:`DDPBackend`: the ``module`` backend plus the all-reduce, so
  optimizer (make_optimizer: scaling.training.optim's registry), schedule and
  divergence rule are the loop's;
- before every step the global minibatch loss (the mean of the k worker losses,
  all-reduced) is checked, so a divergence ends the trial on every worker at the
  same step;
- rank 0 evaluates at the same eval steps and broadcasts its train loss, so all
  workers know the divergence threshold and stop together.

Ray Train runs the workers (plus a controller and two helper actors, so each
trial pays a few seconds of process start-up); its storage lives in a temporary
directory that is removed afterwards. A worker that raises or dies fails the
whole run: ``FailureConfig(max_failures)`` restarts it from step 0 (there are no
checkpoints), by default never, because the sweep already retries the trial.
After that the error (``ray.train.TrainingFailedError``) propagates to the
caller, which records the trial as ``failed``.

Call it from the driver, or from a Ray task to run several trials at once: give
that task ``num_cpus=0`` (the workers reserve ``workers * cpus_per_worker`` CPUs,
and GPUs, for themselves; the controller takes none), or it holds a CPU that the
workers may be waiting for.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import uuid

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from scaling.errors import ConfigError
from scaling.spec.schema import as_trial
from scaling.training.backends.module import ModuleBackend

ENGINE = "ddp"


def check_workers(batch_size: int, workers: int) -> None:
    """Raise ConfigError unless ``workers`` is a positive integer that divides ``batch_size``."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError("workers_per_trial", f"expected an integer >= 1, got {workers!r}")
    if batch_size % workers:
        lower = batch_size - batch_size % workers
        hint = f"{lower} or {lower + workers}" if lower else f"{workers}"
        raise ConfigError("workers_per_trial", (
            f"batch_size {batch_size} is not divisible by workers_per_trial {workers}; each worker "
            f"takes an equal slice of the global batch, so use a batch_size that is a multiple of "
            f"{workers} (e.g. {hint}) or a workers_per_trial that divides {batch_size}"))


def run_trial_ddp(trial, *, workers: int, use_gpu: bool = False, storage_path: str | None = None,
                  cpus_per_worker: float = 1.0, max_failures: int = 0) -> dict:
    """Train a trial on ``workers`` DDP workers and return ``run_trial``'s rows.

    Parameters
    ----------
    trial
        A trial config, as from ``SweepConfig.trials()``.
    workers
        Number of data-parallel workers k; must divide the trial's ``batch_size``.
    use_gpu
        One GPU per worker and the NCCL backend; otherwise CPUs and gloo.
    storage_path
        An existing directory in which Ray Train's run folder is made (and
        removed afterwards); the system temp dir if None. Nothing but a marker
        file is written there (no checkpoints); on a multi-node cluster a
        shared filesystem path is the safe choice.
    cpus_per_worker
        CPUs reserved per worker; torch uses ``max(1, floor(cpus_per_worker))`` threads.
    max_failures
        Times Ray Train restarts the run (from step 0) after a worker raised or died.

    Returns
    -------
    dict
        ``{"trial": row, "curves": [row, ...]}`` as :func:`scaling.training.run.run_trial`
        returns, with ``engine`` and ``backend`` set to ``"ddp"``. ``wall_s`` is
        measured on rank 0 from the start of its training loop (worker start-up not
        included), and ``host`` is rank 0's host.

    Raises
    ------
    ConfigError
        If ``workers`` does not divide the batch size.
    RuntimeError
        If Ray is not initialised, Ray Train V2 is disabled, or the cluster is too
        small for the workers.
    ray.train.TrainingFailedError
        If a worker failed more than ``max_failures`` times.
    """
    trial = as_trial(trial)
    check_workers(trial.batch_size, workers)
    trainer_cls = _torch_trainer(workers, use_gpu, cpus_per_worker)
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig

    loop_config = {"trial": trial, "use_gpu": use_gpu, "threads": max(1, int(cpus_per_worker))}
    root = tempfile.mkdtemp(prefix="scaling-ddp-", dir=storage_path)
    try:
        trainer = trainer_cls(
            _train_worker, train_loop_config=loop_config,
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": cpus_per_worker}),
            run_config=RunConfig(name=f"ddp-{uuid.uuid4().hex[:12]}", storage_path=root,
                                 failure_config=FailureConfig(max_failures=max_failures),
                                 logging_config=LoggingConfig(log_level="ERROR")))
        return _fit_keeping_sigint(trainer).return_value
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _torch_trainer(workers: int, use_gpu: bool, cpus_per_worker: float):
    """Ray Train V2's TorchTrainer, after checking that this Ray can run the workers at all."""
    import ray
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        raise RuntimeError("run_trial_ddp needs a running Ray; call ray.init() "
                           "(or cluster.launch.connect.connect) before it")
    if not TorchTrainer.__module__.startswith("ray.train.v2"):
        raise RuntimeError("run_trial_ddp needs Ray Train V2 (the default in this Ray), "
                           "but RAY_TRAIN_V2_ENABLED=0 is set in the environment")
    total = ray.cluster_resources()
    need = {"CPU": workers * cpus_per_worker, "GPU": workers if use_gpu else 0}
    short = [f"{need[r]:g} {r}s (the cluster has {total.get(r, 0):g})"
             for r in need if need[r] > total.get(r, 0)]
    if short:
        raise RuntimeError(f"workers_per_trial={workers} needs {' and '.join(short)}; "
                           "lower workers_per_trial or the resources per worker, or add nodes")
    return TorchTrainer


def _fit_keeping_sigint(trainer):
    """``trainer.fit()``, restoring the SIGINT handler that fit replaces in the main thread."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        return trainer.fit()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


# ---- the worker side: runs in each Ray Train worker process -------------------


def _train_worker(config: dict) -> dict | None:
    """Ray Train's per-worker function; rank 0 returns the summary (Result.return_value)."""
    import ray.train
    import torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    if config["use_gpu"]:
        from ray.train.torch import get_device

        device = get_device()
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    out = train_shard(config["trial"], rank=rank, world=world, device=device)
    return out if rank == 0 else None


def train_shard(trial, *, rank: int, world: int, device, return_params: bool = False) -> dict | None:
    """Worker ``rank`` of ``world``'s share of one trial; needs an initialised process group.

    Runs the loop with :class:`DDPBackend`; rank 0 returns the result (``{"trial": row,
    "curves": [...]}``, with ``"params"`` when ``return_params``), the others None."""
    from scaling.training.loop import run_members

    def backend(trials):
        return DDPBackend(trials, device, rank, world)

    out = run_members([as_trial(trial)], backend, engine=ENGINE, return_params=return_params,
                      report=rank == 0)
    return out[0] if rank == 0 else None


class DDPBackend(ModuleBackend):
    """The module backend plus the all-reduce: worker ``rank`` trains its slice of each batch."""

    name = "ddp"

    def __init__(self, trials, device, rank: int, world: int):
        super().__init__(trials, device, shard=(rank, world))
        self.rank, self.world = rank, world
        cuda = getattr(device, "type", device) == "cuda"
        self.net = DistributedDataParallel(self.model, device_ids=[device.index] if cuda else None)

    def forward(self, step: int) -> torch.Tensor:
        total = super().forward(step).clone()  # this worker's mean over its slice
        dist.all_reduce(total)  # sum of the worker means; gloo has no AVG
        return total / self.world

    def evaluate(self, positions: list[int], step: int) -> list[dict]:
        """Rank 0 evaluates; every rank learns its train loss (finiteness, divergence threshold)."""
        shared = torch.full((1,), float("nan"), dtype=torch.float64, device=self.x_train.device)
        metrics = super().evaluate(positions, step) if self.rank == 0 else [{}]
        if self.rank == 0:
            shared.fill_(metrics[0]["train_loss"])
        dist.broadcast(shared, src=0)
        return metrics if self.rank == 0 else [{"train_loss": float(shared.item())}]
