"""Which trials can train together as one pack, and how much memory a pack takes.

No torch here: the sweep driver plans packs with this module, and the packed
trainer itself (``scaling.training.backends.stacked``, torch) runs them on the workers.
"""

from __future__ import annotations

import json

from scaling.spec.models import SPECS
from scaling.spec.schema import as_trial
from scaling.training.optim import state_count
from scaling.tasks.plugins import is_plugin
from scaling.tasks.resolve import packable, task_kind, task_shape

STACKED_MODELS = {n for n, m in SPECS.items() if m.stacked}
"""Models the ``stacked`` backend writes out by hand (scaling.training.backends.stacked)."""
PACKABLE_MODELS = {n for n, m in SPECS.items() if m.packs}
"""Models that pack: the stacked MLP, and every model the ``vmap`` backend batches (scaling.training.backends.vmap)."""
INDEX_BLOCK_BYTES = 8 << 20
"""Batch indices are drawn ahead for as many steps of all members as fit in this."""
EVAL_BLOCK_BYTES = 4 << 20
"""Eval runs over the members' rows in blocks whose activations take about this."""


def pack_key(trial) -> tuple:
    """Trials with equal keys may train in one pack: (task, model, optimizer, batch_size, metrics)."""
    trial = as_trial(trial)
    return (_json(trial.task), _json(trial.model_spec), trial.optimizer, int(trial.batch_size),
            _json(trial.metrics))


_JSON: dict = {}


def _json(d) -> str:
    """``json.dumps(d, sort_keys=True)``, remembered for flat dicts (a sweep has a handful of
    distinct ones and the planner keys a million trials by them)."""
    try:
        # keys in order, values and their types (1, 1.0 and True are equal but dump differently);
        # another key order only misses the cache, the JSON is sorted either way
        key = None if d is None else (tuple(d), tuple(d.values()), tuple(map(type, d.values())))
        hash(key)
    except TypeError:  # a nested value: dump it every time
        return json.dumps(d, sort_keys=True)
    text = _JSON.get(key)
    if text is None:
        if len(_JSON) > 10_000:
            _JSON.clear()
        text = _JSON[key] = json.dumps(d, sort_keys=True)
    return text


def can_pack(trials, check_vmap: bool = True) -> tuple[bool, str]:
    """Whether these trials can train as one pack, and if not, why not (one line).

    A plug-in's own model or loss is tried under vmap (``scaling.training.measure.vmap_problem``: it
    builds the model, so torch is imported) unless ``check_vmap`` is False: the sweep driver
    has the workers try it (cluster.driver.warmup) and passes what they found to the planner."""
    if not trials:
        return False, "no trials to pack"
    trials = [as_trial(t) for t in trials]
    shared = [("task", lambda t: json.dumps(t.task, sort_keys=True))]
    shared += [(f"model {k}".replace("model model", "model"), lambda t, k=k: str(getattr(t, k)))
               for k in ("model", "width", "depth", "heads")]
    shared += [("optimizer", lambda t: t.optimizer), ("batch_size", lambda t: str(t.batch_size)),
               ("metrics", lambda t: json.dumps(t.metrics, sort_keys=True))]
    for name, value in shared:
        values = sorted({value(t) for t in trials})
        if len(values) > 1:
            shown = ", ".join(values[:4]) + (", ..." if len(values) > 4 else "")
            return False, (f"trials differ in {name} ({shown}); a pack needs one task, model, optimizer, "
                           "batch_size and metrics, so group trials by pack_key first")
    model, task = trials[0].model, trials[0].task
    if model not in PACKABLE_MODELS:
        return False, f"model {model!r} cannot be packed; the packed engine trains {sorted(PACKABLE_MODELS)}"
    if check_vmap and needs_vmap_check(trials[0]):
        from scaling.training.measure import vmap_problem  # torch: only for a plug-in's own model or loss

        problem = vmap_problem(trials[0])
        if problem is not None:
            return False, f"task {task['name']!r}: {problem}"
    return True, ""


def needs_vmap_check(trial) -> bool:
    """Whether vmap must be tried on this trial's model and loss before it packs: a plug-in's own."""
    trial = as_trial(trial)
    return is_plugin(trial.task) and (trial.model == "task" or not packable(trial.task))


def choose_backend(trials) -> tuple[str, str]:
    """The backend that trains a pack (``can_pack`` said yes), and why, in words.

    ``stacked`` (scaling.training.backends.stacked: the MLP written out by hand, the fastest) where it can:
    the MLP with cross-entropy on float features and no metrics; ``vmap``
    (scaling.training.backends.vmap) for everything else."""
    t = as_trial(trials[0])
    if t.model not in STACKED_MODELS:
        return "vmap", f"model {t.model!r} (the stacked backend writes out only the MLP)"
    if t.metrics:
        return "vmap", "metrics are measured per member through torch.func (the stacked backend has none)"
    if not packable(t.task):
        return "vmap", ("the task has its own loss or metric, or token inputs (the stacked backend knows "
                        "only cross-entropy on float features)")
    return "stacked", "the MLP written out by hand (batched matmuls, fused update)"


def _layer_dims(trial, input_dim: int, n_classes: int) -> list[int]:
    return [input_dim] + [trial.width] * trial.depth + [n_classes]


def estimate_pack_bytes(trials, footprint: dict | None = None) -> int:
    """Rough bytes of training these trials as one pack on one device (either backend).

    Counts float32 parameters, gradients, optimizer state (``state`` copies of its
    entry in scaling.training.optim: SGD's momentum buffer, AdamW's two moments),
    update temporaries and the copy taken for eval, one step's activations and
    their gradients, one eval block, the task's data and the drawn batch indices. The stacked MLP is counted from its layer sizes (no
    torch, no data loaded for the built-in vector tasks); a vmap pack from its model's
    ``footprint`` (scaling.training.measure.footprint: parameters, and the bytes autograd saves
    per example, measured on the worker that will run it), measured here if not given.
    """
    ok, why = can_pack(trials, check_vmap=False)
    if not ok:
        raise ValueError(f"cannot estimate a pack that cannot be packed: {why}")
    trials = [as_trial(t) for t in trials]
    members, batch = len(trials), trials[0].batch_size
    input_dim, n_classes, n_pool, n_test = task_shape(trials[0].task)
    indices = min(INDEX_BLOCK_BYTES, 8 * members * batch * max(t.total_steps for t in trials))
    indices += 8 * members * max(t.n_train for t in trials)
    if choose_backend(trials)[0] == "vmap":
        return _vmap_bytes(trials, footprint, input_dim, n_pool + n_test) + indices
    dims = _layer_dims(trials[0], input_dim, n_classes)
    n_params = sum((a + 1) * b for a, b in zip(dims, dims[1:]))
    hidden = sum(dims[1:-1])
    copies = 4 + state_count(trials[0].optimizer)
    state = copies * members * n_params  # + the weights of the members being evaluated
    acts = members * batch * (dims[0] + 3 * hidden + 4 * dims[-1])
    evals = max(EVAL_BLOCK_BYTES // 4, 64 * members * (dims[0] + 2 * hidden + 4 * dims[-1]))
    data_bytes = (4 * input_dim + 8) * (n_pool + n_test)
    return int(4 * (state + acts + evals) + data_bytes + indices)


ACT_FACTOR = 1.75
"""Peak activation memory of a vmap step over what autograd saves: gradients of activations live
during the backward pass (calibrated on measured peaks; tests/test_vmapped.py checks it)."""
VMAP_EVAL_BYTES = 64 << 20
"""Activation memory of one eval chunk of a vmap pack (scaling.training.backends.vmap.EVAL_BYTES)."""


def _vmap_bytes(trials, footprint: dict | None, input_dim: int, n_examples: int) -> int:
    """Parameters, their gradients (twice with the noise scale's half batches), optimizer state,
    the eval copy, update temporaries; saved activations and as much again for their gradients."""
    if footprint is None:
        from scaling.training.measure import footprint as measure  # torch

        footprint = measure(trials[0].task, trials[0].model_spec)
    members, batch, t = len(trials), trials[0].batch_size, trials[0]
    noise = bool(t.metrics and t.metrics.get("noise_scale"))
    copies = 4 + state_count(t.optimizer) + (2 if noise else 0)
    state = 4 * copies * members * footprint["n_params"] + 2 * members * footprint["buffer_bytes"]
    live = batch // 2 if noise and batch > 1 else batch  # the noise scale back-propagates half batches
    acts = ACT_FACTOR * members * live * footprint["activation_bytes"]
    per_example = 16 * input_dim if task_kind(t.task) == "tokens" else 4 * input_dim + 8  # x and y
    data_bytes = per_example * n_examples
    return int(state + acts + 3 * VMAP_EVAL_BYTES // 2 + data_bytes)
