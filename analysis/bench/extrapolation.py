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
"""Columns of the table: every family of :mod:`analysis.fit.forms.registry`, then ``auto``."""


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
    n_test: int
    """Held-out points."""


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


def evaluate(curve: Curve, *, n_boot: int = 200, level: float = 0.95) -> CurveResult:
    """Fit every method to one curve and score it on the held-out points."""
    from analysis.errors import AnalysisError
    from analysis.fit.forms.bounds import Bounds, rmse_log
    from analysis.fit.forms.fit import fit_form
    from analysis.fit.forms.prediction import predict

    bounds = Bounds(low=0.0, high=1.0, reason="error rates")
    rmse, inside, chosen = {}, {}, None
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
                           level=level, holdout=0, x_target=curve.x_test)
        except AnalysisError:
            rmse.setdefault(name, None)
            continue
        p = predict(fit, curve.x_test, level)
        ys = np.array([np.nan if v is None else v for v in p.y])
        lo = np.array([np.nan if v is None else v for v in p.pi_low])
        hi = np.array([np.nan if v is None else v for v in p.pi_high])
        inside[name] = int(np.sum((curve.y_test >= lo) & (curve.y_test <= hi)))
        if name == "auto":
            chosen = fit.form
            rmse["auto"] = rmse_log(ys, curve.y_test)
    return CurveResult(task=curve.task, model=curve.model, dataset=curve.dataset,
                       shot=curve.shot, rmse=rmse, chosen=chosen, inside=inside,
                       n_test=int(curve.x_test.size))


def _evaluate_many(args):
    curves, n_boot, level = args
    return [evaluate(c, n_boot=n_boot, level=level) for c in curves]


def run(curves, *, n_boot: int = 200, level: float = 0.95, workers: int = 1) -> list[CurveResult]:
    """Evaluate every curve, in ``workers`` processes."""
    chunks = [(list(curves[k::workers]), n_boot, level) for k in range(max(1, workers))]
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


def summarize(results, level: float = 0.95) -> dict:
    """Mean RMSE-log per method, overall, per dataset and per shot, on curves all methods scored."""
    full = [r for r in results if all(r.rmse.get(m) is not None for m in METHODS)]
    groups = {"all": full}
    order = sorted(full, key=lambda r: (list(DATASETS.values()).index(r.dataset)
                                        if r.dataset in DATASETS.values() else 99, r.dataset))
    for r in order:
        groups.setdefault(r.dataset, []).append(r)
    for r in sorted(full, key=lambda r: int(r.shot.split("-")[0])):
        groups.setdefault(r.shot, []).append(r)
    means = {g: {m: float(np.mean([r.rmse[m] for r in rs])) for m in METHODS}
             for g, rs in groups.items() if rs}
    counts = {g: len(rs) for g, rs in groups.items()}
    chosen: dict[str, int] = {}
    for r in full:
        chosen[r.chosen] = chosen.get(r.chosen, 0) + 1
    n_test = sum(r.n_test for r in full)
    coverage = {m: sum(r.inside.get(m, 0) for r in full) / max(n_test, 1) for m in ("M4", "auto")}
    return {"means": means, "counts": counts, "n_curves": len(results),
            "n_scored": len(full), "wins": paper_wins(full), "chosen": chosen,
            "coverage": coverage, "level": level, "n_test": n_test,
            "auto_vs_m4": 1.0 - means["all"]["auto"] / means["all"]["M4"] if full else None}


def table_lines(s: dict) -> list[str]:
    """The summary as text."""
    from analysis.report.text import text_table

    head = ["curves", "n"] + list(METHODS)
    rows = [[g, s["counts"][g]] + [f"{s['means'][g][m]:.4f}" for m in METHODS]
            for g in s["means"]]
    lines = [f"mean RMSE of log(pred/true) on held-out points, {s['n_scored']} of "
             f"{s['n_curves']} curves (every method defined)"]
    lines += text_table(head, rows)
    lines.append("curves won among M1-M4 (paper's rule): "
                 + ", ".join(f"{m} {v:.0%}" for m, v in s["wins"].items()))
    lines.append("auto chose: " + ", ".join(f"{k} {v}" for k, v in
                                             sorted(s["chosen"].items(), key=lambda t: -t[1])))
    if s["auto_vs_m4"] is not None:
        lines.append(f"auto vs M4: mean RMSE-log {s['auto_vs_m4']:.1%} lower")
    lines.append(f"held-out points inside the {s['level']:.0%} prediction intervals "
                 f"({s['n_test']} points): " + ", ".join(f"{m} {v:.1%}"
                                                        for m, v in s["coverage"].items()))
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
