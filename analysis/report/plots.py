"""Figures for fits and sweeps as files (``--plot FILE`` of ``fit``, ``fit-joint``, ``bopt`` and
``bcrit``); matplotlib without pyplot, so no global backend is touched. The HTML pages (``scaling
report`` and ``scaling serve``) draw with :mod:`analysis.report.figures` instead.

Each function takes a result object and returns a ``matplotlib.figure.Figure``;
:func:`save` writes it to a file and :func:`to_base64_png` encodes it for HTML.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from matplotlib.figure import Figure


def _fig(width: float = 6.4, height: float = 4.4) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return fig, fig.add_subplot()


def save(fig: Figure, path: str) -> None:
    """Write a figure; the format follows the file extension (png, pdf, svg)."""
    fig.savefig(path)


def to_base64_png(fig: Figure) -> str:
    """PNG bytes of a figure, base64-encoded for an ``<img src="data:...">``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def readable_ticks(ax) -> None:
    """Tick labels of log axes that never run into each other.

    Over less than about two decades matplotlib labels minor ticks ("3x10^3" beside
    "4x10^3"); here a short axis gets labels at 1, 2 and 5 (1 and 3 over more), plain
    numbers ("3000", "0.02", "2e4"), and minor ticks unlabelled.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() != "log":
            continue
        lo, hi = sorted(lim)
        if not (lo > 0 and np.isfinite(hi)):
            continue
        decades = np.log10(hi / lo)
        subs = (1.0, 2.0, 5.0) if decades < 2.2 else ((1.0, 3.0) if decades < 4 else (1.0,))
        if decades < 0.6:
            subs = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
        axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
        axis.set_major_formatter(FuncFormatter(_tick))
        axis.set_minor_formatter(NullFormatter())


def _tick(v, _pos=None) -> str:
    if not v > 0:
        return ""
    if 1e-3 <= v < 1e4:
        return f"{v:.4g}"
    m, e = f"{v:.0e}".split("e")
    return f"{m}e{int(e)}"


def _ci(fit, name: str) -> str:
    v, lo, hi = fit.param(name)
    return f"{name}={v:.3g} [{lo:.3g}, {hi:.3g}]"


def plot_curves(curves, extend: float = 1.5) -> Figure:
    """Learning curves on log-log axes: frontier points, fit, band, extrapolation, predictions.

    The fit is solid over the data and dashed past the largest ``x`` (to ``extend`` times
    it, or past the furthest prediction), inside its 95 % bootstrap band. Every point drawn
    is one the fit used. The extrapolation check's own fit, made without the largest ``x``,
    is dotted, and the points it left out are ringed. With a ``prediction``
    (:class:`analysis.fit.forms.prediction.Prediction`) the curve drawn is the family that
    predicted (never the power law beside it), its prediction interval shaded along the
    dashed part, and each predicted point a diamond with its interval. The legend names
    only the marks that are drawn.
    """
    fig, ax = _fig()
    colors = [f"C{i % 10}" for i in range(len(curves))]
    positive, seen, shown = True, set(), []
    for curve, color in zip(curves, colors):
        x, y = np.array(curve.x, float), np.array(curve.y, float)
        if x.size == 0:
            continue
        positive &= bool(np.all(y > 0))
        shown.append(y)
        fit, fam = curve.fit, getattr(curve, "family", None)
        pred = getattr(curve, "prediction", None)
        predicting = fam if pred is not None and fam is not None else None
        label = curve.label if fit is None else f"{curve.label}: {_ci(fit, 'b')}"
        if predicting is not None or (fit is None and fam is not None):
            how = " (chosen by auto)" if fam.selection is not None else ""
            label = f"{curve.label}: {fam.form}{how}"
        ax.plot(x, y, "o", color=color, label=label, zorder=3)
        end = x.max() * extend
        if pred is not None:
            end = max(end, max(pred.x) * 1.15)
        inside, beyond = np.geomspace(x.min(), x.max(), 120), np.geomspace(x.max(), end, 80)
        model = predicting or fit or fam
        if model is not None:
            ax.plot(inside, _positive(model.predict(inside)), "-", color=color, lw=1.5)
            ax.plot(beyond, _positive(model.predict(beyond)), "--", color=color, lw=1.5)
            shown.append(_positive(model.predict(inside)))
            seen.add("fit")
        if fit is not None and predicting is None:
            for grid, alpha in ((inside, 0.2), (beyond, 0.1)):
                lo, hi = fit.band(grid)
                if np.isfinite(lo).any():
                    ax.fill_between(grid, lo, hi, color=color, alpha=alpha, lw=0)
                    seen.add("band")
            if _draw_check(ax, fit, x, y, color):
                seen.add("check")
        if predicting is not None and _shade_interval(ax, predicting, beyond, pred.level, color):
            seen.add(f"interval {pred.level:.0%}")
        if pred is not None and _draw_prediction(ax, pred, color):
            seen.add(f"prediction by {pred.form} {pred.level:.0%}")
            shown.append(np.array([v for v in pred.y if v is not None], float))
    ax.set_xscale("log")
    ax.set_yscale("log" if positive else "linear")
    if curves:
        c = curves[0]
        over = f" (best over {', '.join(c.over)})" if c.over else " (fixed configuration)"
        ax.set_xlabel(c.x_name)
        ax.set_ylabel(c.metric)
        ax.set_title(wrap(f"{c.metric} vs {c.x_name}{over}", 80), fontsize=9)
    _limit_y(ax, shown, positive)
    if any(len(c.x) for c in curves):
        ax.legend(handles=ax.get_legend_handles_labels()[0] + _style_keys(seen), fontsize=7,
                  loc="best")
    ax.grid(True, which="both", alpha=0.3)
    readable_ticks(ax)
    return fig


def _positive(v) -> np.ndarray:
    """Values with those <= 0 or undefined as NaN (a gap on log axes, never a number)."""
    v = np.asarray(v, float)
    return np.where(np.isfinite(v) & (v > 0), v, np.nan)


def _draw_check(ax, fit, x, y, color) -> bool:
    """The extrapolation check's fit (without the largest x) dotted, its left-out points ringed."""
    from analysis.fit.powerlaw import natural_curve

    hold = fit.holdout
    if hold is None or not hold.params:
        return False
    out = np.isin(x, hold.x)
    grid = np.geomspace(x.min(), x.max(), 120)
    ax.plot(grid, _positive(natural_curve(np.asarray(hold.params), grid, len(hold.params) == 3)),
            ":", color=color, lw=1.2)
    ax.plot(x[out], y[out], "o", ms=12, mfc="none", mew=1.2, color=color, zorder=2)
    return True


def _shade_interval(ax, fam, grid, level, color) -> bool:
    """The prediction interval of the family that predicted, shaded along its dashed curve."""
    from analysis.fit.forms.prediction import predict

    p = predict(fam, grid, level)
    lo = np.array([np.nan if v is None else v for v in p.pi_low], float)
    hi = np.array([np.nan if v is None else v for v in p.pi_high], float)
    if not np.isfinite(lo).any():
        return False
    ax.fill_between(grid, lo, hi, color=color, alpha=0.12, lw=0)
    return True


def _draw_prediction(ax, pred, color) -> bool:
    """Diamonds at the predicted values with their prediction intervals; False when none
    is defined."""
    px = np.array(pred.x, float)
    py = np.array([np.nan if v is None else v for v in pred.y], float)
    lo = np.array([np.nan if v is None else v for v in pred.pi_low], float)
    hi = np.array([np.nan if v is None else v for v in pred.pi_high], float)
    ok = np.isfinite(py)
    if not ok.any():
        return False
    err = np.vstack([np.where(np.isfinite(lo), py - lo, 0), np.where(np.isfinite(hi), hi - py, 0)])
    ax.errorbar(px[ok], py[ok], yerr=np.maximum(err[:, ok], 0), fmt="D", ms=6, mfc="white",
                color=color, capsize=3, lw=1, zorder=4)
    return True


def _style_keys(seen) -> list:
    """Grey legend entries for the kinds of marks drawn (never one for a mark not drawn)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    keys = []
    if "fit" in seen:
        keys += [Line2D([], [], color="0.35", ls="-",
                        label="fit (95% band shaded)" if "band" in seen else "fit"),
                 Line2D([], [], color="0.35", ls="--", label="extrapolated past the data")]
    if "check" in seen:
        keys.append(Line2D([], [], color="0.35", ls=":", marker="o", ms=9, mfc="none",
                           label="extrapolation check: refit without the ringed points"))
    for name in sorted(s for s in seen if s.startswith("interval ")):
        keys.append(Patch(color="0.35", alpha=0.25,
                          label=f"{name.split()[1]} prediction interval past the data"))
    for name in sorted(s for s in seen if s.startswith("prediction by ")):
        form, level = name.rsplit(" ", 1)
        keys.append(Line2D([], [], color="0.35", marker="D", mfc="white", ls="",
                           label=f"{form} ({level} prediction interval)"))
    return keys


def _limit_y(ax, shown, log: bool) -> None:
    """Y limits around the points, the fit over the data and the predictions, so a band or a
    curve that runs away past the data leaves the axes instead of squashing the points."""
    vals = np.concatenate([np.asarray(v, float).ravel() for v in shown]) if shown else np.array([])
    vals = vals[np.isfinite(vals) & ((vals > 0) if log else True)]
    if vals.size == 0:
        return
    lo, hi = vals.min(), vals.max()
    if log:
        span = max(np.log10(hi / lo), 0.3)
        ax.set_ylim(lo / 10 ** (0.35 * span), hi * 10 ** (0.25 * span))
    else:
        pad = 0.15 * (hi - lo or abs(hi) or 1.0)
        ax.set_ylim(lo - pad, hi + pad)


def plot_joint(fit) -> Figure:
    """Loss against N on log-log axes, one colour per distinct D, with the joint fit."""
    fig, ax = _fig()
    ds = np.unique(fit.d)
    for i, d in enumerate(ds[:10]):
        sel = fit.d == d
        color = f"C{i % 10}"
        ax.plot(fit.n[sel], fit.y[sel], "o", color=color, label=f"{fit.d_name}={d:.3g}")
        grid = np.geomspace(fit.n.min(), fit.n.max(), 100)
        ax.plot(grid, fit.predict(grid, np.full_like(grid, d)), "-", color=color, lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(fit.n_name)
    ax.set_ylabel("loss")
    exps = ", ".join(_ci(fit, n) for n in ("alpha", "beta", "eta") if n in fit.names)
    ax.set_title(f"L = {fit.form}: {exps}", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    readable_ticks(ax)
    return fig


def plot_bopt(result) -> Figure:
    r""":math:`B_{opt}` against :math:`\varepsilon N/(1-m)`: fitted line and the slope-1 rule.

    Groups with an interior optimum are filled, with their seed-bootstrap intervals; edge
    groups are small pale triangles at their one-sided bound (pointing the way the optimum
    lies), drawn under the interior ones; groups with too few batch sizes are crosses. The
    y axis spans the batch sizes of the sweep, and both lines are drawn only where they
    stay inside it. The title is the verdict's label; its reason belongs in the text.
    """
    if result.rule is None or not any(g.rule_x > 0 for g in result.groups):
        return _plot_bopt_groups(result)
    fig, ax = _fig()
    used = [g for g in result.groups if g.status == "ok" and g.b_opt > 0]
    flagged = [g for g in result.groups if g.status != "ok" and g.b_best > 0]
    if used:
        x = np.array([g.rule_x for g in used])
        b = np.array([g.b_opt for g in used])
        lo = np.array([g.ci_low for g in used])
        hi = np.array([g.ci_high for g in used])
        err = np.vstack([np.where(np.isfinite(lo), b - lo, 0),
                         np.where(np.isfinite(hi), hi - b, 0)])
        ax.errorbar(x, b, yerr=np.maximum(err, 0), fmt="o", color="C0", ms=5, lw=0.9,
                    capsize=2, zorder=4, label=f"interior B_opt ({len(used)} groups), 95% CI")
    for side, mark, word in (("high", "^", "above"), ("low", "v", "below")):
        edge = [g for g in flagged if g.side == side]
        if edge:
            ax.plot([g.rule_x for g in edge], [g.bound for g in edge], mark, ms=4, mfc="none",
                    mew=0.8, color="C3", alpha=0.45, zorder=2,
                    label=f"at the grid edge ({len(edge)}): B_opt {word} the mark")
    few = [g for g in flagged if g.status == "too_few"]
    if few:
        ax.plot([g.rule_x for g in few], [g.b_best for g in few], "x", ms=4, color="C7",
                alpha=0.6, label=f"too few batch sizes ({len(few)})")
    rule = result.rule
    b_lo, b_hi = _batch_range(result)
    xs = [g.rule_x for g in result.groups if g.rule_x > 0]
    if rule.slope is not None and rule.g_opt is not None and xs and b_lo > 0:
        k, s = np.exp(rule.intercept), rule.slope.value
        fit_span = ((b_lo / k) ** (1 / s), (b_hi / k) ** (1 / s)) if s != 0 else (min(xs), max(xs))
        for (a, z), law, style, label in (
                (fit_span, lambda g: k * g ** s, dict(ls="-", color="C0", lw=1.5),
                 f"fit: slope {s:.3g} [{rule.slope.ci_low:.3g}, {rule.slope.ci_high:.3g}]"),
                ((b_lo * rule.g_opt.value, b_hi * rule.g_opt.value), lambda g: g / rule.g_opt.value,
                 dict(ls="--", color="k", lw=1), f"rule, slope 1: g_opt = {rule.g_opt.value:.3g}")):
            a, z = max(min(a, z), min(xs)), min(max(a, z), max(xs))
            if a < z:
                grid = np.geomspace(a, z, 50)
                ax.plot(grid, law(grid), label=label, **style)
    ax.set_xscale("log")
    ax.set_yscale("log")
    if b_lo > 0:
        ax.set_ylim(b_lo / 1.6, b_hi * 1.6)
    ax.set_xlabel("lr * n_train / (1 - momentum)")
    ax.set_ylabel(f"B_opt (best {result.metric})")
    ax.set_title(f"B_opt against lr*N/(1-m): {rule.verdict.label}", fontsize=9)
    if used or flagged:
        handles, labels = ax.get_legend_handles_labels()
        first = sorted(range(len(labels)), key=lambda i: not labels[i].startswith("interior"))
        ax.legend([handles[i] for i in first], [labels[i] for i in first], fontsize=7,
                  loc="upper left")
    ax.grid(True, which="both", alpha=0.3)
    readable_ticks(ax)
    return fig


def _batch_range(result) -> tuple[float, float]:
    """Smallest and largest batch size any group tried (NaN when none)."""
    sizes = [b for g in result.groups for b in g.batch_sizes if b > 0]
    sizes += [g.bound for g in result.groups if g.bound > 0]
    return (min(sizes), max(sizes)) if sizes else (float("nan"), float("nan"))


def _plot_bopt_groups(result) -> Figure:
    """B_opt of each group (one point each, edge groups hollow), when the rule is not checked."""
    fig, ax = _fig()
    pos = np.arange(len(result.groups))
    for i, g in zip(pos, result.groups):
        value = g.b_opt if g.status == "ok" else (g.bound if g.status == "edge" else g.b_best)
        if not value > 0:
            continue
        mark = "o" if g.status == "ok" else ("^" if g.side == "high" else "v" if g.side else "x")
        ax.plot([i], [value], mark, color="C0" if g.status == "ok" else "C3",
                mfc=None if g.status == "ok" else "none", alpha=1 if g.status == "ok" else 0.6)
        if g.status == "ok" and np.isfinite(g.ci_low) and np.isfinite(g.ci_high):
            ax.plot([i, i], [g.ci_low, g.ci_high], "-", color="C0", lw=0.8)
    ax.set_yscale("log")
    b_lo, b_hi = _batch_range(result)
    if b_lo > 0:
        ax.set_ylim(b_lo / 1.6, b_hi * 1.6)
    ax.set_xticks(pos)
    ax.set_xticklabels([g.label for g in result.groups], rotation=60, ha="right",
                       fontsize=6 if len(pos) < 30 else 4)
    ax.set_ylabel(f"{result.batch} opt (best {result.metric})")
    ax.set_title("B_opt per group (filled: interior, with 95% CI; hollow: at the grid edge)",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    readable_ticks(ax)
    return fig


def plot_over(result) -> Figure:
    """B_opt and lr_opt of each cell against the last and first scale column, with the laws.

    Interior optima are filled; edge ones hollow triangles at their one-sided bound.
    """
    fig = Figure(figsize=(9.6, 4.2), dpi=110, layout="constrained")
    for k, (target, attr, side_attr) in enumerate((("B_opt", "b_opt", "b_side"),
                                                    ("lr_opt", "lr_opt", "lr_side"))):
        ax = fig.add_subplot(1, 2, k + 1)
        col = result.scale[-1] if target == "B_opt" else result.scale[0]
        if col in result.axes:
            for c in result.cells:
                side = getattr(c, side_attr)
                mark = {"": "o", "low": "v", "high": "^"}.get(side)
                if mark and getattr(c, attr) > 0:
                    ax.plot([c.key[col]], [getattr(c, attr)], mark, color="C0" if not side
                            else "C3", mfc=None if not side else "none")
        law = next(l for l in result.laws if l.target == target)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(col)
        ax.set_ylabel(f"{target} ({result.batch if target == 'B_opt' else result.lr})")
        name = f"exponent of {col}"
        if name in law.names:
            v, lo, hi = law.param(name)
            ax.set_title(f"{target}: exponent of {col} {v:.3g} [{lo:.3g}, {hi:.3g}]", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        readable_ticks(ax)
    return fig


def wrap(text: str, width: int = 90) -> str:
    """``text`` broken into lines of at most ``width`` characters (for titles)."""
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "\n".join(lines + [line])


def plot_tradeoff(result) -> Figure:
    """Steps against examples to reach each target, one line per group, with the fitted
    hyperbola (S/S_min - 1)(E/E_min - 1) = 1 (McCandlish et al. 2018, their Fig. 3).

    The legend sits beside the axes, so it never hides a curve; tick labels are thinned
    (:func:`readable_ticks`)."""
    fig = Figure(figsize=(8.6, 4.4), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    drawn = 0
    for i, g in enumerate(result.groups):
        f = g.fit
        b, s = np.array(f.batch_sizes), np.array(f.steps, float)
        ok = np.isfinite(s) & (s > 0)
        if not ok.any():
            continue
        color = f"C{drawn % 10}"
        label = f"{g.label}, target {g.target:g}"
        if f.ok and f.s_min.value > 0 and f.e_min.value > 0:
            label += f": B_crit {f.b_crit.value:.3g}"
            grid = np.geomspace(b.min() / 2, b.max() * 2, 200)
            steps = f.s_min.value + f.e_min.value / grid
            ax.plot(grid * steps, steps, "-", color=color, alpha=0.6)
        ax.plot(b[ok] * s[ok], s[ok], "o", color=color, label=label)
        drawn += 1
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("examples to target E = B*S")
    ax.set_ylabel("steps to target S")
    ax.set_title(wrap(f"steps vs examples to reach {result.metric} targets"), fontsize=9)
    if drawn:
        ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(True, which="both", alpha=0.3)
    readable_ticks(ax)
    return fig
