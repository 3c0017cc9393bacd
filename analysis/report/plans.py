"""The report's section on an adaptive sweep's plan (issue 28: every decision shown).

An adaptive sweep (``search: {kind: adaptive}``) records each round's plan as
``<sweep>/plans/round-<k>.json`` (written by ``cluster.rounds``, the path named once in
:func:`scaling.status.plan_path`; the content is :meth:`analysis.plan.adaptive.RoundPlan.to_dict`).
This module reads those files as they are and presents them: per round, the trials and steps it
planned (and the share of the full grid's steps planned so far, against the budget), what the plan
read (the rule's verdict and exponents of ``scaling bopt``, the learning curve's exponent, the
groups by status) and why each trial was placed (its reasons, counted; every trial in a folded
table). Nothing is recomputed: the page shows what the driver decided. Every value is escaped
(:mod:`analysis.report.page`); a plan file that cannot be read is a line in the section, never a
failed page.
"""

from __future__ import annotations

import json
import re

import analysis.report.page as pg
import analysis.report.text as fmt

MAX_PLAN_BYTES = 64 << 20
"""A plan file larger than this is not read (a plan lists at most the full grid's trials)."""
MAX_TRIAL_ROWS = 400
"""Trials listed per round in the folded table (the counts above it cover every trial)."""


def read_plans(root: str, sweeps=None) -> tuple[dict[str, list[dict]], list[str]]:
    """The recorded plans of every adaptive sweep under ``root`` (a store or one sweep folder):
    ``({sweep: [round 0's plan, round 1's, ...]}, notes)``; sweeps without plans are absent.
    ``sweeps``: only these names (default every sweep of the store). A file that cannot be read
    or parsed ends that sweep's list and adds a note; the rounds before it are kept."""
    import pyarrow.fs as pafs

    from scaling.errors import StorageError, UserError
    from scaling.status import plan_path
    from scaling.store.writer import Store

    plans: dict[str, list[dict]] = {}
    notes: list[str] = []
    try:
        store = Store(str(root))
        names = store.sweeps()
    except (UserError, StorageError, OSError) as e:
        return {}, [f"adaptive plans not read: {_line(e)}"]
    for sweep in names:
        if sweeps is not None and sweep and sweep not in sweeps:
            continue
        found: list[dict] = []
        for k in range(10_000):
            path = plan_path(store, sweep, k)
            try:
                if store.fs.get_file_info(path).type == pafs.FileType.NotFound:
                    break
                with store.fs.open_input_stream(path) as f:
                    data = f.read(MAX_PLAN_BYTES + 1)
            except OSError as e:
                notes.append(f"{_name(sweep)}: round {k + 1}'s plan cannot be read: {_line(e)}")
                break
            try:
                if len(data) > MAX_PLAN_BYTES:
                    raise ValueError(f"larger than {MAX_PLAN_BYTES >> 20} MiB")
                plan = _checked(json.loads(data), k)
            except (ValueError, TypeError, RecursionError) as e:  # JSONDecodeError is a ValueError
                notes.append(f"{_name(sweep)}: round {k + 1}'s plan ({path}) is not a plan file: {_line(e)}")
                break
            found.append(plan)
        if found:
            plans[sweep] = found
    return plans, notes


def _checked(plan, k: int) -> dict:
    """``plan`` if it has what the section reads (round ``k``); else a ValueError or TypeError
    saying what is wrong."""
    if not isinstance(plan, dict):
        raise TypeError("not a JSON object")
    missing = [key for key in ("round", "rounds", "grid_steps", "planned_steps", "budget_steps", "trials")
               if key not in plan]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    if plan["round"] != k:
        raise ValueError(f"it says round {plan['round']!r}")
    if not isinstance(plan["trials"], list) or not all(isinstance(t, dict) for t in plan["trials"]):
        raise TypeError("'trials' is not a list of objects")
    return plan


def _line(e) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _name(sweep: str) -> str:
    return f"sweep {sweep!r}" if sweep else "this sweep"


def section(plans: dict[str, list[dict]], notes=(), stored=None) -> str:
    """The HTML of the section. ``stored``: ``{sweep: set of stored trial ids}`` (the trials table
    the page was built on), to say how many planned trials are stored."""
    parts = [pg.p(n, "msg") for n in notes]
    for sweep, rounds in plans.items():
        if sweep:
            parts.append(f"<h3>sweep={pg.esc(sweep)}</h3>")
        parts.append(_sweep(rounds, (stored or {}).get(sweep)))
    parts.append(pg.p(
        "Each round's plan as the driver recorded it (<sweep>/plans/round-<k>.json): round 1 runs a "
        "coarse grid; every later round reads the fits of the trials stored by the rounds before "
        "it (scaling bopt's rule and B_opt per group, scaling fit's learning curve) and places "
        "batch sizes around each group's predicted optimum, within its share of the budget. "
        "'read' columns are what the round read, not this page's fits.", "note"))
    return "".join(parts)


def _sweep(rounds: list[dict], stored) -> str:
    last = rounds[-1]
    grid = max(_int(last.get("grid_steps")), 1)
    planned = sum(len(r["trials"]) for r in rounds)
    head = (f"{len(rounds)} of {_int(last.get('rounds'))} rounds planned: {planned} of "
            f"{_int(last.get('grid_trials'))} grid trials, {_int(last.get('planned_steps')):,} of "
            f"{grid:,} grid steps ({_int(last.get('planned_steps')) / grid:.1%}; budget "
            f"{_int(last.get('budget_steps')) / grid:.1%})")
    if stored is not None:
        ids = {t.get("trial_id") for r in rounds for t in r["trials"]}
        head += f"; {len(ids & stored)} of the planned trials are stored"
    rows = [_row(r, grid) for r in rounds]
    parts = [pg.p(head), pg.table(["round", "trials", "steps", "planned so far", "read: rule verdict",
                                   "read: rule exponents (95% CI)", "read: learning curve b",
                                   "read: groups", "notes"], rows)]
    for r in rounds:
        parts.append(pg.details(f"round {_int(r['round']) + 1}: why each trial was placed "
                                f"({len(r['trials'])} trials)", _reasons(r)))
    return "".join(parts)


def _row(r: dict, grid: int) -> list:
    fits = r.get("fits") if isinstance(r.get("fits"), dict) else {}
    verdict = fits.get("verdict") if isinstance(fits.get("verdict"), dict) else {}
    label = verdict.get("label")
    why = verdict.get("reason")
    exps = fits.get("exponents") if isinstance(fits.get("exponents"), list) else []
    lc = fits.get("learning_curve") if isinstance(fits.get("learning_curve"), dict) else {}
    groups = fits.get("groups") if isinstance(fits.get("groups"), dict) else {}
    steps = sum(_int(t.get("steps")) for t in r["trials"])
    return [_int(r["round"]) + 1, len(r["trials"]), f"{steps:,}",
            f"{_int(r['planned_steps']):,} ({_int(r['planned_steps']) / grid:.1%})",
            ("-" if label is None else f"{label}" + (f": {why}" if why else "")),
            "; ".join(f"{e.get('name')} {_ci(e.get('value'), e.get('ci_low'), e.get('ci_high'))}"
                      for e in exps if isinstance(e, dict)) or "-",
            _ci(lc.get("exponent"), lc.get("ci_low"), lc.get("ci_high")) if lc else "-",
            ", ".join(f"{k} {v}" for k, v in sorted(groups.items())) or "-",
            "; ".join(str(n) for n in r.get("notes") or ()) or "-"]


def _ci(v, lo, hi) -> str:
    return f"{fmt.g(_num(v), 3)} [{fmt.g(_num(lo), 3)}, {fmt.g(_num(hi), 3)}]"


def _num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _int(v) -> int:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def reason_kind(reason) -> str:
    """A reason with its numbers after the first word written as ``#`` (``0 grid step(s) from its
    B_opt #``), so the reasons of a round can be counted."""
    text = str(reason)
    m = re.match(r"(\d+ grid step\(s\) from )(.*)", text, re.DOTALL)
    head, rest = (m.group(1), m.group(2)) if m else ("", text)
    return head + re.sub(r"\d[\d.eE+-]*", "#", rest)


def _reasons(r: dict) -> str:
    trials = r["trials"]
    counts: dict[str, list] = {}
    for t in trials:
        c = counts.setdefault(reason_kind(t.get("reason", "")), [0, 0])
        c[0] += 1
        c[1] += _int(t.get("steps"))
    order = sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0]))
    parts = [pg.table(["reason (numbers as #)", "trials", "steps"],
                      [[k, n, f"{s:,}"] for k, (n, s) in order])]
    axes = [a for a in (trials[0] if trials else {}) if a not in ("trial_id", "steps", "reason")]
    shown = trials[:MAX_TRIAL_ROWS]
    parts.append(pg.table(["trial_id", *axes, "steps", "reason"],
                          [[t.get("trial_id"), *[fmt.g(t.get(a)) if _num(t.get(a)) is not None else t.get(a)
                                                 for a in axes], _int(t.get("steps")), t.get("reason")]
                           for t in shown]))
    if len(trials) > len(shown):
        parts.append(pg.p(f"the first {len(shown)} of {len(trials)} trials, in the plan's order of "
                          "priority; every one is in the plan file", "note"))
    return "".join(parts)
