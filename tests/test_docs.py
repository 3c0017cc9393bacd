"""The README and docs/ stay in step with the code: a short README, an example of every
subcommand and flag, and no broken relative link."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 200

LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`+[^`]*`+")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def example_lines(paths: list[Path]) -> list[str]:
    """Every line of the pages (code blocks included), stripped, without a leading `$ ` prompt."""
    lines = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            text = line.strip()
            if text.startswith("$ "):
                text = text[2:].lstrip()
            lines.append(text)
    return lines


def has_flag(line: str, flag: str) -> bool:
    """``flag`` appears in ``line`` as a whole option (``--seed`` is not in ``--boot-seed``)."""
    return re.search(r"(?<![\w-])" + re.escape(flag) + r"(?![\w-])", line) is not None


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def long_flags(parser: argparse.ArgumentParser) -> list[str]:
    return [opt for action in parser._actions for opt in action.option_strings
            if opt.startswith("--") and opt != "--help"]


def undocumented(parser: argparse.ArgumentParser, lines: list[str]) -> list[str]:
    """``scaling CMD [FLAG]`` for each subcommand, and each of its long flags, with no example line:
    a line that starts with ``scaling CMD `` and holds the flag."""
    missing = []
    for cmd, sub in subcommands(parser).items():
        examples = [line for line in lines if line.startswith(f"scaling {cmd} ")]
        if not examples:
            missing.append(f"scaling {cmd}")
            continue
        missing += [f"scaling {cmd} {flag}" for flag in long_flags(sub)
                    if not any(has_flag(line, flag) for line in examples)]
    return missing


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every relative markdown link outside code blocks and code spans."""
    lines, in_code = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_code = not in_code
            line = ""
        lines.append("" if in_code else line)
    text = "\n".join(lines)  # fenced blocks blanked, line numbers kept
    spans = [m.span() for m in INLINE_CODE.finditer(text)]  # a code span may wrap onto the next line
    links = []
    for m in LINK.finditer(text):
        target = m.group(1)
        if any(a <= m.start() < b for a, b in spans):
            continue
        if target.startswith("#") or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
            continue  # an anchor on the same page, or http(s)://, mailto:, ...
        links.append((text.count("\n", 0, m.start()) + 1, target))
    return links


def test_readme_is_one_screen():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; keep it to {README_MAX_LINES} (move detail to docs/)"


def test_every_subcommand_and_flag_has_an_example():
    from cluster.cli import build_parser

    parser = build_parser()
    assert {"sweep", "status", "query", "fit", "report"} <= set(subcommands(parser))
    missing = undocumented(parser, example_lines(pages()))
    assert not missing, ("no example line in README.md or docs/*.md (a line starting with "
                         "`scaling CMD ` that holds the flag) for: " + "; ".join(missing))


def test_the_flag_check_finds_a_missing_flag():
    parser = argparse.ArgumentParser(prog="scaling")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("fit")
    p.add_argument("results")
    p.add_argument("--seed")
    p.add_argument("--boot-seed")
    p.add_argument("-o", "--output")
    sub.add_parser("status").add_argument("results")
    lines = ["scaling fit results --boot-seed 1 -o x.html", "  scaling status", "see scaling fit --seed"]
    assert undocumented(parser, lines) == ["scaling fit --seed", "scaling fit --output", "scaling status"]
    assert undocumented(parser, ["scaling fit r --boot-seed 1 --seed=s --output x", "scaling status r"]) == []


def test_relative_links_resolve():
    broken = []
    for path in pages():
        for number, target in relative_links(path):
            file = target.split("#", 1)[0]
            if file and not (path.parent / file).exists():
                broken.append(f"{path.relative_to(ROOT)}:{number}: {target}")
    assert not broken, "links to missing files: " + "; ".join(broken)


def test_the_link_check_reads_only_relative_links_outside_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("See [a](a.md#part), [b](https://x.org/b.md), [c](#here) and `[d](d.md)`.\n"
                    "```sh\necho [e](e.md)\n```\nA span `that wraps\n[f](f.md)` and ![g](img/g.png \"title\").\n",
                    encoding="utf-8")
    assert relative_links(page) == [(1, "a.md#part"), (6, "img/g.png")]


def test_python_examples_in_the_docs_import_only_the_curated_api():
    """README and docs examples import from analysis.api, so moving a module never breaks them,
    and every name they import is one the API offers."""
    import re

    import analysis.api as api

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    seen = 0
    for page in pages:
        for line in page.read_text().splitlines():
            m = re.match(r"\s*from (analysis[\w.]*) import (.+)", line)
            if m:
                seen += 1
                assert m.group(1) == "analysis.api", f"{page.name}: {line.strip()}"
                for name in (n.strip() for n in m.group(2).split(",")):
                    assert name in api.__all__, f"{page.name}: analysis.api has no {name}"
    assert seen >= 2
