"""The headline figures of ``make reproduce``: the learning-curve exponent and the B_opt rule.

Reads the two sweeps that ``make reproduce`` runs into one store,
``learning_curve`` (Hestness et al. 2017: error against n_train, tuned at every
size) and ``bopt_rule`` (Smith & Le 2018: B_opt against εN/(1−m)), prints the
figures and writes one HTML report with every plot.

    python -m analysis.reproduce results/reproduce [-o report.html] [--json]
"""

from __future__ import annotations

import argparse
import html
import json
import os
import platform
import sys
from datetime import datetime, timezone

import numpy as np
import pyarrow.compute as pc

from analysis import tables
from analysis.bopt import find_bopt
from analysis.curves import fit_learning_curves
from analysis.errors import AnalysisError
from analysis.report import build_report, write_page

CURVE_SWEEP, BOPT_SWEEP = "learning_curve", "bopt_rule"


def _sweep(trials, name: str):
    part = trials.filter(pc.equal(trials.column("sweep"), name))
    if part.num_rows == 0:
        raise AnalysisError(f"the store has no sweep {name!r}; run make reproduce (or its sweeps) first")
    return part


def _estimate(value, low, high) -> dict:
    return {"value": float(value), "ci_low": float(low), "ci_high": float(high)}


def measure(root: str, *, metric: str = "error", n_boot: int = 1000) -> dict:
    """The figures, as plain values: exponents with 95% CIs, rule slope, g_opt, verdict."""
    trials = tables.load_trials(root)
    curve_trials, bopt_trials = _sweep(trials, CURVE_SWEEP), _sweep(trials, BOPT_SWEEP)
    out: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
                 "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "metric": metric}
    for key, offset in (("power_law", False), ("power_law_offset", True)):
        curve = fit_learning_curves(curve_trials, x="n_train", metric=metric, offset=offset,
                                    n_boot=n_boot)[0]
        fit = curve.fit
        if fit is None:
            out[key] = {"message": curve.message}
            continue
        out[key] = {name: _estimate(*fit.param(name)) for name in fit.names}
        out[key].update(converged=bool(fit.converged), n_points=int(fit.n_points),
                        holdout_rmse_log=None if fit.holdout is None else float(fit.holdout.rmse_log))
    result = find_bopt(bopt_trials, metric="test_acc", n_boot=n_boot)
    rule = result.rule.to_dict()
    out["bopt"] = {k: rule[k] for k in ("verdict", "consistent", "slope", "slope_ci", "r2", "g_opt",
                                       "g_opt_ci", "exponents", "not_estimated")}
    out["bopt"].update(groups=rule["n_groups"], used=rule["n_used"], edge=rule["n_edge"],
                       too_few=rule["n_too_few"],
                       interior_fraction=rule["n_used"] / rule["n_groups"] if rule["n_groups"] else 0.0)
    out["_tables"] = (curve_trials, bopt_trials, trials)
    return out


def figure_lines(fig: dict) -> list[str]:
    """What ``make reproduce`` prints."""
    def ci(e: dict) -> str:
        return f"{e['value']:.3f} (95% CI {e['ci_low']:.3f} to {e['ci_high']:.3f})"

    lines = [f"measured {fig['date']} on {fig['machine']}"]
    for key, label in (("power_law", "error = a*N^b"), ("power_law_offset", "error = a*N^b + c")):
        f = fig[key]
        lines.append(f"learning curve, {label}: " + (f"b = {ci(f['b'])}" if "b" in f else f["message"])
                     + ("" if "c" not in f else f", c = {ci(f['c'])}"))
    b = fig["bopt"]
    lines.append(f"B_opt groups: {b['groups']}, interior {b['used']} "
                 f"({100 * b['interior_fraction']:.0f}%), at the grid edge {b['edge']}")
    if b["slope"] is not None:
        lines.append(f"slope of log B_opt on log(lr*N/(1-m)): {b['slope']:.3f} "
                     f"(95% CI {b['slope_ci'][0]:.3f} to {b['slope_ci'][1]:.3f}), R^2 {b['r2']:.3f}")
        lines.append(f"g_opt = lr*N/(B_opt(1-m)): {b['g_opt']:.3g} "
                     f"(95% CI {b['g_opt_ci'][0]:.3g} to {b['g_opt_ci'][1]:.3g})")
    for e in b["exponents"]:
        lines.append(f"exponent of {e['name']}: {e['value']:.3f} "
                     f"(95% CI {e['ci_low']:.3f} to {e['ci_high']:.3f}); the rule says 1")
    lines.append(f"verdict: {b['verdict']}")
    broken = [e for e in b["exponents"] if not e["ci_low"] <= 1.0 <= e["ci_high"]]
    if broken:
        lines.append("but the separate exponents say where the rule breaks: " + "; ".join(
            f"B_opt grows as {e['name']}^{e['value']:.2f}, and the CI "
            f"[{e['ci_low']:.2f}, {e['ci_high']:.2f}] excludes 1" for e in broken))
    else:
        lines.append("each separate exponent's CI contains 1")
    return lines


def write(root: str, out: str, fig: dict, n_boot: int = 1000) -> str:
    curve_trials, bopt_trials, trials = fig["_tables"]
    head = ("<h2>Headline figures</h2><pre style='white-space: pre-wrap'>"
            + html.escape("\n".join(figure_lines(fig))) + "</pre>")
    page = build_report(trials, source=str(root), metric=fig["metric"], offset=False,
                        curve_trials=curve_trials, bopt_trials=bopt_trials, n_boot=n_boot, extra=head)
    return write_page(out, page)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="store holding the learning_curve and bopt_rule sweeps")
    parser.add_argument("-o", "--output", default=None, help="HTML report (default RESULTS/report.html)")
    parser.add_argument("--boot", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    try:
        fig = measure(args.results, n_boot=args.boot)
        out = write(args.results, args.output or os.path.join(args.results, "report.html"), fig, args.boot)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({k: v for k, v in fig.items() if not k.startswith("_")}, indent=2,
                         default=lambda v: float(v) if isinstance(v, np.floating) else str(v)))
    else:
        print("\n".join(figure_lines(fig)))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
