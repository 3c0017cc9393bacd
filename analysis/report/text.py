"""Plain-text presentation of analysis results; no computing happens here.

Row builders return ``(headers, rows)`` so the same table can be printed
(:func:`text_table`) or put into the HTML report. Tables print in the one style of every
command (:mod:`scaling.textout`): fitted to the terminal's width, numbers right-aligned.
"""

from __future__ import annotations

import numpy as np

from analysis import tables
from scaling import textout


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


def text_table(headers, rows, *, indent: int = 0, label: int | None = None,
               numeric=None, cols: int | None = None) -> list[str]:
    """The table in the style of every command (:func:`scaling.textout.table`): a header, a
    dashed rule, numbers right-aligned, fitted to ``cols`` (default: the terminal's width).
    ``label``: the column of group labels that may print as G1, G2, ... with a key below."""
    return textout.table(headers, rows, indent=indent, label=label, numeric=numeric, cols=cols)


def legend(texts, prefix: str = "n") -> tuple[list[str], list[str]]:
    """Short codes for long repeated texts, and the key that explains each code once.

    ``texts``, one per row, are strings or ``(prefix, text)`` pairs -> ``(codes, key)``: equal
    texts get one code, their prefix and a number counted per prefix (``edge1``, ``edge2``,
    ``few1``); an empty text stays empty. Key lines read ``"edge1: <text> (12 rows)"``.
    """
    codes: dict[tuple, str] = {}
    count: dict[tuple, int] = {}
    per: dict[str, int] = {}
    out = []
    for item in texts:
        p, t = item if isinstance(item, tuple) else (prefix, item)
        if not t:
            out.append("")
            continue
        if (p, t) not in codes:
            per[p] = per.get(p, 0) + 1
            codes[(p, t)] = f"{p}{per[p]}"
        count[(p, t)] = count.get((p, t), 0) + 1
        out.append(codes[(p, t)])
    return out, [f"{c}: {t} ({count[(p, t)]} row{'s' if count[(p, t)] != 1 else ''})"
                 for (p, t), c in codes.items()]


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
