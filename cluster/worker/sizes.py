"""How many parameters a trial's model has, counted without allocating it. The driver asks
before it plans (cluster.driver.planner): a width the config's bounds allow can still be a model
no device holds, and must never be built in the driver.

A built-in model is counted from its layer sizes (scaling.training.params, no torch: the driver
of a sweep of built-in models never imports torch); a plug-in task's own model is built on
torch's ``meta`` device, which needs torch."""

from __future__ import annotations

from scaling.spec.schema import as_trial
from scaling.tasks.resolve import load_task, task_shape
from scaling.training.params import count_params


def model_params(trial) -> int | None:
    """Parameters of ``trial``'s model; None where it cannot be counted (a built-in model the
    builder would refuse, or a plug-in's model that insists on real tensors)."""
    t = as_trial(trial)
    try:
        if t.model == "mlp":  # the vector tasks' shapes are known without loading them
            input_dim, n_classes = task_shape(t.task)[:2]
            return count_params(t.model_spec, (input_dim,), n_classes)
        if t.model != "task":
            data = load_task(t.task)
            return count_params(t.model_spec, data.input_shape, data.n_classes)
        return _meta_params(t)
    except Exception:  # noqa: BLE001 (not countable without building it for real)
        return None


def _meta_params(t) -> int:
    """A plug-in's own model, built on ``meta`` (torch imported here, only for such a model)."""
    import torch

    from scaling.training.models import make_model

    data = load_task(t.task)
    with torch.device("meta"):
        return sum(p.numel() for p in make_model(t.model_spec, data, 0).parameters())
