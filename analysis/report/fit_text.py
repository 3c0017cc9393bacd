"""The text of fits: power laws and their flagged points, learning curves, curve families and
their choice, predictions, compute-optimal tables and the joint-law check."""

from __future__ import annotations

from analysis import tables
from analysis.report.rule_text import _config
from analysis.report.text import g, outcomes_text, text_table, value


def param_rows(fit) -> tuple[list[str], list[list[str]]]:
    """Parameters with their intervals."""
    head = ["param", "value", f"{fit.level:.0%} CI low", "CI high"]
    return head, [[n, g(v), g(lo), g(hi)]
                  for n, v, lo, hi in zip(fit.names, fit.params, fit.ci_low, fit.ci_high)]


def fit_lines(fit) -> list[str]:
    """Parameter table and diagnostics of a :class:`analysis.stats.result.ScalingFit`."""
    bounds = "" if not hasattr(fit, "monotone") else \
        f"; bounds {fit.to_dict()['bounds']}" if fit.monotone else "; unbounded"
    lines = [f"fit {fit.form}  (Huber delta {g(fit.delta, 3)} on log residuals{bounds})"]
    lines += text_table(*param_rows(fit), indent=2)
    lines.append(f"  points {fit.n_points}, R^2 (log) {g(fit.r2_log)}, RMSE log {g(fit.rmse_log)}, "
                 f"converged {'yes' if fit.converged else 'NO'}")
    what = ("clustered seed resamples (winners chosen again), t intervals on the rescaled sd"
            if fit.interval == "cluster-t" else f"resamples of {fit.resampling}, percentile "
            "intervals")
    lines.append(f"  bootstrap: {fit.n_boot} {what}; {fit.n_boot_converged} converged, "
                 f"{fit.n_boot_failed} left out")
    hold = getattr(fit, "holdout", None)
    if hold is not None:
        rmse = "undefined" if hold.rmse_log is None else g(hold.rmse_log)
        lines.append(f"  extrapolation ({fit.form}): fit without x >= {g(min(hold.x))}, on the "
                     f"rest alone (Huber delta {g(hold.delta, 3)}), held-out RMSE of "
                     f"log(pred/true) {rmse}, in-sample {g(hold.in_sample_rmse_log)}")
    elif getattr(fit, "holdout_note", ""):
        lines.append(f"  extrapolation ({fit.form}): none ({fit.holdout_note})")
    lines += [f"  note: {n}" for n in fit.notes]
    return lines


def flagged_lines(flagged, limit: int = 5) -> list[str]:
    """Configurations left out of selection, a few listed and the rest counted."""
    if not flagged:
        return []
    lines = [f"  left out of selection: {len(flagged)} configuration(s) with a trial that is "
             "not ok (listed in --json)"]
    for f in flagged[:limit]:
        where = ", ".join(f"{k}={tables.label_value(v)}" for k, v in {**f.get("point", {}),
                                                             **f.get("config", {})}.items())
        lines.append(f"    {where}: {f['reason']}")
    if len(flagged) > limit:
        lines.append(f"    ... and {len(flagged) - limit} more")
    return lines


def curve_lines(curves) -> list[str]:
    """Every learning curve: header, frontier points, fit or the reason there is none."""
    lines = [f"warning: {n[len('warning: '):]}" if n.startswith("warning: ") else f"note: {n}"
             for n in (curves[0].notes if curves else ())]
    for c in curves:
        over = f"best over {', '.join(c.over)}" if c.over else "fixed configuration"
        lines.append(f"== {c.metric} vs {c.x_name} [{c.label}] ({over}); "
                     f"trials: {outcomes_text(c.outcomes)}")
        if c.selection and c.over:
            lines.append(f"  selection: {c.selection}")
        rows = [[g(x), g(y), n, _config(cfg)]
                for x, y, n, cfg in zip(c.x, c.y, c.n_seeds, c.chosen)]
        if rows:
            lines += text_table([c.x_name, c.metric, "seeds", "config"], rows, indent=2)
        lines += flagged_lines(c.flagged)
        for d in c.dropped:
            lines.append(f"  dropped {_config(d['point'])}: {d['reason']}")
        if c.fit is not None:
            lines += fit_lines(c.fit) + [f"  warning: {w}" for w in c.warnings]
        elif c.message or c.family is None:
            lines.append(f"  no fit: {c.message or c.family_note}")
        if c.family is not None or c.family_note:
            lines += curve_family_lines(c, params=c.fit is None)
        lines.append("")
    return lines


def selection_lines(sel) -> list[str]:
    """Every candidate's rolling-origin score and the choice."""
    cuts = ", ".join(g(c, 3) for c in sel.cuts)
    tie = "" if not sel.tied else (f"; a tie with {', '.join(sel.tied)} (scores equal to 4 "
                                   "digits), broken by the prior")
    lines = [f"form auto: chose {sel.chosen}, the largest weight = prior x backtest likelihood "
             f"(rolling-origin validation on the fitted points: fit up to x = {cuts}; score the "
             f"next {g(sel.horizon, 3)}x; origin weights "
             + ", ".join(g(w, 2) for w in sel.weights) + f"; {sel.n_valid} backtest points{tie})"]
    rows = []
    post = sel.posterior or {}
    for name, score in sel.scores.items():
        per = sel.per_origin.get(name) or ()
        mark = " <- chosen" if name == sel.chosen else ""
        w = post.get(name)
        rows.append([name, "not scored" if score is None else value(score),
                     "-" if w is None else f"{w:.3f}",
                     " ".join("-" if v is None else value(v, 3) for v in per) + mark])
    lines += text_table(["form", "RMSE-log", "weight", "per origin"], rows, indent=2)
    lines += [f"  note: {n}" for n in sel.notes]
    return lines


def form_fit_lines(fit, params: bool = True) -> list[str]:
    """Parameters, checks and warnings of a :class:`analysis.fit.forms.fit.FormFit`.

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
        lines += text_table(head, rows, indent=2)
    if fit.interval_note:
        lines.append(f"  {fit.interval_note}")
    boot = f", bootstrap {fit.n_boot_used} of {fit.n_boot} resamples usable" if fit.n_boot else ""
    lines.append(f"  {fit.form}: points {fit.n_points}, in-sample RMSE-log {value(fit.rmse_log)}, "
                 f"converged {'yes' if fit.converged else 'NO'}{boot}")
    h = fit.holdout
    if h is not None:
        how = " (chosen by auto on every point)" if fit.selection is not None else ""
        lines.append(f"  extrapolation check ({h.form}{how}; refitted without x >= {g(min(h.x))}): "
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
    lines = ["predictions:"] + text_table(head, rows, indent=2)
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
             f"bootstrap {res.n_boot} ({getattr(res, 'resampling', 'rows redrawn within budgets, paired')})"]
    rows = [["Approach 2 (IsoFLOP parabolas)", value(res.a2), ci(res.a2_ci)],
            ["Approach 3 (joint fit, beta/(alpha+beta))", g(res.a3), ci(res.a3_ci)],
            ["difference (3 - 2)", value(res.diff), ci(res.diff_ci)]]
    lines += text_table(["estimate", "a", f"{lv} CI"], rows, indent=2)
    brow = [[g(b.flops), b.n_points, value(b.n_opt), "yes" if b.inside else "no"]
            for b in res.budgets]
    lines += ["  IsoFLOP profiles:"] + text_table(["C", "rows", "N_opt", "inside"], brow, indent=4)
    if res.joint is not None:
        p = dict(zip(res.joint.names, res.joint.params))
        lines.append(f"  joint fit: E {g(p['E'])}, alpha {g(p['alpha'])}, beta {g(p['beta'])} "
                     f"(Huber delta {g(res.joint.delta, 3)})")
    return lines + [f"  note: {n}" for n in res.notes]


def joint_lines(check, note: str, warnings, pred, n_name: str, d_name: str) -> list[str]:
    """The joint law's extrapolation check, warnings and predictions."""
    form = getattr(check if check is not None else pred, "form", "E + A/N^alpha + B/D^beta")
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
    head = [n_name, d_name, "ND/max", f"loss ({form.split(',')[0]})", f"{lv} band",
            f"{lv} prediction interval"]
    rows = [[g(n), g(d), g(b, 3), value(y), _interval(y, bl, bh), _interval(y, pl, ph)]
            for n, d, b, y, bl, bh, pl, ph in zip(pred.n, pred.d, pred.beyond, pred.y,
                                                  pred.band_low, pred.band_high, pred.pi_low,
                                                  pred.pi_high)]
    lines += ["predictions:"] + text_table(head, rows, indent=2)
    return lines + [f"  warning: {w}" for w in pred.warnings]
