r"""Extrapolation benchmark: the Revisiting-NSL vision learning curves (72 curves).

``python -m analysis.bench.extrapolation`` follows the protocol of
Alabdulmohsin, Neyshabur and Zhai (2022, "Revisiting Neural Scaling Laws in
Language and Vision"): every family is fitted to a curve's ``Training = 1``
points and scored by the RMSE of :math:`\log(\hat y / y)` on its
``Training = 0`` points, which lie at up to about twice the largest fitted
``x``; scores are averaged over curves. Error rates are bounded in [0, 1],
as in the paper's M4 (:math:`e_0 \le 1`). ``auto``
(:func:`analysis.fit.forms.selection.select_form`) chooses per curve from the fitted
points only, knowing where predictions are wanted (the held-out ``x``,
never their ``y``). Calibration: the share of held-out points inside the
95 % prediction intervals of :func:`analysis.fit.forms.prediction.predict`.

``--dev`` runs the development split used to design ``auto``: only the
``Training = 1`` points, fitted up to half their largest ``x`` and scored
above it, so design choices never see the held-out points.

Data: ``analysis/data/revisiting_nsl/`` (Apache-2.0, see its README and NOTICE).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.fit.forms.registry import FORMS

DATA = Path(__file__).resolve().parents[1] / "data" / "revisiting_nsl" / "benchmark.vision.csv"
"""The benchmark file shipped with the package."""
DATASETS = {"bird": "Birds", "c": "CIFAR100", "cal": "Caltech101", "inet": "ImageNet"}
"""Task prefix -> downstream dataset."""
PAPER = ("M1", "M2", "M3", "M4")
"""The paper's families (its win-rate rule compares these only)."""
METHODS = tuple(FORMS) + ("auto",)
"""Methods fitted: every family of :mod:`analysis.fit.forms.registry`, then ``auto``."""
MULTIPLIERS = (0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
"""Multipliers of the prediction interval's extrapolation term that calibration tries."""
COLUMNS = METHODS + ("LODO",)
"""Columns of the table: the methods, then auto tuned leave-one-dataset-out."""


@dataclass(frozen=True, kw_only=True)
class Curve:
    """One learning curve split into fitted and held-out points."""

    task: str
    """Task name, e.g. ``inet_10`` (ImageNet, 10-shot)."""
    model: str
    """Pre-trained architecture, e.g. ``ViT/B/16``."""
    x_fit: np.ndarray
    """Examples seen at the points a method may fit."""
    y_fit: np.ndarray
    """Error rates there."""
    x_test: np.ndarray
    """Examples seen at the held-out points."""
    y_test: np.ndarray
    """Error rates there."""

    @property
    def dataset(self) -> str:
        return DATASETS.get(self.task.rsplit("_", 1)[0], self.task.rsplit("_", 1)[0])

    @property
    def shot(self) -> str:
        return self.task.rsplit("_", 1)[-1] + "-shot"


@dataclass(frozen=True, kw_only=True)
class CurveResult:
    """Scores of every method on one curve."""

    task: str
    model: str
    dataset: str
    shot: str
    rmse: dict
    """``{method: RMSE-log on the held-out points}``; None when a prediction is undefined."""
    chosen: str | None
    """Family ``auto`` chose; None when the curve is too short to choose."""
    inside: dict
    """``{method: held-out points inside its prediction interval}`` (auto and M4)."""
    inside_at: dict = None
    """``{method: {multiplier: held-out points inside}}`` for each multiplier of
    :data:`MULTIPLIERS` of the extrapolation term (what calibration across curves picks from)."""
    n_test: int
    """Held-out points."""
    scores: dict = None
    """``{family: rolling-origin score}`` on the fitted points (what auto's rule weighs)."""
    n_valid: int = 0
    """Backtest points behind ``scores``."""
    tied: bool = False
    """Whether auto's choice tied another family's score to 4 digits."""


def load_curves(path: str | os.PathLike = DATA, *, dev: bool = False) -> list[Curve]:
    """The benchmark's curves; with ``dev``, the development split of the fitted points."""
    if not Path(path).exists():
        from analysis.errors import AnalysisError
        raise AnalysisError(f"no benchmark file at {str(path)!r}; it ships in "
                            "analysis/data/revisiting_nsl/ (was the package installed without "
                            "its data?)")
    rows: dict[tuple[str, str], list] = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            rows.setdefault((r["Task"], r["Model"]), []).append(
                (float(r["Seen Examples"]), float(r["Loss"]), r["Training"] == "1"))
    curves = []
    for (task, model), pts in sorted(rows.items()):
        x, y, fit = (np.array(v) for v in zip(*sorted(pts)))
        if dev:
            x, y = x[fit], y[fit]
            fit = x <= x.max() / 2.0
        curves.append(Curve(task=task, model=model, x_fit=x[fit], y_fit=y[fit],
                            x_test=x[~fit], y_test=y[~fit]))
    return curves


def evaluate(curve: Curve, *, n_boot: int = 200, level: float = 0.95,
             calibrate: bool = True) -> CurveResult:
    """Fit every method to one curve and score it on the held-out points.

    ``calibrate`` also counts the points inside the intervals at every multiplier of
    :data:`MULTIPLIERS` (what :func:`calibrated_coverage` needs; the costliest part).
    """
    from analysis.errors import AnalysisError
    from analysis.fit.forms.bounds import Bounds, rmse_log
    from analysis.fit.forms.fit import fit_form
    from analysis.fit.forms.prediction import predict

    bounds = Bounds(low=0.0, high=1.0, reason="error rates")
    rmse, inside, inside_at, chosen, scores, n_valid, tied = {}, {}, {}, None, None, 0, False
    for name in FORMS:
        form = FORMS[name]
        if np.unique(curve.x_fit).size < form.n_params + 1:
            rmse[name] = None
            continue
        pred = form.predict(form.fit(curve.x_fit, curve.y_fit, low=0.0, high=1.0).params,
                            curve.x_test)
        rmse[name] = rmse_log(np.where((pred > 0) & (pred <= 1), pred, np.nan), curve.y_test)
    for name in ("M4", "auto"):
        try:
            fit = fit_form(curve.x_fit, curve.y_fit, name, bounds=bounds, n_boot=n_boot,
                           level=level, holdout=0)
        except AnalysisError:
            rmse.setdefault(name, None)
            continue
        p = predict(fit, curve.x_test, level)
        ys = np.array([np.nan if v is None else v for v in p.y])
        inside[name] = _inside(p, curve.y_test)
        if calibrate:
            inside_at[name] = {m: _inside(predict(fit, curve.x_test, level, scale=m),
                                          curve.y_test) for m in MULTIPLIERS}
        if name == "auto":
            chosen = fit.form
            rmse["auto"] = rmse_log(ys, curve.y_test)
            if fit.selection is not None:
                scores = dict(fit.selection.scores)
                n_valid, tied = fit.selection.n_valid, bool(fit.selection.tied)
    return CurveResult(task=curve.task, model=curve.model, dataset=curve.dataset,
                       shot=curve.shot, rmse=rmse, chosen=chosen, inside=inside,
                       n_test=int(curve.x_test.size), scores=scores, n_valid=n_valid, tied=tied,
                       inside_at=inside_at)


def _inside(pred, y) -> int:
    lo = np.array([np.nan if v is None else v for v in pred.pi_low])
    hi = np.array([np.nan if v is None else v for v in pred.pi_high])
    return int(np.sum((y >= lo) & (y <= hi)))


def _evaluate_many(args):
    curves, n_boot, level, calibrate = args
    return [evaluate(c, n_boot=n_boot, level=level, calibrate=calibrate) for c in curves]


def run(curves, *, n_boot: int = 200, level: float = 0.95, workers: int = 1,
        calibrate: bool = True) -> list[CurveResult]:
    """Evaluate every curve, in ``workers`` processes."""
    chunks = [(list(curves[k::workers]), n_boot, level, calibrate)
              for k in range(max(1, workers))]
    chunks = [c for c in chunks if c[0]]
    if len(chunks) > 1:
        from multiprocessing import get_context
        with get_context("spawn").Pool(len(chunks)) as pool:
            parts = pool.map(_evaluate_many, chunks)
    else:
        parts = [_evaluate_many(c) for c in chunks]
    out = [r for part in parts for r in part]
    return sorted(out, key=lambda r: (r.task, r.model))


def paper_wins(results) -> dict:
    """Share of curves each of M1-M4 wins, scored as the paper does (3 decimals, ties split)."""
    wins = dict.fromkeys(PAPER, 0.0)
    for r in results:
        e = np.array([1.0 if r.rmse.get(m) is None else r.rmse[m] for m in PAPER])
        e = np.floor(e * 1000) / 1000
        best = e == e.min()
        for m, b in zip(PAPER, best):
            wins[m] += b / best.sum()
    return {m: v / max(len(results), 1) for m, v in wins.items()}


def auto_choice(r: CurveResult, prior: dict | None, temper: float | None) -> str | None:
    """The family auto's rule picks on one curve from its stored backtest scores."""
    from analysis.fit.forms.selection import posterior

    finite = {k: v for k, v in (r.scores or {}).items() if v is not None and np.isfinite(v)}
    if not finite:
        return r.chosen
    post = posterior(finite, r.n_valid, prior, temper)
    return max(post, key=lambda k: (post[k], -list(FORMS).index(k)))


def rules() -> list[tuple[str, dict, float]]:
    """Candidate (prior, temper) settings of auto's rule that leave-one-dataset-out tunes.

    Every prior gives each family at least half the uniform weight and every temper is > 0,
    so the backtests always count (the rule never collapses onto one family).
    """
    from analysis.fit.forms.selection import PRIOR

    k = len(FORMS)
    priors = [("uniform", dict.fromkeys(FORMS, 1.0 / k)), ("shipped", dict(PRIOR))]
    priors += [(f"favour {f}", {g: 0.5 / k + (0.5 if g == f else 0.0) for g in FORMS})
               for f in FORMS]
    return [(name, pi, t) for name, pi in priors for t in (0.05, 0.1, 0.25, 0.5, 1.0, 4.0)]


def _rule_rmse(results, prior, temper) -> float:
    vals = [r.rmse.get(auto_choice(r, prior, temper)) for r in results]
    return float(np.mean([1.0 if v is None else v for v in vals]))


def leave_one_dataset_out(results) -> dict:
    """Tune auto's rule on three downstream datasets, score it on the fourth, for each.

    Returns ``{"rmse": {(task, model): RMSE-log}, "folds": {dataset: (rule, temper)}}``.
    """
    from analysis.fit.forms.selection import TEMPER

    grid = rules()
    out, folds = {}, {}
    for ds in sorted({r.dataset for r in results}):
        tune = [r for r in results if r.dataset != ds]
        name, prior, temper = min(grid, key=lambda g: _rule_rmse(tune, g[1], g[2])) if tune \
            else ("shipped", None, None)
        folds[ds] = (name, temper if temper is not None else TEMPER)
        for r in results:
            if r.dataset == ds:
                out[(r.task, r.model)] = r.rmse.get(auto_choice(r, prior, temper))
    return {"rmse": out, "folds": folds}


def curve_misses_allowed(n: int, level: float) -> int:
    """Misses a curve of ``n`` held-out points may have: the 95th percentile of
    Binomial(n, 1 - level), so that P(more misses) <= 5 % if every point is covered
    independently with probability ``level``."""
    from scipy.stats import binom

    return int(binom.ppf(0.95, n, 1.0 - level))


def _covers(results, method, mult, level) -> tuple[float, float]:
    """(share of held-out points inside, share of curves passing) at one multiplier."""
    n = sum(r.n_test for r in results)
    ins = sum(r.inside_at[method][mult] for r in results)
    ok = sum(r.n_test - r.inside_at[method][mult] <= curve_misses_allowed(r.n_test, level)
             for r in results)
    return ins / max(n, 1), ok / max(len(results), 1)


def calibrate(results, method: str, level: float) -> float:
    """The smallest multiplier of :data:`MULTIPLIERS` whose intervals hold ``level`` of the
    held-out points and pass 95 % of the curves on ``results`` (the largest if none does)."""
    for m in MULTIPLIERS:
        point, curve = _covers(results, method, m, level)
        if point >= level and curve >= 0.95:
            return m
    return MULTIPLIERS[-1]


def calibrated_coverage(results, method: str, level: float) -> dict:
    """Coverage with the multiplier calibrated leave-one-dataset-out: for each downstream
    dataset, :func:`calibrate` on the other three, then count on it."""
    pts = n = ok = 0
    mults = {}
    for ds in sorted({r.dataset for r in results}):
        tune = [r for r in results if r.dataset != ds]
        mult = calibrate(tune, method, level) if tune else 1.0
        mults[ds] = mult
        held = [r for r in results if r.dataset == ds]
        pts += sum(r.inside_at[method][mult] for r in held)
        n += sum(r.n_test for r in held)
        ok += sum(r.n_test - r.inside_at[method][mult] <= curve_misses_allowed(r.n_test, level)
                  for r in held)
    return {"point": pts / max(n, 1), "curve": ok / max(len(results), 1), "multipliers": mults,
            "all": calibrate(results, method, level)}


def summarize(results, level: float = 0.95) -> dict:
    """Mean RMSE-log per method, overall, per dataset and per shot, on curves all methods scored.

    ``LODO`` is auto with its rule tuned leave-one-dataset-out (:func:`leave_one_dataset_out`).
    """
    lodo = leave_one_dataset_out(results)
    results = [dataclasses.replace(r, rmse={**r.rmse, "LODO": lodo["rmse"].get((r.task, r.model))})
               for r in results]
    full = [r for r in results if all(r.rmse.get(m) is not None for m in COLUMNS)]
    groups = {"all": full}
    order = sorted(full, key=lambda r: (list(DATASETS.values()).index(r.dataset)
                                        if r.dataset in DATASETS.values() else 99, r.dataset))
    for r in order:
        groups.setdefault(r.dataset, []).append(r)
    for r in sorted(full, key=lambda r: int(r.shot.split("-")[0])):
        groups.setdefault(r.shot, []).append(r)
    means = {g: {m: float(np.mean([r.rmse[m] for r in rs])) for m in COLUMNS}
             for g, rs in groups.items() if rs}
    counts = {g: len(rs) for g, rs in groups.items()}
    chosen: dict[str, int] = {}
    for r in full:
        chosen[r.chosen] = chosen.get(r.chosen, 0) + 1
    n_test = sum(r.n_test for r in full)
    coverage = {m: sum(r.inside.get(m, 0) for r in full) / max(n_test, 1) for m in ("M4", "auto")}
    per_curve = {m: sum(r.n_test - r.inside.get(m, 0) <= curve_misses_allowed(r.n_test, level)
                        for r in full) / max(len(full), 1) for m in ("M4", "auto")}
    best = min(FORMS, key=lambda m: means["all"][m]) if full else None
    return {"means": means, "counts": counts, "n_curves": len(results),
            "n_scored": len(full), "wins": paper_wins(full), "chosen": chosen,
            "tied": sum(r.tied for r in full),
            "coverage": coverage, "per_curve": per_curve, "level": level, "n_test": n_test,
            "calibrated": {m: calibrated_coverage(full, m, level) for m in ("M4", "auto")}
            if full and all(r.inside_at for r in full) else {},
            "folds": lodo["folds"], "best": best,
            "auto_vs_m4": 1.0 - means["all"]["auto"] / means["all"]["M4"] if full else None}


def table_lines(s: dict) -> list[str]:
    """The summary as text."""
    from analysis.report.text import text_table

    head = ["curves", "n"] + list(COLUMNS)
    rows = [[g, s["counts"][g]] + [f"{s['means'][g][m]:.4f}" for m in COLUMNS]
            for g in s["means"]]
    lines = [(f"mean RMSE of log(pred/true) on held-out points, {s['n_scored']} of "
             f"{s['n_curves']} curves (every method defined); auto: the shipped rule; LODO: "
             "auto's rule tuned on the other three datasets")]
    lines += text_table(head, rows)
    lines.append("curves won among M1-M4 (paper's rule): "
                 + ", ".join(f"{m} {v:.0%}" for m, v in s["wins"].items()))
    lines.append("auto chose: " + ", ".join(f"{k} {v}" for k, v in
                                             sorted(s["chosen"].items(), key=lambda t: -t[1]))
                 + f" ({s['tied']} ties to 4 digits, broken by the prior)")
    if s["best"] is not None:
        m = s["means"]["all"]
        lines.append(f"leave-one-dataset-out: auto {m['LODO']:.4f} against the best single family "
                     f"in hindsight ({s['best']}) {m[s['best']]:.4f} "
                     f"({m['LODO'] / m[s['best']] - 1:+.1%}) and M4 {m['M4']:.4f} "
                     f"({m['LODO'] / m['M4'] - 1:+.1%}); rule per held-out dataset: "
                     + "; ".join(f"{d}: {n}, temper {t:g}" for d, (n, t) in s["folds"].items()))
    if s["auto_vs_m4"] is not None:
        lines.append(f"auto vs M4: mean RMSE-log {s['auto_vs_m4']:.1%} lower")
    lines.append(f"held-out points inside the {s['level']:.0%} prediction intervals "
                 f"({s['n_test']} points): " + ", ".join(f"{m} {v:.1%}"
                                                        for m, v in s["coverage"].items()))
    lines.append(f"curves with no more misses than {s['level']:.0%} implies (at most the 95th "
                 f"percentile of Binomial(n, {1 - s['level']:.2g}) of their n held-out points): "
                 + ", ".join(f"{m} {v:.1%}" for m, v in s["per_curve"].items()))
    from analysis.fit.forms.prediction import SCALE

    lines.append(f"  (intervals: a t quantile with (origins - 1) df on the extrapolation term "
                 f"sqrt(sigma_0^2 + (kappa*log(x/x_max))^2), times the shipped multiplier "
                 f"{SCALE:g})")
    for m, c in s["calibrated"].items():
        lines.append(f"with the multiplier calibrated across curves, leave one dataset out, {m}: "
                     f"{c['point']:.1%} of points, {c['curve']:.1%} of curves (multipliers "
                     + ", ".join(f"{d} {v:g}" for d, v in c["multipliers"].items())
                     + f"; on all four datasets {c['all']:g})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.bench.extrapolation",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dev", action="store_true",
                        help="development split of the fitted points (never the held-out ones)")
    parser.add_argument("--boot", type=int, default=200, help="bootstrap resamples (default 200)")
    parser.add_argument("--level", type=float, default=0.95, help="interval coverage")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes (default 2)")
    parser.add_argument("--data", default=str(DATA), help="benchmark CSV")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = run(load_curves(args.data, dev=args.dev), n_boot=args.boot, level=args.level,
                  workers=args.workers)
    lines = table_lines(summarize(results, args.level))
    split = "development split (fitted points only)" if args.dev else "paper's protocol"
    print(f"Revisiting-NSL vision benchmark, {split}")
    print("\n".join(lines))
    print(f"seconds {time.perf_counter() - start:.1f} ({args.workers} workers)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
