"""Text for a terminal: one table style, lines that fit the width, warnings that stand out.

Every command's text output is made here, so every command looks the same:

- :func:`table`: a header, a dashed rule, numbers right-aligned and text left-aligned. A table
  wider than the width, step by step until it fits: wraps its headers; says a column with one
  value once below ("in every row: seeds=3"); splits a label column of ``k=v, k=v`` groups
  into a column per key, or else prints it as short labels (G1, G2, ...) with a key below;
  wraps long text cells; and last splits its columns into blocks that each fit. Numbers are
  never cut.
- :func:`wrap`: one line of prose at the width, with a hanging indent (under the text after a
  leading ``warning:``, ``note:``, ... label).
- :func:`render`: a command's lines, wrapped, with warnings in bold yellow on a terminal.
- :func:`clean`: what a terminal would act on (escape codes, carriage returns, bidi overrides)
  written out visibly; :func:`table` and :func:`render` apply it to everything they print.

The width is ``$COLUMNS``, else the terminal's when printing to one, else 100. Colour needs a
terminal and no ``NO_COLOR`` (https://no-color.org). Imports nothing of ours: the store, the
core CLI and the analysis reports all use it.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap

DEFAULT_WIDTH = 100
"""Columns when neither ``$COLUMNS`` nor a terminal says (output piped to a file or a pager)."""
MIN_WIDTH = 30
GAP = "  "
ELLIPSIS = "..."
MISSING = frozenset({"", "-", "n/a", "nan", "none", "undefined", "null", "inf", "-inf"})
"""Cells that say "no number here"; they leave a column numeric."""
_LABEL = re.compile(r"\s*[A-Za-z_][\w*+-]{0,11}: ")
_BOLD_YELLOW, _BOLD_RED, _RESET = "\x1b[1;33m", "\x1b[1;31m", "\x1b[0m"


def width(stream=None) -> int:
    """Columns to fit: ``$COLUMNS``, else the terminal's when ``stream`` (stdout) is one, else 100."""
    cols = os.environ.get("COLUMNS", "").strip()
    if cols.isdigit() and int(cols) > 0:
        return max(int(cols), MIN_WIDTH)
    stream = sys.stdout if stream is None else stream
    try:
        if stream.isatty():
            return max(os.get_terminal_size(stream.fileno()).columns or DEFAULT_WIDTH, MIN_WIDTH)
    except (AttributeError, OSError, ValueError):
        pass
    return DEFAULT_WIDTH


def use_color(stream=None) -> bool:
    """Colour only on a terminal, and never with ``NO_COLOR`` set or ``TERM=dumb``."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


def wrap(line: str, cols: int | None = None) -> list[str]:
    """``line`` in lines of at most ``cols`` characters. Continuation lines hang under the text
    after a short leading label (``warning: ``, ``note: ``) or 4 columns in from the line's indent."""
    cols = cols or width()
    line = line.rstrip()
    if _size(line) <= cols:
        return [line]
    indent = len(line) - len(line.lstrip(" "))
    m = _LABEL.match(line)
    hang = m.end() if m and m.end() <= cols // 3 else indent + 4
    hang = min(hang, max(cols // 2, indent))
    w = cols
    while True:  # a non-ASCII character (±, ∝) counts as its UTF-8 bytes, as byte-counting tools see it
        out = textwrap.wrap(line.lstrip(" "), w, initial_indent=" " * indent,
                            subsequent_indent=" " * hang, break_long_words=True,
                            break_on_hyphens=False) or [""]
        over = max(_size(p) for p in out) - cols
        if over <= 0 or w - over <= hang + 10:
            return out
        w -= over


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""Characters a terminal acts on instead of showing (escape sequences, carriage return, backspace,
C1 controls) and bidirectional overrides that reorder what is shown."""


def clean(text: str) -> str:
    """``text`` with every character a terminal would act on (an escape code in a folder name or a
    CSV value, a carriage return, a bidi override) written out visibly, as Python writes it
    (``\x1b``); newlines and tabs stay. Every line this module prints goes through it."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text) if _CONTROL.search(text) else text


def _size(text: str) -> int:
    """Columns ``text`` may take: its characters, a non-ASCII one counted as its UTF-8 bytes
    (never fewer than a terminal shows, and what a byte-counting ``awk`` measures)."""
    return len(text.encode("utf-8", "replace"))


def render(lines, stream=None, cols: int | None = None) -> str:
    """The lines of a command's output, each wrapped at the width; on a terminal, every line of
    a warning bold yellow and of an error bold red."""
    cols = cols or width(stream)
    color = use_color(stream)
    out = []
    for line in lines:
        parts = wrap(clean(str(line)), cols)
        head = parts[0].lstrip()
        style = _BOLD_YELLOW if head.startswith("warning:") else \
            _BOLD_RED if head.startswith("error:") else ""
        out += [f"{style}{p}{_RESET}" for p in parts] if color and style else parts
    return "\n".join(out)


def is_number(cell: str) -> bool:
    """A cell that reads as a number (``<11.3`` and ``>45`` too: bounds)."""
    try:
        float(cell.lstrip("<>~≈").replace(",", ""))
        return True
    except ValueError:
        return False


def numeric_column(cells) -> bool:
    """Every cell a number or a missing marker, and at least one a number."""
    seen = False
    for c in cells:
        if c.strip().lower() in MISSING:
            continue
        if not is_number(c):
            return False
        seen = True
    return seen


def table(headers, rows, *, cols: int | None = None, indent: int = 0, numeric=None,
          label: int | None = None, footer: str | None = None, short: str = "G",
          max_lines: int | None = 4, cut_note: str | None = None) -> list[str]:
    """Rows as an aligned text table that fits ``cols`` columns (default :func:`width`).

    ``numeric``: one bool (or None: guess from the cells) per column, right-aligned when true.
    ``label``: the index of a column of group labels that may split into one column per key, or
    print as ``G1``, ``G2`` ... with a key below, when the table would be too wide (the steps
    are in this module's docstring). ``footer``: a line under the table,
    e.g. ``"(5 rows)"``. ``indent``: spaces before every line. A text cell wrapped to more than
    ``max_lines`` lines is cut there, ends in ``...``, and ``cut_note`` (or a line that says so)
    follows the table.
    """
    avail = max((cols or width()) - indent, MIN_WIDTH // 2)
    head = [clean(str(h)) for h in headers]
    body = [["" if c is None else clean(str(c)) for c in r] for r in rows]
    n = len(head)
    guess = [numeric_column(r[i] for r in body) for i in range(n)]
    num = [guess[i] if numeric is None or numeric[i] is None else bool(numeric[i]) for i in range(n)]
    natural = _natural(head, body, wrap_head=False)
    if _total(natural) > avail:
        natural = _natural(head, body, wrap_head=True)
    same: list[str] = []
    if _total(natural) > avail and len(body) > 1:  # a column with one value: said once, below
        keep = [i for i in range(n) if i == label or len({r[i] for r in body}) > 1]
        same = [f"{head[i]}={body[0][i] or '(empty)'}" for i in range(n) if i not in keep]
        if same and keep:
            label = keep.index(label) if label is not None else None
            head, num = [head[i] for i in keep], [num[i] for i in keep]
            body = [[r[i] for i in keep] for r in body]
            natural = _natural(head, body, wrap_head=True)
        else:
            same = []
    key: list[str] = []
    if _total(natural) > avail and label is not None and body:
        split = _split_label(head, body, num, label)
        if split is not None and _total(_natural(split[0], split[1], True)) <= avail:
            head, body, num = split[0], split[1], [
                numeric_column(r[i] for r in split[1]) if v is None else v for i, v in enumerate(split[2])]
        else:
            key = _key(head[label], [r[label] for r in body], short, avail)
            for i, r in enumerate(body):
                r[label] = f"{short}{i + 1}"
        natural = _natural(head, body, wrap_head=True)
    out, cut = _layout(head, body, num, natural, avail, max_lines)
    if footer:
        out += wrap(footer, avail)
    if cut:
        out += wrap(cut_note or f"(a cell ending in {ELLIPSIS} is cut to {max_lines} lines)", avail)
    if same:
        out += wrap("in every row: " + "; ".join(same), avail)
    out += key
    pad = " " * indent
    return [(pad + line).rstrip() if line else "" for line in out]


def _layout(head, body, num, natural, avail, max_lines) -> tuple[list[str], bool]:
    """The drawn table, shrunk to ``avail`` or split into blocks of columns; and whether a cell
    was cut."""
    mins = [w if num[i] else min(w, max(6, _longest_word(head[i]))) for i, w in enumerate(natural)]
    if _total(mins) > avail:  # blocks of columns: keep moderate cells whole, wrap only long ones
        mins = [max(m, min(w, avail // 3)) for m, w in zip(mins, natural)]
    out: list[str] = []
    cut = [False]
    for block in _blocks(mins, avail, first=0 if mins[0] <= avail // 3 else None):
        widths = _shrink([natural[i] for i in block], [mins[i] for i in block],
                         [num[i] for i in block], avail)
        if out:
            out.append("")
        out += _draw([head[i] for i in block], [[r[i] for i in block] for r in body],
                     widths, [num[i] for i in block], max_lines, cut)
    return out, cut[0]


def _natural(head, body, wrap_head: bool) -> list[int]:
    out = []
    for i, h in enumerate(head):
        hw = _longest_word(h) if wrap_head else len(h)
        out.append(max([hw] + [len(r[i]) for r in body]))
    return out


_BREAK = re.compile(r"[^\s./]*[./]+|[^\s./]+")


def _words(header: str) -> list[str]:
    """A header's pieces it may wrap between: at spaces, and after a ``.`` or ``/``
    (``config.optimizer.lr`` -> ``config.``, ``optimizer.``, ``lr``)."""
    return [w for part in header.split() for w in _BREAK.findall(part)]


def _longest_word(text: str) -> int:
    return max((len(w) for w in _words(text)), default=0)


def _head_lines(header: str, w: int) -> list[str]:
    """A header in lines of at most ``w``: pieces packed greedily, a piece wider than ``w`` cut."""
    if len(header) <= w:
        return [header]
    lines, cur = [], ""
    for part in header.split():
        pieces = _BREAK.findall(part)
        for k, piece in enumerate(pieces):
            sep = " " if cur and k == 0 else ""
            if cur and len(cur) + len(sep) + len(piece) > w:
                lines.append(cur)
                cur, sep = "", ""
            cur += sep + piece
            while len(cur) > w:
                lines.append(cur[:w])
                cur = cur[w:]
    return lines + [cur] if cur else lines or [""]


def _total(widths) -> int:
    return sum(widths) + len(GAP) * max(len(widths) - 1, 0)


def _shrink(widths, mins, num, avail) -> list[int]:
    """Narrow the widest text column, one column at a time, until the table fits (or every text
    column is at its minimum)."""
    widths = list(widths)
    while _total(widths) > avail:
        room = [(w, i) for i, w in enumerate(widths) if not num[i] and w > mins[i]]
        if not room:
            break
        _, i = max(room)
        widths[i] -= 1
    return widths


def _blocks(mins, avail, first) -> list[list[int]]:
    """Column indices in blocks whose minimum widths fit; ``first`` (a narrow first column) is
    repeated at the start of each block so rows stay identifiable."""
    n = len(mins)
    if _total(mins) <= avail:
        return [list(range(n))]
    lead = [first] if first is not None else []
    blocks, cur = [], []
    for i in range(n):
        if cur and cur != lead and _total([mins[j] for j in cur + [i]]) > avail:
            blocks.append(cur)
            cur = list(lead) if i != first else []
        cur.append(i)
    blocks.append(cur)
    return blocks


def _cell_lines(text: str, w: int, max_lines: int | None = None, cut=None) -> list[str]:
    if len(text) <= w:
        return [text]
    lines = textwrap.wrap(text, w, break_long_words=True, break_on_hyphens=False) or [""]
    if max_lines and len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: w - len(ELLIPSIS)] + ELLIPSIS
        cut[0] = True
    return lines


def _draw(head, body, widths, num, max_lines, cut) -> list[str]:
    def row(cells, bottom=False):
        parts = [_head_lines(c, w) if bottom else _cell_lines(c, w, max_lines, cut)
                 for c, w in zip(cells, widths)]
        height = max(len(p) for p in parts)
        if bottom:  # headers sit on the rule: shorter ones are padded at the top
            parts = [[""] * (height - len(p)) + p for p in parts]
        lines = []
        for k in range(height):
            vals = [p[k] if k < len(p) else "" for p in parts]
            lines.append(GAP.join(v.rjust(w) if r else v.ljust(w)
                                  for v, w, r in zip(vals, widths, num)).rstrip())
        return lines

    out = row(head, bottom=True) + [GAP.join("-" * w for w in widths)]
    for cells in body:
        out += row(cells)
    return out


def _key(name: str, labels: list[str], short: str, avail: int) -> list[str]:
    """The key of short labels: a table of the labels' ``k=v`` parts when every label has the
    same keys, else one line per label."""
    codes = [f"{short}{i + 1}" for i in range(len(labels))]
    split = _split_label([name], [[lab] for lab in labels], [False], 0)
    if split is not None:
        return [""] + table([name] + split[0], [[c] + r for c, r in zip(codes, split[1])], cols=avail)
    return ["", f"{name}:"] + [f"  {c}: {lab}" for c, lab in zip(codes, labels)]


def _split_label(head, body, num, label):
    """The table with its label column split into one column per key of ``k=v, k=v`` labels
    (the same keys in every row), or None."""
    parts = [_pairs(r[label]) for r in body]
    if not all(parts) or len({tuple(k for k, _ in p) for p in parts}) != 1:
        return None
    keys = [k for k, _ in parts[0]]
    new_head = head[:label] + keys + head[label + 1:]
    new_body = [r[:label] + [v for _, v in p] + r[label + 1:] for r, p in zip(body, parts)]
    new_num = num[:label] + [None] * len(keys) + num[label + 1:]
    return new_head, new_body, new_num


def _pairs(label: str):
    """``"n_train=75, lr=0.1"`` -> ``[("n_train", "75"), ("lr", "0.1")]``; None unless every
    part is ``key=value``."""
    out = []
    for part in label.split(", "):
        k, eq, v = part.partition("=")
        if not eq or not k or " " in k:
            return None
        out.append((k, v))
    return out
