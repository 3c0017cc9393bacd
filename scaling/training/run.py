from __future__ import annotations

from scaling.spec.schema import (
    as_trial,
    total_steps,  # noqa: F401 (re-exported)
)
from scaling.training.backends.module import ModuleBackend
from scaling.training.backends.stacked import StackedBackend
from scaling.training.loop import eval_steps, run_members  # noqa: F401 (re-exported)
from scaling.training.packing import choose_backend


def run_trial(trial, *, device: str = "cpu", return_params: bool = False) -> dict:
    """Train the model a trial describes, and return its rows.

    Returns ``{"trial": row, "curves": [row, ...]}`` (:func:`scaling.training.loop.result_row`), with
    ``"params"`` (the final state dict) when ``return_params``. Exceptions (bad device, out of
    memory, bugs) propagate to the caller, which decides about retries and records ``failed``.
    """
    return run_members([trial], lambda trials: ModuleBackend(trials, device), engine="single",
                       return_params=return_params)[0]


def run_pack(trials, *, device: str = "cpu", on_result=None, return_params: bool = False,
             backend: str | None = None) -> list[dict]:
    """Train trials together as one pack; one result per trial, in input order.

    Each result is what ``run_trial`` returns for that trial alone, ``{"trial": row,
    "curves": [...]}``, with ``engine`` ``"packed"``, ``backend`` the one that trained it and
    ``wall_s`` the pack's elapsed time when the member finished. ``backend`` is
    ``choose_backend(trials)``'s unless given: ``"stacked"`` (this module) for the MLP on
    features, ``"vmap"`` (scaling.training.backends.vmap) for any other model, loss or metrics.
    ``on_result(result)`` is called as each member finishes or diverges, so a caller can store
    it before the pack ends. With ``return_params`` each result also holds ``"params"``, the
    member's final weights named as in its model's ``state_dict()`` (for tests).
    Raises ``ValueError`` if ``can_pack(trials)`` says no. Uses the caller's torch
    threads; on CPU one thread per pack (and one pack per core) is fastest.
    """
    trials = [as_trial(t) for t in trials]
    if (backend or choose_backend(trials)[0]) == "vmap":
        from scaling.training.backends.vmap import VmapBackend

        factory = lambda ts: VmapBackend(ts, device)  # noqa: E731
    else:
        factory = lambda ts: StackedBackend(ts, device)  # noqa: E731
    return run_members(trials, factory, engine="packed", on_result=on_result, return_params=return_params)
