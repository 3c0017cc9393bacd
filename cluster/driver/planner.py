"""Plan pending trials into work units: packs of trials trained together, or single trials.

Trials that share a pack key (task, model, optimizer, batch size, metrics) can
train as one vectorised model. The planner groups them, picks each group's
backend (``stacked``: the MLP written out by hand; ``vmap``: any other model,
loss or metrics; scaling.training.packing.choose_backend) and logs why, then cuts each
group into packs that fit a per-device memory budget and that are numerous
enough to keep every worker busy: a pack on each of the cluster's slots at
least, never more than ``max_members`` members. With pruning on, units start cheapest first
(:func:`cheapest_first`).
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling.spec.schema import as_trial
from scaling.training.packing import can_pack, choose_backend, estimate_pack_bytes, pack_key


@dataclass(frozen=True)
class Unit:
    """One Ray task's worth of work."""

    trials: tuple
    """The trial configs it trains."""
    engine: str
    """'packed', 'single' or 'ddp'."""
    backend: str | None = None
    """A pack's backend: 'stacked' or 'vmap' (scaling.training.packing.choose_backend)."""


def plan(trials: list[dict], *, engine: str, slots: int, memory_bytes: int,
         max_members: int = 128, footprints: dict | None = None, problems: dict | None = None,
         log=print) -> list[Unit]:
    """Group ``trials`` into units.

    Parameters
    ----------
    trials : pending trial configs
    engine : 'packed' or 'single' (the config's choice or the --engine flag)
    slots : how many units the cluster runs at once (used to split big groups)
    memory_bytes : per-pack memory budget (scaling.training.packing.estimate_pack_bytes)
    max_members : the most trials in one pack
    footprints : model footprints measured on the workers, keyed by (task JSON, model JSON)
        (scaling.training.measure.footprint); a vmap group without one is measured here
    problems : what the workers found when they tried vmap on plug-in models, keyed the same
        way (None: they did not report, so the models are tried here)
    """
    if engine == "single":
        units = [Unit((t,), "single") for t in trials]
        return cheapest_first(units) if trials and as_trial(trials[0]).eval.get("prune") else units
    groups: dict[tuple, list[dict]] = {}
    for t in trials:
        groups.setdefault(pack_key(t), []).append(t)
    units: list[Unit] = []
    packed: dict[str, list] = {}  # backend -> [trials, packs, why]
    for key, members in groups.items():
        if len(members) == 1:  # a pack of one trains alone
            units.append(Unit(tuple(members), "single"))
            continue
        # members share the pack key, which holds every field can_pack compares: one stands for all
        ok, why = can_pack(members[:1], check_vmap=problems is None)
        if ok and problems and problems.get(key[:2]):
            ok, why = False, f"task {members[0].task['name']!r}: {problems[key[:2]]}"
        if not ok:
            log(f"engine: {len(members)} trials run single, not packed: {why}")
            units += [Unit((t,), "single") for t in members]
            continue
        backend, reason = choose_backend(members)
        footprint = (footprints or {}).get(key[:2])
        if backend == "vmap" and footprint is None and (big := too_big_to_measure(members[0])):
            log(f"engine: {len(members)} trials run single, not packed: {big}")
            units += [Unit((t,), "single") for t in members]
            continue
        packs = _split(members, slots, memory_bytes, max_members, footprint)
        units += [Unit(tuple(p), "packed", backend) for p in packs]
        tally = packed.setdefault(backend, [0, 0, reason])
        tally[0], tally[1] = tally[0] + len(members), tally[1] + len(packs)
    for backend, (n_trials, n_packs, reason) in packed.items():
        log(f"engine: packed, {n_trials} trials in {n_packs} packs; backend {backend}: {reason}")
    return cheapest_first(units) if trials and as_trial(trials[0]).eval.get("prune") else units


def cheapest_first(units: list[Unit]) -> list[Unit]:
    """Units in order of their members' step budgets, cheapest first (stable). With pruning on
    (scaling.training.prune), the large batch sizes of a group finish before the small ones reach
    their rungs, so the expensive members are ranked against the stored rest of their group."""
    return sorted(units, key=lambda u: max(as_trial(t).total_steps for t in u.trials))


DRIVER_PARAMS = 1 << 24
"""The most parameters of a model the planner builds in the driver to measure it (64 MiB in
float32); a larger one runs one trial per task, where packing gains little anyway."""


MAX_PARAMS = 1 << 33
"""The most parameters a trial's model may have (8.6 billion: 32 GiB of float32 weights, and as much
again for gradients, before any optimizer state). Every engine holds a whole model on one device
(data-parallel trials too), so a larger one fits none: refused before anything starts."""


def model_params(trial) -> int | None:
    """Parameters of ``trial``'s model, counted from its layer sizes for a built-in model (no
    torch) and on torch's ``meta`` device for a plug-in's own (nothing allocated either way); None
    where it cannot be counted so (cluster.worker.sizes)."""
    from cluster.worker.sizes import model_params as count

    return count(trial)


def check_model_size(cfg) -> None:
    """Refuse a sweep whose largest built-in model (its largest width and depth) has over MAX_PARAMS
    parameters, in one line naming the count, before Ray starts or anything is built."""
    from scaling.errors import ConfigError

    first = next(cfg.points(), None)
    widths, depths = cfg.possible("width"), cfg.possible("depth")
    if first is None or not widths or not depths or cfg.possible("model")[:1] == ("task",):
        return  # a plug-in's own model is the plug-in's: built on a worker, a failure is its trial's row
    trial = cfg.make({**first, "width": max(widths), "depth": max(depths)})
    n = model_params(trial)
    if n is not None and n > MAX_PARAMS:
        raise ConfigError("model", f"a {trial.model} of width {trial.width} and depth {trial.depth} has {n:,} "
                          f"parameters ({4 * n / 2**30:,.0f} GiB in float32), over the {MAX_PARAMS:,} one device "
                          "can train (every engine holds a trial's whole model, its gradients and optimizer "
                          "state on one device); lower model.width or model.depth")


def too_big_to_measure(trial) -> str | None:
    """Why ``trial``'s model is too large to build here to size its packs, or None: its
    parameters are counted without allocating them (``model_params``), so a width the validator
    allows never allocates its model in the driver. None too where they cannot be counted: the
    model is measured as before."""
    n = model_params(trial)
    if n is None or n <= DRIVER_PARAMS:
        return None
    t = as_trial(trial)
    return (f"model {t.model!r} of width {t.width} has {n:,} parameters ({4 * n / 2**30:,.1f} GiB in float32), "
            f"over the {DRIVER_PARAMS:,} a pack is sized for")


def _split(members: list[dict], slots: int, memory_bytes: int, max_members: int,
           footprint: dict | None = None) -> list[list[dict]]:
    """Cut one packable group into packs of similar size within the memory budget: at most
    ``max_members``, few enough members per pack that every slot gets one, and the most
    whose ``estimate_pack_bytes`` fits in ``memory_bytes`` (at least one)."""
    # sorted by step count, so members of a pack finish together (less idle vectorised work),
    # then by momentum (the stacked SGD update takes each run of equal momentum in one call)
    # with pruning, the seeds of a configuration side by side: a cut splits at most one of them
    # (scaling.training.prune stops a configuration's seeds together)
    prune = bool(members[0].eval.get("prune"))
    ordered = sorted(members, key=lambda t: (t.n_train, t.momentum, t.lr, t.seed) if prune
                     else (t.n_train, t.momentum, t.seed, t.lr))
    size = max(1, min(max_members, -(-len(members) // max(1, slots))))
    if estimate_pack_bytes(ordered[:size], footprint) > memory_bytes:
        lo, hi = 1, size  # the estimate grows with the members: the largest size that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if estimate_pack_bytes(ordered[:mid], footprint) <= memory_bytes else (lo, mid - 1)
        size = lo
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]
