"""Arrow tables to numpy columns: loading, metrics, axes, filters and groups.

A *frame* here is a :class:`Frame`, a ``dict[str, numpy.ndarray]`` of
equal-length columns taken from a ``pyarrow.Table`` (nulls become NaN for
numbers, None for strings) that also knows its *axes*: the columns that define
a configuration, which the analysis groups and tunes over. Nothing here fits
anything, and nothing guesses which columns are axes:

- a table read from a results store declares them: the axis columns of
  :data:`scaling.spec.schema.FIELDS` (``seed`` being the replicate);
- any other table (a CSV or Parquet file a researcher brings) has as axes its
  columns that carry a schema axis name (``n_train``, ``lr``, ``momentum``, ...;
  :mod:`analysis.tables.roles` maps export prefixes and ``--col`` onto them), or
  exactly the axes the user names (``--axes COLS``), plus its replicate column
  (``seed``, or the one ``--seed COL`` names). Columns named on the command line
  (``--x``, ``--metric``, ...) are never axes. :func:`check_replicates` stops a
  command whose rows still differ in configuration inside one cell.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

import scaling.spec.schema as schema
from analysis.errors import AnalysisError
from analysis.tables.load import AXES_KEY, DERIVED, NAMED_KEY, SEED_KEY, SOURCE_KEY
from analysis.tables.roles import pair_of


class Frame(dict):
    """Columns by name (numpy arrays) and the declared ``axes`` of the table they came from."""

    axes: tuple = ()
    """Configuration columns, the replicate column included (see the module docstring)."""
    replicate: str | None = None
    """The column whose values are replicates (seeds), or None."""
    declared: bool = False
    """Whether the axes come from the store's schema (True) or from the user (False)."""
    named: tuple = ()
    """Columns the command line names (never axes)."""
    pair: dict = {}
    """``{"val": col, "test": col}`` named with ``--col`` (:mod:`analysis.tables.roles`)."""


def table_axes(table: pa.Table) -> tuple[tuple, str | None, bool]:
    """(axes, replicate column, from the store?) of a table (see the module docstring)."""
    meta = table.schema.metadata or {}
    names = table.column_names
    if meta.get(SOURCE_KEY) == b"store":
        axes = tuple(a for a in schema.AXIS_COLUMNS if a in names)
        return axes, (schema.REPLICATE if schema.REPLICATE in names else None), True
    user = tuple(json.loads(meta.get(AXES_KEY, b"[]")))
    seed = meta.get(SEED_KEY, b"").decode() or ("seed" if "seed" in names else None)
    if not user:
        user = tuple(schema_axes(names, json.loads(meta.get(NAMED_KEY, b"[]")) + [seed]))
    return user + ((seed,) if seed and seed not in user else ()), seed, False


def schema_axes(names, skip=()) -> list[str]:
    """Columns of ``names`` that carry a schema axis name (the replicate and ``skip`` left out):
    the axes of a table from elsewhere when the user names none."""
    return [a for a in schema.AXIS_COLUMNS if a in names and a != schema.REPLICATE and a not in skip]


def frame(table: pa.Table) -> Frame:
    """Columns of ``table`` as numpy arrays (NaN for null numbers, None for null strings)."""
    out = Frame()
    out.axes, out.replicate, out.declared = table_axes(table)
    out.named = tuple(json.loads((table.schema.metadata or {}).get(NAMED_KEY, b"[]")))
    out.pair = pair_of(table)
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_null(col.type):
            out[name] = np.full(len(col), np.nan)
        elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type) \
                or pa.types.is_boolean(col.type):
            out[name] = col.to_numpy(zero_copy_only=False).astype(float)
        elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            out[name] = _text(col)
        else:
            out[name] = np.array(col.to_pylist(), dtype=object)
    return out


def _text(col) -> np.ndarray:
    """A string column as an object array of str and None. A column of few distinct values (most
    are: task, status, optimizer, ...) shares one str per value: a million rows cost 8 MB, not
    the 60 MB of a str each, and are built 4x faster."""
    import pyarrow.compute as pc

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    enc = pc.dictionary_encode(arr)
    if len(enc.dictionary) * 2 > len(arr):  # mostly distinct (ids): one str each anyway
        return arr.to_numpy(zero_copy_only=False)
    values = np.array(enc.dictionary.to_pylist() + [None], dtype=object)
    return values[enc.indices.fill_null(len(enc.dictionary)).to_numpy()]


def n_rows(fr: dict[str, np.ndarray]) -> int:
    return len(next(iter(fr.values()))) if fr else 0


def numeric(fr: dict[str, np.ndarray], name: str, what: str = "column") -> np.ndarray:
    """A numeric column, or :class:`AnalysisError` naming the columns that exist."""
    if name not in fr:
        hint = f" (if a column holds it, name it with --col {name}=COLUMN)" \
            if name in schema.AXIS_COLUMNS + schema.OUTCOMES and not getattr(fr, "declared", False) else ""
        raise AnalysisError(f"no {what} {name!r}{hint}; the table has: {', '.join(sorted(fr))}")
    col = fr[name]
    if col.dtype == object:
        raise AnalysisError(f"{what} {name!r} is not numeric")
    return col


def metric(fr: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Values of a stored metric column or a derived one (``error``, ``gap``)."""
    if name == "error" and not ("test_acc" not in fr and "error" in fr
                                and fr["error"].dtype != object):
        # derived from test_acc, unless a table from elsewhere has a numeric error column itself
        return 1.0 - numeric(fr, "test_acc", "column (needed by metric 'error')")
    if name == "gap":
        return numeric(fr, "test_loss", "column (needed by metric 'gap')") \
            - numeric(fr, "train_loss", "column (needed by metric 'gap')")
    if name not in fr:
        axes = set(candidate_axes(fr))
        outcomes = set(schema.OUTCOMES) if getattr(fr, "declared", False) else set(fr)
        known = sorted(k for k, v in fr.items() if v.dtype != object and k not in axes and k in outcomes)
        raise AnalysisError(f"unknown metric {name!r}; try one of: "
                            f"{', '.join(known + sorted(DERIVED))}")
    return numeric(fr, name, "metric")


def headline_metric(table: pa.Table) -> str:
    """The metric a learning curve is about when the user names none: what the trials' task
    declares (:attr:`scaling.tasks.base.TaskSpec.headline`: ``error`` for classification,
    ``test_loss`` for a language model); for a plug-in task or a table from elsewhere,
    ``error`` when there is a ``test_acc`` column with values in [0, 1], else ``test_loss``.

    ``fit``, ``report``, ``bopt`` and the sweep summary all default to it.
    """
    from scaling.tasks.builtin import TASKS

    if pair_of(table).get("test"):
        return pair_of(table)["test"]
    names = set(table.column_names)
    if "task" in names:
        declared = {TASKS[t].headline for t in table.column("task").unique().to_pylist()
                    if t in TASKS}
        if len(declared) == 1:
            return declared.pop()
    acc = table.column("test_acc").to_numpy(zero_copy_only=False) if "test_acc" in names else None
    if acc is not None and acc.dtype != object:
        acc = acc[np.isfinite(acc)]
        if acc.size and np.all((acc >= 0) & (acc <= 1)):
            return "error"
    if "test_loss" in names:
        return "test_loss"
    if "error" in names and pa.types.is_floating(table.schema.field("error").type) \
            and "test_acc" not in names:
        return "error"  # a table from elsewhere with its error rate as a column
    raise AnalysisError("no default metric for this table (it has neither a test_acc in [0, 1] "
                        "nor a test_loss column): name one with --metric; the table has: "
                        f"{', '.join(table.column_names)}")


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


def nonpositive(fr: dict[str, np.ndarray], y: np.ndarray, ok: np.ndarray, outcome: np.ndarray,
                metric: str, limit: int = 5) -> tuple[np.ndarray, np.ndarray, str]:
    """``(ok, outcome, warning)`` with the ``ok`` rows where ``y <= 0`` left out as ``nonpositive``.

    For a metric fitted on a log scale: such a row is dropped and counted the way a NaN is,
    and the warning (``""`` when none) names the rows (their trial id, or their row number in
    the table counted from 1, with the configuration's axes) and their values.
    """
    with np.errstate(invalid="ignore"):
        bad = ok & (y <= 0)
    if not bad.any():
        return ok, outcome, ""
    idx = np.flatnonzero(bad)
    cols = [c for c in dict.fromkeys(list(getattr(fr, "named", ())) + candidate_axes(fr))
            if c in fr and c != metric]
    named = []
    for i in idx[:limit]:
        tid = fr.get("trial_id")
        head = f"trial {tid[i]}" if tid is not None and tid.dtype == object else f"row {i + 1}"
        cfg = label(cols, [fr[c][i] for c in cols])
        named.append(f"{head} ({cfg + ', ' if cols else ''}{metric}={label_value(y[i])})")
    more = f" and {idx.size - limit} more" if idx.size > limit else ""
    most = (" (most of the rows: is it a quantity that can be <= 0, such as a gap? a log "
            "scale cannot fit it)") if idx.size * 2 > ok.sum() else ""
    warn = (f"warning: dropped {idx.size} row(s) where {metric} <= 0, which a log-scale fit "
            f"cannot take{most}: {'; '.join(named)}{more}")
    return ok & ~bad, np.where(bad, "nonpositive", outcome), warn


def candidate_axes(fr: dict[str, np.ndarray]) -> list[str]:
    """The frame's declared axes that it holds (see the module docstring); none are guessed."""
    return [a for a in getattr(fr, "axes", ()) if a in fr]


def check_replicates(fr: dict[str, np.ndarray], rows: np.ndarray, cell_of: np.ndarray, cols) -> None:
    """Refuse to pool different configurations as seeds (tables from elsewhere only).

    Rows of one cell (``cell_of``, over the columns ``cols``) are replicates only if they
    differ in the replicate column; two rows of a cell with the same seed, or any two rows
    of a cell when there is no seed column, are different configurations: raise
    :class:`AnalysisError` naming the columns they differ in and what to pass."""
    if getattr(fr, "declared", True) or rows.size == 0:
        return
    rep = getattr(fr, "replicate", None)
    key = cell_of.astype(float)
    if rep is not None and rep in fr:
        col = fr[rep][rows]
        codes = np.unique(np.array([str(v) for v in col]) if col.dtype == object else col,
                          return_inverse=True)[1].ravel()
        key = cell_of * (codes.max() + 1) + codes
    _, first, counts = np.unique(key, return_index=True, return_counts=True)
    if counts.max() < 2:
        return
    clash = rows[key == key[first[np.argmax(counts)]]]
    skip = set(cols) | {rep} | set(getattr(fr, "named", ())) | {"sweep", "trial_id", "run_id"}
    # likely configuration columns first: names the schema uses for axes (a hint for the
    # message only: nothing here is made an axis), then few values among the rows and overall
    differ = sorted((c not in schema.AXIS_COLUMNS, len(set(hashable(fr[c][clash]))), len(set(hashable(fr[c]))), c)
                    for c in fr if c not in skip and len(set(hashable(fr[c][clash]))) > 1)
    names = [c for *_, c in differ if plausible_config(fr, c)][:4]
    others = [c for *_, c in differ if not plausible_config(fr, c)]
    where = label([c for c in cols if c in fr], [fr[c][clash[0]] for c in cols if c in fr])
    seed = f"share {rep} {label_value(fr[rep][clash[0]])}" if rep is not None and rep in fr else \
        "have no seed column to tell replicates apart"
    if not names and others:
        raise AnalysisError(f"{clash.size} rows at {where} {seed} and differ only in outcomes or "
                            f"bookkeeping ({', '.join(others[:4])}): name the replicate column with "
                            "--seed COL, or a configuration column with --col ROLE=COLUMN or --axes COL")
    if not names:
        raise AnalysisError(f"{clash.size} rows at {where} {seed} and are otherwise identical; "
                            "remove the duplicates or name the replicate column with --seed COL")
    first_name = names[0]
    raise AnalysisError(f"{clash.size} rows at {where} {seed} but differ in {', '.join(names)}: they are "
                        "different configurations, not seeds; pass --axes "
                        f"{first_name} to tune over it{_role_hint(first_name)}, --by {first_name} "
                        f"for one curve each, or --where {first_name}=VALUE")


def _role_hint(name: str) -> str:
    """`` (or --col ROLE=name ...)`` when ``name`` is not a schema name: a role keeps the
    features that need one (the B_opt rule needs n_train, lr and momentum)."""
    if name in schema.AXIS_COLUMNS:
        return ""
    return f" (or --col ROLE={name} with a schema name as ROLE, e.g. n_train, to give it that role)"


_NOT_CONFIG = ("loss", "acc", "error", "value", "summary", "metric", "score", "time", "date",
               "created", "updated", "duration", "elapsed", "wall", "status", "state", "done")
"""Name parts of columns that are outcomes, times or states, never a configuration."""
_BOOKKEEPING = ("id", "ids", "note", "notes", "tag", "tags", "user", "path", "logdir", "url", "pid",
                "host", "hostname", "node", "ip")
"""Name parts of bookkeeping columns (ids, notes, tags, hosts), never a configuration."""
_ID_LIKE = ("name", "number", "index", "iteration", "iter", "step", "run", "trial")
"""Name parts of columns that are ids when their values differ per run."""


def plausible_config(fr: dict[str, np.ndarray], name: str) -> bool:
    """Whether column ``name`` may be a configuration column a hint can name: never a metric
    (:data:`scaling.spec.schema.OUTCOMES`, names with loss/acc/error/value/summary), a time, a
    status, or a column whose values differ per run (names, notes, ids)."""
    import re

    if name in schema.AXIS_COLUMNS:
        return True
    words = [w for w in re.split(r"[^a-z0-9]+|(?<=[a-z])(?=[0-9])", name.lower()) if w]
    low = name.lower()
    if name in schema.OUTCOMES or any(part in low for part in _NOT_CONFIG) \
            or low.startswith(("_", "summary")) or any(w in _BOOKKEEPING for w in words):
        return False
    col = fr[name]
    values = set(hashable(col))
    if col.dtype == object:
        if len(values) == len(col) or any(w in _ID_LIKE for w in words):
            return False
        if any(isinstance(v, (str,)) and len(v) > 40 for v in col[:50]):
            return False  # free text
        return not any(hasattr(v, "isoformat") for v in col[:50])
    return not (any(w in _ID_LIKE for w in words) and len(values) == len(col))


def varying(fr: dict[str, np.ndarray], rows: np.ndarray, exclude=()) -> list[str]:
    """Candidate axes that take more than one value over ``rows``."""
    out = []
    for name in candidate_axes(fr):
        if name in exclude:
            continue
        if len(set(hashable(fr[name][rows]))) > 1:
            out.append(name)
    return out


def hashable(col: np.ndarray) -> list:
    if col.dtype == object:
        return [None if v is None else str(v) for v in col]
    return [None if np.isnan(v) else float(v) for v in col]


def groups(fr: dict[str, np.ndarray], rows: np.ndarray, keys) -> list[tuple[tuple, np.ndarray]]:
    """[(key values, row indices)] over the rows in ``rows`` (bool mask or indices), sorted."""
    idx = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows)
    if not keys:
        return [((), idx)]
    cols = [hashable(fr[k][idx]) for k in keys]
    found: dict[tuple, list[int]] = {}
    for pos, key in enumerate(zip(*cols)):
        found.setdefault(key, []).append(int(idx[pos]))
    order = sorted(found, key=lambda k: tuple((v is None, v if v is not None else 0) for v in k))
    return [(k, np.array(found[k])) for k in order]


def parse_cols(text: str | None) -> list[str]:
    """``"width,depth"`` -> ``["width", "depth"]``."""
    return [c.strip() for c in (text or "").split(",") if c.strip()]


def parse_where(text, columns=()) -> dict[str, str]:
    """``--where`` flags to ``{column: value}``.

    ``text`` is one string or a list of them (the flag repeated). Within one string,
    ``COL=VALUE`` pairs are separated by commas, but only a comma followed by
    ``NAME=`` with ``NAME`` a column of the table (any identifier when ``columns`` is
    empty) starts a new pair, so values may contain commas:
    ``"Model=28 Enc, 6 Dec"`` is one pair, ``"lr=0.1,batch_size=32"`` two.
    """
    import re

    items = [text] if isinstance(text, str) or text is None else list(text)
    names = sorted((str(c) for c in columns), key=len, reverse=True)
    key = "|".join(re.escape(c) for c in names) if names else r"[A-Za-z_][\w.]*"
    split = re.compile(rf",(?=\s*(?:{key})\s*=)")
    out: dict[str, str] = {}
    for item in items:
        for part in split.split(item or ""):
            if not part.strip():
                continue
            if "=" not in part:
                raise AnalysisError(f"--where wants COL=VALUE (repeat the flag, or separate pairs "
                                    f"with commas), got {part.strip()!r}")
            k, value = (s.strip() for s in part.split("=", 1))
            if k in out and out[k] != value:
                raise AnalysisError(f"--where names {k!r} twice ({out[k]!r} and {value!r}); a "
                                    f"row has one value: use --filter \"{k} IN (...)\" for either")
            out[k] = value
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
    return ", ".join(f"{k}={label_value(v)}" for k, v in zip(keys, values))


def label_value(v) -> str:
    """A configuration value as text that reads back as the same value: integers without a
    point, other floats in their shortest exact form (``0.0031622776601683794``, never a
    rounded ``0.00316228`` that names another configuration)."""
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return repr(v)
    return str(v)
