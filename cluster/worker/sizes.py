"""How many parameters a trial's model has, counted without allocating it (torch's ``meta``
device). The driver asks before it plans (cluster.driver.planner): a width the config's bounds
allow can still be a model no device holds, and must never be built in the driver."""

from __future__ import annotations

import torch

from scaling.spec.schema import as_trial
from scaling.tasks.resolve import load_task
from scaling.training.models import make_model


def model_params(trial) -> int | None:
    """Parameters of ``trial``'s model; None where it cannot be built on ``meta`` (a plug-in's
    model may insist on real tensors)."""
    t = as_trial(trial)
    try:
        data = load_task(t.task)
        with torch.device("meta"):
            return sum(p.numel() for p in make_model(t.model_spec, data, 0).parameters())
    except Exception:  # noqa: BLE001 (not countable without building it for real)
        return None
