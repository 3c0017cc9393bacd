"""What each panel of a sweep's page shows, as JSON-ready dicts, computed from a
:class:`~analysis.serve.store.Source` and cached per sweep version.

The laws come from the functions ``scaling fit`` and ``scaling bopt`` call, with their
defaults (:data:`FIT_OPTIONS`), and the text beside each figure is the text those commands
print (:func:`analysis.report.fit_text.curve_lines`, :func:`analysis.report.rule_text.bopt_lines`):
one code path, so the page and the terminal never disagree.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np

import analysis.report.figures as figs
from analysis import tables
from analysis.errors import AnalysisError
from analysis.serve.store import CURVES_WHOLE_BYTES
from analysis.tables.load import sort_runs

FIT_OPTIONS = {"n_boot": 1000, "level": 0.95, "seed": 0}
"""The bootstrap of ``scaling fit`` and ``scaling bopt`` when no flag is given."""
TABLE_LIMIT = 20000
"""Rows of the trial table sent to the browser (the newest first past this)."""
TABLE_EXTRA = ("steps", "examples_seen", "wall_s")
TOO_BIG = (f"this sweep's curve parts hold over {CURVES_WHOLE_BYTES >> 20} MB, too much to read "
           "whole: the dashboard shows its trials without their curves and times")
MAX_LINES = 60
"""Training curves drawn at once (evenly spread along the colour axis past this)."""


def _plain(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    return v if v is None or isinstance(v, (int, str, bool)) else str(v)


def _column(a: np.ndarray) -> list:
    """A column as JSON-safe Python values: numbers (NaN and infinities as None) or text."""
    if a.dtype == object:
        return [None if v is None else str(v) for v in a]
    out = a.astype(object)
    out[~np.isfinite(a)] = None
    return out.tolist()


def _distinct(col) -> list:
    """The distinct values of a column, sorted (numbers without NaN; text without None)."""
    if col.dtype != object:
        return np.unique(col[np.isfinite(col)]).tolist()
    values = set(col.tolist())
    values.discard(None)
    return sorted(values, key=str)


def _axes(fr) -> list[str]:
    """The sweep's axes that vary, the replicate last (cached with the frame: :func:`_frame`)."""
    if getattr(fr, "varying", None) is not None:
        return fr.varying
    rep = fr.replicate
    out = [a for a in fr.axes if a != rep and a in fr and len(_distinct(fr[a])) > 1]
    return out + ([rep] if rep in fr and len(_distinct(fr[rep])) > 1 else [])


FRAME_COLUMNS = ("sweep", "trial_id", "status", "error", "steps", "examples_seen", "wall_s",
                 "train_loss", "val_loss", "val_acc", "test_loss", "test_acc")
"""The columns the panels read, besides the axes (the fits read the whole table themselves)."""


def _frame(src, sweep: str):
    """The sweep's axes and :data:`FRAME_COLUMNS` as arrays (:func:`analysis.tables.frame`),
    built once per version."""
    def compute(trials, _curves):
        axes = tables.table_axes(trials)[0]
        keep = [c for c in trials.column_names if c in axes or c in FRAME_COLUMNS]
        grown = src.appended(sweep, "frame")
        if grown is not None and list(grown[0]) == keep:  # the last frame and the new rows
            old, rows = grown
            new = tables.frame(trials.select(keep).slice(rows))
            fr = tables.Frame({k: np.concatenate([old[k], new[k]]) for k in keep})
            for attr in ("axes", "replicate", "declared", "named", "pair"):
                setattr(fr, attr, getattr(new, attr))
        else:
            fr = tables.frame(trials.select(keep))
        fr.varying = None
        fr.varying = _axes(fr)
        return fr
    return src.result(sweep, "frame", compute)


def _metric(trials, metric: str | None) -> str:
    return metric or tables.headline_metric(trials)


def _times(col) -> np.ndarray:
    a = col.to_numpy(zero_copy_only=False) if hasattr(col, "to_numpy") else np.asarray(col)
    return np.asarray(a, dtype="datetime64[ms]")


def meta(src, sweep: str) -> dict:
    """The sweep's version, axes (with their values), metrics and headline metric."""
    def compute(trials, curves):
        fr = _frame(src, sweep)
        axes = _axes(fr)
        values = {a: _distinct(fr[a]) for a in axes}  # a missing value: no filter
        metrics = [m for m in ("error", "test_loss", "test_acc", "val_loss", "val_acc", "train_loss")
                   if m == "error" and "test_acc" in fr or m in fr]
        cmetrics = [m for m in ("test_loss", "test_acc", "val_loss", "val_acc", "train_loss")
                    if curves is not None and m in curves.column_names]
        return {"axes": axes, "values": values, "metrics": metrics, "headline": _metric(trials, None),
                "curve_metrics": cmetrics}
    return src.result(sweep, "meta", compute)


ETA_WINDOW = 20
"""Trials the ETA's rate is measured over: the most recent ones (more when they finished at
fewer than :data:`ETA_COMMITS` distinct times, as a pack's trials commit together)."""
ETA_COMMITS = 3
ETA_MIN_TRIALS = 5
"""Below this many finished trials with times, the ETA is unknown."""
PROGRESS_POINTS = 2000
"""Points per status in the progress figure (evenly spaced along the count past this)."""


def progress(src, sweep: str) -> dict:
    """Counts by status, throughput over the sweep and over its recent trials, the ETA, the
    cumulative figure and the failures with their errors."""
    def compute(trials, _curves):
        fr = _frame(src, sweep)
        status = tables.status(fr)
        counts = tables.count_by(status)
        out = {"trials": int(status.size), "counts": {str(k): int(v) for k, v in counts.items()}}
        expected = src.expected(sweep)
        out["expected"] = expected
        out["remaining"] = max(expected - int(status.size), 0) if expected is not None else None
        end = _times(trials.column("end_time")) if "end_time" in trials.column_names else \
            np.full(status.size, np.datetime64("NaT"), "datetime64[ms]")
        start = _times(trials.column("start_time")) if "start_time" in trials.column_names else end
        ok = ~np.isnat(end)
        steps = fr.get("steps")
        if ok.any():
            t0 = np.nanmin(start[~np.isnat(start)]) if (~np.isnat(start)).any() else end[ok].min()
            span = float((end[ok].max() - t0) / np.timedelta64(1, "ms")) / 1e3
            out["first"], out["last"] = str(t0), str(end[ok].max())
            out["span_s"] = span
            out["trials_per_s"] = float(ok.sum() / span) if span > 0 else None
            out["steps_per_s"] = float(np.nansum(steps[ok]) / span) \
                if steps is not None and span > 0 else None
            out["figure"] = figs.progress(end[ok], status[ok], PROGRESS_POINTS)
        else:
            out["note"] = "the trials carry no end times: no throughput or ETA"
        out["recent"] = recent_rate(end[ok], steps[ok] if steps is not None else None)
        bad = np.flatnonzero((status != "ok") & (status != "pruned"))  # pruned: stopped early by rule
        axes = _axes(fr)
        out["failures"] = [{"trial_id": str(fr["trial_id"][i]), "status": str(status[i]),
                            "config": ", ".join(f"{a}={tables.label_value(fr[a][i])}" for a in axes),
                            "error": str(fr["error"][i] or "") if "error" in fr else ""}
                           for i in bad[:200]]
        out["n_failures"] = int(bad.size)
        return out
    out = dict(src.result(sweep, "progress", compute))
    out["eta"] = eta(out.get("remaining"), out.get("recent"), time.time())
    return out


def recent_rate(end: np.ndarray, steps: np.ndarray | None) -> dict | None:
    """Trials/s and steps/s over the most recent trials: from the end of the trial before the
    window to the last end, the trials that finished after it (:data:`ETA_WINDOW`,
    :data:`ETA_COMMITS`); None below :data:`ETA_MIN_TRIALS` trials or with no time between."""
    if end.size < ETA_MIN_TRIALS:
        return None
    order = np.argsort(end, kind="stable")
    e = (end[order] - np.datetime64(0, "ms")).astype("timedelta64[ms]").astype(np.int64) / 1e3
    st = steps[order] if steps is not None else None
    for k in (ETA_WINDOW, 5 * ETA_WINDOW, e.size):
        t_a = e[max(e.size - 1 - k, 0)]
        inside = e > t_a
        if inside.sum() >= ETA_MIN_TRIALS - 1 and np.unique(e[inside]).size >= min(
                ETA_COMMITS, np.unique(e).size - 1):
            break
    span = e[-1] - t_a
    n = int(inside.sum())
    if span <= 0 or n == 0:
        return None
    return {"trials_per_s": n / span, "trials": n, "window_s": float(span), "last": float(e[-1]),
            "steps_per_s": float(np.nansum(st[inside]) / span) if st is not None else None}


def eta(remaining: int | None, recent: dict | None, now: float) -> dict:
    """Seconds until the sweep's remaining trials finish at the recent rate, counted from the
    last commit; or ``unknown`` and why. ``stalled`` when no trial committed for over three
    times the recent time per trial and at least a minute."""
    if remaining is None:
        return {"text": "unknown", "why": "the sweep's config (sweep.yaml) is not in the store, so "
                                          "the number of trials it has is unknown"}
    if remaining == 0:
        return {"text": "done", "seconds": 0.0}
    if recent is None:
        return {"text": "unknown", "why": f"measured once {ETA_MIN_TRIALS} trials have finished "
                                          "at different times"}
    rate = recent["trials_per_s"]
    since = max(now - recent["last"], 0.0)
    left = remaining / rate
    out = {"seconds": max(left - since, 0.0), "remaining": remaining, "rate": rate,
           "window_trials": recent["trials"], "window_s": recent["window_s"],
           "since_last_s": since}
    out["text"] = _duration(out["seconds"])
    if since > max(3 / rate, 60):
        out["stalled"] = True
        out["text"] = f"stalled? no trial for {_duration(since)}"
    return out


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    if s < 48 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def table(src, sweep: str, metric: str | None = None) -> dict:
    """The trial table: id, status, the axes, the metric and a few results, one row per trial."""
    def compute(trials, _curves):
        fr = _frame(src, sweep)
        m = _metric(trials, metric)
        axes = _axes(fr)
        values = tables.metric(fr, m)
        cols = ["trial_id", "status"] + axes + [m] + [c for c in TABLE_EXTRA if c in fr]
        n = tables.n_rows(fr)
        idx = np.arange(min(n, TABLE_LIMIT))
        if n > TABLE_LIMIT and "end_time" in trials.column_names:
            idx = np.argsort(_times(trials.column("end_time")))[::-1][:TABLE_LIMIT]
        status = tables.status(fr)
        arrays = [fr["trial_id"], status] + [fr[a] for a in axes] + [values] + \
            [fr[c] for c in TABLE_EXTRA if c in fr]
        rows = [list(r) for r in zip(*(_column(a[idx]) for a in arrays))]
        return {"columns": cols, "rows": rows, "total": n, "metric": m}
    return src.result(sweep, ("table", metric), compute)


def parcoords(src, sweep: str, metric: str | None = None) -> dict:
    def compute(trials, _curves):
        fr = _frame(src, sweep)
        m = _metric(trials, metric)
        axes = [a for a in _axes(fr) if a != fr.replicate]
        return figs.parcoords(fr, axes, m, tables.metric(fr, m), fr["trial_id"])
    return src.result(sweep, ("parcoords", metric), compute)


def curves(src, sweep: str, where: str, metric: str | None = None) -> dict:
    """Training curves of the trials ``where`` selects (``COL=VALUE`` pairs or an SQL expression,
    as ``scaling report --curves``), coloured by the axis that varies among them."""
    from analysis.report.training import group

    def compute(trials, curves_table):
        if curves_table is None:
            raise AnalysisError(TOO_BIG)
        m = metric or _curve_metric(trials, curves_table)
        text = where.strip() or "status IS NOT NULL"
        tc = group(trials, curves_table, text, m)
        if not where.strip():
            tc = dataclasses.replace(tc, title=f"{m} while training: every configuration")
        notes = list(tc.notes)
        if len(tc.lines) > MAX_LINES:
            notes.append(f"showing {MAX_LINES} of {len(tc.lines)} configurations (every "
                         f"{len(tc.lines) / MAX_LINES:.1f}th by {tc.axis}); choose axis values to see "
                         "the others")
            keep = np.unique(np.linspace(0, len(tc.lines) - 1, MAX_LINES).round().astype(int))
            tc = dataclasses.replace(tc, lines=tuple(tc.lines[i] for i in keep))
        return {"figure": figs.training(tc), "notes": notes, "lines": len(tc.lines)}
    return src.result(sweep, ("curves", where, metric), compute)


def _curve_metric(trials, curves) -> str:
    m = tables.headline_metric(trials)
    if curves is not None and m == "error" and "test_acc" in curves.column_names:
        return "error"
    return m if curves is not None and m in curves.column_names else "test_loss"


FIT_APART_ROWS = 5000
"""Past this many trials the laws are fitted in the fitting process (seconds of work that would
otherwise hold the server's interpreter); below, in a thread of the server, which costs no
process start and no second import of the analysis (about a CPU-second)."""


def laws(src, sweep: str, x: str = "n_train", metric: str | None = None) -> dict:
    """The learning-curve frontier with its law, B_opt with the rule, and B_crit: figure and the
    text the commands print, each or the reason it is not available yet. Fitted in the background
    (:meth:`~analysis.serve.store.Source.slow_result`): until the fit of the current trials is
    ready, a law is the last one fitted, marked ``stale``, or ``pending`` before the first;
    ``pending`` at the top says the page should ask again."""
    keys = {"learning_curve": ("fit", x, metric), "bopt": ("bopt", metric), "bcrit": ("bcrit",)}
    out, pending = {}, False
    trials = src.tables(sweep)[1]
    apart = src.fitter is not None and trials is not None and trials.num_rows > FIT_APART_ROWS
    for name, key in keys.items():
        if apart:  # in the fitting process (analysis.serve.fitter)
            compute = lambda t, c, key=key: src.fitter.run(key, t, c)
        else:
            compute = lambda t, c, key=key: compute_law(key, t, c)
        value, current, as_of = src.slow_result(sweep, key, compute)
        if value is None:
            part = {"pending": True}
        elif isinstance(value, AnalysisError):
            part = {"error": str(value)}
        else:
            part = dict(value)
        if not current:
            pending = True
            if value is not None:
                part["stale"] = True
        part["as_of"] = as_of
        out[name] = part
    out["pending"] = pending
    return out


def compute_law(key: tuple, trials, curves) -> dict:
    """The law ``key`` names (``("fit", x, metric)``, ``("bopt", metric)``, ``("bcrit",)``) of a
    sweep's tables, by the functions the commands call."""
    if key[0] == "fit":
        return _fit(_as_read(trials), key[1], key[2])
    if key[0] == "bopt":
        return _bopt(_as_read(trials), key[1])
    if key[0] == "bcrit":
        return _bcrit(*sort_runs(trials, curves))
    raise AnalysisError(f"unknown law {key[0]!r}")


def _as_read(trials):
    """The trials with the columns ``scaling fit`` and ``scaling bopt`` read, in their order
    (:func:`analysis.tables.load_trials`): one input, one output."""
    from analysis.tables.load import SKIPPED

    trials = trials.select([c for c in trials.column_names if c not in SKIPPED])
    return sort_runs(trials)[0]  # in the order the store's views give them


def _fit(trials, x, metric) -> dict:
    from analysis.fit.curves import fit_learning_curves
    from analysis.fit.forms.on_curves import add_forms
    from analysis.report.fit_text import curve_lines

    m = _metric(trials, metric)
    curves = fit_learning_curves(trials, x=x, metric=m, **FIT_OPTIONS)
    curves = add_forms(curves, **FIT_OPTIONS)  # the extrapolation check `scaling fit` prints
    fitted = [c for c in curves if c.x]
    if not fitted:
        raise AnalysisError(curves[0].message if curves else "no learning curve")
    return {"figure": figs.learning_curves(fitted), "text": curve_lines(curves),
            "fitted": fitted[0].fit is not None}


def _bopt(trials, metric) -> dict:
    from analysis.report.rule_text import bopt_lines
    from analysis.rules.bopt import find_bopt

    m = _metric(trials, metric)
    result = find_bopt(trials, metric=m, **FIT_OPTIONS)
    verdict = result.rule.verdict.label if result.rule is not None else "not checked"
    return {"figure": figs.bopt(result), "text": bopt_lines(result), "verdict": verdict}


BCRIT_OPTIONS = {"n_boot": 400, "level": 0.95, "seed": 0}
"""The bootstrap of ``scaling bcrit`` when no flag is given."""


def _bcrit(trials, curves) -> dict:
    """B_crit at the target most batch sizes reach (as ``scaling report`` chooses it), by the
    function ``scaling bcrit --target T`` calls, with its defaults and its text."""
    from analysis.report.rule_text import critical_lines
    from analysis.rules.critical import auto_target, critical_batch

    if curves is None:
        raise AnalysisError(TOO_BIG)
    if curves.num_rows == 0:
        raise AnalysisError("needs the store's curves table")
    metric = "test_loss" if "test_loss" in curves.column_names else _curve_metric(trials, curves)
    target = auto_target(trials, metric)
    result = critical_batch(trials, curves, targets=[target], metric=metric, **BCRIT_OPTIONS)
    if not any(g.fit.ok for g in result.groups):
        raise AnalysisError(f"no group reaches {metric} {target:g} at enough batch sizes yet")
    return {"figure": figs.tradeoff(result), "text": critical_lines(result),
            "command": f"scaling bcrit RESULTS --target {target:g} --metric {metric}"}


def trial(src, sweep: str, trial_id: str) -> dict:
    """One trial's stored row (its config as JSON) and its curve."""
    def compute(trials, curves_table):
        fr = _frame(src, sweep)
        hits = np.flatnonzero(np.array([str(t) == trial_id for t in fr["trial_id"]]))
        if not hits.size:
            raise AnalysisError(f"no trial {trial_id!r} in sweep {sweep!r}")
        i = int(hits[0])
        row = {k: _plain(fr[k][i]) for k in fr if k != "config"}
        config = None
        if "config" in trials.column_names:
            text = trials.column("config")[i].as_py()
            try:
                config = json.loads(text) if text else None
            except ValueError:
                config = text
        return {"row": row, "config": config}
    return src.result(sweep, ("trial", trial_id), compute)
