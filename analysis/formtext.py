"""Plain text for curve-family fits, selections, predictions and compute-optimal results.

Nothing is computed here. Every printed number names its family, and a
value that is undefined (a prediction <= 0 or outside the bounds, or an
RMSE of log over such predictions) prints as ``undefined``, never as a
number.
"""

from __future__ import annotations

from analysis.format import g, text_table


def value(v, digits: int = 4) -> str:
    """A number, or ``undefined`` for None/NaN."""
    out = g(v, digits)
    return "undefined" if out == "-" else out


def selection_lines(sel) -> list[str]:
    """Every candidate's rolling-origin score and the choice."""
    cuts = ", ".join(g(c, 3) for c in sel.cuts)
    lines = [f"form auto: chose {sel.chosen} by rolling-origin validation (fit up to x = {cuts}; "
             f"score the next {g(sel.horizon, 3)}x; weights "
             + ", ".join(g(w, 2) for w in sel.weights) + ")"]
    rows = []
    for name, score in sel.scores.items():
        per = sel.per_origin.get(name) or ()
        mark = " <- chosen" if name == sel.chosen else ""
        rows.append([name, "not scored" if score is None else value(score),
                     " ".join(value(v, 3) for v in per) + mark])
    lines += ["  " + s for s in text_table(["form", "RMSE-log", "per origin"], rows)]
    lines += [f"  note: {n}" for n in sel.notes]
    return lines


def form_fit_lines(fit, params: bool = True) -> list[str]:
    """Parameters, checks and warnings of a :class:`analysis.formfit.FormFit`.

    ``params=False`` leaves out the parameter table (when the family only makes the
    extrapolation check and predictions beside another fit).
    """
    b = fit.bounds
    lines = []
    if fit.selection is not None:
        lines += selection_lines(fit.selection)
    fitted = "" if b.fitted == "y" else f"  [fitted to the error {b.fitted}]"
    lines.append(f"form {fit.form}: {fit.formula}{fitted}")
    if b.reason:
        lines.append(f"  bounds: {b.reason}")
    if params:
        head = ["param", "value", f"{fit.level:.0%} CI low", "CI high"]
        rows = [[n, g(v), g(lo), g(hi)]
                for n, v, lo, hi in zip(fit.names, fit.params, fit.ci_low, fit.ci_high)]
        lines += ["  " + s for s in text_table(head, rows)]
    boot = f", bootstrap {fit.n_boot_used} of {fit.n_boot} resamples usable" if fit.n_boot else ""
    lines.append(f"  {fit.form}: points {fit.n_points}, in-sample RMSE-log {value(fit.rmse_log)}, "
                 f"converged {'yes' if fit.converged else 'NO'}{boot}")
    h = fit.holdout
    if h is not None:
        how = ", chosen by auto on the remaining points" if fit.selection is not None or \
            h.form != fit.form else ""
        lines.append(f"  extrapolation check ({h.form}{how}; fitted without x >= {g(min(h.x))}): "
                     f"held-out RMSE-log {value(h.rmse_log)}, in-sample "
                     f"{value(h.in_sample_rmse_log)}")
    elif fit.holdout_note:
        lines.append(f"  extrapolation check: none ({fit.holdout_note})")
    lines += [f"  warning: {w}" for w in fit.warnings]
    return lines


def curve_family_lines(curve, params: bool) -> list[str]:
    """A learning curve's family fit (or why there is none) and its predictions."""
    lines = []
    if curve.family is not None:
        lines += form_fit_lines(curve.family, params=params)
        if curve.family_note:
            lines.append(f"  note: {curve.family_note}")
    elif curve.family_note:
        lines.append(f"  curve families: none ({curve.family_note})")
    if curve.prediction is not None:
        lines += prediction_lines(curve.prediction, curve.metric)
    return lines


def prediction_lines(pred, metric: str = "y") -> list[str]:
    """Predictions with the band of the curve and the interval for a new observation."""
    lv = f"{pred.level:.0%}"
    head = ["x", "x/max", f"{metric} ({pred.form})", f"{lv} band", f"{lv} prediction interval"]
    rows = []
    for i, x in enumerate(pred.x):
        band = _interval(pred.y[i], pred.band_low[i], pred.band_high[i])
        pi = _interval(pred.y[i], pred.pi_low[i], pred.pi_high[i])
        rows.append([g(x), g(pred.beyond[i], 3), value(pred.y[i]), band, pi])
    lines = ["predictions:"] + ["  " + s for s in text_table(head, rows)]
    return lines + [f"  warning: {w}" for w in pred.warnings]


def _interval(y, low, high) -> str:
    """``[low, high]``; ``none`` when there was no interval to compute (too few resamples)."""
    if y is not None and low is None and high is None:
        return "none"
    return f"[{value(low)}, {value(high)}]"


def compute_optimal_lines(res) -> list[str]:
    """Approach 2 and Approach 3 side by side, with the IsoFLOP profiles."""
    lv = f"{res.level:.0%}"

    def ci(p):
        return f"[{g(p[0])}, {g(p[1])}]"
    lines = [f"compute-optimal N_opt ∝ C^a; C = {res.flops_source}; rows {res.n_points}, "
             f"bootstrap {res.n_boot} (rows redrawn within budgets, paired)"]
    rows = [["Approach 2 (IsoFLOP parabolas)", value(res.a2), ci(res.a2_ci)],
            ["Approach 3 (joint fit, beta/(alpha+beta))", g(res.a3), ci(res.a3_ci)],
            ["difference (3 - 2)", value(res.diff), ci(res.diff_ci)]]
    lines += ["  " + s for s in text_table(["estimate", "a", f"{lv} CI"], rows)]
    brow = [[g(b.flops), b.n_points, value(b.n_opt), "yes" if b.inside else "no"]
            for b in res.budgets]
    lines += ["  IsoFLOP profiles:"] + ["    " + s for s in
                                        text_table(["C", "rows", "N_opt", "inside"], brow)]
    if res.joint is not None:
        p = dict(zip(res.joint.names, res.joint.params))
        lines.append(f"  joint fit: E {g(p['E'])}, alpha {g(p['alpha'])}, beta {g(p['beta'])} "
                     f"(Huber delta {g(res.joint.delta, 3)})")
    return lines + [f"  note: {n}" for n in res.notes]


def joint_lines(check, note: str, warnings, pred, n_name: str, d_name: str) -> list[str]:
    """The joint law's extrapolation check, warnings and predictions."""
    form = "E + A/N^alpha + B/D^beta"
    lines = []
    if check is not None:
        lines.append(f"  extrapolation check ({form}, fitted without the {len(check.n)} points of "
                     f"largest {n_name}*{d_name}, on the rest alone, Huber delta "
                     f"{g(check.delta, 3)}): held-out RMSE-log {value(check.rmse_log)}, in-sample "
                     f"{value(check.in_sample_rmse_log)}")
    elif note:
        lines.append(f"  extrapolation check ({form}): none ({note})")
    lines += [f"  warning: {w}" for w in warnings]
    if pred is None:
        return lines
    lv = f"{pred.level:.0%}"
    head = [n_name, d_name, "ND/max", f"loss ({form})", f"{lv} band", f"{lv} prediction interval"]
    rows = [[g(n), g(d), g(b, 3), value(y), _interval(y, bl, bh), _interval(y, pl, ph)]
            for n, d, b, y, bl, bh, pl, ph in zip(pred.n, pred.d, pred.beyond, pred.y,
                                                  pred.band_low, pred.band_high, pred.pi_low,
                                                  pred.pi_high)]
    lines += ["predictions:"] + ["  " + s for s in text_table(head, rows)]
    return lines + [f"  warning: {w}" for w in pred.warnings]


def over_lines(res) -> list[str]:
    """The joint (lr, B) optimum of each cell and the scale laws of B_opt and lr_opt."""
    lines = [("warning: " + n[len("warning: "):]) if n.startswith("warning: ") else f"note: {n}"
             for n in res.notes]
    cells = ", ".join(res.axes) or "the table (one cell)"
    lines.append(f"joint ({res.lr}, {res.batch}) optimum per cell of {cells}; metric "
                 f"{res.metric} ({'max' if res.maximize else 'min'}imised); trials: "
                 + ", ".join(f"{k} {v}" for k, v in res.outcomes.items()))
    lines.append(f"selection: {res.selection}; refined by a quadratic bowl in (log {res.lr}, "
                 f"log {res.batch})")
    for law in res.laws:
        lv = f"{law.level:.0%}"
        lines.append(f"{law.formula}  (Tobit on {law.n_observed} interior cells, "
                     f"{law.n_censored} at a grid edge censored, {law.n_excluded} left out; "
                     f"{lv} intervals: {law.interval})")
        rows = [[n, g(v), g(lo), g(hi)]
                for n, v, lo, hi in zip(law.names, law.params, law.ci_low, law.ci_high)]
        lines += ["  " + s for s in text_table(["param", "value", f"{lv} CI low", "CI high"],
                                                rows)]
        lines += [f"  {col}: not estimated ({why})" for col, why in
                  (law.not_estimated or {}).items()]
    head = ["cell", f"{res.lr} best", f"{res.batch} best", f"{res.lr} opt", f"{res.batch} opt",
            f"{res.batch} opt CI", "points", "seeds", "edge"]
    rows = []
    for c in res.cells:
        edge = "; ".join(
            f"{name}: fewer than 2 usable values" if side == "none" else
            f"{name} {'below' if side == 'low' else 'above'} {g(v, 3)}"
            for name, side, v in ((res.lr, c.lr_side, c.lr_opt), (res.batch, c.b_side, c.b_opt))
            if side)
        rows.append([c.label, g(c.lr_best), g(c.b_best), g(c.lr_opt, 3), g(c.b_opt, 3),
                     f"[{g(c.b_ci[0], 3)}, {g(c.b_ci[1], 3)}]", c.n_points, c.n_seeds,
                     edge or "-"])
    lines += [""] + text_table(head, rows)
    flagged = sum(len(c.flagged) for c in res.cells)
    if flagged:
        lines.append(f"left out of selection: {flagged} grid point(s) with a trial that is not "
                     "ok (listed in --json)")
    return lines
