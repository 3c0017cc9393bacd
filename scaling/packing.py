"""Which trials can train together as one pack, and how much memory a pack takes.

No torch here: the sweep driver plans packs with this module, and the packed
trainer itself (``scaling.packed``, torch) runs them on the workers.
"""

from __future__ import annotations

import json

from scaling.schema import as_trial
from scaling.tasks import packable, task_shape

PACKABLE_MODELS = {"mlp"}
INDEX_BLOCK_BYTES = 8 << 20
"""Batch indices are drawn ahead for as many steps of all members as fit in this."""
EVAL_BLOCK_BYTES = 4 << 20
"""Eval runs over the members' rows in blocks whose activations take about this."""


def pack_key(trial) -> tuple:
    """Trials with equal keys may train in one pack: (task, model, optimizer, batch_size)."""
    trial = as_trial(trial)
    return (json.dumps(trial.task, sort_keys=True), json.dumps(trial.model_spec, sort_keys=True),
            trial.optimizer, int(trial.batch_size))


def can_pack(trials) -> tuple[bool, str]:
    """Whether these trials can train as one pack, and if not, why not (one line)."""
    if not trials:
        return False, "no trials to pack"
    trials = [as_trial(t) for t in trials]
    shared = [("task", lambda t: json.dumps(t.task, sort_keys=True))]
    shared += [(f"model {k}".replace("model model", "model"), lambda t, k=k: str(getattr(t, k)))
               for k in ("model", "width", "depth", "heads")]
    shared += [("optimizer", lambda t: t.optimizer), ("batch_size", lambda t: str(t.batch_size))]
    for name, value in shared:
        values = sorted({value(t) for t in trials})
        if len(values) > 1:
            shown = ", ".join(values[:4]) + (", ..." if len(values) > 4 else "")
            return False, (f"trials differ in {name} ({shown}); a pack needs one task, model, optimizer "
                           "and batch_size, so group trials by pack_key first")
    model, task = trials[0].model, trials[0].task
    if model not in PACKABLE_MODELS:
        return False, f"model {model!r} cannot be packed; the packed engine trains {sorted(PACKABLE_MODELS)}"
    if any(t.metrics for t in trials):
        return False, "metrics (noise scale, sharpness, gradient norms) are measured by the single engine"
    if not packable(task):
        return False, (f"task {task['name']!r} is not classification of float features with "
                       "cross-entropy (tokens, or its own loss or metric); train it with engine: single")
    return True, ""


def _layer_dims(trial, input_dim: int, n_classes: int) -> list[int]:
    return [input_dim] + [trial.width] * trial.depth + [n_classes]


def estimate_pack_bytes(trials) -> int:
    """Rough bytes of training these trials as one pack on one device.

    Counts float32 parameters, gradients, optimizer state (a momentum buffer, or
    AdamW's two moments), update temporaries and the copy taken for eval, one
    step's activations and their gradients, one eval block, the task's data and
    the drawn batch indices. Takes the task's shapes from ``task_shape`` (no data
    loaded for the built-in vector tasks).
    """
    ok, why = can_pack(trials)
    if not ok:
        raise ValueError(f"cannot estimate a pack that cannot be packed: {why}")
    trials = [as_trial(t) for t in trials]
    input_dim, n_classes, n_pool, n_test = task_shape(trials[0].task)
    dims = _layer_dims(trials[0], input_dim, n_classes)
    members, batch = len(trials), trials[0].batch_size
    n_params = sum((a + 1) * b for a, b in zip(dims, dims[1:]))
    hidden = sum(dims[1:-1])
    copies = 6 if trials[0].optimizer == "adamw" else 5
    state = copies * members * n_params  # + the weights of the members being evaluated
    acts = members * batch * (dims[0] + 3 * hidden + 4 * dims[-1])
    evals = max(EVAL_BLOCK_BYTES // 4, 64 * members * (dims[0] + 2 * hidden + 4 * dims[-1]))
    data_bytes = (4 * input_dim + 8) * (n_pool + n_test)
    indices = min(INDEX_BLOCK_BYTES, 8 * members * batch * max(t.total_steps for t in trials))
    indices += 8 * members * max(t.n_train for t in trials)
    return int(4 * (state + acts + evals) + data_bytes + indices)


