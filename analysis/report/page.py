"""HTML pieces of the report page: style, headline cards, tables, figures, collapsible text.

Every function escapes the text it is given (``html.escape``); only the markup written here
is raw. A figure is its Plotly JSON inlined in the page, drawn by plotly.js, itself inlined
once (:func:`scripts`), so the page is one file that works offline and stays interactive.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222;
       padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 2em; padding-bottom: 0.2em; }
h3 { font-size: 1em; margin: 1em 0 0.3em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.msg { color: #a33; } .note { color: #555; font-size: 0.9em; margin: 0.3em 0; }
.fig { margin: 0.6em 0; } .plotly-fig { min-height: 420px; border: 1px solid #eee; }
.figs { display: flex; flex-wrap: wrap; gap: 12px; } .figs .fig { flex: 1 1 480px; }
pre { white-space: pre-wrap; font-size: 0.8em; background: #fafafa; padding: 0.5em;
      border: 1px solid #eee; margin: 0.3em 0; }
details { margin: 0.4em 0; } summary { cursor: pointer; color: #246; font-size: 0.92em; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 1em 0 0.5em; }
.card { flex: 1 1 230px; border: 1px solid #d5d9e0; border-radius: 6px; padding: 10px 14px;
        background: #f8f9fb; }
.card .k { font-size: 0.85em; color: #555; }
.card .v { font-size: 1.6em; font-weight: 600; margin: 0.15em 0; }
.card .s { font-size: 0.85em; color: #444; }
.card.bad .v { color: #a33; } .card.good .v { color: #1b6e3a; } .card.none .v { color: #888; }
nav { font-size: 0.9em; color: #555; } nav a { color: #246; margin-right: 0.8em; }
"""


@dataclass(frozen=True, kw_only=True)
class Card:
    """One headline figure: what it is, its value, one line under it."""

    key: str
    """What the number is, e.g. ``learning-curve exponent b``."""
    value: str
    """The number or word, e.g. ``-0.41`` or ``consistent``."""
    sub: str = ""
    """One line under it: the interval, or why there is no value."""
    tone: str = ""
    """``good``, ``bad``, ``none`` (greyed: no value) or ``""``."""


def cards(items) -> str:
    """A row of headline cards."""
    out = []
    for c in items:
        tone = f" {c.tone}" if c.tone else ""
        out.append(f'<div class="card{tone}"><div class="k">{esc(c.key)}</div>'
                   f'<div class="v">{esc(c.value)}</div><div class="s">{esc(c.sub)}</div></div>')
    return f'<div class="cards">{"".join(out)}</div>'


def esc(text) -> str:
    return html.escape(str(text))


def table(headers, rows) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def figure(fig: dict, alt: str) -> str:
    """A Plotly figure (:mod:`analysis.report.figures`) as its JSON beside an empty box, drawn
    there by :data:`DRAW` once the page loads. The JSON is safe inside ``<script>``: ``<``, ``>``
    and ``&`` are written as ``\\u`` escapes (JSON reads them back as the same characters), and
    the texts in it were escaped by the figure code, as plotly.js renders a few tags."""
    return (f'<div class="fig"><div class="plotly-fig" role="img" aria-label="{esc(alt)}"></div>'
            f'<script type="application/json" class="fig-json">{figure_json(fig)}</script></div>')


def figure_json(fig: dict) -> str:
    """``fig`` as JSON for an inline script: NaN and infinities as null, numpy numbers as numbers,
    and no ``<``, ``>`` or ``&`` (so no ``</script>`` can end the block early)."""
    text = json.dumps(_finite(fig), separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _finite(v):
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


DRAW = """(function () {
  var config = {responsive: true, displaylogo: false};
  document.querySelectorAll("script.fig-json").forEach(function (s) {
    var fig = JSON.parse(s.textContent);
    Plotly.newPlot(s.previousElementSibling, fig.data, fig.layout, config);
  });
})();"""
"""Draws every figure of the page (run after plotly.js)."""


def p(text: str, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<p{attr}>{esc(text)}</p>"


def pre(lines) -> str:
    return "<pre>" + esc("\n".join(lines)) + "</pre>"


def details(summary: str, body: str, open_: bool = False) -> str:
    """A collapsible block; ``body`` is HTML (escaped by whoever built it)."""
    return f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{body}</details>"


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'


def nav(entries) -> str:
    """Links to the sections: ``[(anchor, title), ...]``."""
    links = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in entries)
    return f"<nav>{links}</nav>"


@lru_cache(maxsize=1)
def _bundle() -> str:
    """plotly.js from the installed ``plotly`` package (a missing bundle is one clear error)."""
    from analysis.errors import AnalysisError
    from analysis.report.figures import plotly_js

    path = plotly_js()
    if path is None:
        raise AnalysisError("the report draws its figures with plotly.js from the installed plotly "
                            "package, which is missing: pip install plotly")
    with open(path, encoding="utf-8") as f:
        bundle = f.read()
    if "</script" in bundle.lower():  # would end the inline block early
        raise AnalysisError(f"{path} cannot be inlined in a page: it contains '</script'")
    return bundle


def scripts() -> str:
    """plotly.js, inlined once from the installed ``plotly`` package (the page needs no network),
    and :data:`DRAW`."""
    return f"<script>{_bundle()}</script><script>{DRAW}</script>"


def csp() -> str:
    """A Content-Security-Policy for a page with :func:`scripts`: only those two scripts run
    (by their hashes), and nothing is fetched from anywhere (``default-src 'none'``), so the
    page stays offline whatever it holds. plotly.js compiles its WebGL traces (parallel
    coordinates) with ``new Function``: hence ``'unsafe-eval'``, as the dashboard's policy."""
    hashes = " ".join(f"'sha256-{_sha256(text)}'" for text in (_bundle(), DRAW))
    policy = (f"default-src 'none'; script-src {hashes} 'unsafe-eval'; style-src 'unsafe-inline'; "
              "img-src data: blob:; font-src data:; base-uri 'none'; form-action 'none'")
    return f'<meta http-equiv="Content-Security-Policy" content="{esc(policy)}">'


@lru_cache(maxsize=4)
def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
