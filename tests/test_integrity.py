"""Store integrity: verify, repair (quarantine, never delete), compact, and readers that skip bad parts.

Stores are built with real results through ``Store.write_result`` (one commit event per
trial: ``<trial_id>-<run_id>.parquet`` in curves/ and trials/) and corrupted for real. A
compaction is "killed" by a filesystem that stops working before its k-th change (every
call after that fails too, so no cleanup runs, as after SIGKILL); two kill points are also
checked with a real ``os._exit`` in a subprocess.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import scaling.store.verify as integrity
from scaling.spec.schema import as_trial
from scaling.errors import StoreError
from scaling.cli import register
from scaling.store.verify import repair, verify
from scaling.store.writer import Store
from scaling.store.views import load_tables

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
TRIAL = {"task": {"name": "digits"}, "model": {"name": "mlp", "width": 8, "depth": 1},
         "n_train": 100, "batch_size": 16, "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0,
         "seed": 0, "budget": {"epochs": 1.0}, "eval": {"points": 3}}

def config_columns(trial) -> dict:
    """The flat columns of a trial (a Trial or its canonical config dict)."""
    return as_trial(trial).columns()


def result(seed=0, acc=0.5, end=T0, n_curve=3, run_id=None):
    """One trial's rows in the format the runner stores (see tests/test_store.py)."""
    trial = {**TRIAL, "seed": seed}
    row = {**config_columns(trial), "run_id": run_id or uuid.uuid4().hex, "status": "ok", "error": None, "steps": 7,
           "examples_seen": 112, "n_params": 610, "train_loss": 0.1, "test_loss": 0.2, "test_acc": acc,
           "wall_s": 1.0, "host": "h", "start_time": end, "end_time": end, "version": "t", "engine": "single"}
    curves = [{"step": s, "epoch": s / 7, "examples_seen": 16 * s, "train_loss": 1.0 / (s + 1),
               "test_loss": 1.0, "test_acc": acc, "wall_s": 0.1 * s} for s in range(n_curve)]
    return {"trial": row, "curves": curves}


def build(root: Path, n: int = 5, sweep: str = "s") -> Store:
    store = Store(str(root))
    for seed in range(n):
        store.write_result(sweep, result(seed, acc=0.1 * seed, end=T0 + timedelta(seconds=seed)))
    return store


RACER_RUN = "0" * 32
"""The smallest run id: of runs alike in status and versions, the rule keeps the smallest run_id."""


def tid_of(seed: int) -> str:
    return config_columns({**TRIAL, "seed": seed})["trial_id"]


def part_of(root, seed: int, table: str = "trials", sweep: str = "s") -> str:
    """The file name of the commit event that stored a trial (its first, if several)."""
    found = sorted(p.name for p in (Path(root) / sweep / table).glob(f"{tid_of(seed)}-*.parquet"))
    assert found, f"no part of seed {seed} in {table}"
    return found[0]


def add_reruns(store: Store, sweep: str = "s", copy: bool = True) -> None:
    """Two drivers raced on seed 0 (the racer's run wins by the rule: its run_id is the smallest),
    and seed 1 was copied under another part name (an identical run: the copy sorts last)."""
    store.write_result(sweep, result(0, acc=0.9, end=T0 + timedelta(hours=1), n_curve=2, run_id=RACER_RUN),
                       part="racer")
    if not copy:
        return
    trials, curves = (Path(store.root) / sweep / t for t in ("trials", "curves"))
    shutil.copy(trials / part_of(store.root, 1, sweep=sweep), trials / "zcopy.parquet")
    shutil.copy(curves / part_of(store.root, 1, "curves", sweep=sweep), curves / "zcopy.parquet")


def add_old_part(store: Store, sweep: str = "s") -> None:
    """A part written by an older version, without the engine and n_params columns."""
    store.write_result(sweep, result(50, end=T0), part="old")
    path = Path(store.root) / sweep / "trials" / "old.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["engine", "n_params"]), path)


def rows(root) -> tuple[list, list]:
    """What readers see: trials and curves as sorted lists of rows."""
    trials, curves = load_tables(str(root))
    key = lambda r: tuple((v is None, str(v)) for v in r.values())  # noqa: E731
    return sorted(trials.to_pylist(), key=key), sorted(curves.to_pylist(), key=key)


def parts(root, sweep="s", table="trials") -> list[str]:
    return sorted(p.name for p in (Path(root) / sweep / table).glob("*.parquet") if not p.name.startswith("."))


def compact(root, *args, **kw):
    """A compaction that may finish the intents of the killed ones at once (in real use they wait
    until they are older than ten minutes, since their compaction might still be running)."""
    return integrity.compact(root, *args, **{"stale_s": 0.0, **kw})


def contents(root) -> set[str]:
    """Digests of the store's files (not compaction leases, which a killed compaction leaves and the
    next one that finds its process gone removes)."""
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(root).rglob("*")
            if p.is_file() and not p.name.startswith(".lease-compact-")}


def age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def kinds(report) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in (*report.problems, *report.info):
        out.setdefault(f.kind, set()).add(Path(f.path).name)
    return out


# ---- a filesystem that can be killed --------------------------------------------------

class Killed(Exception):
    """The simulated process died."""


class Hooked(pafs.FileSystemHandler):
    """Delegates to a real filesystem and calls ``hook(n, op, path)`` before the n-th change.
    Once the hook raises, every later call raises too: nothing runs after a kill."""

    def __init__(self, fs, hook):
        self.fs, self.hook, self.changes, self.dead = fs, hook, 0, False

    def _call(self, op=None, path=""):
        if self.dead:
            raise Killed("dead")
        # the lease's renewals come on a timer (every ttl/4 s): counting them would make the n-th
        # change depend on how slow the machine is, so a kill aimed at one change would hit another
        if op and threading.current_thread().name != "scaling-lease":
            self.changes += 1
            try:
                self.hook(self.changes, op, path)
            except BaseException:
                self.dead = True
                raise

    def get_type_name(self): return "hooked"
    def equals(self, other): return self is other
    def normalize_path(self, path): return self.fs.normalize_path(path)
    def get_file_info(self, paths): self._call(); return self.fs.get_file_info(paths)
    def get_file_info_selector(self, sel): self._call(); return self.fs.get_file_info(sel)
    def create_dir(self, path, recursive): self._call("create_dir", path); self.fs.create_dir(path, recursive=recursive)
    def delete_dir(self, path): self._call("delete_dir", path); self.fs.delete_dir(path)
    def delete_dir_contents(self, path, missing_dir_ok=False):
        self._call("delete_dir", path); self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)
    def delete_root_dir_contents(self): self._call("delete_dir", "/"); self.fs.delete_root_dir_contents()
    def delete_file(self, path): self._call("delete_file", path); self.fs.delete_file(path)
    def move(self, src, dest): self._call("move", dest); self.fs.move(src, dest)
    def copy_file(self, src, dest): self._call("copy", dest); self.fs.copy_file(src, dest)
    def open_input_stream(self, path): self._call(); return self.fs.open_input_stream(path)
    def open_input_file(self, path): self._call(); return self.fs.open_input_file(path)
    def open_append_stream(self, path, metadata): self._call("open", path); return self.fs.open_append_stream(path)

    def open_output_stream(self, path, metadata):
        self._call("open", path)
        return pa.PythonFile(_Writer(self, self.fs.open_output_stream(path), path), mode="w")


class _Writer:
    """An output stream whose write is a change too; a kill there leaves half the bytes."""

    def __init__(self, owner, out, path):
        self.owner, self.out, self.path, self.closed = owner, out, path, False

    def write(self, data):
        data = bytes(data)
        try:
            self.owner._call("write", self.path)
        except Killed:
            self.out.write(data[: len(data) // 2])
            raise
        return self.out.write(data)

    def flush(self):
        self.out.flush()

    def close(self):
        if not self.closed:
            self.closed = True
            self.out.close()


def hooked_store(root, hook) -> Store:
    store = Store(str(root))
    store.fs = pafs.PyFileSystem(Hooked(pafs.LocalFileSystem(), hook))
    return store


def kill_at(k, action=None):
    def hook(n, op, path):
        if n == k:
            (action or _raise)()
    return hook


def kill_at_first(op, fragment, action=None):
    """A hook that kills at the first change ``op`` of a path containing ``fragment``."""
    def hook(n, seen_op, path):
        if seen_op == op and fragment in path:
            (action or _raise)()
    return hook


def _raise():
    raise Killed("killed")


def count_changes(root) -> int:
    return len(changes(root))


def changes(root) -> list[tuple[str, str]]:
    """(op, path) of every change a compaction of ``root`` makes, in order."""
    seen = []
    compact(hooked_store(root, lambda n, op, path: seen.append((op, path))))
    return seen


def events(seen: list[tuple[str, str]]) -> list[tuple]:
    """Each change as ("change", i) (the i-th that is not a write of bytes) or ("write", f, j) (the
    j-th write into the f-th file written): how many writes a file takes may vary between runs."""
    out, files, writes, other = [], {}, {}, 0
    for op, path in seen:
        if op == "write":
            f = files.setdefault(path, len(files))
            writes[f] = writes.get(f, 0) + 1
            out.append(("write", f, writes[f]))
        else:
            other += 1
            out.append(("change", other))
    return out


def kill_points(root) -> list[tuple]:
    """Every change but the writes of bytes, and the first and second write into each file."""
    return [e for e in events(changes(root)) if e[0] == "change" or e[2] <= 2]


def kill_on(event, action=None):
    """A hook that kills the process before ``event`` (see :func:`events`)."""
    seen = []

    def hook(n, op, path):
        seen.append((op, path))
        if events(seen)[-1] == event:
            (action or _raise)()
    return hook


# ---- verify ------------------------------------------------------------------------------

def test_clean_store_verifies_and_old_parts_are_only_noted(tmp_path):
    store = build(tmp_path)
    add_old_part(store)
    report = verify(str(tmp_path))
    assert report.ok, report.problems
    assert report.parts == 12 and report.sweeps == ("s",)
    assert kinds(report) == {"old-schema": {"old.parquet"}}
    assert "engine" in report.info[0].message


def corrupt(tmp_path) -> dict[str, str]:
    """Build a store and break it in every way verify knows; return {what: file name}."""
    store = build(tmp_path, n=6)
    add_reruns(store)
    trials, curves = tmp_path / "s" / "trials", tmp_path / "s" / "curves"
    names = {"truncated": part_of(tmp_path, 2), "garbage": part_of(tmp_path, 3, "curves"),
             "uncommitted": part_of(tmp_path, 3), "seed0": part_of(tmp_path, 0)}
    (trials / names["truncated"]).write_bytes((trials / names["truncated"]).read_bytes()[:50])
    (curves / names["garbage"]).write_bytes(os.urandom(300))
    bad = pq.read_table(trials / part_of(tmp_path, 4))
    bad = bad.set_column(bad.column_names.index("steps"), "steps", pa.array(["seven"]))
    pq.write_table(bad, trials / "wrongtype.parquet")
    pq.write_table(bad.drop_columns(["trial_id"]), trials / "nokey.parquet")
    store.write_table("s", "curves", "orphan", [{**result(9)["curves"][0], "trial_id": "f" * 16, "run_id": "r"}])
    age(curves / "orphan.parquet", 3600)
    (trials / ".tmp-dead-x.parquet").write_bytes(b"half")
    age(trials / ".tmp-dead-x.parquet", 3600)
    (curves / ".tmp-live-y.parquet").write_bytes(b"half")
    (trials / "README").write_text("notes")
    return {**names, "wrongtype": "wrongtype.parquet", "nokey": "nokey.parquet", "orphan": "orphan.parquet",
            "stale": ".tmp-dead-x.parquet", "fresh": ".tmp-live-y.parquet", "copy": "zcopy.parquet"}


def test_verify_names_every_problem_on_one_line(tmp_path):
    names = corrupt(tmp_path)
    report = verify(str(tmp_path))
    assert not report.ok
    found = kinds(report)
    assert found["unreadable"] == {names["truncated"], names["garbage"]}
    assert found["uncommitted"] == {names["uncommitted"]}, "a commit event whose curves are broken"
    assert found["schema"] == {names["wrongtype"], names["nokey"]}
    # seed 0: the racer's run wins by the rule (a note); seed 1: of two copies of one run, the first by path
    assert found["duplicate"] == {names["copy"]} and found["superseded"] == {names["seed0"]}
    assert found["orphan-curves"] == {names["orphan"]}
    assert found["stale-tmp"] == {names["stale"]} and found["fresh-tmp"] == {names["fresh"]}
    assert found["other-file"] == {"README"}
    for f in report.problems:
        assert "\n" not in str(f) and str(f).startswith(f.path + ": ")
    wrong = next(f for f in report.problems if f.kind == "schema" and "wrongtype" in f.path)
    assert "steps" in wrong.message


def test_verify_of_a_missing_store_is_a_user_error(tmp_path):
    with pytest.raises(StoreError, match="no results store"):
        verify(str(tmp_path / "nope"))


# ---- repair --------------------------------------------------------------------------------

def test_repair_quarantines_without_deleting_and_readers_keep_their_rows(tmp_path):
    names = corrupt(tmp_path)
    before = contents(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = rows(tmp_path)
    moved = repair(str(tmp_path))
    assert contents(tmp_path) >= before, "repair deleted something"
    moved_names = {Path(src).relative_to(tmp_path / "s").as_posix() for src, _ in moved}
    assert moved_names == {f"trials/{names[k]}" for k in ("truncated", "uncommitted", "wrongtype", "nokey",
                                                          "stale", "seed0", "copy")} | {
        f"curves/{names['garbage']}", f"curves/{names['orphan']}", f"curves/{names['seed0']}",
        "curves/zcopy.parquet"}, "the losers' curves go with them; the racer and the copied run's pair stay"
    assert names["fresh"] not in {Path(p).name for p in moved_names}, "a write in progress is left alone"
    for src, dst in moved:
        assert Path(dst).is_relative_to(tmp_path / "s" / "quarantine") and Path(dst).exists()
        assert not Path(src).exists()
    report = verify(str(tmp_path))
    assert report.ok, [str(f) for f in report.problems]
    assert "fresh-orphan" in kinds(report), "the truncated part's curves: left until stale"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left for readers to skip
        assert rows(tmp_path) == expected
    assert repair(str(tmp_path)) == [], "a second repair has nothing to do"


def test_repair_keeps_the_row_readers_keep_and_mixed_parts(tmp_path):
    store = build(tmp_path, n=3)
    add_reruns(store, copy=False)
    # a part with the kept run of seed 2 (the smallest run id) and a run of seed 0 the rule ranks last
    store.write_table("s", "trials", "mixed", [result(2, run_id=RACER_RUN)["trial"],
                                               result(0, run_id="f" * 32)["trial"]])
    store.write_table("s", "curves", "mixed", [{**c, "trial_id": tid, "run_id": run} for tid, run in
                                               ((tid_of(2), RACER_RUN), (tid_of(0), "f" * 32))
                                               for c in result(2)["curves"]])
    lost = {part_of(tmp_path, 0), part_of(tmp_path, 2)}
    before = rows(tmp_path)
    moved = {Path(src).relative_to(tmp_path / "s").as_posix() for src, _ in repair(str(tmp_path))}
    assert moved == {f"{table}/{name}" for name in lost for table in ("trials", "curves")}, "racer and mixed stay"
    assert rows(tmp_path) == before
    left = verify(str(tmp_path))
    assert left.ok and "superseded" in {f.kind for f in left.info}, "the mixed part's losing row is left for compact"
    compact(str(tmp_path))
    assert verify(str(tmp_path)).ok and rows(tmp_path) == before


def test_repair_keeps_one_copy_of_the_curves_readers_need(tmp_path):
    """Two identical copies of a trial whose own curves part is corrupt: the commit event no longer
    counts, one copy's trial part goes, and one copy's curves stay, since readers need those rows."""
    build(tmp_path, n=2)
    trials, curves = tmp_path / "s" / "trials", tmp_path / "s" / "curves"
    own_t, own_c = part_of(tmp_path, 0), part_of(tmp_path, 0, "curves")
    for copy in ("c1", "c2"):
        shutil.copy(trials / own_t, trials / f"{copy}.parquet")
        shutil.copy(curves / own_c, curves / f"{copy}.parquet")
    (curves / own_c).write_bytes(b"corrupt")
    moved = {Path(src).relative_to(tmp_path / "s").as_posix() for src, _ in repair(str(tmp_path))}
    assert moved == {f"trials/{own_t}", f"curves/{own_c}", "trials/c2.parquet", "curves/c2.parquet"}
    trials_t, curves_t = load_tables(str(tmp_path))
    assert trials_t.num_rows == 2 and curves_t.num_rows == 6, "seed 0 keeps its 3 curve rows"
    assert verify(str(tmp_path)).ok


def test_repair_leaves_a_part_that_a_writer_replaced_meanwhile(tmp_path, monkeypatch):
    """An earlier release names a trial's part after the trial and rewrites it on a rerun: repair
    moves such a part only if its bytes are still those it found broken."""
    build(tmp_path, n=2)
    path = tmp_path / "s" / "trials" / f"{tid_of(5)}.parquet"
    path.write_bytes(b"garbage")
    plan = integrity._repair_plan

    def plan_then_rerun(*args, **kwargs):
        steps = plan(*args, **kwargs)
        Store(str(tmp_path)).write_result("s", result(5), part=tid_of(5))  # the old writer replaces it
        return steps

    monkeypatch.setattr(integrity, "_repair_plan", plan_then_rerun)
    assert repair(str(tmp_path)) == []
    assert pq.read_table(path).num_rows == 1, "the rerun's result stays where readers find it"


# ---- readers ------------------------------------------------------------------------------

@pytest.mark.parametrize("table", ["trials", "curves"])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_readers_skip_a_corrupt_part_with_one_warning(tmp_path, table, damage):
    """A broken trials part is skipped; a broken curves part makes its trial pending again (its
    trials part no longer counts), so a resume runs it again rather than keep it without curves."""
    build(tmp_path, n=3)
    path = tmp_path / "s" / table / part_of(tmp_path, 1, table)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(len(data)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trials, curves = load_tables(str(tmp_path))
    named = [w for w in caught if path.name in str(w.message)]
    assert len(named) == len(caught) == (1 if table == "trials" else 2), [str(w.message) for w in caught]
    assert all("\n" not in str(w.message) for w in caught)
    assert trials.num_rows == 2 and curves.num_rows == 6
    assert tid_of(1) not in trials.column("trial_id").to_pylist() + curves.column("trial_id").to_pylist()


@pytest.mark.parametrize("table", ["trials", "curves"])
def test_readers_skip_a_part_with_a_clashing_schema(tmp_path, table):
    build(tmp_path, n=3)
    path = tmp_path / "s" / table / part_of(tmp_path, 1, table)
    bad = pq.read_table(path)
    pq.write_table(bad.set_column(bad.column_names.index("trial_id"), "trial_id",
                                  pa.array([7] * bad.num_rows)), path)
    with pytest.warns(UserWarning, match=path.name):
        trials, curves = load_tables(str(tmp_path))
    assert trials.num_rows == 2 and curves.num_rows == 6


def test_a_copied_part_counts_once(tmp_path):
    """A pair copied under another name holds the same trial and curve rows: readers count them once."""
    add_reruns(build(tmp_path, n=3))
    trials, curves = load_tables(str(tmp_path))
    assert trials.num_rows == 3 and curves.num_rows == 2 + 3 + 3
    assert dict(zip(trials.column("trial_id").to_pylist(), trials.column("run_id").to_pylist()))[tid_of(0)] \
        == RACER_RUN


# ---- compact ------------------------------------------------------------------------------

def test_compact_merges_small_parts_and_reads_the_same(tmp_path):
    store = build(tmp_path, n=12)
    add_reruns(store, copy=False)
    add_old_part(store)
    before = rows(tmp_path)
    report = compact(str(tmp_path))
    merged = [Path(m.part).name for m in report.merges if m.part]
    assert parts(tmp_path) == merged and parts(tmp_path, table="curves") == merged and len(merged) == 1
    assert rows(tmp_path) == before
    assert [(m.rows_in, m.rows_out) for m in report.merges] == [(14, 13)], "one row per trial: its winner"
    raw = Store(str(tmp_path)).raw_table("curves")
    assert raw.num_rows == sum(len(r) for r in [before[1]]), "only the winners' curves are kept"
    assert verify(str(tmp_path)).ok
    assert compact(str(tmp_path)).merges == (), "nothing left to merge"
    assert not [p for p in (tmp_path / "s" / "trials").iterdir() if p.name.startswith(".")]


def test_compact_respects_target_rows_and_one_sweep(tmp_path):
    build(tmp_path, n=10)
    build(tmp_path, n=3, sweep="other")
    before = rows(tmp_path)
    report = compact(str(tmp_path), "s", target_rows=4)
    assert len(parts(tmp_path)) == 3 and len(parts(tmp_path, "other")) == 3
    assert all(m.sweep == "s" and m.rows_out <= 4 for m in report.merges)
    assert rows(tmp_path) == before
    with pytest.raises(StoreError, match="no sweep 'nope'"):
        compact(str(tmp_path), "nope")


def test_both_visible_reads_the_same_rows(tmp_path):
    """The state between writing the merged pair and deleting the old parts: readers must
    not count a row twice."""
    add_reruns(build(tmp_path, n=4), copy=False)
    before = rows(tmp_path)

    def hook(n, op, path):
        if op == "delete_file" and "/trials/" in path and "/.compact-" not in path:
            raise Killed(path)

    with pytest.raises(Killed):
        compact(hooked_store(tmp_path, hook))
    trials = parts(tmp_path)
    assert any(p.startswith("merged-") for p in trials) and len(trials) == 6, "both visible"
    assert rows(tmp_path) == before


@pytest.mark.slow
def test_killing_compact_at_any_point_leaves_the_same_rows(tmp_path):
    template = tmp_path / "template"
    store = build(template, n=4)
    add_reruns(store, copy=False)
    add_old_part(store)
    before = rows(template)
    points = kill_points(shutil.copytree(template, tmp_path / "count"))
    assert len(points) >= 20
    for i, k in enumerate(points):
        root = shutil.copytree(template, tmp_path / f"k{i}")
        with pytest.raises(Killed):
            compact(hooked_store(root, kill_on(k)))
        assert rows(root) == before, f"killed before change {k}"
        compact(str(root))
        assert rows(root) == before, f"compact after a kill before change {k}"
        assert len(parts(root)) == 1 and len(parts(root, table="curves")) == 1, k
        report = verify(str(root))
        assert report.ok, (k, [str(f) for f in report.problems])
        shutil.rmtree(root)


@pytest.mark.parametrize("where", ["merged part half written", "first old curves part deleted"])
def test_compact_killed_for_real_in_a_subprocess(tmp_path, where):
    root = tmp_path / "root"
    add_reruns(build(root, n=4), copy=False)
    before = rows(root)
    op, fragment = ("write", "merged-") if where.startswith("merged") else ("delete_file", "/curves/")
    # killed at the first change of that kind, not at its index in a counting run: the count depends
    # on the run (a slow machine adds the lease's renewals)
    code = ("import os, sys; sys.path.insert(0, 'tests'); import test_integrity as t;"
            f"t.compact(t.hooked_store({str(root)!r}, t.kill_at_first({op!r}, {fragment!r}, lambda: os._exit(9))));"
            "print('compaction ended without that change')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, (proc.stdout, proc.stderr)
    assert rows(root) == before
    compact(str(root))
    assert rows(root) == before and verify(str(root)).ok


def test_a_reader_during_compaction_sees_old_or_new_parts(tmp_path, monkeypatch):
    """A compaction that runs between a reader's listing and its reads: the reader lists again and
    sees every row once."""
    import scaling.store.views as views

    add_reruns(build(tmp_path, n=4), copy=False)
    before = rows(tmp_path)
    real, ran = views.StoreView._build, []

    def build_after_a_compaction(self, sources):
        if not ran:
            ran.append(compact(str(tmp_path)))
        return real(self, sources)

    monkeypatch.setattr(views.StoreView, "_build", build_after_a_compaction)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rows(tmp_path) == before
    assert ran[0].merges


def test_compact_keeps_a_part_a_writer_committed_meanwhile_and_unfinished_curves(tmp_path):
    store = build(tmp_path, n=3)
    # curves of a trial whose trial row is not written yet (a run in flight, an earlier release's writer)
    store.write_table("s", "curves", "inflight", [{**c, "trial_id": "e" * 16, "run_id": "r"}
                                                  for c in result(5)["curves"]])
    rerun = result(1, acc=0.99, run_id=RACER_RUN)

    def hook(n, op, path):
        if op == "move" and "/trials/merged-" in path:  # the merged pair lands: a driver reruns seed 1
            Store(str(tmp_path)).write_result("s", rerun)

    compact(hooked_store(tmp_path, hook))
    assert f"{tid_of(1)}-{RACER_RUN}.parquet" in parts(tmp_path), "the rerun's commit was not deleted"
    trials, _ = load_tables(str(tmp_path))
    acc = dict(zip(trials.column("trial_id").to_pylist(), trials.column("test_acc").to_pylist()))
    assert acc[tid_of(1)] == 0.99 and len(acc) == 3
    raw = Store(str(tmp_path)).raw_table("curves")
    assert raw.filter(pc.equal(raw.column("run_id"), "r")).num_rows == 3, "in-flight curves kept"


@pytest.mark.parametrize("killed", ["before the merged trials part", "at the second delete"])
def test_an_interrupted_compaction_is_reported_and_finished(tmp_path, killed):
    """Killed before its merged pair is whole, a compaction's intent is left alone while it may still
    be running, then dropped with what it wrote; killed after, anyone may finish it at once (the
    merged pair holds every row it replaces)."""
    build(tmp_path, n=4)
    before = rows(tmp_path)
    n = {"deletes": 0}

    def hook(k, op, path):
        if killed.startswith("before") and op == "move" and "/trials/merged-" in path:
            raise Killed(path)
        if op == "delete_file":
            n["deletes"] += 1
            if killed.startswith("at") and n["deletes"] == 2:
                raise Killed(path)

    with pytest.raises(Killed):
        integrity.compact(hooked_store(tmp_path, hook))
    intent = next((tmp_path / "s" / "trials").glob(".compact-*.json"))
    assert kinds(verify(str(tmp_path))).get("fresh-compaction") == {intent.name}, "maybe still running"
    old = contents(tmp_path)
    if killed.startswith("at"):
        assert integrity.compact(str(tmp_path)).finished == (str(intent),)
        assert verify(str(tmp_path)).ok and len(parts(tmp_path)) == 1 and rows(tmp_path) == before
        return
    assert integrity.finish_intents(Store(str(tmp_path)), "s") == [], "a fresh intent is left to its compaction"
    assert repair(str(tmp_path)) == [] and contents(tmp_path) == old
    age(intent, 3600)
    assert kinds(verify(str(tmp_path)))["compaction"] == {intent.name}
    repair(str(tmp_path))
    assert verify(str(tmp_path)).ok and rows(tmp_path) == before
    assert not list((tmp_path / "s" / "curves").glob("merged-*")), "the half-made pair is gone"
    assert len(parts(tmp_path)) == 4, "the parts it would have replaced stay"


# ---- command line -------------------------------------------------------------------------

def cli(*argv) -> int:
    parser = argparse.ArgumentParser(prog="scaling")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_verify_repair_and_compact(tmp_path, capsys):
    names = corrupt(tmp_path)
    assert cli("verify", str(tmp_path)) == 1
    out = capsys.readouterr().out.splitlines()
    assert any(names["truncated"] in line and "unreadable" in line for line in out)
    assert out[-1].endswith(f": {len(out) - 1} problem(s), 3 note(s) (-v lists them)")
    assert cli("verify", str(tmp_path), "--repair") == 0
    out = capsys.readouterr().out
    assert f"/s/quarantine/trials/{names['truncated']}" in out and "nothing was deleted" in out
    assert cli("verify", str(tmp_path)) == 0
    assert cli("compact", str(tmp_path), "--sweep", "s") == 0
    assert "compacted" in capsys.readouterr().out and len(parts(tmp_path)) == 1
    assert cli("verify", str(tmp_path), "-v") == 0
    assert "note: " in capsys.readouterr().out


def test_cli_verify_is_clean_after_a_retry_and_flags_curve_points_stored_twice(tmp_path, capsys):
    """Issue 26: verify exited 1 on the state --retry-failed leaves (a failed run in a pack part beside
    an ok member, then the retry's ok run), and --repair could not clear it; duplicate curve points
    inside one part were not flagged."""
    import scaling.store.parts as parts_mod

    store = Store(str(tmp_path))
    failed = result(0)
    failed["trial"].update(status="failed", error="RuntimeError: boom")
    store.commit("s", parts_mod.unit_id([tid_of(0), tid_of(1)]), [failed, result(1)])
    store.write_result("s", result(0))
    assert cli("verify", str(tmp_path)) == 0
    assert "0 problem(s), 1 note(s)" in capsys.readouterr().out
    assert cli("verify", str(tmp_path), "-v") == 0
    assert "note: " in (out := capsys.readouterr().out) and "a retry or a rerun" in out
    twice = result(2)
    twice["curves"] = twice["curves"] + twice["curves"][1:2]
    store.write_result("s", twice)
    assert cli("verify", str(tmp_path)) == 1
    out = capsys.readouterr().out
    assert f"{part_of(tmp_path, 2, 'curves')}: 1 curve point(s) stored twice in this part" in out.replace(
        str(tmp_path / "s" / "curves") + "/", "")
    assert cli("compact", str(tmp_path)) == 0 and cli("verify", str(tmp_path)) == 0
    capsys.readouterr()
    _, curves = load_tables(str(tmp_path))
    assert curves.num_rows == 3 * 3, "three trials, three points each, each once"


def test_nan_metrics_survive_compaction(tmp_path):
    store = build(tmp_path, n=2)
    r = result(5)
    r["trial"].update(status="diverged", test_acc=math.nan)
    store.write_result("s", r)
    compact(str(tmp_path))
    trials, _ = load_tables(str(tmp_path))
    assert sum(math.isnan(a) for a in trials.column("test_acc").to_pylist()) == 1
