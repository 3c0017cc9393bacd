r"""Trials as a cells x seeds matrix, the selection metric, and the clustered bootstrap.

A *cell* is one configuration (every axis but the seed); a seed fixes the
init, the nested training subset and the data order across all cells, so
seeds are the unit of resampling: a replicate draws one multiset of seed
indices and applies it to every cell (Cameron & Miller 2015, "A
Practitioner's Guide to Cluster-Robust Inference"). A replicate's cell means
are weighted means over the drawn seeds, for all replicates at once as one
matrix product.

With :math:`S` seeds the bootstrap variance of a mean is
:math:`\frac{S-1}{S}\,s^2/S` and a normal quantile ignores that :math:`s^2`
comes from :math:`S` clusters; intervals are therefore
:math:`\hat\theta \pm t_{S-1,\,(1+\ell)/2}\,\sqrt{S/(S-1)}\;\mathrm{sd}^*(\theta^*)`,
the rescaled bootstrap (Rao & Wu 1988) with a t quantile for few clusters
(Cameron, Gelbach & Miller 2008; Bell & McCaffrey 2002). Statistics whose
replicates choose winners again (the frontier) keep the t quantile but not the
rescaling, which measurement showed they do not need (:mod:`analysis.tables.frontier`).

Selection (which cell wins) uses a separate metric when the table has one:
``val_X`` for ``test_X``, ``1 - val_acc`` for ``error``. Without it the
seeds are split in two halves (cross-fitting, Chernozhukov et al. 2018):
choose on one half, measure on the other, swap and average.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from scipy.special import stdtrit  # the t quantile, without scipy.stats' import (0.4 s)

from analysis import tables
from analysis.errors import AnalysisError
from analysis.stats.robust import resample_counts

BIG_BATCH = "batch > n_train"
"""Outcome label of a trial whose batch is larger than its training set."""


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """A trials table ready for selection: filters applied, outcomes labelled, notes kept."""

    fr: dict
    mask: np.ndarray
    """Rows of interest (``--where``, ``--sweep``)."""
    y: np.ndarray
    """Reported metric per row."""
    ok: np.ndarray
    """Usable rows: status ok, finite metric, batch not above n_train."""
    outcome: np.ndarray
    """``ok``, ``diverged``, ``failed``, ``nonfinite``, ``batch > n_train`` ... per row."""
    sel: np.ndarray | None
    """Selection metric per row, or None (cross-fit over seeds)."""
    sel_name: str
    """Its name (``val_loss``), or why there is none."""
    notes: tuple[str, ...]
    """Duplicates collapsed, batches larger than the training set: said once, here."""
    n_duplicates: int
    n_big_batch: int


def prepare(trials: pa.Table, metric: str, *, where: dict | None = None,
            sweep: str | None = None, by=(), batch: str = "batch_size") -> Prepared:
    """Collapse duplicates, filter, refuse pooled sweeps, label outcomes, find the selection metric.

    ``batch`` names the batch-size column (rows with a batch above ``n_train`` are flagged).

    Raises
    ------
    AnalysisError
        Unknown metric or column, several sweeps without ``sweep``/``by``, no usable trial.
    """
    trials, dups = collapse_duplicates(trials)
    fr = tables.frame(trials)
    y = tables.metric(fr, metric)
    where = sweep_where(fr, where, sweep)
    mask = tables.where_mask(fr, where) if where else np.ones(tables.n_rows(fr), bool)
    check_one_sweep(fr, mask, by)
    ok, outcome = tables.usable(fr, y)
    big = np.zeros(ok.size, bool)
    if batch in fr and "n_train" in fr and fr[batch].dtype != object \
            and fr["n_train"].dtype != object:
        with np.errstate(invalid="ignore"):
            big = fr[batch] > fr["n_train"]
    outcome = np.where(big, BIG_BATCH, outcome)
    ok &= ~big
    notes = []
    if dups:
        notes.append(f"warning: collapsed {dups} exact duplicate row(s); a copied row would "
                     "count as another seed and shrink every interval")
    n_big = int((big & mask).sum())
    if n_big:
        notes.append(f"{n_big} trial(s) with {batch} > n_train are left out and their cells "
                     "flagged: a batch cannot hold more examples than the training set")
    if not (ok & mask).any():
        raise AnalysisError(f"no usable trials for {metric!r}: outcomes "
                            f"{tables.count_by(outcome[mask])}")
    sel, sel_name = selection_values(fr, metric, ok & mask)
    return Prepared(fr=fr, mask=mask, y=y, ok=ok, outcome=outcome, sel=sel, sel_name=sel_name,
                    notes=tuple(notes), n_duplicates=dups, n_big_batch=n_big)


def collapse_duplicates(trials: pa.Table) -> tuple[pa.Table, int]:
    """``(table without exact duplicate rows, rows removed)``; a duplicate is a fake seed."""
    n = trials.num_rows
    if n < 2:
        return trials, 0
    import pyarrow.compute as pc
    for name in ("trial_id", "run_id"):  # a column of distinct values rules duplicates out
        if name in trials.column_names and trials.column(name).null_count == 0 \
                and pc.count_distinct(trials.column(name)).as_py() == n:
            return trials, 0
    codes = np.empty((n, trials.num_columns), np.int64)
    for j, col in enumerate(trials.columns):
        values = col.to_pylist() if not (pa.types.is_integer(col.type) or
                                         pa.types.is_floating(col.type)) else None
        if values is None:
            arr = col.to_numpy(zero_copy_only=False).astype(float)
            codes[:, j] = np.unique(arr, return_inverse=True)[1].ravel()
        else:
            codes[:, j] = np.unique(np.array([repr(v) for v in values]), return_inverse=True)[1]
    _, first = np.unique(codes, axis=0, return_index=True)
    if first.size == n:
        return trials, 0
    return trials.take(np.sort(first)), n - first.size


def check_one_sweep(fr: dict, mask: np.ndarray, by) -> None:
    """Refuse to pool sweeps: :class:`AnalysisError` naming them unless ``sweep`` is in ``by``."""
    if "sweep" not in fr or "sweep" in tuple(by):
        return
    names = sorted({str(v) for v in fr["sweep"][mask]})
    if len(names) > 1:
        raise AnalysisError(f"the table holds {len(names)} sweeps ({', '.join(names)}); "
                            "pick one with --sweep NAME or fit each with --by sweep")


def sweep_where(fr: dict, where: dict | None, sweep: str | None) -> dict:
    """``where`` with ``sweep=NAME`` added; an unknown name lists the sweeps there are."""
    where = dict(where or {})
    if sweep is None:
        return where
    names = sorted({str(v) for v in fr["sweep"]}) if "sweep" in fr else []
    if sweep not in names:
        raise AnalysisError(f"no sweep {sweep!r}; the table holds: {', '.join(names) or 'none'}")
    where["sweep"] = sweep
    return where


def selection_values(fr: dict, metric: str, ok: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The validation counterpart of ``metric`` per row, or ``(None, why not)``.

    ``test_X`` -> ``val_X``; ``error`` -> ``1 - val_acc``; ``gap`` ->
    ``val_loss - train_loss``; or the ``val`` column a user named with ``--col val=COL``, for
    the ``test`` column (or, with none named, a metric of the same kind: an accuracy for
    ``error``). Unusable when a usable trial lacks it.
    """
    pair = getattr(fr, "pair", None) or {}
    val, test = pair.get("val"), pair.get("test")
    acc = val is not None and tables.maximize(val)
    if val is not None and val in fr and (metric == test or test is None and (
            acc if metric == "error" else acc == tables.maximize(metric) and metric != "gap")):
        name, col = f"{val} (validation)", val
        if metric == "error":
            name = f"1 - {val} (validation)"
    elif metric == "error":
        name, col = "1 - val_acc", "val_acc"
    elif metric == "gap":
        name, col = "val_loss - train_loss", "val_loss"
    elif metric.startswith("test_"):
        name = col = "val_" + metric[len("test_"):]
    else:
        return None, f"{metric!r} has no validation counterpart"
    if col not in fr or fr[col].dtype == object:
        return None, f"the table has no {col} column"
    v = fr[col]
    v = 1.0 - v if metric == "error" else (v - fr["train_loss"] if metric == "gap" and col == "val_loss" else v)
    missing = int((ok & ~np.isfinite(v)).sum())
    if missing:
        return None, f"{col} is missing for {missing} usable trials"
    return v, name


@dataclass(frozen=True, kw_only=True)
class CellMatrix:
    """Trials arranged as cells (rows) x seeds (columns); NaN where a seed has no value."""

    cols: tuple[str, ...]
    """Columns that define a cell."""
    keys: list
    """Values of ``cols`` per cell (tuples, in :func:`analysis.tables.groups` order)."""
    y: np.ndarray
    """Reported metric, shape ``(C, S)``."""
    sel: np.ndarray
    """Selection metric, shape ``(C, S)`` (equal to ``y`` when there is none)."""
    seeds: np.ndarray
    """Seed labels, length ``S``."""
    eligible: np.ndarray
    """Cells that may be selected: every trial ok, with a finite metric."""
    reasons: tuple[str, ...]
    """Why each ineligible cell is left out (empty string for eligible ones)."""
    rows: np.ndarray = field(repr=False)
    """Trial rows considered."""
    cell_of: np.ndarray = field(repr=False)
    """Cell of each of ``rows``."""
    labels: np.ndarray = field(repr=False)
    """Outcome of each of ``rows``."""

    def outcomes(self, cells) -> dict:
        """Trials of ``cells`` by outcome, largest first."""
        return tables.count_by(self.labels[np.isin(self.cell_of, np.asarray(cells))])


def cell_matrix(fr: dict, rows: np.ndarray, cols, y: np.ndarray, sel: np.ndarray | None,
                outcome: np.ndarray) -> CellMatrix:
    """Arrange ``rows`` (every trial of interest, usable or not) into a :class:`CellMatrix`.

    A cell with any trial whose outcome is not ``ok`` (diverged, failed,
    non-finite, batch larger than the training set) is ineligible: scoring it by
    its survivors would hide the failures (Google's tuning playbook). Several
    rows for one (cell, seed) are averaged: they are one cluster.
    """
    cols = tuple(cols)
    rows = np.asarray(rows)
    cells = groups(fr, rows, cols)
    C = len(cells)
    cell_of = np.empty(rows.size, np.int64)
    pos = np.empty(rows.size, np.int64)           # position of each row within its cell
    order = np.argsort(rows)
    sorted_rows = rows[order]
    for c, (_, idx) in enumerate(cells):
        at = order[np.searchsorted(sorted_rows, idx)]
        cell_of[at] = c
        pos[at] = np.arange(idx.size)
    tables.check_replicates(fr, rows, cell_of, cols)
    rep = getattr(fr, "replicate", "seed") or "seed"
    if rep in fr and fr[rep].dtype != object:
        seed_of = np.where(np.isnan(fr[rep][rows]), -1.0, fr[rep][rows])
    elif rep in fr:
        seed_of = np.unique(np.array([str(v) for v in fr[rep][rows]]), return_inverse=True)[1].astype(float)
    else:  # no seed column (then every cell has one row): the k-th row of each cell is seed k
        seed_of = pos.astype(float)
    seeds, s_of = np.unique(seed_of, return_inverse=True)
    S = seeds.size
    labels = outcome[rows]
    ok = labels == "ok"
    bad_count = np.bincount(cell_of, weights=~ok, minlength=C)
    flat = cell_of * S + s_of.ravel()
    cnt = np.bincount(flat[ok], minlength=C * S).reshape(C, S)
    sel_v = y if sel is None else sel
    with np.errstate(invalid="ignore", divide="ignore"):
        ys = np.bincount(flat[ok], weights=y[rows][ok], minlength=C * S).reshape(C, S) / cnt
        ss = np.bincount(flat[ok], weights=sel_v[rows][ok], minlength=C * S).reshape(C, S) / cnt
    eligible = bad_count == 0
    reasons = [""] * C
    for c in np.flatnonzero(~eligible):
        lab = labels[cell_of == c]
        reasons[c] = ", ".join(f"{k} on {v} of {lab.size} trials"
                               for k, v in tables.count_by(lab[lab != "ok"]).items())
    return CellMatrix(cols=cols, keys=[k for k, _ in cells], y=np.where(cnt > 0, ys, np.nan),
                      sel=np.where(cnt > 0, ss, np.nan), seeds=seeds, eligible=eligible,
                      reasons=tuple(reasons), rows=rows, cell_of=cell_of, labels=labels)


def varying(fr: dict, rows: np.ndarray, exclude=()) -> list[str]:
    """:func:`analysis.tables.varying` over ``rows``, asked of a few representative rows.

    For every candidate column the first row of each of its distinct values is kept,
    so each column takes the same set of values as over all ``rows``; the answer is the
    same, at the cost of a few dozen rows instead of thousands.
    """
    rows = np.asarray(rows)
    exclude = tuple(exclude) + ((fr.replicate,) if getattr(fr, "replicate", None) else ())
    keep = [rows[:1]]
    for name in tables.candidate_axes(fr):
        col = fr[name][rows]
        if _constant(col):  # most columns are: no sort needed (rows[:1] stands for them)
            continue
        if col.dtype == object:
            col = np.array(["\0none" if v is None else str(v) for v in col])
        keep.append(rows[np.unique(col, return_index=True)[1]])
    return tables.varying(fr, np.unique(np.concatenate(keep)), exclude=exclude)


def _constant(col: np.ndarray) -> bool:
    """Whether every value of ``col`` is the first one (NaN equal to NaN, None to None)."""
    if col.size < 2:
        return True
    first = col[0]
    if col.dtype == object:
        if isinstance(first, str):  # == on str is exact (1 and 1.0 never equal "1")
            return bool((col == first).all())
        return all(v is None for v in col) if first is None else \
            all(v == first and type(v) is type(first) for v in col)
    if np.isnan(first):
        return bool(np.isnan(col).all())
    return bool((col == first).all())


def groups(fr: dict, rows: np.ndarray, cols) -> list[tuple[tuple, np.ndarray]]:
    """:func:`analysis.tables.groups` (same keys, same order), vectorised with numpy."""
    rows = np.asarray(rows)
    cols = tuple(cols)
    if not cols or rows.size == 0:
        return tables.groups(fr, rows, cols)
    codes, values = [], []
    for name in cols:
        col = fr[name][rows]
        if col.dtype == object:
            text = np.array([v is None for v in col])
            uniq = sorted({str(v) for v in col if v is not None})
            lookup = {v: i for i, v in enumerate(uniq)}
            code = np.array([len(uniq) if v is None else lookup[str(v)] for v in col])
            values.append(uniq + [None])
            codes.append(np.where(text, len(uniq), code))
        else:
            uniq, code = np.unique(col, return_inverse=True)
            values.append([None if np.isnan(v) else float(v) for v in uniq])
            codes.append(code.ravel())
    sizes = [len(v) + 1 for v in values]
    if float(np.prod(np.asarray(sizes, float))) < 2.0 ** 62:
        # one int64 per row, mixed radix with the first column most significant: its sorted
        # distinct values are the rows of np.unique(..., axis=0) in the same order, 10x faster
        flat = np.zeros(rows.size, np.int64)
        for code, size in zip(codes, sizes):
            flat = flat * size + code
        uniq, inv = np.unique(flat, return_inverse=True)
        keys = np.empty((uniq.size, len(codes)), np.int64)
        rest = uniq.copy()
        for j in range(len(codes) - 1, -1, -1):
            keys[:, j] = rest % sizes[j]
            rest //= sizes[j]
    else:
        keys, inv = np.unique(np.column_stack(codes), axis=0, return_inverse=True)
    inv = inv.ravel()
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(keys.shape[0] + 1))
    return [(tuple(values[j][k] for j, k in enumerate(key)), rows[order[bounds[i]:bounds[i + 1]]])
            for i, key in enumerate(keys)]


def halves(n_seeds: int) -> np.ndarray:
    """Half label (0 or 1) of each seed position: alternate, so both halves span the seeds."""
    return np.arange(n_seeds) % 2


def seed_counts(n_seeds: int, n_boot: int, rng: np.random.Generator,
                strata: np.ndarray | None = None) -> np.ndarray:
    """``(n_boot, S)`` draw counts: seed indices with replacement (within ``strata``); the
    clusters of :func:`analysis.stats.robust.resample_counts`."""
    return resample_counts(n_seeds, n_boot, rng, strata)


def weighted_means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(R, C)`` means of ``values`` (``(C, S)``, NaN = absent) under ``weights`` (``(R, S)``)."""
    present = np.isfinite(values)
    num = np.where(present, values, 0.0) @ weights.T
    den = present.astype(float) @ weights.T
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan).T


def best_index(scores: np.ndarray, maximize: bool) -> np.ndarray:
    """Argbest over the last axis, NaN never best; -1 where every entry is NaN."""
    fill = -np.inf if maximize else np.inf
    s = np.where(np.isfinite(scores), scores, fill)
    k = np.argmax(s, axis=-1) if maximize else np.argmin(s, axis=-1)
    return np.where(np.isfinite(scores).any(-1), k, -1)


@dataclass(frozen=True, kw_only=True)
class Resampling:
    """How intervals from seed replicates are built."""

    n_clusters: int
    """Seeds resampled."""
    df: int
    """Degrees of freedom of the t quantile."""
    scale: float
    """Factor on the bootstrap sd that restores the variance of a mean."""
    method: str
    """``"validation"``, ``"cross-fit"`` or ``"same seeds"``: how winners were chosen."""

    def interval(self, estimate, replicates, level: float, axis: int = 0):
        """``(low, high)``: estimate +- t quantile x scale x bootstrap sd of ``replicates``."""
        sd = np.nanstd(replicates, axis=axis, ddof=1)
        half = self.half_width(sd, level)
        return estimate - half, estimate + half

    def half_width(self, sd, level: float):
        return stdtrit(max(self.df, 1), 0.5 + level / 2.0) * self.scale * np.asarray(sd)

    def to_dict(self) -> dict:
        return {"method": self.method, "n_clusters": self.n_clusters, "df": self.df,
                "scale": self.scale}


def resampling(n_seeds: int, method: str, rescale: bool = True) -> Resampling:
    """Small-cluster correction for ``n_seeds`` seeds; cross-fitting resamples within halves.

    ``rescale=False`` keeps the bootstrap sd as it is (the t quantile stays): for
    statistics whose replicates choose winners again, the selection variance already
    makes up the bootstrap's shortfall (measured in :mod:`analysis.tables.frontier`).
    """
    df = max(n_seeds - (2 if method == "cross-fit" else 1), 1)
    scale = float(np.sqrt(n_seeds / df)) if rescale else 1.0
    return Resampling(n_clusters=n_seeds, df=df, scale=scale, method=method)


def padded(groups_of_cells: list[np.ndarray]) -> np.ndarray:
    """``(G, K)`` cell indices per group, padded with -1."""
    K = max((g.size for g in groups_of_cells), default=0)
    out = np.full((len(groups_of_cells), max(K, 1)), -1, np.int64)
    for i, g in enumerate(groups_of_cells):
        out[i, :g.size] = g
    return out


def gather(means: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``means[..., index]`` with NaN where ``index`` is -1."""
    out = means[..., np.maximum(index, 0)]
    return np.where(index >= 0, out, np.nan)
