"""Arrow tables to numpy columns: loading, metrics, axes, filters and groups.

A *frame* here is a plain ``dict[str, numpy.ndarray]`` of equal-length
columns taken from a ``pyarrow.Table``; nulls become NaN (numbers) or None
(strings). Nothing here fits anything.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from analysis.errors import AnalysisError

AXES = ("task", "model", "width", "depth", "n_train", "batch_size", "lr", "momentum",
        "weight_decay", "seed")
"""Hyperparameter columns of a trials table, in display order."""
NOT_AXES = frozenset({
    "sweep", "trial_id", "run_id", "status", "error", "steps", "examples_seen", "noise_scale",
    "n_params", "train_loss", "test_loss", "test_acc", "wall_s", "host", "start_time",
    "end_time", "version", "engine", "config", "epochs", "step", "epoch"})
"""Columns that are results or bookkeeping, never grouping axes."""
DERIVED = {"error": "1 - test_acc", "gap": "test_loss - train_loss"}
"""Metrics computed from stored columns; ``error`` shadows the stored error-message column."""


SKIPPED = ("config", "run_id", "trial_id", "host", "start_time", "end_time", "version")
"""Bookkeeping columns no analysis reads (all in NOT_AXES): :func:`load_trials` leaves them out."""


def load_trials(root: str) -> pa.Table:
    """The trials of every sweep under ``root`` (one row per trial, the run the store's rule keeps),
    read through SQL (:mod:`scaling.views`) without the curves and without :data:`SKIPPED`.

    For summaries only, :mod:`scaling.aggregate` computes them in SQL instead.

    Raises
    ------
    AnalysisError
        If ``root`` does not exist or holds no trials.
    """
    from scaling.schema import TRIALS_SCHEMA
    from scaling.views import open_store

    if "://" not in str(root) and not os.path.exists(root):
        raise AnalysisError(f"no results directory at {root!r}; "
                            "pass the --results folder of a sweep")
    columns = ", ".join(f'"{f.name}"' for f in TRIALS_SCHEMA if f.name not in SKIPPED)
    with open_store(str(root)) as view:
        trials = view.sql(f"SELECT {columns} FROM trials ORDER BY sweep, trial_id")
    if trials.num_rows == 0:
        raise AnalysisError(f"the store at {root!r} holds no trials yet "
                            "(expected <sweep>/trials/*.parquet under it)")
    return trials


def load_sweep(root: str) -> tuple[pa.Table, pa.Table]:
    """(trials, curves) of every sweep under ``root`` via :func:`scaling.store.load_tables`, all in
    memory (kept for callers that need curves too; :func:`load_trials` reads only the trials).

    Raises
    ------
    AnalysisError
        If ``root`` does not exist or holds no trials.
    """
    from scaling.store import load_tables

    if "://" not in str(root) and not os.path.exists(root):
        raise AnalysisError(f"no results directory at {root!r}; "
                            "pass the --results folder of a sweep")
    trials, curves = load_tables(str(root))
    if trials.num_rows == 0:
        raise AnalysisError(f"the store at {root!r} holds no trials yet "
                            "(expected <sweep>/trials/*.parquet under it)")
    return trials, curves


def read_any(path: str) -> pa.Table:
    """A trials table from a results directory (or store URI), or any CSV or Parquet file."""
    is_file = str(path).lower().endswith((".csv", ".parquet", ".pq"))
    if not is_file or os.path.isdir(path):
        return load_trials(path)
    if not os.path.exists(path):
        raise AnalysisError(f"no such file: {path!r}")
    try:
        if str(path).lower().endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq
            return pq.read_table(path)
        import pyarrow.csv as pcsv
        return pcsv.read_csv(path)
    except (OSError, pa.ArrowException) as e:
        raise AnalysisError(f"cannot read {path!r} as CSV or Parquet: "
                            f"{str(e).splitlines()[0]}") from None


def frame(table: pa.Table) -> dict[str, np.ndarray]:
    """Columns of ``table`` as numpy arrays (NaN for null numbers, None for null strings)."""
    out = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_null(col.type):
            out[name] = np.full(len(col), np.nan)
        elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type) \
                or pa.types.is_boolean(col.type):
            out[name] = col.to_numpy(zero_copy_only=False).astype(float)
        else:
            out[name] = np.array(col.to_pylist(), dtype=object)
    return out


def n_rows(fr: dict[str, np.ndarray]) -> int:
    return len(next(iter(fr.values()))) if fr else 0


def numeric(fr: dict[str, np.ndarray], name: str, what: str = "column") -> np.ndarray:
    """A numeric column, or :class:`AnalysisError` naming the columns that exist."""
    if name not in fr:
        raise AnalysisError(f"no {what} {name!r}; the table has: {', '.join(sorted(fr))}")
    col = fr[name]
    if col.dtype == object:
        raise AnalysisError(f"{what} {name!r} is not numeric")
    return col


def metric(fr: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Values of a stored metric column or a derived one (``error``, ``gap``)."""
    if name == "error":
        return 1.0 - numeric(fr, "test_acc", "column (needed by metric 'error')")
    if name == "gap":
        return numeric(fr, "test_loss", "column (needed by metric 'gap')") \
            - numeric(fr, "train_loss", "column (needed by metric 'gap')")
    if name not in fr:
        known = sorted(k for k, v in fr.items() if v.dtype != object and k not in AXES
                       and ("loss" in k or "acc" in k or k not in NOT_AXES))
        raise AnalysisError(f"unknown metric {name!r}; try one of: "
                            f"{', '.join(known + sorted(DERIVED))}")
    return numeric(fr, name, "metric")


def maximize(name: str) -> bool:
    """True for accuracy-like metrics (``*acc*``); losses, error and gap are minimised."""
    return "acc" in name.lower()


def status(fr: dict[str, np.ndarray]) -> np.ndarray:
    """Trial status per row; a table without a status column counts as all ``ok``."""
    if "status" in fr:
        return np.array([s if s is not None else "unknown" for s in fr["status"]], dtype=object)
    return np.full(n_rows(fr), "ok", dtype=object)


def count_by(labels: np.ndarray) -> dict[str, int]:
    """{label: count}, largest first."""
    values, counts = np.unique(np.asarray(labels, dtype=str), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return {str(values[i]): int(counts[i]) for i in order}


def usable(fr: dict[str, np.ndarray], y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ok mask, outcome label per row): ``ok`` rows have status ok and a finite metric.

    Other rows are labelled with their status, or ``nonfinite`` for an ok trial
    whose metric is NaN or inf, so they can be counted rather than dropped.
    """
    st = status(fr)
    finite = np.isfinite(y)
    label = np.where(st == "ok", np.where(finite, "ok", "nonfinite"), st)
    return label == "ok", label


def candidate_axes(fr: dict[str, np.ndarray]) -> list[str]:
    """Columns that may be grouping axes: the known ones and unknown non-metric extras."""
    names = [a for a in AXES if a in fr]
    if "epochs" in fr and fr["epochs"].dtype != object and np.isfinite(fr["epochs"]).any():
        names.append("epochs")
    elif "steps" in fr and "epochs" in fr:
        names.append("steps")  # budget in steps: steps is an axis, not an outcome
    for name in fr:
        low = name.lower()
        if name in names or name in NOT_AXES or "loss" in low or "acc" in low \
                or low.endswith(("_s", "_time", "_at")):
            continue
        names.append(name)
    return names


def varying(fr: dict[str, np.ndarray], rows: np.ndarray, exclude=()) -> list[str]:
    """Candidate axes that take more than one value over ``rows``."""
    out = []
    for name in candidate_axes(fr):
        if name in exclude:
            continue
        if len(set(_hashable(fr[name][rows]))) > 1:
            out.append(name)
    return out


def _hashable(col: np.ndarray) -> list:
    if col.dtype == object:
        return [None if v is None else str(v) for v in col]
    return [None if np.isnan(v) else float(v) for v in col]


def groups(fr: dict[str, np.ndarray], rows: np.ndarray, keys) -> list[tuple[tuple, np.ndarray]]:
    """[(key values, row indices)] over the rows in ``rows`` (bool mask or indices), sorted."""
    idx = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows)
    if not keys:
        return [((), idx)]
    cols = [_hashable(fr[k][idx]) for k in keys]
    found: dict[tuple, list[int]] = {}
    for pos, key in enumerate(zip(*cols)):
        found.setdefault(key, []).append(int(idx[pos]))
    order = sorted(found, key=lambda k: tuple((v is None, v if v is not None else 0) for v in k))
    return [(k, np.array(found[k])) for k in order]


def parse_cols(text: str | None) -> list[str]:
    """``"width,depth"`` -> ``["width", "depth"]``."""
    return [c.strip() for c in (text or "").split(",") if c.strip()]


def parse_where(text: str | None) -> dict[str, str]:
    """``"lr=0.1,batch_size=32"`` -> ``{"lr": "0.1", "batch_size": "32"}``."""
    out = {}
    for part in parse_cols(text):
        if "=" not in part:
            raise AnalysisError(f"--where wants COL=VALUE pairs separated by commas, got {part!r}")
        key, value = (s.strip() for s in part.split("=", 1))
        out[key] = value
    return out


def where_mask(fr: dict[str, np.ndarray], where: dict[str, str]) -> np.ndarray:
    """Rows matching every ``COL=VALUE`` (numbers compared with a relative tolerance)."""
    mask = np.ones(n_rows(fr), bool)
    for key, value in where.items():
        if key not in fr:
            raise AnalysisError(f"--where names unknown column {key!r}; "
                                f"the table has: {', '.join(sorted(fr))}")
        col = fr[key]
        if col.dtype == object:
            mask &= np.array([str(v) == value for v in col])
            continue
        try:
            target = float(value)
        except ValueError:
            raise AnalysisError(f"--where {key}={value}: {key!r} is numeric, "
                                f"{value!r} is not a number") from None
        mask &= np.isclose(col, target, rtol=1e-9, atol=0.0)
    if not mask.any():
        raise AnalysisError(f"no trial matches --where {where}")
    return mask


def label(keys, values) -> str:
    """``"width=64, depth=2"`` for display; ``"all"`` for no keys."""
    if not keys:
        return "all"
    return ", ".join(f"{k}={_fmt(v)}" for k, v in zip(keys, values))


def _fmt(v) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:g}" if isinstance(v, float) else str(v)
