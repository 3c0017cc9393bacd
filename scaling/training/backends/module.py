from __future__ import annotations

import math

import torch

from scaling.tasks.resolve import load_task
from scaling.training.data import (
    EVAL_CHUNK,
    BatchStream,
    cross_entropy,
    eval_sets,
    evaluate,
    subset_indices,
)
from scaling.training.flops import flops_per_example
from scaling.training.models import make_model
from scaling.training import optim


def make_optimizer(params, trial) -> torch.optim.Optimizer:
    """The trial's ``torch.optim`` optimizer at its peak lr (the loop sets each step's lr): the
    factory of its entry in scaling.training.optim.OPTIMIZERS."""
    return optim.get(trial.optimizer).factory(params, trial)


class ModuleBackend:
    """One trial as an ``nn.Module`` with autograd and ``torch.optim`` (the loop's ``module`` backend).

    ``shard=(rank, world)`` trains worker ``rank``'s contiguous slice of each global batch
    (the DDP backend in cluster.worker.ddp builds on that)."""

    name = "module"

    def __init__(self, trials, device: str = "cpu", shard: tuple[int, int] = (0, 1)):
        if len(trials) != 1:
            raise ValueError(f"the module backend trains one trial at a time, got {len(trials)}")
        trial = self.trial = trials[0]
        data = self.data = load_task(trial.task)
        rank, world = shard
        self.lo, self.hi = rank * trial.batch_size // world, (rank + 1) * trial.batch_size // world
        subset = torch.from_numpy(subset_indices(trial.seed, len(data.y_train), trial.n_train)).to(device)
        self.x_train = torch.from_numpy(data.x_train).to(device)[subset]
        self.y_train = torch.from_numpy(data.y_train).to(device)[subset]
        self.sets = eval_sets(data, device)
        self.model = self.net = make_model(trial.model_spec, data, trial.seed).to(device)
        self.loss_fn = data.loss or cross_entropy
        self.scoring = {"loss": data.loss, "metric": data.metric,
                        "chunk": None if trial.model == "mlp" else EVAL_CHUNK}
        self.opt = make_optimizer(self.model.parameters(), trial)
        self.stream = BatchStream(trial.seed, trial.n_train)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.flops_per_example = flops_per_example(trial)
        self.tokens_per_example, self.pool_size = data.tokens_per_example, len(data.y_train)
        self.data_version = data.data_version
        self.probe, self.extra = None, {}
        if trial.metrics:
            from scaling.training.metrics import TrialMetrics

            self.probe = TrialMetrics(trial.metrics, self.loss_fn, self.x_train, self.y_train, trial.seed)
            if self.probe.spec.sharpness:
                self.extra["sharpness_init"] = self.probe.sharpness(self.model)
        self.split = self.probe is not None and self.probe.ema is not None  # backward in two halves
        self._loss = None

    def forward(self, step: int) -> torch.Tensor:
        idx = torch.from_numpy(self.stream.take(self.trial.batch_size)[self.lo:self.hi]).to(self.x_train.device)
        if self.split:  # leaves the gradient in .grad
            return torch.tensor([self.probe.backward(self.model, self.x_train[idx], self.y_train[idx])])
        self._loss = self.loss_fn(self.net(self.x_train[idx]), self.y_train[idx])
        return self._loss.detach().reshape(1)

    def update(self, lr) -> None:
        if lr is not None:
            for group in self.opt.param_groups:
                group["lr"] = float(lr[0])
        if not self.split:
            self.opt.zero_grad(set_to_none=True)
            self._loss.backward()
        self.opt.step()

    def evaluate(self, positions: list[int], step: int) -> list[dict]:
        if not positions:
            return []
        metrics = evaluate(self.model, self.x_train, self.y_train, self.sets, **self.scoring)
        if self.probe is not None:
            metrics.update(self.probe.curve_values(self.model, math.isfinite(metrics["train_loss"])))
        return [metrics]

    def keep(self, positions: list[int]) -> None:
        pass

    def params_of(self, position: int) -> dict:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def final_extra(self, position: int, ok: bool) -> dict:
        extra = dict(self.extra)
        if self.probe is not None and self.probe.spec.sharpness:
            extra["sharpness_final"] = self.probe.sharpness(self.model) if ok else math.nan
        return extra
