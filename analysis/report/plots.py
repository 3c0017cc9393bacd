"""Figures for fits and sweeps; matplotlib without pyplot, so no global backend is touched.

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


def _ci(fit, name: str) -> str:
    v, lo, hi = fit.param(name)
    return f"{name}={v:.3g} [{lo:.3g}, {hi:.3g}]"


def plot_curves(curves) -> Figure:
    """Learning curves on log-log axes: frontier points, fit, and its bootstrap band.

    Held-out points of the extrapolation check are drawn hollow.
    """
    fig, ax = _fig()
    colors = [f"C{i % 10}" for i in range(len(curves))]
    positive = True
    for curve, color in zip(curves, colors):
        x, y = np.array(curve.x), np.array(curve.y)
        if x.size == 0:
            continue
        positive &= bool(np.all(y > 0))
        fit, fam = curve.fit, getattr(curve, "family", None)
        label = curve.label if fit is None else f"{curve.label}: {_ci(fit, 'b')}"
        if fit is None and fam is not None:
            label = f"{curve.label}: {fam.form}"
        held = np.zeros(x.size, bool)
        hold = fit.holdout if fit is not None else (fam.holdout if fam is not None else None)
        if hold is not None:
            held = np.isin(x, hold.x)
        ax.plot(x[~held], y[~held], "o", color=color, label=label)
        ax.plot(x[held], y[held], "o", mfc="none", color=color)
        grid = np.geomspace(x.min(), x.max() * 1.5, 200)
        if fit is not None:
            lo, hi = fit.band(grid)
            ax.plot(grid, fit.predict(grid), "-", color=color, lw=1.5)
            ax.fill_between(grid, lo, hi, color=color, alpha=0.2, lw=0)
        elif fam is not None:  # undefined values are NaN: gaps, never numbers
            ax.plot(grid, fam.predict(grid), "-", color=color, lw=1.5)
    ax.set_xscale("log")
    ax.set_yscale("log" if positive else "linear")
    if curves:
        c = curves[0]
        over = f" (best over {', '.join(c.over)})" if c.over else " (fixed configuration)"
        ax.set_xlabel(c.x_name)
        ax.set_ylabel(c.metric)
        ax.set_title(f"{c.metric} vs {c.x_name}{over}", fontsize=9)
    if any(len(c.x) for c in curves):
        ax.legend(fontsize=7, title="fit with 95% band; hollow: held out", title_fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    return fig


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
    exps = ", ".join(_ci(fit, n) for n in ("alpha", "beta"))
    ax.set_title(f"L = E + A/N^alpha + B/D^beta: {exps}", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    return fig


def plot_bopt(result) -> Figure:
    r""":math:`B_{opt}` against :math:`\varepsilon N/(1-m)`: fitted line and the slope-1 rule.

    Groups with an interior optimum are filled, with their seed-bootstrap intervals;
    edge groups are hollow triangles at their one-sided bound (pointing the way the
    optimum lies); groups with too few batch sizes are crosses.
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
        ax.errorbar(x, b, yerr=np.maximum(err, 0), fmt="o", color="C0", ms=4, lw=0.8,
                    label=f"B_opt ({len(used)} groups)")
    for side, mark, word in (("high", "^", "above"), ("low", "v", "below")):
        edge = [g for g in flagged if g.side == side]
        if edge:
            ax.plot([g.rule_x for g in edge], [g.bound for g in edge], mark, mfc="none",
                    color="C3", label=f"edge ({len(edge)}): B_opt {word} this bound")
    few = [g for g in flagged if g.status == "too_few"]
    if few:
        ax.plot([g.rule_x for g in few], [g.b_best for g in few], "x", color="C7",
                label=f"too few batch sizes ({len(few)})")
    rule = result.rule
    xs = [g.rule_x for g in result.groups if g.rule_x > 0]
    if rule.slope is not None and rule.g_opt is not None and xs:
        grid = np.geomspace(min(xs), max(xs), 50)
        ax.plot(grid, np.exp(rule.intercept) * grid ** rule.slope.value, "-", color="C0",
                label=f"fit: slope {rule.slope.value:.3g} "
                      f"[{rule.slope.ci_low:.3g}, {rule.slope.ci_high:.3g}]")
        ax.plot(grid, grid / rule.g_opt.value, "--", color="k", lw=1,
                label=f"slope 1: B = εN/((1-m) g), g={rule.g_opt.value:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("lr * n_train / (1 - momentum)")
    ax.set_ylabel(f"B_opt (best {result.metric})")
    ax.set_title(_wrap(f"{rule.verdict.label}: {rule.verdict.reason}"), fontsize=8)
    if used or flagged:
        ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    return fig


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
                mfc=None if g.status == "ok" else "none")
        if g.status == "ok" and np.isfinite(g.ci_low) and np.isfinite(g.ci_high):
            ax.plot([i, i], [g.ci_low, g.ci_high], "-", color="C0", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(pos)
    ax.set_xticklabels([g.label for g in result.groups], rotation=60, ha="right", fontsize=6)
    ax.set_ylabel(f"{result.batch} opt (best {result.metric})")
    ax.set_title(_wrap(f"B_opt per group; {result.rule_note or 'no noise scale to plot against'}"),
                 fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
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
    return fig


def plot_collapse(col) -> Figure:
    r"""Every usable trial's metric against :math:`g = \varepsilon N/(B(1-m))`, coloured by N."""
    fig, ax = _fig()
    if col.g.size:
        sc = ax.scatter(col.g, col.y, c=np.log10(col.n_train), s=8, cmap="viridis", alpha=0.7)
        fig.colorbar(sc, ax=ax, label="log10 n_train")
        ax.set_xscale("log")
    skipped = sum(v for k, v in col.outcomes.items() if k != "ok")
    ax.set_xlabel("noise scale g = lr * n_train / (batch_size * (1 - momentum))")
    ax.set_ylabel(col.metric)
    ax.set_title(f"noise-scale collapse: {col.g.size} trials plotted, "
                 f"{skipped} infeasible not shown {_outcomes(col.outcomes)}", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return fig


def _outcomes(outcomes: dict) -> str:
    bad = {k: v for k, v in outcomes.items() if k != "ok"}
    return "(" + ", ".join(f"{k}: {v}" for k, v in bad.items()) + ")" if bad else ""


def _wrap(text: str, width: int = 90) -> str:
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
    hyperbola (S/S_min - 1)(E/E_min - 1) = 1 (McCandlish et al. 2018, their Fig. 3)."""
    fig, ax = _fig()
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
    ax.set_title(_wrap(f"steps vs examples to reach {result.metric} targets"))
    if drawn:
        ax.legend(fontsize=7)
    return fig
