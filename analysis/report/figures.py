"""The figures of ``scaling report`` and ``scaling serve`` as Plotly JSON (plain dicts, drawn by
plotly.js in the browser): one code for the static page and the live one, so both show the same
plots.

Each function takes what the analysis computed (a :class:`~analysis.fit.curves.CurveFit`, a
:class:`~analysis.rules.bopt.BoptResult`, :class:`~analysis.report.training.TrainingCurves`,
a trials table) and returns ``{"data": [...], "layout": {...}}``; nothing here fits. Every
text that comes from the store (labels, axis values, errors) goes through :func:`esc`:
plotly.js renders a few HTML tags in text (``<a href>``, ``<b>``), so a value is written as
entities and shows as the literal text it is. The Python side imports nothing of plotly: the
bundle :func:`plotly_js` finds inside the installed package is what draws them (served by the
dashboard, inlined once in the report). matplotlib stays for the PNG/PDF files of ``--plot``
(:mod:`analysis.report.plots`).
"""

from __future__ import annotations

import html
import importlib.util
import os
from functools import lru_cache

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


def _figure(data: list, layout: dict) -> dict:
    """The figure, its log axes given readable tick labels (:func:`_log_ticks`)."""
    for axis, key in (("xaxis", "x"), ("yaxis", "y")):
        if layout.get(axis, {}).get("type") == "log":
            _log_ticks(layout[axis], data, key)
    return {"data": data, "layout": layout}


def _log_ticks(axis: dict, data: list, key: str) -> None:
    """Tick labels of a log axis that never crowd: over less than about two decades plotly.js
    labels every digit between the powers of ten in small type; here a short axis gets labels at
    1, 2 and 5 (1 and 3 over more, powers of ten past four decades), plain numbers ("3000",
    "0.02", "2e4"), as :func:`analysis.report.plots.readable_ticks` gives the PNG figures."""
    if "range" in axis:
        lo, hi = 10.0 ** axis["range"][0], 10.0 ** axis["range"][1]
    else:
        vals = np.array([v for t in data for v in (t.get(key) or ())
                         if isinstance(v, (int, float)) and not isinstance(v, bool)], float)
        vals = vals[np.isfinite(vals) & (vals > 0)]
        if vals.size == 0:
            return
        pad = 10 ** (0.06 * max(np.log10(vals.max() / vals.min()), 0.1))  # autorange's margin
        lo, hi = vals.min() / pad, vals.max() * pad
    decades = np.log10(hi / lo)
    subs = (1.0, 2.0, 5.0) if decades < 2.2 else ((1.0, 3.0) if decades < 4 else (1.0,))
    if decades < 0.6:
        subs = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
    powers = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
    ticks = [float(f"{s * 10.0 ** k:.6g}") for k in powers for s in subs if lo <= s * 10.0 ** k <= hi]
    if len(ticks) >= 2:
        axis["tickvals"] = ticks
        axis["ticktext"] = [_tick(v) for v in ticks]


def _tick(v: float) -> str:
    if 1e-3 <= v < 1e4:
        return f"{v:.4g}"
    m, e = f"{v:.0e}".split("e")
    return f"{m}e{int(e)}"


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
        bad = {k: v for k, v in ln.outcomes.items() if k != "ok"}
        label = esc(ln.label) + (f" ({ln.n_seeds} seeds)" if ln.n_seeds > 1 else "") + (
            f" [{esc(', '.join(f'{k}: {v}' for k, v in bad.items()))}]" if bad else "")
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
    return _figure(data, layout)


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

def learning_curves(curves, extend: float = 1.5) -> dict:
    """Learning curves on log-log axes: the frontier points, the fit solid over the data and
    dashed past the largest ``x`` (to ``extend`` times it, or past the furthest prediction)
    inside its 95 % bootstrap band. Every point drawn is one the fit used. The extrapolation
    check's own fit, made without the largest ``x``, is dotted and the points it left out are
    ringed. With a ``prediction`` (:class:`analysis.fit.forms.prediction.Prediction`) the curve
    drawn is the family that predicted (never the power law beside it), its prediction interval
    shaded along the dashed part, and each predicted point a diamond with its interval. One
    colour per curve; the legend names only the marks that are drawn."""
    data, shown, positive = [], [], True
    for curve in curves:
        positive &= bool(np.all(np.array(curve.y, float) > 0))
    several = len([c for c in curves if c.x]) > 1
    for i, curve in enumerate(c for c in curves if c.x):
        data += _curve_traces(curve, PALETTE[i % len(PALETTE)], f"c{i}", several, extend, shown)
    c = curves[0] if curves else None
    over = "" if c is None else \
        f" (best over {', '.join(c.over)})" if c.over else " (fixed configuration)"
    title = "" if c is None else f"{c.metric} vs {c.x_name}{over}"
    layout = _layout(title, c.x_name if c else "", c.metric if c else "", xlog=True, ylog=positive)
    span = _y_range(shown, positive)
    if span is not None:
        layout["yaxis"]["range"] = span
    # the legend under the axes: its long entries would squeeze a half-width plot (the dashboard)
    layout["legend"].update(orientation="h", x=0, xanchor="left", y=-0.18, yanchor="top")
    layout["height"] = 420 + 22 * ((len([t for t in data if t.get("name")]) + 1) // 2)
    layout["margin"]["b"] = 40
    return _figure(data, layout)


def learning_curve(curve, extend: float = 1.5) -> dict:
    """One learning curve (:func:`learning_curves`)."""
    return learning_curves([curve], extend)


def _curve_traces(curve, color: str, group: str, several: bool, extend: float, shown: list) -> list:
    """The traces of one learning curve (:func:`learning_curves`); ``shown`` collects the values
    the y range must hold."""
    from analysis.fit.forms.prediction import predict

    x, y = np.array(curve.x, float), np.array(curve.y, float)
    shown.append(y)
    fit, fam, pred = curve.fit, curve.family, curve.prediction
    predicting = fam if pred is not None and fam is not None else None
    model = predicting or fit or fam
    who = f"{esc(curve.label)}: " if several else ""
    line = lambda **kw: {"type": "scatter", "mode": "lines", "legendgroup": group, **kw}
    data = []
    end = x.max() * extend if pred is None else max(x.max() * extend, max(pred.x) * 1.15)
    inside, beyond = np.geomspace(x.min(), x.max(), 100), np.geomspace(x.max(), end, 50)
    if fit is not None and predicting is None:
        for grid, alpha, what in ((inside, 0.22, "band"), (beyond, 0.12, "band past the data")):
            low, high = fit.band(grid)
            if np.isfinite(low).any():
                data.append(line(x=floats(np.r_[grid, grid[::-1]]), y=floats(np.r_[high, low[::-1]]),
                                 fill="toself", fillcolor=color, opacity=alpha, line={"width": 0},
                                 hoverinfo="skip", name=f"{who}{fit.level:.0%} {what}"))
    if predicting is not None:
        p = predict(predicting, beyond, pred.level)
        low, high = _nums(p.pi_low), _nums(p.pi_high)
        if np.isfinite(low).any():
            data.append(line(x=floats(np.r_[beyond, beyond[::-1]]), y=floats(np.r_[high, low[::-1]]),
                             fill="toself", fillcolor=color, opacity=0.12, line={"width": 0},
                             hoverinfo="skip",
                             name=f"{who}{pred.level:.0%} prediction interval past the data"))
    if model is not None:
        if predicting is not None or fit is None:
            how = " (chosen by auto)" if getattr(fam, "selection", None) is not None else ""
            name = f"{who}fit: {esc(fam.form)}{how}"
        else:
            v, lo, hi = fit.param("b")
            name = f"{who}fit: b = {v:.3g} [{lo:.3g}, {hi:.3g}]"
        fitted = _positive(model.predict(inside))
        shown.append(fitted)
        data.append(line(x=floats(inside), y=floats(fitted), name=name,
                         line={"color": color, "width": 2}))
        data.append(line(x=floats(beyond), y=floats(_positive(model.predict(beyond))),
                         name=f"{who}extrapolated past the data",
                         line={"color": color, "width": 2, "dash": "dash"}))
    hold = fit.holdout if fit is not None and predicting is None else None
    if hold is not None and hold.params:
        from analysis.fit.powerlaw import natural_curve

        out = np.isin(x, hold.x)
        data.append(line(x=floats(inside), y=floats(_positive(natural_curve(
            np.asarray(hold.params), inside, len(hold.params) == 3))),
            name=f"{who}extrapolation check: refit without the ringed points",
            line={"color": color, "width": 1.5, "dash": "dot"}))
        data.append({"type": "scatter", "mode": "markers", "x": floats(x[out]), "y": floats(y[out]),
                     "legendgroup": group, "showlegend": False, "hoverinfo": "skip",
                     "marker": {"symbol": "circle-open", "size": 16, "color": color,
                                "line": {"width": 1.5}}})
    hover = [esc(", ".join(f"{k}={v}" for k, v in c.items()) or "fixed") for c in curve.chosen]
    data.append({"type": "scatter", "mode": "markers", "x": floats(x), "y": floats(y),
                 "legendgroup": group, "name": f"{esc(curve.label)}: winners (mean over seeds)",
                 "text": hover, "marker": {"color": color, "size": 8},
                 "hovertemplate": "%{x:.4g}: %{y:.4g}<br>%{text}<extra></extra>"})
    if pred is not None:
        py, lo, hi = _nums(pred.y), _nums(pred.pi_low), _nums(pred.pi_high)
        ok = np.isfinite(py)
        if ok.any():
            shown.append(py[ok])
            data.append({"type": "scatter", "mode": "markers", "legendgroup": group,
                         "x": floats(np.array(pred.x, float)[ok]), "y": floats(py[ok]),
                         "name": f"{who}prediction by {esc(pred.form)} "
                                 f"({pred.level:.0%} prediction interval)",
                         "marker": {"symbol": "diamond-open", "size": 10, "color": color,
                                    "line": {"width": 2}},
                         "error_y": {"type": "data", "symmetric": False,
                                     "array": floats(np.where(np.isfinite(hi), hi - py, 0)[ok]),
                                     "arrayminus": floats(np.where(np.isfinite(lo), py - lo, 0)[ok])},
                         "hovertemplate": "predicted at %{x:.4g}: %{y:.4g}<extra></extra>"})
    return data


def _nums(values) -> np.ndarray:
    """Floats with None as NaN."""
    return np.array([np.nan if v is None else v for v in values], float)


def _positive(v) -> np.ndarray:
    """Values with those <= 0 or undefined as NaN (a gap on log axes, never a number)."""
    v = np.asarray(v, float)
    return np.where(np.isfinite(v) & (v > 0), v, np.nan)


def _y_range(shown, log: bool) -> list | None:
    """A y range around the points, the fit over the data and the predictions, so a band or a
    curve that runs away past the data leaves the axes instead of squashing the points (log10
    units on a log axis, as plotly.js takes them)."""
    vals = np.concatenate([np.asarray(v, float).ravel() for v in shown]) if shown else np.array([])
    vals = vals[np.isfinite(vals) & ((vals > 0) if log else True)]
    if vals.size == 0:
        return None
    lo, hi = vals.min(), vals.max()
    if log:
        span = max(np.log10(hi / lo), 0.3)
        return [float(np.log10(lo) - 0.35 * span), float(np.log10(hi) + 0.25 * span)]
    pad = 0.15 * (hi - lo or abs(hi) or 1.0)
    return [float(lo - pad), float(hi + pad)]


def bopt(result) -> dict:
    """B_opt per group against lr*N/(1-m), with the fitted line and the slope-1 rule; or, when the
    rule is not checked, B_opt of each group by its label.

    Interior groups are filled, with their seed-bootstrap intervals; groups at the grid edge are
    pale triangles at their one-sided bound (pointing the way the optimum lies); groups with too
    few batch sizes are crosses. The y axis spans the batch sizes of the sweep, and both lines are
    drawn only where they stay inside it. The title is the verdict's label; its reason belongs in
    the text."""
    rule = result.rule
    groups = result.groups
    ok = [g for g in groups if g.status == "ok" and g.b_opt > 0]
    edge = [g for g in groups if g.status == "edge" and g.bound > 0]
    few = [g for g in groups if g.status == "too_few" and g.b_best > 0]
    use_rule = rule is not None and any(g.rule_x > 0 for g in groups)
    xof = (lambda g: g.rule_x) if use_rule else (lambda g: esc(g.label))
    data = []
    if ok:
        lo = np.array([g.ci_low for g in ok]), np.array([g.ci_high for g in ok])
        b = np.array([g.b_opt for g in ok])
        data.append({"type": "scatter", "mode": "markers",
                     "name": f"interior B_opt ({len(ok)} groups), 95% CI",
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
                         "name": f"at the grid edge ({len(mine)}): B_opt {word} the mark",
                         "x": [xof(g) for g in mine], "y": floats([g.bound for g in mine]),
                         "text": [esc(g.label) for g in mine],
                         "marker": {"symbol": f"{symbol}-open", "color": "#c62828", "opacity": 0.5,
                                    "size": 7},
                         "hovertemplate": "%{text}<br>bound %{y:.3g}<extra></extra>"})
    if few:
        data.append({"type": "scatter", "mode": "markers",
                     "name": f"too few batch sizes ({len(few)})",
                     "x": [xof(g) for g in few], "y": floats([g.b_best for g in few]),
                     "text": [esc(g.label) for g in few],
                     "marker": {"symbol": "x", "color": "#7f7f7f", "opacity": 0.6, "size": 6},
                     "hovertemplate": "%{text}<br>best tried %{y:.3g}<extra></extra>"})
    verdict = rule.verdict.label if rule is not None else "not checked"
    b_lo, b_hi = _batch_range(result)
    if use_rule and rule.slope is not None and rule.g_opt is not None and b_lo > 0:
        xs = [g.rule_x for g in groups if g.rule_x > 0]
        k, s, g_opt = np.exp(rule.intercept), rule.slope.value, rule.g_opt.value
        fit_span = ((b_lo / k) ** (1 / s), (b_hi / k) ** (1 / s)) if s != 0 else (min(xs), max(xs))
        for (a, z), law, style, name in (
                (fit_span, lambda v: k * v ** s, {"color": "#1f77b4"},
                 f"fit: slope {s:.3g} [{rule.slope.ci_low:.3g}, {rule.slope.ci_high:.3g}]"),
                ((b_lo * g_opt, b_hi * g_opt), lambda v: v / g_opt, {"color": "#000", "dash": "dash"},
                 f"rule, slope 1: g_opt = {g_opt:.3g}")):
            a, z = max(min(a, z), min(xs)), min(max(a, z), max(xs))
            if a < z:  # only where the line stays inside the batch sizes tried
                grid = np.geomspace(a, z, 50)
                data.append({"type": "scatter", "mode": "lines", "x": floats(grid),
                             "y": floats(law(grid)), "line": style, "name": name})
    if use_rule:
        layout = _layout(f"B_opt against lr*N/(1-m): {verdict}", "lr * n_train / (1 - momentum)",
                         f"B_opt (best {result.metric})", xlog=True, ylog=True)
    else:
        layout = _layout(f"B_opt per group (rule: {verdict})", "group",
                         f"{result.batch} opt (best {result.metric})", ylog=True)
        layout["xaxis"].update(type="category", categoryorder="array", tickangle=-45,
                               automargin=True, categoryarray=[esc(g.label) for g in groups])
        layout["height"] = 560  # room for the slanted group labels under the axes
    if b_lo > 0:
        layout["yaxis"]["range"] = [float(np.log10(b_lo / 1.6)), float(np.log10(b_hi * 1.6))]
    return _figure(data, layout)


def _batch_range(result) -> tuple[float, float]:
    """Smallest and largest batch size any group tried (NaN when none)."""
    sizes = [b for g in result.groups for b in g.batch_sizes if b > 0]
    sizes += [g.bound for g in result.groups if g.bound > 0]
    return (min(sizes), max(sizes)) if sizes else (float("nan"), float("nan"))


COLLAPSE_POINTS = 20000
"""Trials the collapse figure draws at most (evenly spread over them past this)."""


def collapse(col, limit: int = COLLAPSE_POINTS) -> dict:
    r"""Every usable trial's metric against the noise scale :math:`g = \varepsilon N/(B(1-m))`
    (Smith & Le 2018), coloured by log10 N; the title counts the infeasible trials left out."""
    bad = {k: v for k, v in col.outcomes.items() if k != "ok"}
    why = f" ({', '.join(f'{k}: {v}' for k, v in bad.items())})" if bad else ""
    data = []
    keep = np.arange(col.g.size)
    if keep.size > limit:  # evenly spread: a million points are a blot, and megabytes to draw
        keep = np.unique(np.linspace(0, keep.size - 1, limit).round().astype(int))
    if keep.size:
        g, y, n = col.g[keep], col.y[keep], col.n_train[keep]
        data.append({"type": "scatter", "mode": "markers", "x": floats(g), "y": floats(y),
                     "showlegend": False, "text": [f"n_train={v:g}" for v in n],
                     "marker": {"color": floats(np.log10(n)), "colorscale": "Viridis",
                                "size": 5, "opacity": 0.7,
                                "colorbar": {"title": {"text": "log10 n_train"}}},
                     "hovertemplate": "%{text}<br>g %{x:.3g}: %{y:.4g}<extra></extra>"})
    shown = f"{col.g.size} trials plotted" if keep.size == col.g.size else \
        f"{keep.size} of {col.g.size} trials plotted (evenly spread)"
    title = f"noise-scale collapse: {shown}, {sum(bad.values())} infeasible not shown{why}"
    return _figure(data, _layout(
        title, "noise scale g = lr * n_train / (batch_size * (1 - momentum))", col.metric,
        xlog=bool(col.g.size)))


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
    return _figure(data, _layout(f"steps vs examples to reach {result.metric} targets",
                                 "examples to target E = B*S", "steps to target S",
                                 xlog=True, ylog=True))


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


@lru_cache(maxsize=1)
def plotly_js() -> str | None:
    """Path of the plotly.js bundle inside the installed ``plotly`` package (no import of it), or
    None when the package or its bundle is missing."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(next(iter(spec.submodule_search_locations)), "package_data", "plotly.min.js")
    return path if os.path.isfile(path) else None
