"""A sweep's trials as a stream: ids in one pass, pending Trials built only when they are needed.

:func:`scan` hashes every axis point of a sweep (:class:`scaling.spec.schema.PointIds`, a few
microseconds each, no Trial built) and keeps only sorted arrays of 64-bit ids: the sweep's
distinct trials, and those not yet done. :func:`pending_trials` walks the points again and
builds the Trial of each pending one, once, in the sweep's order, so a driver holds only the
trials it is about to run. A sweep of a million trials costs 8 MB of ids.

No torch and no ray here.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Iterator

import numpy as np

from scaling.errors import ConfigError
from scaling.spec.points import PointTrials
from scaling.spec.schema import PointIds

CHUNK = 20_000
"""Points hashed (and pending Trials built) at a time."""


@dataclass(frozen=True)
class Expansion:
    """What a sweep expands to, against what is already done."""

    total: int
    """Distinct trials of the sweep (random draws may repeat a point)."""
    pending_ids: np.ndarray
    """Sorted uint64 ids of the trials still to run."""
    chunks: dict = None
    """{index of a chunk of CHUNK points that holds a pending trial: the uint64 ids of its points,
    in order}. The others are skipped when the trials are built, and these are not hashed
    again (8 bytes a point: 80 MB at the 10M-trial limit, only while they are pending)."""

    @property
    def pending(self) -> int:
        return len(self.pending_ids)

    @property
    def done(self) -> int:
        return self.total - self.pending


def _chunks(it, size: int):
    it = iter(it)
    while chunk := list(islice(it, size)):
        yield chunk


def id_of(hex_id: str) -> int:
    return int(hex_id, 16)


def scan(cfg, done_ids: np.ndarray | None = None) -> Expansion:
    """Hash every point of ``cfg``; ``done_ids`` (sorted uint64) are trials that need no run."""
    ids = PointIds(cfg.make, tuple(cfg.axes))
    done = done_ids if done_ids is not None else np.empty(0, np.uint64)
    parts, chunks = [], {}
    for i, chunk in enumerate(_chunks(cfg.points(), CHUNK)):
        values = np.fromiter((int(ids(p), 16) for p in chunk), dtype=np.uint64, count=len(chunk))
        found = np.unique(values)
        parts.append(found)
        if not isin_sorted(found, done).all():
            chunks[i] = values
    every = np.unique(np.concatenate(parts)) if parts else np.empty(0, np.uint64)
    if not len(every):  # random draws only: a grid like this is refused when parsed
        raise ConfigError("axes.batch_size", "every drawn combination has batch_size > n_train, which "
                          "would repeat examples inside a batch; draw batch sizes up to n_train or "
                          "raise search.samples")
    return Expansion(total=len(every), pending_ids=every[~isin_sorted(every, done)], chunks=chunks)


def isin_sorted(values: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """Which of ``values`` are in ``sorted_ids`` (a sorted uint64 array)."""
    if not len(sorted_ids):
        return np.zeros(len(values), bool)
    idx = np.searchsorted(sorted_ids, values)
    idx[idx == len(sorted_ids)] = 0
    return sorted_ids[idx] == values


def pending_trials(cfg, expansion: Expansion) -> Iterator:
    """The Trials of the pending ids, each once, in the sweep's order, built as they are reached."""
    pending_ids = expansion.pending_ids
    if not len(pending_ids):
        return
    chunks = expansion.chunks or {}
    make = PointTrials(cfg.make, tuple(cfg.axes))  # cfg.make's trials, from a prototype per shape
    emitted = np.zeros(len(pending_ids), bool)
    left = len(pending_ids)
    for n, chunk in enumerate(_chunks(cfg.points(), CHUNK)):
        values = chunks.get(n)
        if values is None:
            continue
        idx = np.searchsorted(pending_ids, values)
        idx[idx == len(pending_ids)] = 0
        hits = np.flatnonzero(pending_ids[idx] == values)
        first = np.sort(np.unique(idx[hits], return_index=True)[1])  # each id's first point in the chunk
        new = hits[first[~emitted[idx[hits[first]]]]]  # ... not emitted by an earlier chunk
        emitted[idx[new]] = True
        left -= len(new)
        for i, value in zip(new.tolist(), values[new].tolist()):
            trial = make(chunk[i])
            object.__setattr__(trial, "_id", f"{value:016x}")
            yield trial
        if not left:
            return
