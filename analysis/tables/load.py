"""Loading tables: a results store's trials (and curves), or any CSV, Parquet or JSON file,
with its axes, seed column and named metrics declared in the table's metadata."""

from __future__ import annotations

import json
import os

import pyarrow as pa

from analysis.errors import AnalysisError

SOURCE_KEY, AXES_KEY, SEED_KEY, NAMED_KEY = b"scaling.source", b"scaling.spec.axes", b"scaling.seed", b"scaling.named"
"""Arrow schema metadata: where a table came from ('store'), the axes/replicate a user declared
and the columns the command line names."""

DERIVED = {"error": "1 - test_acc", "gap": "test_loss - train_loss"}
"""Metrics computed from stored columns; ``error`` shadows the stored error-message column."""

SKIPPED = ("config", "run_id", "host", "start_time", "end_time", "version")
"""Bookkeeping columns no analysis reads (role bookkeeping in scaling.spec.schema): :func:`load_trials` leaves them out."""


def load_trials(root: str) -> pa.Table:
    """The trials of every sweep under ``root`` (one row per trial, the run the store's rule keeps),
    read through SQL (:mod:`scaling.store.views`) without the curves and without :data:`SKIPPED`.

    For summaries only, :mod:`scaling.store.aggregate` computes them in SQL instead.

    Raises
    ------
    AnalysisError
        If ``root`` does not exist or holds no trials.
    """
    from scaling.spec.schema import TRIALS_SCHEMA
    from scaling.store.views import open_store

    _check_root(root)
    columns = ", ".join(f'"{f.name}"' for f in TRIALS_SCHEMA if f.name not in SKIPPED)
    with open_store(str(root)) as view:
        trials = view.sql(f"SELECT {columns} FROM trials ORDER BY sweep, trial_id")
    return from_store(_some_trials(trials, root))


def load_sweep(root: str) -> tuple[pa.Table, pa.Table]:
    """(trials, curves) of every sweep under ``root`` via :func:`scaling.store.load_tables`, all in
    memory (kept for callers that need curves too; :func:`load_trials` reads only the trials).

    Raises
    ------
    AnalysisError
        If ``root`` does not exist or holds no trials.
    """
    from scaling.store.views import load_tables

    _check_root(root)
    trials, curves = load_tables(str(root))
    return from_store(_some_trials(trials, root)), curves


def _check_root(root: str) -> None:
    if "://" not in str(root) and not os.path.exists(root):
        raise AnalysisError(f"no results directory at {root!r}; "
                            "pass the --results folder of a sweep")


def _some_trials(trials: pa.Table, root: str) -> pa.Table:
    if trials.num_rows == 0:
        raise AnalysisError(f"the store at {root!r} holds no trials yet "
                            "(expected <sweep>/trials/*.parquet under it)")
    return trials


def from_store(table: pa.Table) -> pa.Table:
    """``table`` marked as a results store's trials table: its axes are the schema's."""
    return _tag(table, {SOURCE_KEY: b"store"})


def _tag(table: pa.Table, items: dict) -> pa.Table:
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **items})


def declare(table: pa.Table, *, axes=(), seed: str | None = None, named=()) -> pa.Table:
    """``table`` with the user's declarations attached (for tables not from a store): the
    columns tuned over (``--axes``) and the replicate column (``--seed``; default ``seed``).
    ``named`` are the columns the command line names (``--x``, ``--metric``, ...): never axes."""
    meta = table.schema.metadata or {}
    if meta.get(SOURCE_KEY) == b"store":
        if axes or seed:
            raise AnalysisError("--axes and --seed are for tables from elsewhere; a results store "
                                "declares its axes (scaling/spec/schema.py)")
        return table
    for col in list(axes) + ([seed] if seed else []):
        if col not in table.column_names:
            raise AnalysisError(f"--axes/--seed name column {col!r}, which the table does not have; "
                                f"it has: {', '.join(table.column_names)}")
    clash = sorted(set(axes) & set(named))
    if clash:
        raise AnalysisError(f"--axes names {', '.join(clash)}, which the command already uses "
                            "(--x, --metric, ...); a column is either an axis or what is measured")
    check_numbers(table, [c for c in named if c] + list(axes) + ([seed] if seed else []))
    return _tag(table, {AXES_KEY: json.dumps(list(axes)).encode(), SEED_KEY: (seed or "").encode(),
                        NAMED_KEY: json.dumps([c for c in named if c]).encode()})


def _is_number(text) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def check_numbers(table: pa.Table, cols=()) -> None:
    """Refuse a text column that should hold numbers but has a few words among them (a typo in a
    CSV: ``lr`` = 0.1, 0.2, ``abc``): one line naming the column, the rows and the values.

    Checked: the columns in ``cols`` (the command's own and the declared axes) and those that
    carry the name of a numeric schema column (``lr``, ``n_train``, ``test_loss``, ...). A text
    column counts as numbers with a typo when at least half its non-empty values are numbers;
    one with none (``optimizer`` = adam, sgd) is a category and left alone.
    """
    from scaling.spec.schema import BY_NAME

    numeric = {n for n, f in BY_NAME.items() if f.kind in (int, float)}
    for name in dict.fromkeys(list(cols) + [n for n in table.column_names if n in numeric]):
        if name not in table.column_names:
            continue
        col = table.column(name)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            continue
        values = col.to_pylist()
        bad = [i for i, v in enumerate(values) if v is not None and v.strip() and not _is_number(v)]
        filled = sum(1 for v in values if v is not None and v.strip())
        if not bad or len(bad) * 2 > filled:
            continue
        shown = ", ".join(f"row {i + 1} {values[i]!r}" for i in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise AnalysisError(f"column {name!r} holds numbers but {len(bad)} value(s) are not: "
                            f"{shown}{more} (rows counted from 1 after the header); fix or "
                            "remove those rows")


def is_table_file(path: str) -> bool:
    """Whether ``path`` names a CSV or Parquet file (not a results directory or store URI)."""
    return str(path).lower().endswith((".csv", ".parquet", ".pq")) and not os.path.isdir(path)


def read_any(path: str, cols=()) -> pa.Table:
    """A trials table from a results directory (or store URI), or any CSV or Parquet file with
    its columns' roles applied (``cols``: ``--col ROLE=COLUMN`` items; :mod:`analysis.tables.roles`)."""
    from analysis.tables.roles import apply_roles

    if not is_table_file(path):
        if cols:
            raise AnalysisError("--col is for tables from elsewhere; a results store names its "
                                "columns (scaling/spec/schema.py)")
        return load_trials(path)
    return apply_roles(_read_file(path), cols)


def _read_file(path: str) -> pa.Table:
    if not os.path.exists(path):
        raise AnalysisError(f"no such file: {path!r}")
    try:
        if str(path).lower().endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq
            table = pq.read_table(path)
        else:
            import pyarrow.csv as pcsv
            table = pcsv.read_csv(path)
    except (OSError, pa.ArrowException) as e:
        raise AnalysisError(f"cannot read {path!r} as CSV or Parquet: "
                            f"{str(e).splitlines()[0]}") from None
    check_unique_names(table.column_names, path)
    return table


def check_unique_names(names, path: str) -> None:
    """Refuse a table with two columns of one name (which would the analysis read?)."""
    seen, twice = set(), []
    for pos, name in enumerate(names):
        if name in seen and name not in twice:
            twice.append(name)
        seen.add(name)
    if twice:
        where = "; ".join(f"{n!r} is columns " + ", ".join(str(i + 1) for i, m in enumerate(names)
                                                         if m == n) for n in twice)
        raise AnalysisError(f"{path!r} has {len(twice)} column name(s) used more than once "
                            f"({where}): rename or drop the copies so each column is named once")


FOLLOW_SKIPPED = ("host", "version")
"""What :func:`load_parts` leaves out (``config`` too unless asked for)."""


def load_parts(root: str, stems=None, *, curves: bool = True, config: bool = True):
    """(trials, curves) of a store or one sweep folder for a reader that follows it as it grows
    (``scaling serve``): the trials with their bookkeeping (run ids, start and end times; not
    :data:`FOLLOW_SKIPPED`, nor ``config`` without ``config``) through the store's views and their
    rule of which run is kept, and the curves of exactly those runs (None without ``curves``).

    ``stems``: only the parts of those names (the commit events that arrived since the last
    read; ``keep`` of :class:`scaling.store.views.StoreView`), to be merged into the last read
    with :func:`merge_runs`. None when a stem is not a paired commit event (a part of the legacy
    layout, whose curves may lie in another part): read everything then. Unlike
    :func:`load_trials`, a store with no trial yet gives an empty table.
    """
    from scaling.spec.schema import TRIALS_SCHEMA
    from scaling.store.parts import paired
    from scaling.store.views import open_store

    _check_root(root)
    if stems is not None and not all(paired(s) for s in stems):
        return None
    skip = set(FOLLOW_SKIPPED) | (set() if config else {"config"})
    cols = ", ".join(f'"{f.name}"' for f in TRIALS_SCHEMA if f.name not in skip)
    keep = None if stems is None else frozenset(stems).__contains__
    with open_store(str(root), keep=keep, warn=stems is None) as view:
        trials = view.sql(f"SELECT {cols} FROM trials ORDER BY sweep, trial_id")
        found = view.sql("SELECT * FROM curves ORDER BY sweep, trial_id, step") if curves else None
    return from_store(trials), found


def merge_runs(old: pa.Table, new: pa.Table, old_curves=None, new_curves=None, *, sort: bool = True):
    """(trials, curves) of two reads by :func:`load_parts` of one store, the second of the parts
    that arrived since the first: per (sweep, trial_id) the run the store's rule keeps
    (:func:`scaling.store.views.winner_key`, the views' ``WINNER_ORDER``; a rule over runs, so
    the winner of the union is the winner of the two winners), sorted as the views sort; and
    the curves of exactly those runs. The same tables as one read of everything. Without
    ``sort`` the rows are the old ones then the new ones (sorting 100k trials costs 0.4 s; a
    caller whose result depends on the order sorts with :func:`sort_runs`)."""
    import numpy as np
    import pyarrow.compute as pc

    from scaling.store.views import winner_key

    if new.num_rows == 0:
        return old, old_curves
    new = new.select(old.column_names).cast(old.schema)
    drop_old, drop_new = np.zeros(old.num_rows, bool), np.zeros(new.num_rows, bool)
    maybe = np.flatnonzero(pc.is_in(old["trial_id"], value_set=new["trial_id"].combine_chunks())
                           .to_numpy(zero_copy_only=False))
    if maybe.size:
        rule = ("status", "code_version", "data_version", "run_id")
        at = {(r["sweep"], r["trial_id"]): i for i, r in enumerate(new.select(["sweep", "trial_id"]).to_pylist())}
        rows_new = new.select(list(rule)).to_pylist()
        for i, k, row in zip(maybe, old.select(["sweep", "trial_id"]).take(maybe).to_pylist(),
                             old.select(list(rule)).take(maybe).to_pylist()):
            j = at.get((k["sweep"], k["trial_id"]))
            if j is None:  # the same trial id in another sweep
                continue
            if winner_key(**rows_new[j]) < winner_key(**row):
                drop_old[i] = True
            else:  # the old run wins, or is the same run (a copy): kept
                drop_new[j] = True
    old_kept = old.filter(pa.array(~drop_old)) if drop_old.any() else old  # a filter copies
    new_kept = new.filter(pa.array(~drop_new)) if drop_new.any() else new
    trials = pa.concat_tables([old_kept, new_kept])
    curves = None
    if old_curves is not None and new_curves is not None:
        runs = lambda c, t: c.filter(pc.is_in(c["run_id"], value_set=t["run_id"].combine_chunks()))
        new_curves = new_curves.select(old_curves.column_names).cast(old_curves.schema)
        curves = pa.concat_tables([runs(old_curves, old_kept) if drop_old.any() else old_curves,
                                   runs(new_curves, new_kept) if drop_new.any() else new_curves])
    return sort_runs(trials, curves) if sort else (trials, curves)


def sort_runs(trials: pa.Table, curves=None):
    """(trials, curves) in the order the store's views give them: by sweep and trial id (and step)."""
    trials = trials.sort_by([("sweep", "ascending"), ("trial_id", "ascending")])
    if curves is not None:
        curves = curves.sort_by([("sweep", "ascending"), ("trial_id", "ascending"), ("step", "ascending")])
    return trials, curves
