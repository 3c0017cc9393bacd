"""Plan pending trials into work units: packs of trials trained together, or single trials.

Trials that share a pack key (task, model, optimizer, batch size) can
train as one vectorised model (scaling.packed). The planner groups them, then
cuts each group into packs that fit a per-device memory budget and that are
numerous enough to keep every worker busy: a pack on each of the cluster's
slots at least, never more than ``max_members`` members.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling.packing import can_pack, estimate_pack_bytes, pack_key


@dataclass(frozen=True)
class Unit:
    """One Ray task's worth of work."""

    trials: tuple
    """The trial configs it trains."""
    engine: str
    """'packed' or 'single'."""


def plan(trials: list[dict], *, engine: str, slots: int, memory_bytes: int,
         max_members: int = 128, log=print) -> list[Unit]:
    """Group ``trials`` into units.

    Parameters
    ----------
    trials : pending trial configs
    engine : 'packed' or 'single' (the config's choice or the --engine flag)
    slots : how many units the cluster runs at once (used to split big groups)
    memory_bytes : per-pack memory budget (scaling.packed.estimate_pack_bytes)
    max_members : the most trials in one pack
    """
    if engine == "single":
        return [Unit((t,), "single") for t in trials]
    groups: dict[tuple, list[dict]] = {}
    for t in trials:
        groups.setdefault(pack_key(t), []).append(t)
    units: list[Unit] = []
    fallback = 0
    for members in groups.values():
        ok, why = can_pack(members)
        if not ok:
            fallback += len(members)
            log(f"engine: {len(members)} trials run single, not packed: {why}")
            units += [Unit((t,), "single") for t in members]
            continue
        units += [Unit(tuple(p), "packed") for p in _split(members, slots, memory_bytes, max_members)]
    if fallback == 0 and units:
        n_packs = sum(u.engine == "packed" for u in units)
        log(f"engine: packed, {len(trials)} trials in {n_packs} packs")
    return units


def _split(members: list[dict], slots: int, memory_bytes: int, max_members: int) -> list[list[dict]]:
    """Cut one packable group into packs of similar size within the memory budget."""
    per_member = max(1, estimate_pack_bytes(members) // len(members))
    by_memory = max(1, memory_bytes // per_member)
    size = max(1, min(max_members, by_memory, -(-len(members) // max(1, slots))))
    # sort by step count so members of a pack finish together (less idle vectorised work)
    ordered = sorted(members, key=lambda t: (t.n_train, t.seed, t.lr))
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]
