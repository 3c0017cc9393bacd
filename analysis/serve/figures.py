"""The dashboard's figures as Plotly JSON (plain dicts, drawn by plotly.js in the browser).

Each function takes what the analysis computed (a :class:`~analysis.fit.curves.CurveFit`, a
:class:`~analysis.rules.bopt.BoptResult`, :class:`~analysis.report.training.TrainingCurves`,
a trials table) and returns ``{"data": [...], "layout": {...}}``; nothing here fits. Every
text that comes from the store (labels, axis values, errors) goes through :func:`esc`:
plotly.js renders a few HTML tags in text (``<a href>``, ``<b>``), so a value is written as
entities and shows as the literal text it is.
"""

from __future__ import annotations

import html

import numpy as np

VIRIDIS = ("#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779",
           "#6ece58", "#b5de2b", "#fde725")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
STATUS_COLORS = {"ok": "#1b9e4b", "diverged": "#e08a00", "failed": "#c62828", "pruned": "#7f7f7f"}


def esc(text) -> str:
    return html.escape(str(text))


def floats(values) -> list:
    """JSON-safe numbers: NaN and infinities as None (a gap in plotly.js)."""
    a = np.asarray(values, float).ravel()
    out = a.astype(object)  # Python floats, the way tolist() makes them (fast for 100k values)
    out[~np.isfinite(a)] = None
    return out.tolist()


def _layout(title: str, x: str, y: str, *, xlog=False, ylog=False, **more) -> dict:
    return {"title": {"text": esc(title), "font": {"size": 14}},
            "xaxis": {"title": {"text": esc(x)}, "type": "log" if xlog else "linear"},
            "yaxis": {"title": {"text": esc(y)}, "type": "log" if ylog else "linear"},
            "margin": {"l": 60, "r": 20, "t": 40, "b": 50}, "height": 420,
            "legend": {"font": {"size": 10}}, **more}


def colors(values) -> list[str]:
    """One colour per value: viridis along sorted numbers, the palette for anything else."""
    numeric = [v for v in values if isinstance(v, (int, float, np.number)) and np.isfinite(v)]
    if len(numeric) != len(values) or not values:
        order = {v: i for i, v in enumerate(dict.fromkeys(str(v) for v in values))}
        return [PALETTE[order[str(v)] % len(PALETTE)] for v in values]
    ranks = {v: i for i, v in enumerate(sorted(set(numeric)))}
    top = max(len(ranks) - 1, 1)
    return [VIRIDIS[round(ranks[v] / top * (len(VIRIDIS) - 1))] for v in values]


# ---- progress --------------------------------------------------------------------------------

def progress(times: np.ndarray, status: np.ndarray, points: int = 2000) -> dict:
    """Trials committed by status against wall-clock time (UTC), cumulative, one line a status,
    of at most ``points`` points each (evenly spaced along the count, the last one kept)."""
    data = []
    order = np.argsort(times, kind="stable")
    t, s = times[order], status[order]
    for name in sorted(set(s.tolist()), key=lambda v: (v != "ok", str(v))):
        mine = np.flatnonzero(s == name)
        at = np.unique(np.linspace(0, mine.size - 1, min(points, mine.size)).round().astype(int))
        data.append({"type": "scatter", "mode": "lines", "line": {"shape": "hv"},
                     "name": esc(name), "x": [str(v) for v in t[mine[at]]],
                     "y": (at + 1).tolist(),
                     "marker": {"color": STATUS_COLORS.get(str(name), "#555")}})
    layout = _layout("trials finished, by status", "end time (UTC)", "trials")
    layout["xaxis"]["type"] = "date"
    layout["height"] = 320
    return {"data": data, "layout": layout}


# ---- training curves ------------------------------------------------------------------------

def training(tc) -> dict:
    """One line per configuration (mean over its seeds) with the seeds' range as a band;
    clicking a legend entry hides the line and its band together."""
    data = []
    cols = colors([ln.value for ln in tc.lines])
    positive = all(np.all(ln.low[np.isfinite(ln.low)] > 0) for ln in tc.lines)
    for i, (ln, color) in enumerate(zip(tc.lines, cols)):
        group = f"g{i}"
        label = esc(ln.label) + (f" ({ln.n_seeds} seeds)" if ln.n_seeds > 1 else "")
        if ln.n_seeds > 1:
            data.append({"type": "scatter", "mode": "lines", "x": floats(np.r_[ln.x, ln.x[::-1]]),
                         "y": floats(np.r_[ln.high, ln.low[::-1]]), "fill": "toself",
                         "fillcolor": color, "opacity": 0.18, "line": {"width": 0},
                         "hoverinfo": "skip", "showlegend": False, "legendgroup": group})
        data.append({"type": "scatter", "mode": "lines", "x": floats(ln.x), "y": floats(ln.y),
                     "name": label, "legendgroup": group, "line": {"color": color, "width": 2},
                     "hovertemplate": f"{label}<br>examples %{{x:.3g}}<br>{esc(tc.metric)} "
                                      "%{y:.4g}<extra></extra>"})
    layout = _layout(tc.title, "examples seen", tc.metric, xlog=True, ylog=positive)
    layout["legend"]["title"] = {"text": f"colour: {esc(tc.axis)}"}
    values = [ln.value for ln in tc.lines]
    if len(tc.lines) > LEGEND_LINES:  # a colour bar instead of a legend taller than the plot
        layout["showlegend"] = False
        data.append(_colour_bar(values, tc.axis))
    return {"data": data, "layout": layout}


LEGEND_LINES = 12
"""Past this many lines a training-curve figure shows a colour bar instead of its legend."""


def _colour_bar(values, axis: str) -> dict:
    """An invisible trace whose colour bar names the values of the colouring axis."""
    distinct = list(dict.fromkeys(str(v) for v in values))
    numeric = all(isinstance(v, (int, float, np.number)) for v in values)
    if numeric:
        distinct = [str(v) for v in sorted({float(v) for v in values})]
    n = len(distinct)
    pos = list(range(n))
    scale = [[i / max(len(VIRIDIS) - 1, 1), c] for i, c in enumerate(VIRIDIS)] if numeric else \
        [[i / max(n - 1, 1), PALETTE[i % len(PALETTE)]] for i in range(n)]
    step = max(1, n // 10)
    label = lambda v: f"{float(v):.4g}" if numeric else esc(v)
    return {"type": "scatter", "mode": "markers", "x": [None], "y": [None], "hoverinfo": "skip",
            "showlegend": False,
            "marker": {"color": [0], "cmin": 0, "cmax": max(n - 1, 1), "colorscale": scale,
                       "colorbar": {"title": {"text": esc(axis)}, "tickvals": pos[::step],
                                    "ticktext": [label(v) for v in distinct[::step]]}}}


# ---- the laws ----------------------------------------------------------------------------------

def learning_curve(curve, extend: float = 1.5) -> dict:
    """The frontier, its power-law fit (solid over the data, dashed beyond) and the fit's band."""
    x, y = np.array(curve.x, float), np.array(curve.y, float)
    data = []
    hover = [esc(", ".join(f"{k}={v}" for k, v in c.items()) or "fixed") for c in curve.chosen]
    positive = bool(np.all(y > 0)) if y.size else True
    fit = curve.fit
    name = "winners (mean over seeds)"
    if fit is not None and x.size:
        v, lo, hi = fit.param("b")
        inside = np.geomspace(x.min(), x.max(), 100)
        beyond = np.geomspace(x.max(), x.max() * extend, 40)
        for grid, dash, alpha, label in ((inside, "solid", 0.22, "fit"),
                                         (beyond, "dash", 0.12, "extrapolation")):
            low, high = fit.band(grid)
            if np.isfinite(low).any():
                data.append({"type": "scatter", "mode": "lines", "x": floats(np.r_[grid, grid[::-1]]),
                             "y": floats(np.r_[high, low[::-1]]), "fill": "toself",
                             "fillcolor": "#1f77b4", "opacity": alpha, "line": {"width": 0},
                             "hoverinfo": "skip", "name": f"{fit.level:.0%} band ({label})"})
            data.append({"type": "scatter", "mode": "lines", "x": floats(grid),
                         "y": floats(fit.predict(grid)), "line": {"color": "#1f77b4", "dash": dash},
                         "name": f"{label}: b = {v:.3g} [{lo:.3g}, {hi:.3g}]" if label == "fit"
                         else label})
    data.append({"type": "scatter", "mode": "markers", "x": floats(x), "y": floats(y), "name": name,
                 "text": hover, "marker": {"color": "#111", "size": 8},
                 "hovertemplate": "%{x:.4g}: %{y:.4g}<br>%{text}<extra></extra>"})
    over = f"best over {', '.join(curve.over)}" if curve.over else "fixed configuration"
    title = f"{curve.metric} vs {curve.x_name} ({over})"
    return {"data": data, "layout": _layout(title, curve.x_name, curve.metric, xlog=True,
                                            ylog=positive)}


def bopt(result) -> dict:
    """B_opt per group against lr*N/(1-m), with the fitted line and the slope-1 rule; or, when the
    rule is not checked, B_opt of each group by its label."""
    rule = result.rule
    groups = result.groups
    ok = [g for g in groups if g.status == "ok" and g.b_opt > 0]
    edge = [g for g in groups if g.status == "edge" and g.bound > 0]
    use_rule = rule is not None and any(g.rule_x > 0 for g in groups)
    xof = (lambda g: g.rule_x) if use_rule else (lambda g: esc(g.label))
    data = []
    if ok:
        lo = np.array([g.ci_low for g in ok]), np.array([g.ci_high for g in ok])
        b = np.array([g.b_opt for g in ok])
        data.append({"type": "scatter", "mode": "markers", "name": f"interior B_opt ({len(ok)})",
                     "x": [xof(g) for g in ok], "y": floats(b), "text": [esc(g.label) for g in ok],
                     "marker": {"color": "#1f77b4", "size": 8},
                     "error_y": {"type": "data", "symmetric": False,
                                 "array": floats(np.where(np.isfinite(lo[1]), lo[1] - b, 0)),
                                 "arrayminus": floats(np.where(np.isfinite(lo[0]), b - lo[0], 0))},
                     "hovertemplate": "%{text}<br>B_opt %{y:.3g}<extra></extra>"})
    for side, symbol, word in (("high", "triangle-up", "above"), ("low", "triangle-down", "below")):
        mine = [g for g in edge if g.side == side]
        if mine:
            data.append({"type": "scatter", "mode": "markers",
                         "name": f"at the grid edge ({len(mine)}): B_opt {word}",
                         "x": [xof(g) for g in mine], "y": floats([g.bound for g in mine]),
                         "text": [esc(g.label) for g in mine],
                         "marker": {"symbol": symbol, "color": "#c62828", "opacity": 0.5, "size": 7},
                         "hovertemplate": "%{text}<br>bound %{y:.3g}<extra></extra>"})
    verdict = rule.verdict.label if rule is not None else "not checked"
    if use_rule and rule.slope is not None and rule.g_opt is not None:
        xs = np.array([g.rule_x for g in groups if g.rule_x > 0])
        grid = np.geomspace(xs.min(), xs.max(), 50)
        k, s = np.exp(rule.intercept), rule.slope.value
        data.append({"type": "scatter", "mode": "lines", "x": floats(grid), "y": floats(k * grid ** s),
                     "line": {"color": "#1f77b4"},
                     "name": f"fit: slope {s:.3g} [{rule.slope.ci_low:.3g}, {rule.slope.ci_high:.3g}]"})
        data.append({"type": "scatter", "mode": "lines", "x": floats(grid),
                     "y": floats(grid / rule.g_opt.value), "line": {"color": "#000", "dash": "dash"},
                     "name": f"rule, slope 1: g_opt = {rule.g_opt.value:.3g}"})
    if use_rule:
        layout = _layout(f"B_opt against lr*N/(1-m): {verdict}", "lr * n_train / (1 - momentum)",
                         f"B_opt (best {result.metric})", xlog=True, ylog=True)
    else:
        layout = _layout(f"B_opt per group (rule: {verdict})", "group",
                         f"{result.batch} opt (best {result.metric})", ylog=True)
    return {"data": data, "layout": layout}


def tradeoff(result) -> dict:
    """Steps against examples to reach the target, one colour per group, with the fitted
    hyperbola S = S_min + E_min/B (McCandlish et al. 2018)."""
    data = []
    for i, g in enumerate(result.groups):
        f = g.fit
        b, st = np.array(f.batch_sizes, float), np.array(f.steps, float)
        ok = np.isfinite(st) & (st > 0)
        if not ok.any():
            continue
        color = PALETTE[i % len(PALETTE)]
        label = f"{g.label}, target {g.target:g}"
        if f.ok and f.s_min.value > 0 and f.e_min.value > 0:
            label += f": B_crit {f.b_crit.value:.3g}"
            grid = np.geomspace(b[ok].min() / 2, b[ok].max() * 2, 100)
            steps = f.s_min.value + f.e_min.value / grid
            data.append({"type": "scatter", "mode": "lines", "x": floats(grid * steps),
                         "y": floats(steps), "line": {"color": color}, "opacity": 0.6,
                         "showlegend": False, "hoverinfo": "skip", "legendgroup": f"g{i}"})
        data.append({"type": "scatter", "mode": "markers", "x": floats(b[ok] * st[ok]),
                     "y": floats(st[ok]), "name": esc(label), "legendgroup": f"g{i}",
                     "text": [f"B={v:g}" for v in b[ok]], "marker": {"color": color, "size": 7},
                     "hovertemplate": "%{text}<br>E %{x:.3g}, S %{y:.3g}<extra></extra>"})
    return {"data": data, "layout": _layout(f"steps vs examples to reach {result.metric} targets",
                                            "examples to target E = B*S", "steps to target S",
                                            xlog=True, ylog=True)}


# ---- parallel coordinates -------------------------------------------------------------------

PARCOORDS_LINES = 5000
"""Lines the parallel coordinates draw at most (evenly spread over the trials past this: 100k
lines are a blot, 11 MB to send and seconds to draw)."""


def parcoords(fr, axes, metric: str, values: np.ndarray, ids, limit: int = PARCOORDS_LINES) -> dict:
    """Each trial a line through its axis values and its metric, coloured by the metric. Axes
    spanning more than a decade of positive values are drawn as log10; text axes as categories.
    ``columns`` says, for each axis dimension, its column and scale, so the page can turn a
    selected range into a filter of the training curves."""
    keep = np.isfinite(values)
    total = int(keep.sum())
    if total > limit:
        inside = np.flatnonzero(keep)
        keep = np.zeros_like(keep)
        keep[inside[np.unique(np.linspace(0, total - 1, limit).round().astype(int))]] = True
    dims, columns = [], []
    for a in axes:
        col = fr[a][keep]
        if col.dtype == object:
            cats = sorted({str(v) for v in col})
            idx = {c: i for i, c in enumerate(cats)}
            dims.append({"label": esc(a), "values": [idx[str(v)] for v in col],
                         "tickvals": list(range(len(cats))), "ticktext": [esc(c) for c in cats]})
            columns.append({"name": a, "scale": "category", "categories": cats})
            continue
        col = col.astype(float)
        fin = col[np.isfinite(col)]
        if fin.size and fin.min() > 0 and fin.max() / fin.min() > 10:
            ticks = sorted(set(fin.tolist()))
            if len(ticks) > 12:
                ticks = list(np.geomspace(fin.min(), fin.max(), 6))
            dims.append({"label": esc(f"{a} (log)"), "values": floats(np.log10(col)),
                         "tickvals": floats(np.log10(ticks)), "ticktext": [f"{t:.4g}" for t in ticks]})
            columns.append({"name": a, "scale": "log"})
        else:
            dim = {"label": esc(a), "values": floats(col)}
            ticks = sorted(set(fin.tolist()))
            if len(ticks) <= 12:  # a grid axis: its values, not round numbers between them
                dim.update(tickvals=floats(ticks), ticktext=[f"{t:.4g}" for t in ticks])
            dims.append(dim)
            columns.append({"name": a, "scale": "linear"})
    dims.append({"label": esc(metric), "values": floats(values[keep])})
    columns.append({"name": metric, "scale": "linear", "metric": True})
    trace = {"type": "parcoords", "dimensions": dims,
             "line": {"color": floats(values[keep]), "colorscale": "Viridis", "showscale": True}}
    layout = {"margin": {"l": 70, "r": 70, "t": 80, "b": 30}, "height": 440,
              "title": {"text": esc(f"axes against {metric} ({total} trials)" if total <= limit else
                                    f"axes against {metric} ({int(keep.sum())} of {total} trials, "
                                    "evenly spread)"),
                        "font": {"size": 14}, "y": 0.98, "yanchor": "top"}}
    return {"data": [trace], "layout": layout, "ids": [str(i) for i in np.asarray(ids)[keep]],
            "columns": columns}
