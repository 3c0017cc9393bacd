"""The dashboard's pages: the list of sweeps, the shell of a sweep's page, and the static files
(the page's script and style, and plotly.js from the installed ``plotly`` package, so the
page needs no network).

The HTML written here escapes every value (:func:`html.escape`); the script fills the page
with ``textContent`` only, and the figures' texts are escaped by :mod:`analysis.report.figures`, shared with ``scaling report``.
"""

from __future__ import annotations

import html
import os
from datetime import datetime, timezone
from functools import lru_cache
from urllib.parse import urlencode

from analysis.report.figures import plotly_js

HERE = os.path.dirname(os.path.abspath(__file__))
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def _head(title: str, token: str) -> str:
    q = esc(urlencode({"token": token}))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            "<link rel='icon' href='data:,'>"
            f"<link rel='stylesheet' href='/static/style.css?{q}'></head>")


def index(src, token: str) -> str:
    """The sweeps under the root, each a link to its page with its part counts."""
    rows = []
    for name in src.sweeps():
        v = src.version(name)
        href = esc("/sweep?" + urlencode({"name": name, "token": token}))
        latest = datetime.fromtimestamp(v.latest_ns / 1e9, timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S UTC") if v.latest_ns else "-"
        rows.append(f"<tr><td><a href=\"{href}\">{esc(name or '(this folder)')}</a></td>"
                    f"<td>{v.trial_parts}</td><td>{v.curve_parts}</td><td>{latest}</td></tr>")
    body = ("<table class='list'><tr><th>sweep</th><th>trial parts</th><th>curve parts</th>"
            "<th>last commit</th></tr>"
            + "".join(rows) + "</table>") if rows else "<p>No sweep here yet.</p>"
    return (_head("scaling serve", token) + "<body><h1>Sweeps in "
            f"<code>{esc(src.root)}</code></h1>{body}<p class='note'>Each sweep's page follows "
            "it live: new trials appear as they are committed.</p></body></html>")


SECTIONS = (("progress", "Progress"), ("training", "Training curves"),
            ("laws", "The laws as they form"), ("parcoords", "Axes against the metric"),
            ("trials", "Trials"))


def sweep(name: str, token: str = "", poll_s: float = 2.0) -> str:
    """The shell of a sweep's page; ``app.js`` fills each section from the JSON API."""
    q = esc(urlencode({"token": token}))
    nav = "".join(f"<a href='#{a}'>{t}</a>" for a, t in SECTIONS)
    sections = "".join(f"<section id='{a}'><h2>{t}</h2><div class='body'></div></section>"
                       for a, t in SECTIONS)
    return (_head(f"{name or 'sweep'}: scaling serve", token)
            + f"<body data-sweep=\"{esc(name)}\" data-poll=\"{float(poll_s)}\">"
            f"<h1>Sweep <code>{esc(name or '(this folder)')}</code> "
            "<span id='live' class='live'>connecting</span></h1>"
            f"<nav><a id='home' href='/?{q}'>all sweeps</a>{nav}</nav>{sections}"
            f"<script src='/static/plotly.min.js?{q}'></script>"
            f"<script src='/static/app.js?{q}'></script></body></html>")


@lru_cache(maxsize=8)
def static(name: str) -> tuple[bytes, str] | None:
    """(bytes, content type) of a static file, or None."""
    if name == "plotly.min.js":
        path = plotly_js()
    elif name in ("app.js", "style.css"):
        path = os.path.join(HERE, name)
    else:
        return None
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read(), TYPES[os.path.splitext(name)[1]]
