"""FLOPs per training example, counted once per (task, model) by torch's FLOP counter on a
forward and backward pass; stored with every trial as ``flops_per_example``."""

from __future__ import annotations

import functools
import json

import torch
from torch import nn

from scaling.tasks.resolve import load_task
from scaling.training.data import cross_entropy
from scaling.training.models import make_model


def count_flops(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> float:
    """Training FLOPs per example: the matmuls and convolutions of one forward and backward
    pass over ``x``, divided by its length. Gradients are cleared afterwards.

    Counted from forward hooks, the way ``torch.utils.flop_counter`` counts them (2 per
    multiply-add; the backward pass computes the weight gradient and, where the layer's
    input needs one, the input gradient, each as many FLOPs as the forward), without that
    module's one-off cost of importing torch._dynamo (about a second per worker process).
    Layers: ``nn.Linear``, ``nn.Conv2d`` and any module with a ``matmul_flops(inputs,
    output)`` method (the attention of scaling.training.models)."""
    total = [0.0]

    def hook(module, inputs, output):
        if isinstance(module, nn.Linear):
            forward = 2.0 * inputs[0].numel() // module.in_features * module.in_features * module.out_features
        elif isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            forward = 2.0 * output.numel() * k
        else:
            forward = float(module.matmul_flops(inputs, output))
        grads = 1 + (inputs[0].requires_grad if isinstance(module, (nn.Linear, nn.Conv2d)) else 1)
        total[0] += forward * (1 + grads)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Linear, nn.Conv2d)) or hasattr(m, "matmul_flops")]
    try:
        loss_fn(model(x), y).backward()
    finally:
        for h in handles:
            h.remove()
    for p in model.parameters():
        p.grad = None
    return total[0] / len(x)


@functools.lru_cache(maxsize=32)
def _flops_cached(task_json: str, model_json: str) -> float:
    task, model = json.loads(task_json), json.loads(model_json)
    data = load_task(task)
    net = make_model(model, data, 0)
    x, y = torch.from_numpy(data.x_train[:2]), torch.from_numpy(data.y_train[:2])
    return count_flops(net, data.loss or cross_entropy, x, y)


def flops_per_example(trial) -> float:
    """Training FLOPs per example of the trial's model on its task (cached per process)."""
    return _flops_cached(json.dumps(trial.task, sort_keys=True), json.dumps(trial.model_spec, sort_keys=True))
