"""One self-contained HTML page about a results store: headline cards, figures, then text.

The page opens with cards (the learning-curve exponent with its interval, the B_opt rule's
verdict, B_crit, the trial count), then one section per analysis: a figure first, the long
text in collapsible ``<details>``. The figures are those of ``scaling serve``
(:mod:`analysis.report.figures`, one code for both pages): Plotly JSON inlined in the page and
drawn by plotly.js, inlined once from the installed ``plotly`` package, so the page can be
mailed or archived as a single file, works offline and stays interactive (zoom, hover, legend
clicks). Each section is computed
independently; a section whose data are degenerate shows the reason instead of a plot, and
the rest of the page is still written. A rule that does not apply to the sweep (the SGD
noise-scale collapse on an AdamW or Lion sweep) gets one line saying so, not a figure.
Infeasible trials (diverged, failed) are counted in every section that leaves them out.
Every value the page did not write itself is HTML-escaped (:mod:`analysis.report.page`).
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone

import numpy as np

import analysis.report.figures as figs
import analysis.report.fit_text as fit_text
import analysis.report.page as pg
import analysis.report.rule_text as rule_text
import analysis.report.text as fmt
import analysis.tables.cells as cl
from analysis import tables
from analysis.errors import AnalysisError
from analysis.fit.curves import fit_learning_curves
from analysis.report import cards
from analysis.report import plans as plan_text
from analysis.report import training as tr
from analysis.rules.bopt import collapse, find_bopt

PREDICT_AT = (2.0, 4.0)
"""Predictions are drawn at these multiples of the largest x of the learning curves."""


def _summary(trials) -> str:
    fr = tables.frame(trials)
    status = tables.status(fr)
    bad = status != "ok"
    parts = [pg.table(*fmt.summary_rows(trials))]
    if bad.any():
        counts = fmt.outcomes_text(tables.count_by(status[bad]))
        parts.append(pg.p(f"{int(bad.sum())} of {status.size} trials did not finish ok ({counts}). "
                          "They are left out of every fit below and counted in each section."))
        if "error" in fr:
            msgs = [re.sub(r"\d[\d.eE+-]*", "#", str(m))[:100] for m in fr["error"][bad] if m]
            if msgs:
                top = tables.count_by(np.array(msgs, dtype=object))
                parts.append(pg.details("error messages (numbers as #)", pg.table(
                    ["error message", "trials"], list(top.items())[:8])))
    else:
        parts.append(pg.p(f"all {status.size} trials finished ok."))
    return "".join(parts)


def _parcoords(trials, metric) -> str:
    """Every trial a line through its axis values and ``metric`` (the dashboard's figure)."""
    fr = tables.frame(trials)
    n = tables.n_rows(fr)
    axes = tables.varying(fr, np.arange(n), exclude=(fr.replicate or "seed",))
    if not axes:
        return pg.p("No parallel coordinates: no axis takes more than one value.", "note")
    values = tables.metric(fr, metric)
    ids = fr["trial_id"] if "trial_id" in fr else np.arange(n)
    fig = figs.parcoords(fr, axes, metric, values, ids)
    return pg.figure(fig, f"axes against {metric}") + pg.p(
        "Drag along an axis to select a range of it (several axes combine); click the range to "
        "clear it. Infeasible trials (no finite metric) are not drawn.", "note")


def _learning(trials, x, metric, by, n_boot, offset, found) -> str:
    from analysis.fit.forms.on_curves import add_forms

    curves = fit_learning_curves(trials, x=x, metric=metric, by=by, n_boot=n_boot, offset=offset)
    top = max((max(c.x) for c in curves if c.x), default=None)
    at = None if top is None else [k * top for k in PREDICT_AT]
    curves = add_forms(curves, predict=at, n_boot=min(n_boot, 400))
    found["curves"] = curves
    parts = [pg.figure(figs.learning_curves(curves), f"{metric} vs {x}")]
    parts += [pg.p(n, "msg") for n in (curves[0].notes if curves else ())]
    rows = []
    for c in curves:
        pred = c.prediction
        for i in range(len(pred.x) if pred is not None else 0):
            rows.append([c.label, fmt.g(pred.x[i]), fmt.value(pred.y[i]),
                         _pair(pred.band_low[i], pred.band_high[i]),
                         _pair(pred.pi_low[i], pred.pi_high[i]), pred.form])
    note = ("Every point drawn is a winner the fit used; the dashed part of each curve "
            "extrapolates past the data.")
    if rows:
        note += (f" Diamonds predict at {' and '.join(f'{k:g}x' for k in PREDICT_AT)} the largest "
                 f"{x}, with the prediction interval of the curve family that rolling-origin "
                 "validation chose (table below).")
    parts.append(pg.p(note, "note"))
    if rows:
        parts.append(pg.table(["curve", x, f"predicted {metric}", "95% band of the curve",
                               "95% prediction interval", "by"], rows))
    for c in curves:
        parts.append(_curve_text(c))
    return "".join(parts)


def _pair(lo, hi) -> str:
    return "-" if lo is None and hi is None else f"{fmt.value(lo)} to {fmt.value(hi)}"


def _curve_text(c) -> str:
    """One curve's short line and warnings, its long text folded away."""
    over = f"best over {', '.join(c.over)}" if c.over else "fixed configuration"
    if c.fit is None:
        head = pg.p(f"{c.label}: no power-law fit ({c.message})", "msg")
    else:
        v, lo, hi = c.fit.param("b")
        head = pg.p(f"{c.label}: exponent b = {fmt.g(v, 3)} ({c.fit.level:.0%} CI {fmt.g(lo, 3)} to "
                    f"{fmt.g(hi, 3)}), {c.fit.n_points} points, {over}; trials: "
                    f"{fmt.outcomes_text(c.outcomes)}")
    warn = [w for w in c.warnings] + list(c.family.warnings if c.family is not None else ()) \
        + list(c.prediction.warnings if c.prediction is not None else ())
    body = []
    if c.selection and c.over:
        body.append(pg.p(f"selection: {c.selection}", "note"))
    if c.flagged:
        body.append(pg.pre(fit_text.flagged_lines(c.flagged, 20)))
    if c.fit is not None:
        body.append(pg.pre(fit_text.fit_lines(c.fit)))
        body.append(pg.table(["param", "value", "CI low", "CI high", "status"],
                             [[n, fmt.g(v), fmt.g(lo), fmt.g(hi),
                               "converged" if c.fit.converged else "NOT converged"]
                              for n, v, lo, hi in zip(c.fit.names, c.fit.params, c.fit.ci_low,
                                                      c.fit.ci_high)]))
    family = fit_text.curve_family_lines(c, params=False)
    if family:
        body.append(pg.p("Curve families: the extrapolation check of auto, which chooses by "
                         "rolling-origin validation on the fitted points (every family's score "
                         "below; the exponent above stays the power law's)", "note"))
        body.append(pg.pre(family))
    return (head + "".join(pg.p(f"warning: {w}", "msg") for w in warn)
            + pg.details(f"fit details: {c.label}", "".join(body)))


def _training(trials, curves, metric, where, found) -> str:
    if curves is None or curves.num_rows == 0:
        return pg.p("No training curves: the input is a trials table without the store's curves "
                    "table (a CSV or Parquet file), so there is nothing to draw here.", "note")
    parts = []
    shown = _curve_metric(metric, curves)
    if shown != metric:
        parts.append(pg.p(f"The curves table has no {metric}; the training curves show {shown}.",
                          "note"))
    fitted = found.get("curves")
    if fitted is None:
        parts.append(pg.p("winners: none to draw, since the learning curves above could not be "
                          "fitted", "msg"))
    for c in fitted or []:
        parts.append(_part(lambda c=c: tr.winners(trials, curves, c, shown),
                           "training curves of the winners"))
    if where:
        parts.append(_part(lambda: tr.group(trials, curves, where, shown),
                           f"training curves of {where}"))
    else:
        parts.append(pg.p('Draw any group with --curves, e.g. --curves "n_train=600,momentum=0.9" '
                          'or --curves "lr >= 0.1 AND batch_size = 32".', "note"))
    return "".join(parts)


def _curve_metric(metric: str, curves) -> str:
    """The learning curve's metric when the curves table has it (or can derive it)."""
    derived = {"error": "test_acc", "gap": "test_loss"}
    return metric if derived.get(metric, metric) in curves.column_names else "test_loss"


def _part(build, alt: str) -> str:
    """One figure of training curves, or why there is none (the rest of the section stays)."""
    try:
        tc = build()
    except AnalysisError as e:
        return pg.p(f"{alt}: not available: {e}", "msg")
    return pg.figure(figs.training(tc), alt) + "".join(pg.p(n, "note") for n in tc.notes)


def _bopt(trials, metric, n_boot, by, found) -> str:
    result = find_bopt(trials, metric=metric, n_boot=n_boot, by=by)
    found["bopt"] = result
    parts = []
    if result.rule is not None:
        v = result.rule.verdict
        parts.append(f"<p><b>{pg.esc(v.label)}</b>: {pg.esc(v.reason)}</p>")
    else:
        parts.append(pg.p(f"rule check: none ({result.rule_note})", "msg"))
    parts.append(pg.figure(figs.bopt(result), "B_opt against lr*N/(1-m)"))
    parts.append(pg.p(f"selection: {result.selection}", "note"))
    parts += [pg.p(n, "msg") for n in result.notes]
    if result.rule is not None:
        parts.append(pg.details("the rule check in full", pg.pre(rule_text.rule_lines(result.rule))))
    parts.append(pg.details(f"B_opt of every group ({len(result.groups)} groups)",
                            pg.table(*rule_text.group_rows(result))))
    return "".join(parts)


def _optimizers(trials) -> tuple[bool, list[str]]:
    """(whether any trial trains with SGD, the other optimizers used); no optimizer column, or
    an empty cell, is the schema's default, SGD."""
    if "optimizer" not in trials.column_names:
        return True, []
    names = {"sgd" if v is None else str(v).lower() for v in trials.column("optimizer").to_pylist()}
    return "sgd" in names, sorted(names - {"sgd"})


def _collapse(trials, names, metric, other) -> str:
    import pyarrow.compute as pc

    parts = []
    if other:  # SGD's noise scale: only the SGD trials
        opt = pc.fill_null(pc.utf8_lower(trials.column("optimizer")), "sgd")
        trials = trials.filter(pc.equal(opt, "sgd"))
        parts.append(pg.p(f"SGD trials only: g is SGD's noise scale; the {', '.join(other)} trials "
                          "are left out of this plot.", "note"))
    for name in names if len(names) > 1 else [None]:
        part = trials if name is None else trials.filter(pc.equal(trials.column("sweep"), name))
        if name is not None:
            parts.append(f"<h3>sweep={pg.esc(name)}</h3>")
        parts.append(pg.figure(figs.collapse(collapse(part, metric=metric)),
                               "noise-scale collapse"))
    return "".join(parts)


def _critical(trials, curves, metric, n_boot, targets, found) -> str:
    from analysis.rules.critical import auto_target, critical_batch

    if curves is None or curves.num_rows == 0:
        raise AnalysisError("needs the learning curves of a results store")
    fr = tables.frame(trials)
    tune = "lr" in fr and len(set(tables.hashable(fr["lr"]))) > 1
    chosen = list(targets) if targets else [auto_target(trials, metric)]
    res = critical_batch(trials, curves, targets=chosen, metric=metric, tune_lr=tune, n_boot=n_boot)
    found["bcrit"] = res
    note = ("target chosen automatically: the 70th percentile of the batch sizes' median final "
            f"{metric} (scaling bcrit --target T for others)") if not targets else ""
    parts = [pg.figure(figs.tradeoff(res), "steps against examples to target")]
    parts += [pg.p(note, "note")] if note else []
    for name, est in res.scaling:
        parts.append(pg.p(f"B_crit grows as {name}^{est.value:.2f} (95% CI {est.ci_low:.2f} to "
                          f"{est.ci_high:.2f})"))
    parts.append(pg.details("B_crit of every group, and notes",
                            pg.pre(rule_text.critical_lines(res))))
    return "".join(parts)


def _section(anchor: str, title: str, build, toc: list) -> str:
    try:
        body = build()
    except AnalysisError as e:
        body = pg.p(f"not available: {e}", "msg")
    toc.append((anchor, title))
    return pg.section(anchor, title, body)


def build_report(trials, *, source: str = "", x: str = "n_train", metric: str = "test_loss",
                 by=(), bopt_metric: str = "test_acc", n_boot: int = 1000, offset: bool = True,
                 curve_trials=None, bopt_trials=None, extra: str = "", curves=None,
                 bcrit_trials=None, bcrit_targets=None, curves_where: str | None = None,
                 plans: dict | None = None, plan_notes=()) -> str:
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
        HTML put right under the headline cards (e.g. a table of headline figures).
    curves, bcrit_trials, bcrit_targets : optional
        The store's curves, the trials of the critical-batch section (default ``trials``)
        and its targets (default: :func:`analysis.rules.critical.auto_target`); no curves, no
        critical-batch section and no training curves.
    curves_where : str, optional
        A group whose training curves to draw beside the winners': ``COL=VALUE`` pairs or an
        SQL expression over the trials' columns (:func:`analysis.report.training.select`).
    plans, plan_notes : optional
        The recorded round plans of adaptive sweeps (:func:`analysis.report.plans.read_plans`) and
        notes on plan files that could not be read: a section showing each round's decisions,
        after the summary (none when both are empty).
    """
    curve_trials = trials if curve_trials is None else curve_trials
    bopt_trials = trials if bopt_trials is None else bopt_trials
    names = sorted(set(bopt_trials.column("sweep").to_pylist())) \
        if "sweep" in bopt_trials.column_names else []
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    found: dict = {}
    toc: list = []
    has_curves = curves is not None and curves.num_rows > 0
    has_sgd, other = _optimizers(bopt_trials)
    train_metric = _curve_metric(metric, curves) if has_curves else metric
    sections = [
        _section("summary", "Sweep summary", lambda: _summary(trials), toc),
        *([_section("plan", "Adaptive sweep: the plan of each round",
                    lambda: plan_text.section(plans or {}, plan_notes, _stored_ids(trials)), toc)]
          if plans or plan_notes else []),
        _section("parcoords", f"Axes against {metric}", lambda: _parcoords(trials, metric), toc),
        _section("learning-curves", f"Learning curves: {metric} vs {x}",
                 lambda: _learning(curve_trials, x, metric, tuple(by), n_boot, offset, found), toc),
        _section("training", f"Training curves: {train_metric} vs examples seen",
                 lambda: _training(curve_trials, curves, metric, curves_where, found), toc),
        _section("bopt", f"Optimal batch size ({bopt_metric})" + (
            " against lr*N/(1-m)" if has_sgd else ""),
            lambda: _bopt(bopt_trials, bopt_metric, n_boot,
                          ("sweep",) if "sweep" in tuple(by) else (), found)
            + ("" if has_sgd else pg.p(_why_no_collapse(other), "note")), toc),
    ]
    if has_sgd:  # the collapse is SGD's rule: no section for a sweep it does not apply to
        sections.append(_section("collapse", f"Noise-scale collapse ({bopt_metric})",
                                 lambda: _collapse(bopt_trials, names, bopt_metric, other), toc))
    if has_curves:
        part = trials if bcrit_trials is None else bcrit_trials
        crit = metric if metric in curves.column_names else "test_loss"  # a curves column
        sections.append(_section(
            "bcrit", f"Critical batch size ({crit}): steps vs examples to target",
            lambda: _critical(part, curves, crit, min(n_boot, 400), bcrit_targets, found), toc))
    head = cards.headline(trials, found, has_curves, [] if has_sgd else other)
    title = f"Scaling report: {source}" if source else "Scaling report"
    body = "".join(sections)
    drawn = pg.scripts() if 'class="fig-json"' in body else ""  # plotly.js once, if any figure
    policy = pg.csp() if drawn else ""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'>{policy}<title>{pg.esc(title)}"
            f"</title><style>{pg.CSS}</style></head><body><h1>{pg.esc(title)}</h1>"
            f"{pg.p(f'generated {stamp}', 'note')}{head}{pg.nav(toc)}{extra}"
            f"{body}{drawn}</body></html>")


def _stored_ids(trials) -> dict:
    """``{sweep: trial ids}`` of the page's trials; ``""`` (a store that is one sweep folder): all."""
    ids = trials.column("trial_id").to_pylist() if "trial_id" in trials.column_names else []
    sweeps = trials.column("sweep").to_pylist() if "sweep" in trials.column_names else [""] * len(ids)
    out: dict = {"": set(ids)}
    for s, i in zip(sweeps, ids):
        out.setdefault(s, set()).add(i)
    return out


def _why_no_collapse(other) -> str:
    return (f"No noise-scale collapse plot: g = lr*N/(B(1-m)) is the noise scale of SGD "
            f"(Smith & Le 2018), and this sweep trains with {', '.join(other)}, where it does not "
            "govern training.")


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
    cols = options.pop("cols", ())
    if tables.is_table_file(root) or cols:  # --col on a store: read_any's error
        trials = tables.read_any(root, cols)
    else:
        trials, curves = tables.load_sweep(root)
    if options.get("metric") is None:  # the task's headline metric, read off the loaded table
        options["metric"] = tables.headline_metric(trials)
    if options.get("bopt_metric") is None:
        options["bopt_metric"] = options["metric"]
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
    if options.get("curves_where") is not None:
        tr.select(trials, options["curves_where"])  # a bad --curves is one clear error, up front
    if curves is not None and "plans" not in options:  # a store: its adaptive sweeps' plans
        names = None if sweep is None else {sweep}
        options["plans"], options["plan_notes"] = plan_text.read_plans(str(root), names)
    return write_page(out, build_report(trials, source=str(root), curves=curves, **options))


def write_page(out: str, page: str) -> str:
    """Write an HTML page to ``out``; a folder that is missing or unwritable is one clear error."""
    try:
        with open(out, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as e:
        raise AnalysisError(f"cannot write the report to {out!r}: {e.strerror}") from None
    return out
