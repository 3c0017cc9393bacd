"""What a sweep (and each of its units) finds already done in the store, and how a unit commits.

- :func:`resume_state`: one scan of a sweep's kept runs (:mod:`scaling.store.views`) gives the ids
  of the trials that need no run, as a sorted uint64 array, and stops a resume that would mix
  code or data versions unless told how (``--rerun-stale``, ``--accept-mixed``).
- :func:`unit_runs`: the kept runs of a unit's members, read from that unit's own commit
  events, merged parts and parts of an earlier release only (what a retried pack, or the
  driver after a unit failed, needs), so its cost does not grow with the sweep.
- :class:`Committer`: commits a pack's members as they finish, from a thread, each batch that
  finished together as one commit event (:meth:`scaling.store.Store.commit`).

No torch and no ray here.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

import numpy as np

import scaling.store.parts as parts_mod
from scaling.errors import StorageError, UserError
from scaling.spec.schema import row_versions
from scaling.store.uri import retrying
from scaling.store.views import StoreView


@dataclass(frozen=True)
class Resume:
    stored: int
    """Trials of the sweep stored with a status that counts as done (whatever their version)."""
    done_ids: np.ndarray
    """Sorted uint64 ids of the trials that need no run."""
    stale: int
    """Stored trials of another code or data version that will run again."""


def resume_state(store, sweep: str, statuses: tuple, now: tuple, *, rerun_stale: bool, accept_mixed: bool,
                 retry_s: float | None = None) -> Resume:
    """Read the sweep's kept runs once (see the module docstring)."""
    return retrying(lambda: _resume_state(store, sweep, statuses, now, rerun_stale, accept_mixed),
                    "read the stored trials", retry_s, retry_on=(OSError, StorageError))


def _resume_state(store, sweep, statuses, now, rerun_stale, accept_mixed) -> Resume:
    view = StoreView(store, [sweep])
    try:
        keep = "sweep = $1 AND status IN (SELECT unnest($2::VARCHAR[]))"
        current = "coalesce(code_version, '1') = $3 AND coalesce(data_version, '1') = $4"
        base, both = [sweep, list(statuses)], [sweep, list(statuses), now[0], now[1]]
        stored = view.sql(f"SELECT count(*) AS n FROM trials WHERE {keep}", base).column("n")[0].as_py()
        versions = view.sql(f"SELECT code_version, data_version, count(*) AS n FROM trials WHERE {keep} "
                            f"AND NOT ({current}) GROUP BY ALL", both).to_pylist()
        stale = sum(r["n"] for r in versions)
        if stale and not (rerun_stale or accept_mixed):
            old = sorted({row_versions(r["code_version"], r["data_version"]) for r in versions})
            text = ", ".join(f"code {c}/data {d}" for c, d in old)
            raise UserError(f"sweep {sweep!r}: {stale} of {stored} stored trials were made by {text}, this code "
                            f"and task make code {now[0]}/data {now[1]}; pass --rerun-stale to train them "
                            "again, or --accept-mixed to keep them beside new ones")
        done = view.id_array(keep, base) if accept_mixed else view.id_array(f"{keep} AND {current}", both)
    finally:
        view.close()
    return Resume(stored, done, stale if rerun_stale else 0)


def unit_runs(store, sweep: str, trial_ids) -> dict[str, tuple]:
    """{trial_id: (status, code_version, data_version)} of the runs readers keep for a unit's
    members, looking only where a unit's runs can be: its commit events, merged parts and
    parts of an earlier release."""
    prefix = parts_mod.unit_id(trial_ids) + "-"
    ids = set(trial_ids)

    def keep(stem: str) -> bool:
        return stem.startswith(prefix) or not parts_mod.paired(stem) or bool(parts_mod.MERGED.fullmatch(stem)) \
            or stem.split("-", 1)[0] in ids

    view = StoreView(store, [sweep], keep=keep, warn=False)
    try:
        return view.runs(sweep, list(trial_ids))
    finally:
        view.close()


class Committer:
    """Commits finished results from a background thread, in batches of what finished together.

    :meth:`put` queues a result (and raises if a commit already failed); :meth:`close` waits for
    every queued result to be committed and raises the first error. ``summaries`` lists what was
    committed: trial_id, status and the part name."""

    def __init__(self, store, sweep: str, unit: str):
        self.store, self.sweep, self.unit = store, sweep, unit
        self.summaries: list[dict] = []
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="scaling-commit", daemon=True)
        self._thread.start()

    def put(self, result: dict) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(result)

    def _run(self) -> None:
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(r is None for r in batch)
            batch = [r for r in batch if r is not None]
            if not batch or self.error is not None:
                continue
            try:
                name = self.store.commit(self.sweep, self.unit, batch)
            except BaseException as e:  # noqa: BLE001 (re-raised in the trainer's thread)
                self.error = e
                continue
            self.summaries += [{"trial_id": r["trial"]["trial_id"], "status": r["trial"]["status"], "part": name}
                               for r in batch]

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error


@dataclass(frozen=True)
class Settled:
    """Which stored runs count as done: a status in ``statuses`` and, unless ``versions`` is
    None, made by those (code, data) versions. The driver and the workers use the same rule."""

    statuses: tuple = ("ok", "diverged", "pruned", "failed")
    versions: tuple | None = None

    def __call__(self, stored: tuple) -> bool:
        status, code, data = stored
        return status in self.statuses and (self.versions is None or row_versions(code, data) == self.versions)


def stored_values(store, sweep: str, axes, retry_s: float | None = None) -> dict[str, list]:
    """{axis: its distinct stored values} for the sweep's kept runs, for each of ``axes`` the
    trials table has (what a config's new values are compared against)."""
    def read():
        view = StoreView(store, [sweep])
        try:
            names = set(view.sql("SELECT * FROM trials LIMIT 0").column_names)
            return {a: [v for v in view.sql(f'SELECT DISTINCT "{a}" AS v FROM trials WHERE sweep = $1',
                                            [sweep]).column("v").to_pylist() if v is not None]
                    for a in axes if a in names}
        finally:
            view.close()

    return retrying(read, "read the stored axis values", retry_s, retry_on=(OSError, StorageError))
