"""Which trials can train together as one pack, and how much memory a pack takes.

No torch here: the sweep driver plans packs with this module, and the packed
trainer itself (``scaling.packed``, torch) runs them on the workers.
"""

from __future__ import annotations

import json

from scaling.config import total_steps
from scaling.tasks import packable, task_shape

PACKABLE_MODELS = {"mlp"}
INDEX_BLOCK_BYTES = 8 << 20
"""Batch indices are drawn ahead for as many steps of all members as fit in this."""
EVAL_BLOCK_BYTES = 4 << 20
"""Eval runs over the members' rows in blocks whose activations take about this."""


def pack_key(trial: dict) -> tuple:
    """Trials with equal keys may train in one pack: (task, model, batch_size)."""
    return (json.dumps(trial["task"], sort_keys=True), json.dumps(trial["model"], sort_keys=True),
            int(trial["batch_size"]))


def can_pack(trials: list[dict]) -> tuple[bool, str]:
    """Whether these trials can train as one pack, and if not, why not (one line)."""
    if not trials:
        return False, "no trials to pack"
    shared = [("task", lambda t: json.dumps(t["task"], sort_keys=True))]
    shared += [(f"model {k}", lambda t, k=k: str(t["model"].get(k)))
               for k in sorted(set().union(*(t["model"] for t in trials)))]
    shared += [("batch_size", lambda t: str(t["batch_size"]))]
    for name, value in shared:
        values = sorted({value(t) for t in trials})
        if len(values) > 1:
            shown = ", ".join(values[:4]) + (", ..." if len(values) > 4 else "")
            return False, (f"trials differ in {name} ({shown}); a pack needs one task, model and "
                           "batch_size, so group trials by pack_key first")
    model, task = trials[0]["model"]["name"], trials[0]["task"]
    if model not in PACKABLE_MODELS:
        return False, f"model {model!r} cannot be packed; the packed engine trains {sorted(PACKABLE_MODELS)}"
    if any(t.get("metrics") for t in trials):
        return False, "metrics (noise scale, sharpness, gradient norms) are measured by the single engine"
    if not packable(task):
        return False, (f"task {task['name']!r} is not classification of float features with "
                       "cross-entropy (tokens, or its own loss or metric); train it with engine: single")
    return True, ""


def _layer_dims(trial: dict, input_dim: int, n_classes: int) -> list[int]:
    model = trial["model"]
    return [input_dim] + [model["width"]] * model["depth"] + [n_classes]


def estimate_pack_bytes(trials: list[dict]) -> int:
    """Rough bytes of training these trials as one pack on one device.

    Counts float32 parameters, gradients, momentum buffers, update temporaries and
    the copy taken for eval (5 copies), one step's activations and their gradients,
    one eval block, the task's data and the drawn batch indices. Takes the task's
    shapes from ``task_shape`` (no data loaded for the built-in vector tasks).
    """
    ok, why = can_pack(trials)
    if not ok:
        raise ValueError(f"cannot estimate a pack that cannot be packed: {why}")
    input_dim, n_classes, n_pool, n_test = task_shape(trials[0]["task"])
    dims = _layer_dims(trials[0], input_dim, n_classes)
    members, batch = len(trials), trials[0]["batch_size"]
    n_params = sum((a + 1) * b for a, b in zip(dims, dims[1:]))
    hidden = sum(dims[1:-1])
    state = 5 * members * n_params  # + the weights of the members being evaluated
    acts = members * batch * (dims[0] + 3 * hidden + 4 * dims[-1])
    evals = max(EVAL_BLOCK_BYTES // 4, 64 * members * (dims[0] + 2 * hidden + 4 * dims[-1]))
    data_bytes = (4 * input_dim + 8) * (n_pool + n_test)
    indices = min(INDEX_BLOCK_BYTES, 8 * members * batch * max(total_steps(t) for t in trials))
    indices += 8 * members * max(t["n_train"] for t in trials)
    return int(4 * (state + acts + evals) + data_bytes + indices)


