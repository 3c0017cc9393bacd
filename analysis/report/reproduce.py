"""The headline figures of ``make reproduce``: the learning-curve exponent, the B_opt rule
and the critical batch size.

Reads the sweeps that ``make reproduce`` runs into one store,
``learning_curve`` (Hestness et al. 2017: error against n_train, tuned at every
size), ``bopt_rule`` (Smith & Le 2018: B_opt against εN/(1−m)) and ``bcrit``
(McCandlish et al. 2018: steps to target against B, B_crit beside B_simple and
B_opt, lr tuned per B), prints the figures and writes one HTML report with every plot.

    python -m analysis.report.reproduce results/reproduce [-o report.html] [--json]
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
from analysis.rules.bopt import find_bopt
from analysis.fit.curves import fit_learning_curves
from analysis.errors import AnalysisError
from analysis.report.html import build_report, write_page

CURVE_SWEEP, BOPT_SWEEP, BCRIT_SWEEP = "learning_curve", "bopt_rule", "bcrit"
BCRIT_QUANTILES = (0.5, 0.7, 0.85)
"""Targets of the bcrit part: these quantiles of the batch sizes' median final test loss."""


def _sweep(trials, name: str):
    part = trials.filter(pc.equal(trials.column("sweep"), name))
    if part.num_rows == 0:
        raise AnalysisError(f"the store has no sweep {name!r}; run make reproduce (or its sweeps) first")
    return part


def _estimate(value, low, high) -> dict:
    return {"value": float(value), "ci_low": float(low), "ci_high": float(high)}


def measure(root: str, *, metric: str = "error", n_boot: int = 1000) -> dict:
    """The figures, as plain values: exponents with 95% CIs, the rule's exponents, slope,
    g_opt and verdict (``{"label", "axes", "reason"}``), and how winners were chosen."""
    trials, curves = tables.load_sweep(root)
    curve_trials, bopt_trials = _sweep(trials, CURVE_SWEEP), _sweep(trials, BOPT_SWEEP)
    out: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
                 "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "metric": metric}
    for key, offset in (("power_law", False), ("power_law_offset", True)):
        curve = fit_learning_curves(curve_trials, x="n_train", metric=metric, offset=offset,
                                    n_boot=n_boot)[0]
        fit = curve.fit
        out["curve_selection"], out["curve_flagged"] = curve.selection, len(curve.flagged)
        if fit is None:
            out[key] = {"message": curve.message}
            continue
        out[key] = {name: _estimate(*fit.param(name)) for name in fit.names}
        out[key].update(converged=bool(fit.converged), n_points=int(fit.n_points),
                        holdout_rmse_log=None if fit.holdout is None else fit.holdout.rmse_log)
    result = find_bopt(bopt_trials, metric="test_acc", n_boot=n_boot)
    if result.rule is None:
        raise AnalysisError(f"the bopt_rule sweep cannot test the rule: {result.rule_note}")
    rule = result.rule.to_dict()
    out["bopt"] = {k: rule[k] for k in ("verdict", "exponents", "not_estimated", "slope", "r2",
                                       "g_opt", "joint_test", "margin")}
    out["bopt"].update(groups=rule["n_groups"], interior=rule["n_observed"],
                       edge=rule["n_censored"], left_out=rule["n_excluded"],
                       selection=result.selection, notes=list(result.notes) + rule["notes"])
    out["_tables"] = (curve_trials, bopt_trials, trials)
    out["bcrit"] = None
    if BCRIT_SWEEP in set(trials.column("sweep").to_pylist()):
        out["bcrit"] = _bcrit(_sweep(trials, BCRIT_SWEEP), curves, n_boot)
    out["_curves"] = curves
    return out


def _bcrit(trials, curves, n_boot: int):
    from analysis.rules.critical import auto_target, critical_batch

    curves = curves.filter(pc.equal(curves.column("sweep"), BCRIT_SWEEP))
    targets = sorted({auto_target(trials, "test_loss", q) for q in BCRIT_QUANTILES}, reverse=True)
    return critical_batch(trials, curves, targets=targets, metric="test_loss", tune_lr=True,
                          n_boot=min(n_boot, 400))


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
    if fig.get("curve_selection"):
        lines.append(f"learning-curve winners: {fig['curve_selection']}; "
                     f"{fig.get('curve_flagged', 0)} configurations left out of selection (a trial "
                     "diverged, failed or had batch > n_train)")
    lines.append(f"B_opt groups: {b['groups']}, interior {b['interior']}, at the grid edge "
                 f"{b['edge']} (censored), left out {b['left_out']}; {b['selection']}")
    for e in b["exponents"]:
        lines.append(f"exponent of {e['name']}: {e['value']:.3f} (95% CI {e['ci_low']:.3f} to "
                     f"{e['ci_high']:.3f}; 90% CI {e['ci90_low']:.3f} to {e['ci90_high']:.3f}); "
                     f"the rule says 1 ± {b.get('margin', 0.25):g}")
    for axis, why in b["not_estimated"].items():
        lines.append(f"exponent of {axis}: not estimated ({why})")
    if b["slope"] is not None:
        s = b["slope"]
        lines.append(f"slope of log B_opt on log(lr*N/(1-m)): {s['value']:.3f} "
                     f"(95% CI {s['ci_low']:.3f} to {s['ci_high']:.3f}), R^2 {b['r2']:.3f}")
    if b["g_opt"] is not None:
        go = b["g_opt"]
        lines.append(f"g_opt = lr*N/(B_opt(1-m)): {go['value']:.3g} "
                     f"(95% CI {go['ci_low']:.3g} to {go['ci_high']:.3g})")
    v = b["verdict"]
    lines.append(f"verdict: {v['label']}" + (f" ({', '.join(v['axes'])})" if v["axes"] else "")
                 + f": {v['reason']}")
    if fig.get("bcrit") is not None:
        from analysis.report.rule_text import critical_lines

        lines += [""] + critical_lines(fig["bcrit"])
    return lines


def write(root: str, out: str, fig: dict, n_boot: int = 1000) -> str:
    curve_trials, bopt_trials, trials = fig["_tables"]
    head = ("<h2>Headline figures</h2><pre style='white-space: pre-wrap'>"
            + html.escape("\n".join(figure_lines(fig))) + "</pre>")
    bcrit = fig.get("bcrit")
    page = build_report(trials, source=str(root), metric=fig["metric"], offset=False,
                        curve_trials=curve_trials, bopt_trials=bopt_trials, n_boot=n_boot, extra=head,
                        curves=fig["_curves"] if bcrit is not None else None,
                        bcrit_trials=_sweep(trials, BCRIT_SWEEP) if bcrit is not None else None,
                        bcrit_targets=bcrit.targets if bcrit is not None else None)
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
        fig = {**fig, "bcrit": None if fig.get("bcrit") is None else fig["bcrit"].to_dict()}
        print(json.dumps({k: v for k, v in fig.items() if not k.startswith("_")}, indent=2,
                         default=lambda v: float(v) if isinstance(v, np.floating) else str(v)))
    else:
        print("\n".join(figure_lines(fig)))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
