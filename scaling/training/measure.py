"""Measuring a model for the pack planner: can ``torch.func.vmap`` batch it, and how big is it.

The planner itself (scaling.training.packing) is torch-free; the warm-up task calls these on a
worker and hands the planner the facts (``footprints``, ``problems``). Only where no facts were
passed does packing import this module, lazily."""

from __future__ import annotations

import copy
import functools
import json

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from scaling.spec.schema import as_trial
from scaling.tasks.resolve import load_task
from scaling.training.data import cross_entropy
from scaling.training.models import make_model

@functools.lru_cache(maxsize=32)
def _footprint(task_json: str, model_json: str) -> tuple[int, int, int]:
    task, spec = json.loads(task_json), json.loads(model_json)
    data = load_task(task)
    models = [make_model(spec, data, s) for s in (0, 1)]
    params, buffers = stack_module_state(models)
    leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
    n = min(4, len(data.y_train))
    x = torch.from_numpy(np.stack([data.x_train[:n]] * 2))
    y = torch.from_numpy(np.stack([data.y_train[:n]] * 2))
    loss_fn = data.loss or cross_entropy
    saved: dict[int, int] = {}

    def pack(t):
        if t.data_ptr() not in {v.data_ptr() for v in leaves.values()}:
            saved[t.data_ptr()] = max(saved.get(t.data_ptr(), 0), t.numel() * t.element_size())
        return t

    def loss(p, b, xx, yy):
        return loss_fn(functional_call(models[0], (p, b), (xx,)), yy)

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        vmap(loss)(leaves, buffers, x, y)
    n_params = sum(p.numel() for p in models[0].parameters())
    n_buffers = sum(b.numel() * b.element_size() for b in models[0].buffers())
    return n_params, max(1, sum(saved.values()) // (2 * n)), n_buffers


def footprint(task: dict, model_spec: dict) -> dict:
    """``{"n_params", "activation_bytes", "buffer_bytes"}`` of a model on a task: parameters,
    the bytes autograd saves for backward per member and example (measured on a real vmapped
    forward pass of two members, so vmap's own copies count), and the bytes of its buffers.
    Cached per process."""
    n_params, act, buffers = _footprint(json.dumps(task, sort_keys=True), json.dumps(model_spec, sort_keys=True))
    return {"n_params": n_params, "activation_bytes": act, "buffer_bytes": buffers}


def activation_bytes(task: dict, model_spec: dict) -> int:
    return footprint(task, model_spec)["activation_bytes"]


@functools.lru_cache(maxsize=32)
def _problem(task_json: str, model_json: str, batch: int) -> str | None:
    task, spec = json.loads(task_json), json.loads(model_json)
    data = load_task(task)
    try:
        models = [make_model(spec, data, s) for s in (0, 1)]
    except Exception as e:  # noqa: BLE001  (the trials alone will fail, with this error, as rows)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return f"its model cannot be built ({type(e).__name__}: {first[:160]})"
    for module in models[0].modules():
        if isinstance(module, torch.nn.modules.batchnorm._NormBase) and module.track_running_stats:
            return (f"its model has {type(module).__name__}, whose running statistics mix the examples of a "
                    "batch and are updated in place; use GroupNorm or LayerNorm to pack it")
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0:
            return (f"its model has {type(module).__name__}, whose random masks would differ from the "
                    "trial trained alone")
    model = copy.deepcopy(models[0])
    params, buffers = stack_module_state(models)
    n = min(len(data.y_train), max(2, min(batch, 4)))
    x = torch.from_numpy(np.stack([data.x_train[:n]] * 2))
    y = torch.from_numpy(np.stack([data.y_train[:n]] * 2))
    loss_fn = data.loss or cross_entropy

    def loss(p, b, xx, yy):
        return loss_fn(functional_call(model, (p, b), (xx,)), yy)

    leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
    try:
        losses = vmap(loss)(leaves, buffers, x, y)
        torch.autograd.grad(losses.sum(), list(leaves.values()))
    except Exception as e:  # noqa: BLE001  (any failure means: train these trials one by one)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return f"torch.func.vmap cannot batch its model or loss ({type(e).__name__}: {first[:160]})"
    return None


def vmap_problem(trial) -> str | None:
    """Why the vmap backend cannot train this trial's model and loss, in one line, or None.

    Builds two of the trial's models and takes one vmapped gradient of a few examples, so a
    plug-in's model or loss that vmap cannot batch is found before any work starts."""
    trial = as_trial(trial)
    return _problem(json.dumps(trial.task, sort_keys=True), json.dumps(trial.model_spec, sort_keys=True),
                    int(trial.batch_size))


def model_problem(task: dict, model_spec: dict, batch_size: int) -> str | None:
    """``vmap_problem`` by parts: a task, a model spec and a batch size."""
    return _problem(json.dumps(task, sort_keys=True), json.dumps(model_spec, sort_keys=True), int(batch_size))


