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


def form_fit_lines(fit) -> list[str]:
    """Parameters, checks and warnings of a :class:`analysis.formfit.FormFit`."""
    b = fit.bounds
    lines = []
    if fit.selection is not None:
        lines += selection_lines(fit.selection)
    fitted = "" if b.fitted == "y" else f"  [fitted to the error {b.fitted}]"
    lines.append(f"form {fit.form}: {fit.formula}{fitted}")
    if b.reason:
        lines.append(f"  bounds: {b.reason}")
    head = ["param", "value", f"{fit.level:.0%} CI low", "CI high"]
    rows = [[n, g(v), g(lo), g(hi)]
            for n, v, lo, hi in zip(fit.names, fit.params, fit.ci_low, fit.ci_high)]
    lines += ["  " + s for s in text_table(head, rows)]
    lines.append(f"  {fit.form}: points {fit.n_points}, in-sample RMSE-log {value(fit.rmse_log)}, "
                 f"converged {'yes' if fit.converged else 'NO'}, bootstrap {fit.n_boot_used} of "
                 f"{fit.n_boot} resamples usable")
    h = fit.holdout
    if h is not None:
        lines.append(f"  extrapolation check ({h.form}, fitted without x >= {g(min(h.x))}): "
                     f"held-out RMSE-log {value(h.rmse_log)}, in-sample "
                     f"{value(h.in_sample_rmse_log)}")
    elif fit.holdout_note:
        lines.append(f"  extrapolation check: none ({fit.holdout_note})")
    lines += [f"  warning: {w}" for w in fit.warnings]
    return lines


def prediction_lines(pred, metric: str = "y") -> list[str]:
    """Predictions with the band of the curve and the interval for a new observation."""
    lv = f"{pred.level:.0%}"
    head = ["x", "x/max", f"{metric} ({pred.form})", f"{lv} band", f"{lv} prediction interval"]
    rows = []
    for i, x in enumerate(pred.x):
        band = f"[{value(pred.band_low[i])}, {value(pred.band_high[i])}]"
        pi = f"[{value(pred.pi_low[i])}, {value(pred.pi_high[i])}]"
        rows.append([g(x), g(pred.beyond[i], 3), value(pred.y[i]), band, pi])
    lines = ["predictions:"] + ["  " + s for s in text_table(head, rows)]
    return lines + [f"  warning: {w}" for w in pred.warnings]


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
