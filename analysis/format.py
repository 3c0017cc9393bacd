"""Plain-text presentation of analysis results; no computing happens here.

Row builders return ``(headers, rows)`` so the same table can be printed
(:func:`text_table`) or put into the HTML report.
"""

from __future__ import annotations

import numpy as np

from analysis import tables


def g(v, digits: int = 4) -> str:
    """A number for humans: ``3.14``, ``1.2e+05``, ``-`` for None/NaN."""
    if v is None:
        return "-"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if not np.isfinite(v):
        return "-"
    return f"{v:.{digits}g}"


def text_table(headers, rows) -> list[str]:
    """Left-aligned columns separated by two spaces."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]


def outcomes_text(outcomes: dict) -> str:
    """``"ok 663, diverged 87"``."""
    return ", ".join(f"{k} {v}" for k, v in outcomes.items()) or "none"


def param_rows(fit) -> tuple[list[str], list[list[str]]]:
    """Parameters with their intervals."""
    head = ["param", "value", f"{fit.level:.0%} CI low", "CI high"]
    return head, [[n, g(v), g(lo), g(hi)]
                  for n, v, lo, hi in zip(fit.names, fit.params, fit.ci_low, fit.ci_high)]


def fit_lines(fit) -> list[str]:
    """Parameter table and diagnostics of a :class:`analysis.fitresult.ScalingFit`."""
    lines = [f"fit {fit.form}  (Huber delta {g(fit.delta, 3)} on log residuals)"]
    lines += ["  " + s for s in text_table(*param_rows(fit))]
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
        where = ", ".join(f"{k}={tables._fmt(v)}" for k, v in {**f.get("point", {}),
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
            lines += ["  " + s for s in text_table([c.x_name, c.metric, "seeds", "config"], rows)]
        lines += flagged_lines(c.flagged)
        for d in c.dropped:
            lines.append(f"  dropped {_config(d['point'])}: {d['reason']}")
        if c.fit is not None:
            lines += fit_lines(c.fit) + [f"  warning: {w}" for w in c.warnings]
        elif c.message or c.family is None:
            lines.append(f"  no fit: {c.message or c.family_note}")
        if c.family is not None or c.family_note:
            from analysis.formtext import curve_family_lines
            lines += curve_family_lines(c, params=c.fit is None)
        lines.append("")
    return lines


def _config(cfg: dict) -> str:
    return ", ".join(f"{k}={tables._fmt(v)}" for k, v in cfg.items()) or "-"


def group_rows(result) -> tuple[list[str], list[list[str]]]:
    """One row per B_opt group."""
    rule = result.rule is not None
    head = ["group"] + (["lr*N/(1-m)"] if rule else []) + [
        f"{result.batch} best", f"{result.batch} opt", "CI low", "CI high"] + (
        ["g_opt"] if rule else []) + ["seeds", "trials", "status"]
    rows = []
    for grp in result.groups:
        seeds = f"{min(grp.n_seeds)}-{max(grp.n_seeds)}" if grp.n_seeds else "0"
        status = grp.status if not grp.reason else f"{grp.status}: {grp.reason}"
        if grp.flagged:
            why: dict = {}
            for f in grp.flagged:
                kind = f["reason"].split(" on ")[0]
                why.setdefault(kind, []).append(tables._fmt(f[result.batch]))
            status += "; left out: " + "; ".join(f"{result.batch}={','.join(bs)} ({reason})"
                                                 for reason, bs in why.items())
        rows.append([grp.label] + ([g(grp.rule_x)] if rule else []) + [
            g(grp.b_best), g(grp.b_opt), g(grp.ci_low), g(grp.ci_high)] + (
            [g(grp.g_opt)] if rule else []) + [seeds, outcomes_text(grp.outcomes), status])
    return head, rows


def _estimate(e) -> str:
    return (f"{g(e.value, 3)} (95% CI {g(e.ci_low, 3)} to {g(e.ci_high, 3)}; "
            f"90% CI {g(e.ci90_low, 3)} to {g(e.ci90_high, 3)})")


def rule_lines(rule) -> list[str]:
    """Verdict with its reason, exponents, combined slope, g_opt and group counts."""
    v = rule.verdict
    lines = [f"verdict: {v.label}" + (f" ({', '.join(v.axes)})" if v.axes else "")
             + f": {v.reason}"]
    for e in rule.exponents:
        lines.append(f"exponent of {e.name}: {_estimate(e)}; the rule says 1 ± {g(rule.margin)}")
    for axis, why in rule.not_estimated.items():
        lines.append(f"exponent of {axis}: not estimated ({why})")
    if rule.slope is not None:
        lines.append(f"slope of log B_opt on log(lr*N/(1-m)): {_estimate(rule.slope)}, "
                     f"R^2 {g(rule.r2, 3)}")
    if rule.g_opt is not None:
        go = rule.g_opt
        lines.append(f"g_opt = lr*N/(B_opt(1-m)): {g(go.value, 3)} (95% CI {g(go.ci_low, 3)} "
                     f"to {g(go.ci_high, 3)})")
    if rule.joint:
        lines.append(f"joint test that every exponent is 1: max |t| {g(rule.joint['statistic'], 3)}"
                     f", critical {g(rule.joint['critical'], 3)}, p "
                     f"{'< ' if rule.joint.get('p_floor') else '= '}{g(rule.joint['p_value'], 3)}")
    lines.append(f"groups: {rule.n_groups} total, {rule.n_observed} with an interior optimum, "
                 f"{rule.n_censored} at the grid edge (censored), {rule.n_excluded} left out; "
                 f"bootstrap {rule.n_boot} resamples, {rule.n_boot_failed} failed fits")
    lines += [f"note: {n}" for n in rule.notes]
    return lines


def bopt_lines(result) -> list[str]:
    """Notes, the rule check, then the per-group table."""
    lines = [f"warning: {n[len('warning: '):]}" if n.startswith("warning: ") else f"note: {n}"
             for n in result.notes]
    lines.append(f"B_opt by {', '.join(result.axes) or 'nothing (one group)'}; metric "
                 f"{result.metric} ({'max' if result.maximize else 'min'}imised); trials: "
                 f"{outcomes_text(result.outcomes)}")
    lines.append(f"selection: {result.selection}")
    if result.rule is not None:
        lines += rule_lines(result.rule)
    else:
        lines.append(f"rule check: none ({result.rule_note})")
    return lines + [""] + text_table(*group_rows(result))


def summary_rows(trials) -> tuple[list[str], list[list[str]]]:
    """Trial counts by status for each sweep of a trials table."""
    fr = tables.frame(trials)
    status = tables.status(fr)
    sweeps = fr.get("sweep", np.full(status.size, "-", dtype=object))
    names = sorted({str(s) for s in sweeps})
    kinds = list(tables.count_by(status))
    rows = []
    for name in names:
        sel = np.array([str(s) == name for s in sweeps])
        counts = tables.count_by(status[sel])
        rows.append([name, int(sel.sum())] + [counts.get(k, 0) for k in kinds])
    return ["sweep", "trials"] + kinds, rows


def summary_lines(trials) -> list[str]:
    """Text table of :func:`summary_rows`, infeasible trials included."""
    return text_table(*summary_rows(trials))
