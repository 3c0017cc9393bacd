"""Training entry points: ``run_trial(trial) -> rows`` (one trial, the ``module`` backend) and
``run_pack(trials)`` (trials trained together, by the stacked or the vmap backend). No Ray, no globals.

The trial's ``seed`` fixes everything random about it:

- the training subset: the first ``n_train`` entries of a seed-specific
  permutation of the task's pool, so a larger n_train's subset contains the
  smaller ones (Hestness et al. 2017's nested shards);
- the initial weights, which do not depend on lr, momentum or batch size, so
  trials that differ only in those start from the same point;
- the data order: an endless stream of per-epoch permutations of the subset,
  cut into consecutive batches of ``batch_size``. A batch may straddle two
  epochs; ``epoch`` in the curves is ``examples_seen / n_train``.

The schedule (evals, divergence, finishing, the rows) is :mod:`scaling.training.loop`'s;
:class:`ModuleBackend` supplies one ``nn.Module`` trained with autograd and
``torch.optim`` (the optimizer's factory in scaling.training.optim, the learning rate set
each step from the trial's schedule). The model is the MLP (``build_model``), a built-in one from
scaling.training.models, or the task's own (a plug-in's ``make_model``); the loss is
cross-entropy (over the last axis, so per token for a language model) unless
the task gives its own. With a ``metrics`` mapping in the trial,
scaling.training.metrics adds the gradient noise scale and per-example gradient norms
to the curves and the sharpness at the start and end to the trial row.
"""

from __future__ import annotations

from scaling.spec.schema import as_trial
from scaling.training.backends.module import ModuleBackend
from scaling.training.backends.stacked import StackedBackend
from scaling.training.loop import run_members
from scaling.training.packing import choose_backend


def run_trial(trial, *, device: str = "cpu", return_params: bool = False, on_steps=None, peers=None) -> dict:
    """Train the model a trial describes, and return its rows.

    Returns ``{"trial": row, "curves": [row, ...]}`` (:func:`scaling.training.loop.result_row`), with
    ``"params"`` (the final state dict) when ``return_params``. Exceptions (bad device, out of
    memory, bugs) propagate to the caller, which decides about retries and records ``failed``.
    ``on_steps(n)`` hears the steps done now and then (scaling.training.loop.run_members).
    """
    return run_members([trial], lambda trials: ModuleBackend(trials, device), engine="single",
                       return_params=return_params, on_steps=on_steps, peers=peers)[0]


def run_pack(trials, *, device: str = "cpu", on_result=None, return_params: bool = False,
             backend: str | None = None, on_steps=None, peers=None) -> list[dict]:
    """Train trials together as one pack; one result per trial, in input order.

    Each result is what ``run_trial`` returns for that trial alone, ``{"trial": row,
    "curves": [...]}``, with ``engine`` ``"packed"``, ``backend`` the one that trained it and
    ``wall_s`` the pack's elapsed time when the member finished. ``backend`` is
    ``choose_backend(trials)``'s unless given: ``"stacked"`` (this module) for the MLP on
    features, ``"vmap"`` (scaling.training.backends.vmap) for any other model, loss or metrics.
    ``on_result(result)`` is called as each member finishes or diverges, so a caller can store
    it before the pack ends. With ``return_params`` each result also holds ``"params"``, the
    member's final weights named as in its model's ``state_dict()`` (for tests). ``on_steps(n)``
    hears the steps the pack has done (a finished member counts its whole budget) now and then.
    ``peers``: stored group members a pruning rule ranks against (cluster.worker.peers.store_peers).
    Raises ``ValueError`` if ``can_pack(trials)`` says no. Uses the caller's torch
    threads; on CPU one thread per pack (and one pack per core) is fastest.
    """
    trials = [as_trial(t) for t in trials]
    if (backend or choose_backend(trials)[0]) == "vmap":
        from scaling.training.backends.vmap import VmapBackend

        factory = lambda ts: VmapBackend(ts, device)  # noqa: E731
    else:
        factory = lambda ts: StackedBackend(ts, device)  # noqa: E731
    return run_members(trials, factory, engine="packed", on_result=on_result, return_params=return_params,
                       on_steps=on_steps, peers=peers)
