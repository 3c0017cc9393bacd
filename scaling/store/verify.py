"""Check and repair a results store (the layout is in :mod:`scaling.store` and :mod:`scaling.store.parts`).

``verify(root)`` lists every part of every sweep and reports each problem on one line
naming the file:

- a part that cannot be read, or whose columns clash with the declared schema, or a part
  that is a symbolic link (readers skip all three);
- a commit event whose trials part has no readable curves part (its trials count as not run);
- a committed run (``ok`` or ``diverged``) with no curve rows of its ``run_id``;
- a second copy of the run readers keep (a problem), and, as a note, a trial's runs that a
  retry or rerun superseded (readers keep one by the rule; compaction drops the others);
- curve points stored twice inside one part;
- rows that name another sweep than their folder;
- a sweep whose kept runs were made by more than one ``code_version``;
- once older than ``stale_s``: curves with no trial row, temporary files, interrupted
  compactions.

``repair(root)`` moves files into ``ROOT/<sweep>/quarantine/<table>/`` and never deletes one:
broken parts, stale temporary files and orphan curves, parts whose every run lost to another
(with their curves when nothing else needs them), and it finishes interrupted compactions. It
never touches a folder that resolves outside the store (a symlinked sweep folder), and moves a
part of an earlier release only if its bytes are still those it checked (commit events are
never rewritten, so theirs cannot change).

No torch and no ray here: ``scaling verify`` runs wherever pyarrow does.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from dataclasses import dataclass

import duckdb
import pyarrow.fs as pafs

import scaling.store.parts as parts_mod
from scaling.errors import StoreError
from scaling.spec.schema import CURVES_SCHEMA, TRIALS_SCHEMA
from scaling.store.compaction import (
    TARGET_ROWS,
    CompactReport,
    Merge,
    _vanished,
    finish_intents,
    read_intent,
)
from scaling.store.compaction import compact as _compact
from scaling.store.lease import Busy, Lease
from scaling.store.parts import PROBLEMS, Finding
from scaling.store.views import WINNER_ORDER, create_source
from scaling.store.writer import QUARANTINE, Store

STALE_S = 600.0
"""Age (seconds) after which a temporary file, orphan curves or an intent is stale."""

KEYS = parts_mod.KEYS


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` found in one store."""

    root: str
    sweeps: tuple[str, ...]
    parts: int
    """Parquet parts checked."""
    problems: tuple[Finding, ...]
    info: tuple[Finding, ...]
    """Harmless findings: parts of an older version, fresh temporary files, other files."""

    @property
    def ok(self) -> bool:
        return not self.problems


# ---- verify -----------------------------------------------------------------------------

def verify(root, *, stale_s: float = STALE_S) -> VerifyReport:
    """Check every part of every sweep under ``root``; see the module docstring."""
    store = _store(root)
    sweeps, problems, info, n = store.sweeps(), [], [], 0
    for name in sweeps:
        for attempt in range(5):
            sw = _Sweep(store, name)
            try:
                found = list(sw.findings(stale_s))
                break
            except duckdb.IOException as e:  # a compaction removed a part between listing and reading
                if not _vanished(e) or attempt == 4:
                    raise
        n += sum(len(p) for p in sw.listing.parts.values()) + len(sw.listing.links)
        for f in found:
            (problems if f.kind in PROBLEMS else info).append(f)
    return VerifyReport(root=store.uri, sweeps=tuple(sweeps), parts=n, problems=tuple(problems), info=tuple(info))


class _Sweep:
    """One sweep's listing, footers and the facts verify and repair need (from SQL over its parts)."""

    def __init__(self, store: Store, name: str):
        self.store, self.name = store, name
        self.sp = parts_mod.readable_parts(store, name)
        self.listing = self.sp.listing
        self.heads = {t: parts_mod.footers(store, list(self.listing.parts[t].values()), t) for t in ("trials", "curves")}
        self._facts = None

    @property
    def facts(self) -> dict:
        if self._facts is None:
            self._facts = _facts(self.store, self.name, self.sp)
        return self._facts

    def findings(self, stale_s: float):
        now = time.time_ns()
        for table, entries in self.listing.parts.items():
            for e in entries.values():
                f = self.heads[table][e.path]
                if f.problem and f.kind != "vanished":
                    yield Finding(e.path, f.kind, f.problem)
                elif f.note:
                    yield Finding(e.path, "new-columns" if f.extra else "old-schema", f.note)
        for e in self.listing.links:
            yield Finding(e.path, "symlink", "a symbolic link; readers never follow one out of the store")
        trials = self.listing.parts["trials"]
        for stem, e in trials.items():
            if parts_mod.paired(stem) and not self.heads["trials"][e.path].problem and stem not in self.sp.curves:
                yield Finding(e.path, "uncommitted", "its curves part is missing or unreadable, so its trials "
                              "count as not run (a resume runs them again)")
        for e in self.listing.tmp:
            stale = _age(now, e.mtime_ns) > stale_s
            yield Finding(e.path, "stale-tmp" if stale else "fresh-tmp",
                          "temporary file left by a killed writer" if stale else "temporary file of a write in progress")
        for e in self.listing.other:
            yield Finding(e.path, "other-file", "not a Parquet part; readers ignore it")
        for table, e in self.listing.intents:
            intent = read_intent(self.store, e.path) or {}
            merged = intent.get("merged")
            if _age(now, e.mtime_ns) > stale_s:
                yield Finding(e.path, "compaction", f"interrupted compaction into {merged!r}; run `scaling compact` "
                              "or `scaling verify --repair` to finish it")
            else:
                yield Finding(e.path, "fresh-compaction", f"a compaction into {merged!r} in progress")
        for stem, e in self.listing.parts["curves"].items():
            if parts_mod.paired(stem) and stem not in trials and not self.heads["curves"][e.path].problem:
                stale = _age(now, e.mtime_ns) > stale_s
                yield Finding(e.path, "orphan-curves" if stale else "fresh-orphan",
                              "curves of a commit event whose trials part was never written: "
                              + ("a writer killed halfway; readers ignore them" if stale else "a commit in progress"))
        if not self.sp.trials and not self.sp.legacy_curves:
            return
        facts = self.facts
        for part, n, best, same in facts["losers"]:
            if same:  # a second copy of the very run readers keep: compaction left it twice
                yield Finding(part, "duplicate", f"{n} trial(s) stored again in {best.rsplit('/', 1)[1]}, "
                              "identically; readers keep one copy (`scaling compact` or `--repair` drops it)")
            else:  # --retry-failed, --rerun-stale, two drivers: the normal state until compaction
                yield Finding(part, "superseded", f"{n} trial(s) have a run in {best.rsplit('/', 1)[1]} that "
                              "the rule prefers (a retry or a rerun); readers keep that one, compaction drops these")
        for part, n, example in facts["curve_dups"]:
            yield Finding(part, "duplicate-curves", f"{n} curve point(s) stored twice in this part (e.g. trial "
                          f"{example}); readers would show them twice; `scaling compact` keeps one of each")
        for part, others in facts["wrong_sweep"]:
            yield Finding(part, "wrong-sweep", f"rows name the sweep(s) {sorted(others, key=str)} but the part is in "
                          f"the folder of {self.name!r}; readers file them there")
        for part, n, example in facts["no_curves"]:
            yield Finding(part, "no-curves", f"{n} committed run(s) have no curve rows (e.g. trial {example}); "
                          "its curves were lost after it committed")
        if len(facts["versions"]) > 1:
            yield Finding(self.listing.base, "mixed-versions",
                          f"the sweep's trials were made by code versions {sorted(facts['versions'])}; results of "
                          "different training arithmetic are mixed (rerun with --rerun-stale to redo the old ones)")
        for part, ids, all_orphans, mtime in facts["legacy_orphans"]:
            stale = _age(now, mtime) > stale_s
            yield Finding(part, "orphan-curves" if stale else "fresh-orphan",
                          f"curves of {len(ids)} trial(s) with no trial row (e.g. {sorted(ids, key=str)[0]}): "
                          + ("a trial that crashed before committing" if stale else "a trial being written")
                          + "; readers ignore them")


def _age(now_ns: int, mtime_ns: int | None) -> float:
    return float("inf") if mtime_ns is None else (now_ns - mtime_ns) / 1e9


def _facts(store: Store, name: str, sp) -> dict:
    """Duplicates, wrong-sweep rows, runs without curves, code versions and orphan legacy curves of
    one sweep, computed by DuckDB over its committed parts."""
    local = isinstance(store.fs, pafs.LocalFileSystem)
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        create_source(con, store, "_t_src", TRIALS_SCHEMA, [(e.path, f.schema.names) for e, f in sp.trials],
                      local, part=True)
        pairs = {e.path: sp.curves[e.stem][0].path for e, _ in sp.trials if parts_mod.paired(e.stem)}
        create_source(con, store, "_c_pairs", CURVES_SCHEMA,
                      [(c, sp.curves[c.rsplit("/", 1)[1][:-8]][1].schema.names) for c in pairs.values()],
                      local, part=True)
        create_source(con, store, "_c_legacy", CURVES_SCHEMA,
                      [(e.path, f.schema.names) for e, f in sp.legacy_curves], local, part=True)
        con.execute("CREATE TEMP TABLE _pairmap AS SELECT unnest($1::VARCHAR[]) AS _part, "
                    "unnest($2::VARCHAR[]) AS _cpart", [list(pairs), list(pairs.values())])
        con.execute(f"CREATE TEMP TABLE _ranked AS SELECT sweep, trial_id, run_id, status, code_version, _part, "
                    f"row_number() OVER w AS rn, first_value(_part) OVER w AS best, first_value(run_id) OVER w "
                    f"AS best_run FROM _t_src WINDOW w AS (PARTITION BY sweep, trial_id ORDER BY {WINNER_ORDER})")
        losers = con.sql("SELECT _part, count(*), min(best), bool_and(run_id IS NOT DISTINCT FROM best_run) "
                         "FROM _ranked WHERE rn > 1 GROUP BY _part ORDER BY _part").fetchall()
        wrong = con.sql("SELECT _part, list(DISTINCT sweep) FROM _t_src WHERE sweep IS DISTINCT FROM $1 "
                        "GROUP BY _part ORDER BY _part", params=[name]).fetchall() if name else []
        no_curves = con.sql(
            "WITH c AS (SELECT DISTINCT run_id, _part AS _cpart FROM _c_pairs), "
            "l AS (SELECT DISTINCT sweep, trial_id, run_id FROM _c_legacy) "
            "SELECT t._part, count(*), min(t.trial_id) FROM _ranked t LEFT JOIN _pairmap m USING (_part) "
            "WHERE t.status IN ('ok', 'diverged', 'pruned') AND CASE WHEN m._cpart IS NOT NULL THEN NOT EXISTS "
            "(SELECT 1 FROM c WHERE c.run_id = t.run_id AND c._cpart = m._cpart) ELSE NOT EXISTS "
            "(SELECT 1 FROM l WHERE l.sweep = t.sweep AND l.trial_id = t.trial_id AND l.run_id = t.run_id) END "
            "GROUP BY t._part ORDER BY t._part").fetchall()
        curve_dups = con.sql(
            "SELECT _part, sum(n - 1), min(trial_id) FROM (SELECT _part, trial_id, count(*) AS n FROM "
            "(SELECT * FROM _c_pairs UNION ALL SELECT * FROM _c_legacy) GROUP BY _part, sweep, trial_id, run_id, "
            "step HAVING count(*) > 1) GROUP BY _part ORDER BY _part").fetchall()
        versions = {v for (v,) in con.sql("SELECT DISTINCT coalesce(code_version, '1') FROM _ranked "
                                          "WHERE rn = 1").fetchall()}
        orphans = con.sql("SELECT c._part, list(DISTINCT c.trial_id) FILTER (WHERE t.trial_id IS NULL), "
                          "bool_and(t.trial_id IS NULL) FROM _c_legacy c LEFT JOIN (SELECT DISTINCT sweep, "
                          "trial_id FROM _t_src) t USING (sweep, trial_id) GROUP BY c._part "
                          "HAVING bool_or(t.trial_id IS NULL) ORDER BY 1").fetchall()
    finally:
        con.close()
    mtimes = {e.path: e.mtime_ns for e in sp.listing.parts["curves"].values()}
    return {"losers": losers, "wrong_sweep": wrong, "no_curves": no_curves, "versions": versions,
            "curve_dups": curve_dups,
            "legacy_orphans": [(p, ids, all_o, mtimes.get(p)) for p, ids, all_o in orphans]}


# ---- repair --------------------------------------------------------------------------------

def repair(root, *, stale_s: float = STALE_S) -> list[tuple[str, str]]:
    """Move bad parts and leftovers to ``<sweep>/quarantine/``; return the (from, to) of each move."""
    store = _store(root)
    moved = []
    for name in store.sweeps():
        if not _inside(store, store.sweep_dir(name)):
            continue
        try:
            lease = Lease(store, name)  # never while a compaction of the sweep runs
            lease.acquire()
        except Busy:
            continue
        try:
            sw = _Sweep(store, name)
            for path, folder, digest in _repair_plan(sw, stale_s):
                dst = _quarantine(store, sw.listing.base, folder, path, digest)
                if dst:
                    moved.append((path, dst))
        finally:
            lease.release()
    return moved


def outside(root) -> list[str]:
    """Sweep folders that resolve outside the store (symlinks): repair leaves them alone."""
    store = _store(root)
    return [store.sweep_dir(n) for n in store.sweeps() if not _inside(store, store.sweep_dir(n))]


def _inside(store: Store, folder: str) -> bool:
    """Whether ``folder`` (and the folders repair writes in) resolve inside the store's root."""
    if not store.local:
        return True
    root = os.path.realpath(store.root)
    for path in (folder, f"{folder}/{QUARANTINE}", f"{folder}/trials", f"{folder}/curves"):
        real = os.path.realpath(path)
        if real != root and not real.startswith(root.rstrip("/") + "/"):
            return False
    return True


def _repair_plan(sw: _Sweep, stale_s: float) -> list[tuple[str, str, str]]:
    """(path, quarantine folder, sha256 or '' for no check) of each file to move, in order."""
    now, plan, store = time.time_ns(), [], sw.store
    for table, e in sw.listing.intents:  # finish interrupted compactions first (deletes only their leftovers)
        if _age(now, e.mtime_ns) > stale_s:
            intent = read_intent(store, e.path)
            from scaling.store.compaction import _finish

            if intent is None or not _finish(store, sw.name, e.path, intent, mtime_ns=e.mtime_ns, stale_s=stale_s):
                plan.append((e.path, table, ""))
    if any(_age(now, e.mtime_ns) > stale_s for _, e in sw.listing.intents):
        sw = _Sweep(store, sw.name)
    for table, entries in sw.listing.parts.items():
        for e in entries.values():
            f = sw.heads[table][e.path]
            if f.problem and f.kind != "vanished":
                plan.append((e.path, table, _legacy_digest(store, e)))
    plan += [(e.path, "trials" if "/trials/" in e.path else "curves", "") for e in sw.listing.links]
    trials = sw.listing.parts["trials"]
    for stem, e in trials.items():
        if parts_mod.paired(stem) and not sw.heads["trials"][e.path].problem and stem not in sw.sp.curves:
            plan.append((e.path, "trials", ""))
    plan += [(e.path, "tmp", "") for e in sw.listing.tmp if _age(now, e.mtime_ns) > stale_s]
    for stem, e in sw.listing.parts["curves"].items():
        if parts_mod.paired(stem) and stem not in trials and _age(now, e.mtime_ns) > stale_s:
            plan.append((e.path, "curves", ""))
    if sw.sp.trials or sw.sp.legacy_curves:
        plan += _redundant(sw)
        for part, _, all_orphans, mtime in sw.facts["legacy_orphans"]:
            if all_orphans and _age(now, mtime) > stale_s:
                plan.append((part, "curves", _legacy_digest(store, _entry(sw, part))))
    seen: set = set()
    return [step for step in plan if not (step[0] in seen or seen.add(step[0]))]


def _redundant(sw: _Sweep) -> list[tuple[str, str, str]]:
    """Trials parts whose every row lost to a run readers keep, each with its curves when nothing
    else needs them: the pair's own curves part, or a legacy curves part of the same name whose
    rows are all of runs readers ignore or held by another curves part that stays."""
    facts, store, plan = sw.facts, sw.store, []
    rows = {e.path: f.rows for e, f in sw.sp.trials}
    losing = {part for part, n, _, _ in facts["losers"] if n == rows.get(part)}
    if not losing:
        return []
    legacy = {e.stem: (e, f) for e, f in sw.sp.legacy_curves}
    keep_runs, held = _legacy_runs(sw, losing)
    for e, _ in sw.sp.trials:
        if e.path not in losing:
            continue
        plan.append((e.path, "trials", _legacy_digest(store, e)))
        if parts_mod.paired(e.stem):
            plan.append((sw.sp.curves[e.stem][0].path, "curves", ""))
        elif e.stem in legacy:
            c = legacy[e.stem][0]
            rows_c = held.pop(c.path, [])
            if all(r not in keep_runs or held_elsewhere(held, r) for r in rows_c):
                plan.append((c.path, "curves", _legacy_digest(store, c)))
            else:
                held[c.path] = rows_c
    return plan


def held_elsewhere(held: dict, key) -> bool:
    return any(key in rows for rows in held.values())


def _legacy_runs(sw: _Sweep, losing: set):
    """(runs readers keep whose curves they take from legacy curves parts, i.e. whose kept trial row
    is in a legacy part; {legacy curves path: its run keys})."""
    if not sw.sp.legacy_curves:
        return set(), {}
    con = duckdb.connect(":memory:")
    try:
        local = isinstance(sw.store.fs, pafs.LocalFileSystem)
        create_source(con, sw.store, "_t_src", TRIALS_SCHEMA, [(e.path, f.schema.names) for e, f in sw.sp.trials],
                      local, part=True)
        create_source(con, sw.store, "_c_legacy", CURVES_SCHEMA,
                      [(e.path, f.schema.names) for e, f in sw.sp.legacy_curves], local, part=True)
        kept = [(s, tid, run) for s, tid, run, part in con.sql(
            f"SELECT sweep, trial_id, run_id, _part FROM _t_src QUALIFY row_number() OVER (PARTITION BY sweep, "
            f"trial_id ORDER BY {WINNER_ORDER}) = 1").fetchall()
            if not parts_mod.paired(part.rsplit("/", 1)[1][:-len(".parquet")])]
        held: dict = {}
        for part, s, tid, run in con.sql("SELECT DISTINCT _part, sweep, trial_id, run_id FROM _c_legacy").fetchall():
            held.setdefault(part, []).append((s, tid, run))
    finally:
        con.close()
    return set(kept), held


def _entry(sw: _Sweep, path: str):
    for entries in sw.listing.parts.values():
        for e in entries.values():
            if e.path == path:
                return e
    return parts_mod.Entry(path, path.rsplit("/", 1)[1], None, None)


def _legacy_digest(store: Store, e) -> str:
    """SHA-256 of a part whose name a writer may reuse (an earlier release's); '' for commit events
    and merged parts, which are never rewritten."""
    return "" if parts_mod.paired(e.stem) else (_digest(store, e.path) or "")


def _quarantine(store: Store, base: str, folder: str, path: str, digest: str) -> str | None:
    """Move ``path`` to ``base/quarantine/folder/`` unless its bytes changed; return where it went."""
    if digest and _digest(store, path) != digest:
        return None  # replaced (or moved) since it was checked: leave the newer file alone
    target_dir = f"{base}/{QUARANTINE}/{folder}"
    name = path.rsplit("/", 1)[1]
    target = f"{target_dir}/{name}"
    try:
        store.fs.create_dir(target_dir, recursive=True)
        while store.fs.get_file_info(target).type != pafs.FileType.NotFound:
            target = f"{target_dir}/{uuid.uuid4().hex[:8]}-{name}"
        if store.local and isinstance(store.fs, pafs.LocalFileSystem) and os.path.islink(path):
            os.rename(path, target)  # the link itself, never what it points to
        else:
            store.fs.move(path, target)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StoreError(f"cannot move {path!r} to quarantine: {e}") from None
    return target


def _digest(store: Store, path: str) -> str | None:
    try:
        with store.fs.open_input_stream(path) as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


# ---- compact -------------------------------------------------------------------------------

def compact(root, sweep: str | None = None, *, target_rows: int = TARGET_ROWS, **kw) -> CompactReport:
    """Merge a store's small parts (see :mod:`scaling.store.compaction`)."""
    return _compact(_store(root), sweep, target_rows=target_rows, **kw)


def _store(root) -> Store:
    return root if isinstance(root, Store) else Store(str(root))


__all__ = ["verify", "repair", "compact", "VerifyReport", "CompactReport", "Finding", "Merge", "finish_intents"]
