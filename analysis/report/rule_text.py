"""The text of the batch-size rules: B_opt per group and the SGD rule's verdict, the joint
(lr, B) optimum (``bopt --over``), and the critical batch size."""

from __future__ import annotations

import numpy as np

from analysis import tables
from analysis.report.text import g, legend, outcomes_text, text_table
from analysis.rules.sgd_rule import p_text


def _config(cfg: dict) -> str:
    return ", ".join(f"{k}={tables.label_value(v)}" for k, v in cfg.items()) or "-"


def group_rows(result) -> tuple[list[str], list[list[str]]]:
    """One row per B_opt group."""
    rule = result.rule is not None
    head = ["group"] + (["lr*N/(1-m)"] if rule else []) + [
        f"{result.batch} best", f"{result.batch} opt", "CI low", "CI high"] + (
        ["g_opt"] if rule else []) + ["seeds", "trials", "status"]
    rows = []
    for grp in result.groups:
        seeds = f"{min(grp.n_seeds)}-{max(grp.n_seeds)}" if grp.n_seeds else "0"
        rows.append([grp.label] + ([g(grp.rule_x)] if rule else []) + [
            g(grp.b_best), g(grp.b_opt), g(grp.ci_low), g(grp.ci_high)] + (
            [g(grp.g_opt)] if rule else []) + [seeds, outcomes_text(grp.outcomes),
                                                _status(grp, result.batch)])
    return head, rows


def _status(grp, batch: str) -> str:
    """``"edge: best batch size 8 is ...; left out: batch_size=512 (diverged)"``."""
    status = grp.status if not grp.reason else f"{grp.status}: {grp.reason}"
    if grp.flagged:
        why: dict = {}
        for f in grp.flagged:
            kind = f["reason"].split(" on ")[0]
            why.setdefault(kind, []).append(tables.label_value(f[batch]))
        status += "; left out: " + "; ".join(f"{batch}={','.join(bs)} ({reason})"
                                             for reason, bs in why.items())
    return status


_CODE = {"edge": "edge", "too_few": "few"}


def group_text_lines(result) -> list[str]:
    """The per-group table for a terminal: :func:`group_rows` with a short code in the status
    column (explained once below the table), an edge group's bound in the opt column
    (``<11.3``: B_opt lies below about 11.3), and one seed count where every point has it."""
    head, rows = group_rows(result)
    first = 2 if result.rule is not None else 1
    texts = []
    for grp, row in zip(result.groups, rows):
        if grp.status == "edge" and grp.bound == grp.bound:
            row[first + 1] = f"{'<' if grp.side == 'low' else '>'}{g(grp.bound, 3)}"
        if grp.n_seeds and min(grp.n_seeds) == max(grp.n_seeds):
            row[-3] = str(grp.n_seeds[0])
        full = row[-1].removeprefix(f"{grp.status}: ")
        texts.append(("", "") if full == "ok" else (_CODE.get(grp.status, grp.status), full))
    codes, key = legend(texts)
    for row, code in zip(rows, codes):
        row[-1] = code or "ok"
    ok = sum(c == "" for c in codes)
    key = [f"ok: an interior optimum, refined between grid points ({ok} row{'s' * (ok != 1)})"] \
        * bool(ok) + key
    return text_table(head, rows, label=0) + ["", "status:"] + ["  " + k for k in key]


def _estimate(e, level: float) -> str:
    return (f"{g(e.value, 3)} ({level:.0%} CI {g(e.ci_low, 3)} to {g(e.ci_high, 3)}; "
            f"90% CI {g(e.ci90_low, 3)} to {g(e.ci90_high, 3)})")


def rule_lines(rule) -> list[str]:
    """Verdict with its reason, exponents, combined slope, g_opt and group counts."""
    v = rule.verdict
    lines = [f"verdict: {v.label}" + (f" ({', '.join(v.axes)})" if v.axes else "")
             + f": {v.reason}"]
    for e in rule.exponents:
        lines.append(f"exponent of {e.name}: {_estimate(e, rule.level)}; the rule says 1 ± "
                     f"{g(rule.margin)}")
    for axis, why in rule.not_estimated.items():
        lines.append(f"exponent of {axis}: not estimated ({why})")
    model = [e.name for e in rule.exponents if getattr(e, "interval", "") == "model-t"]
    if rule.exponents:
        lines.append("intervals: from the seed bootstrap (it carries effects a seed shares across "
                     "groups)" + (f"; the Tobit model's, wider, for {', '.join(model)}: the groups "
                                  "scatter about the law more than seed noise explains" if model
                                  else ""))
    if rule.slope is not None:
        lines.append(f"slope of log B_opt on log(lr*N/(1-m)): {_estimate(rule.slope, rule.level)}, "
                     f"R^2 {g(rule.r2, 3)}")
    if rule.g_opt is not None and v.label == "inconsistent":
        lines.append("g_opt = lr*N/(B_opt(1-m)): no single value; it is a constant only if "
                     "B_opt ∝ lr*N/(1-m), which the verdict rejects (each group's g_opt is in "
                     "the table)")
    elif rule.g_opt is not None:
        go = rule.g_opt
        lines.append(f"g_opt = lr*N/(B_opt(1-m)): {g(go.value, 3)} ({rule.level:.0%} CI "
                     f"{g(go.ci_low, 3)} to {g(go.ci_high, 3)})"
                     + ("; assumes the rule, which is not yet established" *
                        (v.label != "consistent")))
    if rule.joint:
        lines.append(f"joint test that every exponent is 1: max |t| {g(rule.joint['statistic'], 3)}"
                     f", critical {g(rule.joint['critical'], 3)}, {p_text(rule.joint)}")
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
    return lines + [""] + group_text_lines(result)


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
        lines += text_table(["param", "value", f"{lv} CI low", "CI high"], rows, indent=2)
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
    lines += [""] + text_table(head, rows, label=0)
    flagged = sum(len(c.flagged) for c in res.cells)
    if flagged:
        lines.append(f"left out of selection: {flagged} grid point(s) with a trial that is not "
                     "ok (listed in --json)")
    return lines


def _g(v) -> str:
    if v is None or not np.isfinite(v):
        return "inf" if v == np.inf else "n/a"
    return f"{v:.3g}"


def critical_lines(res) -> list[str]:
    """One header, one line per group and target, the scaling exponents, then the notes."""
    lines = [f"critical batch size B_crit = E_min/S_min from S(B) = S_min + E_min/B (McCandlish et al. 2018), "
             f"metric {res.metric} ({'rising' if res.maximize else 'falling'}), targets "
             f"{', '.join(f'{t:g}' for t in res.targets)}, {res.n_seeds} seeds, lr "
             f"{'tuned per batch size' if res.tune_lr else 'fixed per group'}", ""]
    head = ["group", "target", "B_crit", f"{res.level:.0%} CI", "S_min", "E_min", "B fitted", "never",
            "B_simple", "B_opt", "no fit"]
    rows, reasons = [], []
    for grp in res.groups:
        f = grp.fit
        if not f.ok:
            rows.append([grp.label, f"{grp.target:g}"] + ["-"] * 8 + [""])
            reasons.append(("nofit", f.reason))
            continue
        e = f.b_crit
        ci = f"[{_g(e.ci_low)}, {'open' if e.ci_high == np.inf else _g(e.ci_high)}]" \
            if np.isfinite(e.value) else "-"
        bopt = _g(grp.b_opt.value) if grp.b_opt is not None else "-"
        rows.append([grp.label, f"{grp.target:g}", _g(e.value), ci, _g(f.s_min.value),
                     _g(f.e_min.value), f"{f.n_fitted}/{len(f.batch_sizes)}",
                     f.n_censored_trials, _g(grp.b_simple), bopt, ""])
        reasons.append("")
    codes, key = legend(reasons)
    for row, code in zip(rows, codes):
        row[-1] = code
    if not any(codes):
        head, rows = head[:-1], [r[:-1] for r in rows]
    lines += text_table(head, rows, label=0)
    if key:
        lines += ["", "no fit:"] + ["  " + k for k in key]
    for name, est in res.scaling:
        lines.append(f"B_crit grows as {name}^{est.value:.2f} ({res.level:.0%} CI {est.ci_low:.2f} to "
                     f"{est.ci_high:.2f})")
    c = res.scaling_counts or {}
    if res.scaling and c:
        cens = [f"{c[k]} with B_crit {w} batch size, censored there" for k, w in
                (("censored_high", "beyond the largest"), ("censored_low", "below the smallest"))
                if c.get(k)]
        lines.append(f"  Tobit over {c['groups']} group(s)" + (f" ({'; '.join(cens)})" if cens else "")
                     + (f", {c['left_out']} without a fit left out" if c.get("left_out") else "")
                     + f"; {c.get('replicates', 0)} of {c.get('replicates_drawn', 0)} bootstrap "
                     "replicates fitted")
    lines.append("columns: 'never' counts trials that never reached the target; a batch size whose "
                 "median seed never reached it is left out of the fit (its steps are only a lower bound); "
                 "B_simple is the median gradient noise scale at the target, B_opt the best batch size of the group"
                 + (" (jointly with lr, refined between grid points)" if res.tune_lr else " (refined between grid points)"))
    for grp in res.groups:
        lines += [f"{grp.label}, target {grp.target:g}: {n}" for n in grp.fit.notes]
    lines += list(res.notes)
    return lines
