"""The report's headline cards: the learning-curve exponent with its interval, the B_opt rule's
verdict, B_crit and the trial count, read off the results the sections computed.

A card whose section failed or does not apply says so in its small line; it never invents
a number.
"""

from __future__ import annotations

import numpy as np

import analysis.report.text as fmt
from analysis import tables
from analysis.report.page import Card, cards


def headline(trials, found: dict, has_curves: bool, not_sgd) -> str:
    """The row of cards (HTML) from ``found``: ``curves``, ``bopt`` and ``bcrit`` results."""
    return cards([_trials(trials), _exponent(found.get("curves")),
                  _rule(found.get("bopt"), not_sgd), _bcrit(found.get("bcrit"), has_curves)])


def _trials(trials) -> Card:
    status = tables.status(tables.frame(trials))
    counts = tables.count_by(status)
    ok = counts.get("ok", 0)
    return Card(key="trials", value=str(status.size), sub=fmt.outcomes_text(counts),
                tone="" if ok == status.size else "bad")


def _exponent(curves) -> Card:
    key = "learning-curve exponent b"
    if curves is None:
        return Card(key=key, value="-", sub="not available (see the learning-curve section)",
                    tone="none")
    fitted = [c for c in curves if c.fit is not None]
    if not fitted:
        return Card(key=key, value="-", sub=f"no fit: {curves[0].message}" if curves else "no fit",
                    tone="none")
    c = fitted[0]
    v, lo, hi = c.fit.param("b")
    more = f"; {len(curves) - 1} more curves below" if len(curves) > 1 else ""
    where = "" if c.label == "all" else f" ({c.label})"
    excludes = np.isfinite(lo) and np.isfinite(hi) and (hi < 0 or lo > 0)
    warn = len(c.warnings) + len(c.family.warnings if c.family is not None else ())
    sub = (f"{c.fit.level:.0%} CI {fmt.g(lo, 3)} to {fmt.g(hi, 3)}"
           f"{'' if excludes else ' (includes 0)'}; {c.metric} = a*{c.x_name}^b"
           f"{' + c' if len(c.fit.params) == 3 else ''}{where}{more}"
           f"{f'; {warn} warnings below' if warn else ''}")
    return Card(key=key, value=fmt.g(v, 3), sub=sub, tone="" if excludes else "bad")


def _rule(result, not_sgd) -> Card:
    key = "B_opt rule: B_opt ∝ lr*N/(1-m) (SGD)"
    if result is None:
        return Card(key=key, value="-", sub="not available (see the B_opt section)", tone="none")
    rule = result.rule
    if rule is None:
        why = (f"does not apply to {', '.join(not_sgd)}" if not_sgd else result.rule_note)
        return Card(key=key, value="not checked", sub=why, tone="none")
    tone = {"consistent": "good", "inconsistent": "bad"}.get(rule.verdict.label, "")
    sub = f"{rule.n_observed} of {rule.n_groups} groups interior"
    if rule.slope is not None:
        s = rule.slope
        sub = f"slope {fmt.g(s.value, 3)} (95% CI {fmt.g(s.ci_low, 3)} to {fmt.g(s.ci_high, 3)}); " + sub
    return Card(key=key, value=rule.verdict.label, sub=sub, tone=tone)


def _bcrit(result, has_curves: bool) -> Card:
    key = "critical batch size B_crit"
    if result is None:
        why = "not available (see its section)" if has_curves else "needs a store's curves table"
        return Card(key=key, value="-", sub=why, tone="none")
    ok = [g for g in result.groups if g.fit.ok]
    if not ok:
        return Card(key=key, value="-", sub="no group could be fitted", tone="none")
    if len(ok) == 1:
        g = ok[0]
        b = g.fit.b_crit
        return Card(key=key, value=fmt.g(b.value, 3),
                    sub=f"95% CI {fmt.g(b.ci_low, 3)} to {fmt.g(b.ci_high, 3)}; {g.label}, "
                        f"{result.metric} target {g.target:g}")
    values = [g.fit.b_crit.value for g in ok]
    sub = f"over {len(ok)} groups and targets"
    for name, est in result.scaling[:1]:
        sub += f"; grows as {name}^{est.value:.2f} (95% CI {est.ci_low:.2f} to {est.ci_high:.2f})"
    return Card(key=key, value=f"{fmt.g(min(values), 3)} to {fmt.g(max(values), 3)}", sub=sub)
