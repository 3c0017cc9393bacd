"""Plain-text presentation of analysis results; no computing happens here.

Row builders return ``(headers, rows)`` so the same table can be printed
(:func:`text_table`) or put into the HTML report.
"""

from __future__ import annotations

import numpy as np

from analysis import tables


def g(v, digits: int = 4) -> str:
    """A number for humans: ``3.14``, ``1.2e+05``, ``-`` for None/NaN."""
    if v is None:
        return "-"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if not np.isfinite(v):
        return "-"
    return f"{v:.{digits}g}"


def text_table(headers, rows) -> list[str]:
    """Left-aligned columns separated by two spaces."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]


def outcomes_text(outcomes: dict) -> str:
    """``"ok 663, diverged 87"``."""
    return ", ".join(f"{k} {v}" for k, v in outcomes.items()) or "none"


def summary_rows(trials) -> tuple[list[str], list[list[str]]]:
    """Trial counts by status for each sweep of a trials table."""
    fr = tables.frame(trials)
    status = tables.status(fr)
    sweeps = fr.get("sweep", np.full(status.size, "-", dtype=object))
    names = sorted({str(s) for s in sweeps})
    kinds = list(tables.count_by(status))
    rows = []
    for name in names:
        sel = np.array([str(s) == name for s in sweeps])
        counts = tables.count_by(status[sel])
        rows.append([name, int(sel.sum())] + [counts.get(k, 0) for k in kinds])
    return ["sweep", "trials"] + kinds, rows


def summary_lines(trials) -> list[str]:
    """Text table of :func:`summary_rows`, infeasible trials included."""
    return text_table(*summary_rows(trials))


def value(v, digits: int = 4) -> str:
    """A number, or ``undefined`` for None/NaN."""
    out = g(v, digits)
    return "undefined" if out == "-" else out
