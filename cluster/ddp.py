"""Run one trial data-parallel across k workers with Ray Train's TorchTrainer (DDP).

``run_trial_ddp(trial, workers=k)`` trains exactly the model that
:func:`scaling.train.run_trial` trains, with the global batch B split over k
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
- before every step the global minibatch loss (the mean of the k worker losses,
  all-reduced) is checked: not finite or above ``EXPLODED_LOSS`` ends the trial
  as ``diverged`` on every worker at the same step;
- rank 0 evaluates at the same eval steps and broadcasts whether the train
  loss was finite, so all workers stop together there too.

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

import math
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone

from scaling import __version__
from scaling.config import config_columns
from scaling.errors import ConfigError

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


def run_trial_ddp(trial: dict, *, workers: int, use_gpu: bool = False, storage_path: str | None = None,
                  cpus_per_worker: float = 1.0, max_failures: int = 0) -> dict:
    """Train a trial on ``workers`` DDP workers and return ``run_trial``'s rows.

    Parameters
    ----------
    trial
        A trial config, as from ``SweepConfig.trials()``.
    workers
        Number of data-parallel workers k; must divide ``trial["batch_size"]``.
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
        ``{"trial": row, "curves": [row, ...]}`` as :func:`scaling.train.run_trial`
        returns, with ``engine`` set to ``"ddp"``. ``wall_s`` of the trial row
        includes starting the workers; ``wall_s`` of the curves is measured on rank 0
        from the start of its training function. ``host`` is rank 0's host.

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
    check_workers(trial["batch_size"], workers)
    start = datetime.now(timezone.utc)
    t0 = time.perf_counter()
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
        out = _fit_keeping_sigint(trainer).return_value
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"trial": _trial_row(trial, out, start, time.perf_counter() - t0), "curves": out["curves"]}


def _torch_trainer(workers: int, use_gpu: bool, cpus_per_worker: float):
    """Ray Train V2's TorchTrainer, after checking that this Ray can run the workers at all."""
    import ray
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        raise RuntimeError("run_trial_ddp needs a running Ray; call ray.init() "
                           "(or cluster.runner.connect) before it")
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


def _trial_row(trial: dict, out: dict, start: datetime, wall_s: float) -> dict:
    """The trial row, in run_trial's format, from rank 0's summary."""
    final = out["curves"][-1] if out["status"] == "ok" else {}
    return {
        **config_columns(trial),
        "run_id": uuid.uuid4().hex,
        "status": out["status"],
        "error": out["error"],
        "steps": out["steps"],
        "examples_seen": out["steps"] * trial["batch_size"],
        "n_params": out["n_params"],
        "train_loss": final.get("train_loss", math.nan),
        "test_loss": final.get("test_loss", math.nan),
        "test_acc": final.get("test_acc", math.nan),
        "wall_s": wall_s,
        "host": out["host"],
        "start_time": start,
        "end_time": datetime.now(timezone.utc),
        "version": __version__,
        "engine": ENGINE,
    }


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


def train_shard(trial: dict, *, rank: int, world: int, device) -> dict:
    """Worker ``rank`` of ``world``'s share of one trial; needs an initialised process group.

    Returns a summary (``curves``, ``status``, ``error``, ``steps``, ``n_params``,
    ``host``); only rank 0's ``curves`` are filled in.
    """
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel

    from scaling.tasks import load_task
    from scaling.train import (BatchStream, build_model, eval_steps, evaluate, exploded,
                               exploded_message, nonfinite_eval_message, subset_indices, total_steps)

    t0 = time.perf_counter()
    data = load_task(trial["task"])
    seed, n_train, batch = trial["seed"], trial["n_train"], trial["batch_size"]
    lo, hi = rank * batch // world, (rank + 1) * batch // world  # this worker's slice of a batch
    subset = torch.from_numpy(subset_indices(seed, len(data.y_train), n_train))
    x_train = torch.from_numpy(data.x_train)[subset].to(device)
    y_train = torch.from_numpy(data.y_train)[subset].to(device)
    x_test, y_test = torch.from_numpy(data.x_test).to(device), torch.from_numpy(data.y_test).to(device)

    model = build_model(trial["model"], data.input_dim, data.n_classes, seed).to(device)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.SGD(ddp.parameters(), lr=trial["lr"], momentum=trial["momentum"],
                          weight_decay=trial["weight_decay"])
    steps = total_steps(trial)
    evals = eval_steps(trial, steps)
    stream = BatchStream(seed, n_train)
    curves: list[dict] = []
    status, error, done = "ok", None, 0

    def record(step: int) -> bool:
        """Rank 0 evaluates; every rank learns whether the train loss was finite."""
        finite = torch.ones(1, device=device)
        if rank == 0:
            metrics = evaluate(model, x_train, y_train, x_test, y_test)
            curves.append({"step": step, "epoch": step * batch / n_train, "examples_seen": step * batch,
                           "train_loss": metrics[0], "test_loss": metrics[1], "test_acc": metrics[2],
                           "wall_s": time.perf_counter() - t0})
            finite.fill_(float(math.isfinite(metrics[0])))
        dist.broadcast(finite, src=0)
        return bool(finite.item())

    record(0)
    next_eval = 1
    for step in range(1, steps + 1):
        idx = torch.from_numpy(stream.take(batch)[lo:hi]).to(device)
        loss = F.cross_entropy(ddp(x_train[idx]), y_train[idx])
        total = loss.detach().clone()
        dist.all_reduce(total)  # sum of the worker means; gloo has no AVG
        value = total.item() / world
        if exploded(value):
            status, error = "diverged", exploded_message(value, step, trial["lr"])
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()  # DDP all-reduces and averages the gradients here
        opt.step()
        done = step
        if step == evals[next_eval]:
            next_eval += 1
            if not record(step):
                status, error = "diverged", nonfinite_eval_message(step, trial["lr"])
                break
    return {"curves": curves, "status": status, "error": error, "steps": done,
            "n_params": sum(p.numel() for p in model.parameters()), "host": socket.gethostname()}
