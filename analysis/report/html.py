"""One self-contained HTML page about a results store: counts, fits and plots.

Images are inlined as base64 PNG, so the page can be mailed or archived as a
single file. Each section is computed independently; a section whose data are
degenerate shows the reason instead of a plot, and the rest of the page is
still written. Infeasible trials (diverged, failed) are counted in every
section that leaves them out.
"""

from __future__ import annotations

import html
import os
import re
from datetime import datetime, timezone

import numpy as np

import analysis.report.fit_text as fit_text
import analysis.report.rule_text as rule_text
import analysis.report.text as fmt
import analysis.tables.cells as cl
from analysis import tables
import analysis.report.plots as plots
from analysis.rules.bopt import collapse, find_bopt
from analysis.fit.curves import fit_learning_curves
from analysis.errors import AnalysisError

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 2px 6px; text-align: left; }
th { background: #f3f3f3; } .msg { color: #a33; } .note { color: #555; font-size: 0.9em; }
img { max-width: 100%; border: 1px solid #eee; } pre { white-space: pre-wrap; font-size: 0.85em; }
"""


def _table(headers, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(fig, alt: str) -> str:
    data = plots.to_base64_png(fig)
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


def _p(text: str, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<p{attr}>{html.escape(text)}</p>"


def _summary(trials) -> str:
    fr = tables.frame(trials)
    status = tables.status(fr)
    bad = status != "ok"
    parts = [_table(*fmt.summary_rows(trials))]
    if bad.any():
        counts = fmt.outcomes_text(tables.count_by(status[bad]))
        parts.append(_p(f"{int(bad.sum())} of {status.size} trials did not finish ok ({counts}). "
                        "They are left out of every fit below and counted in each section."))
        if "error" in fr:
            msgs = [re.sub(r"\d[\d.eE+-]*", "#", str(m))[:100] for m in fr["error"][bad] if m]
            if msgs:
                top = tables.count_by(np.array(msgs, dtype=object))
                parts.append(_table(["error message (numbers as #)", "trials"],
                                    list(top.items())[:8]))
    else:
        parts.append(_p(f"all {status.size} trials finished ok."))
    return "".join(parts)


def _curves(trials, x, metric, by, n_boot, offset=True) -> tuple[str, list]:
    from analysis.fit.forms.on_curves import add_forms
    from analysis.report.fit_text import curve_family_lines

    curves = fit_learning_curves(trials, x=x, metric=metric, by=by, n_boot=n_boot, offset=offset)
    curves = add_forms(curves, n_boot=n_boot)  # auto's choice and every family's score
    parts = [_img(plots.plot_curves(curves), f"{metric} vs {x}")]
    parts += [_p(n, "msg") for n in (curves[0].notes if curves else ())]
    for c in curves:
        over = f"best over {', '.join(c.over)}" if c.over else "fixed configuration"
        parts.append(f"<h3>{html.escape(c.label)}</h3>")
        parts.append(_p(f"{over}; trials: {fmt.outcomes_text(c.outcomes)}", "note"))
        if c.selection and c.over:
            parts.append(_p(f"selection: {c.selection}", "note"))
        if c.flagged:
            parts.append("<pre>" + html.escape("\n".join(fit_text.flagged_lines(c.flagged, 20)))
                         + "</pre>")
        if c.fit is None:
            parts.append(_p(f"no fit: {c.message}", "msg"))
            continue
        lines = fit_text.fit_lines(c.fit) + [f"  warning: {w}" for w in c.warnings]
        parts.append("<pre>" + html.escape("\n".join(lines)) + "</pre>")
        family = curve_family_lines(c, params=False)
        if family:
            parts.append(_p("Curve families: the extrapolation check of auto, which chooses by "
                            "rolling-origin validation on the fitted points (every family's "
                            "score below; the exponent above stays the power law's)", "note"))
            parts.append("<pre>" + html.escape("\n".join(family)) + "</pre>")
    return "".join(parts), curves


def _fitted_values(curves) -> str:
    rows = []
    for c in curves:
        if c.fit is None:
            rows.append([c.label, "-", "-", "-", "-", c.message])
            continue
        for n, v, lo, hi in zip(c.fit.names, c.fit.params, c.fit.ci_low, c.fit.ci_high):
            rows.append([c.label, n, fmt.g(v), fmt.g(lo), fmt.g(hi),
                         "converged" if c.fit.converged else "NOT converged"])
    return _table(["curve", "param", "value", "CI low", "CI high", "status"], rows)


def _bopt(trials, metric, n_boot, by=()) -> str:
    result = find_bopt(trials, metric=metric, n_boot=n_boot, by=by)
    if result.rule is not None:
        v = result.rule.verdict
        parts = [_p(f"verdict: {v.label}: {v.reason}", "" if v.label != "inconclusive" else "msg")]
        rule = ["<pre>" + html.escape("\n".join(rule_text.rule_lines(result.rule))) + "</pre>"]
    else:
        parts, rule = [_p(f"rule check: none ({result.rule_note})", "msg")], []
    parts += [_p(f"selection: {result.selection}", "note")] + [_p(n, "msg") for n in result.notes]
    parts += [_img(plots.plot_bopt(result), "B_opt against lr*N/(1-m)")] + rule + [
        _table(*rule_text.group_rows(result))]
    return "".join(parts)


def _critical(trials, curves, metric, n_boot, targets=None) -> str:
    from analysis.rules.critical import auto_target, critical_batch
    from analysis.report.rule_text import critical_lines

    if curves is None or curves.num_rows == 0:
        raise AnalysisError("needs the learning curves of a results store")
    fr = tables.frame(trials)
    tune = "lr" in fr and len(set(tables.hashable(fr["lr"]))) > 1
    chosen = list(targets) if targets else [auto_target(trials, metric)]
    res = critical_batch(trials, curves, targets=chosen, metric=metric, tune_lr=tune, n_boot=n_boot)
    note = ("target chosen automatically: the 70th percentile of the batch sizes' median final "
            f"{metric} (scaling bcrit --target T for others)") if not targets else ""
    parts = [_p(note, "note")] if note else []
    parts += [_img(plots.plot_tradeoff(res), "steps against examples to target"),
              "<pre>" + html.escape("\n".join(critical_lines(res))) + "</pre>"]
    return "".join(parts)


def _section(title: str, build) -> str:
    try:
        body = build()
    except AnalysisError as e:
        body = _p(f"not available: {e}", "msg")
    return f"<h2>{html.escape(title)}</h2>{body}"


def build_report(trials, *, source: str = "", x: str = "n_train", metric: str = "test_loss",
                 by=(), bopt_metric: str = "test_acc", n_boot: int = 1000, offset: bool = True,
                 curve_trials=None, bopt_trials=None, extra: str = "", curves=None,
                 bcrit_trials=None, bcrit_targets=None) -> str:
    """The HTML page for a trials table.

    Parameters
    ----------
    trials : pyarrow.Table
        Trials of one or more sweeps.
    source : str
        Where they came from, for the heading.
    x, metric, by
        Learning-curve axis, metric and grouping (:func:`analysis.fit.curves.fit_learning_curves`).
    bopt_metric : str
        Metric whose optimum defines :math:`B_{opt}` and the collapse plot.
    n_boot : int
        Bootstrap resamples for every interval.
    offset : bool
        Fit ``a*x^b + c`` (True) or ``a*x^b``.
    curve_trials, bopt_trials : pyarrow.Table, optional
        Other trials for the learning-curve and the B_opt/collapse sections (e.g. one
        sweep each); default ``trials``.
    extra : str
        HTML put right under the heading (e.g. a table of headline figures).
    curves, bcrit_trials, bcrit_targets : optional
        The store's curves, the trials of the critical-batch section (default ``trials``)
        and its targets (default: :func:`analysis.rules.critical.auto_target`); no curves, no section.
    """
    import pyarrow.compute as pc

    curve_trials = trials if curve_trials is None else curve_trials
    bopt_trials = trials if bopt_trials is None else bopt_trials
    names = sorted(set(bopt_trials.column("sweep").to_pylist())) \
        if "sweep" in bopt_trials.column_names else []
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    holder: dict = {}

    def curves_section():
        body, holder["curves"] = _curves(curve_trials, x, metric, tuple(by), n_boot, offset)
        return body

    def collapse_section():
        parts = []
        for name in names if len(names) > 1 else [None]:
            part = bopt_trials if name is None else bopt_trials.filter(
                pc.equal(bopt_trials.column("sweep"), name))
            if name is not None:
                parts.append(f"<h3>sweep={html.escape(name)}</h3>")
            parts.append(_img(plots.plot_collapse(collapse(part, metric=bopt_metric)),
                              "noise-scale collapse"))
        return "".join(parts)

    sections = [
        _section("Sweep summary", lambda: _summary(trials)),
        _section(f"Learning curves: {metric} vs {x}", curves_section),
        _section(f"Optimal batch size ({bopt_metric}) against lr*N/(1-m)",
                 lambda: _bopt(bopt_trials, bopt_metric, n_boot,
                               ("sweep",) if "sweep" in tuple(by) else ())),
        _section(f"Noise-scale collapse ({bopt_metric})", collapse_section),
        _section("Fitted values", lambda: _fitted_values(holder.get("curves", []))),
    ]
    if curves is not None and curves.num_rows > 0:  # a store with learning curves
        part = trials if bcrit_trials is None else bcrit_trials
        crit = metric if metric in curves.column_names else "test_loss"  # a curves column
        sections.insert(4, _section(f"Critical batch size ({crit}): steps vs examples to target",
                                    lambda: _critical(part, curves, crit, min(n_boot, 400), bcrit_targets)))
    title = f"Scaling report: {source}" if source else "Scaling report"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"{_p(f'generated {stamp}', 'note')}{extra}{''.join(sections)}</body></html>")


def write_report(root: str, out: str, *, sweep: str | None = None, axes=(), seed: str | None = None,
                 filter: str | None = None, **options) -> str:
    """Load the store at ``root``, build the page and write it to ``out``; return ``out``.

    A root with several sweeps needs ``sweep`` (one of them) or ``by`` with ``sweep``
    in it (every section split by sweep); otherwise :class:`AnalysisError` names them.
    ``axes``/``seed`` declare a CSV or Parquet table's configuration and replicate columns
    (:func:`analysis.tables.declare`); ``filter`` is an SQL expression rows must satisfy
    (:mod:`analysis.tables.sqlfilter`).
    """
    from analysis.tables.sqlfilter import apply_filter

    import pyarrow.compute as pc

    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise AnalysisError(f"cannot write the report to {out!r}: folder {folder!r} does not exist")
    curves = None
    if tables.is_table_file(root):
        trials = tables.read_any(root)
    else:
        trials, curves = tables.load_sweep(root)
    trials = tables.declare(trials, axes=axes, seed=seed,
                            named=(options.get("x"), options.get("metric"), options.get("bopt_metric")))
    trials = apply_filter(trials, filter)
    fr = {"sweep": np.array(trials.column("sweep").to_pylist(), dtype=object)} \
        if "sweep" in trials.column_names else {}
    if sweep is not None:
        cl.sweep_where(fr, None, sweep)  # an unknown name lists the sweeps there are
        trials = trials.filter(pc.equal(trials.column("sweep"), sweep))
        if curves is not None and "sweep" in curves.column_names:
            curves = curves.filter(pc.equal(curves.column("sweep"), sweep))
    else:
        cl.check_one_sweep(fr, np.ones(trials.num_rows, bool), options.get("by", ()))
    return write_page(out, build_report(trials, source=str(root), curves=curves, **options))


def write_page(out: str, page: str) -> str:
    """Write an HTML page to ``out``; a folder that is missing or unwritable is one clear error."""
    try:
        with open(out, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as e:
        raise AnalysisError(f"cannot write the report to {out!r}: {e.strerror}") from None
    return out
