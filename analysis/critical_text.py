"""Text of a critical-batch-size result (:mod:`analysis.critical`); computing stays there."""

from __future__ import annotations

import numpy as np


def _g(v) -> str:
    if v is None or not np.isfinite(v):
        return "inf" if v == np.inf else "n/a"
    return f"{v:.3g}"


def _est(e) -> str:
    hi = "open" if e.ci_high == np.inf else _g(e.ci_high)
    return f"{_g(e.value)} (95% CI {_g(e.ci_low)} to {hi})" if np.isfinite(e.value) else _g(e.value)


def critical_lines(res) -> list[str]:
    """One header, one line per group and target, the scaling exponents, then the notes."""
    lines = [f"critical batch size B_crit = E_min/S_min from S(B) = S_min + E_min/B (McCandlish et al. 2018), "
             f"metric {res.metric} ({'rising' if res.maximize else 'falling'}), targets "
             f"{', '.join(f'{t:g}' for t in res.targets)}, {res.n_seeds} seeds, lr "
             f"{'tuned per batch size' if res.tune_lr else 'fixed per group'}", ""]
    head = f"{'group':32} {'target':>7} {'B_crit (95% CI)':>28} {'S_min':>9} {'E_min':>9} {'B fitted':>8} " \
           f"{'never':>5} {'B_simple':>9} {'B_opt':>8}"
    lines.append(head)
    for g in res.groups:
        f = g.fit
        if not f.ok:
            lines.append(f"{g.label[:32]:32} {g.target:>7g}  no fit: {f.reason}")
            continue
        bopt = _g(g.b_opt.value) if g.b_opt is not None else "-"
        lines.append(f"{g.label[:32]:32} {g.target:>7g} {_est(f.b_crit):>28} {_g(f.s_min.value):>9} "
                     f"{_g(f.e_min.value):>9} {f.n_fitted:>4}/{len(f.batch_sizes):<3} {f.n_censored_trials:>5} "
                     f"{_g(g.b_simple):>9} {bopt:>8}")
    for name, est in res.scaling:
        lines.append(f"B_crit grows as {name}^{est.value:.2f} (95% CI {est.ci_low:.2f} to {est.ci_high:.2f})")
    lines.append("columns: 'never' counts trials that never reached the target (censored, not dropped); "
                 "B_simple is the median gradient noise scale at the target, B_opt the best batch size of the group"
                 + (" (jointly with lr, refined between grid points)" if res.tune_lr else " (refined between grid points)"))
    for g in res.groups:
        lines += [f"{g.label}, target {g.target:g}: {n}" for n in g.fit.notes]
    lines += list(res.notes)
    return lines
