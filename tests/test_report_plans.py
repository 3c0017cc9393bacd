"""The report's section on an adaptive sweep's plan (issue 28: every decision shown in the report).

The plans are real: an adaptive sweep's rounds replayed on a simulated sweep
(:func:`analysis.plan.replay.replay`, the driver's own ``plan_round``), written where and as the
driver writes them (:func:`scaling.status.plan_path`, ``RoundPlan.to_json``, ``Store.write_bytes``)
into a store holding the trials those rounds planned. The page is ``scaling report``'s; what it
shows is read back from the HTML and compared with the plan files."""

import argparse
import json
import re
from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from analysis.cli import register
from analysis.plan.adaptive import plan_round
from analysis.plan.replay import grid_of, replay
from analysis.report.plans import read_plans, reason_kind, section
from analysis.testing.simulate import LANDSCAPES, Design, simulate
from analysis.testing.synthetic import write_store
from scaling.status import plan_path
from scaling.store.writer import Store

DESIGN = Design.grid(n_trains=(200, 400, 800), batch_sizes=[2 ** i for i in range(7)], lrs=(0.5, 1.0),
                     momenta=(0.0, 0.9), seeds=range(3))
"""A small rule grid (12 groups, 7 batch sizes, 3 seeds): three rounds replay in about a second."""
EVIL = "<script>alert(1)</script>"


def run(*argv):
    parser = argparse.ArgumentParser(prog="scaling")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def _write(root, table, plans) -> Store:
    write_store(table, str(root))
    store = Store(str(root))
    sweep = table.column("sweep")[0].as_py()
    for plan in plans:
        store.write_bytes(plan_path(store, sweep, plan.round), plan.to_json(), "write a plan")
    return store


@pytest.fixture(scope="module")
def coarse():
    """(the simulated sweep, round 0's plan of a 3-round adaptive sweep): no fit, cheap."""
    sim = simulate(DESIGN, landscape=LANDSCAPES["rule"], noise="digits", seed=7)
    grid = grid_of(sim.table)
    budget = int(0.4 * sum(grid.column("steps").to_pylist()))
    return sim, plan_round(grid, None, round_index=0, rounds=3, budget_steps=budget)


def _planned(sim, plans):
    ids = pa.array(sorted(t["trial_id"] for p in plans for t in p.trials))
    return sim.table.filter(pc.is_in(sim.table.column("trial_id"), ids))


@pytest.mark.slow  # a whole page: 3-6 s on the shared machine
def test_the_report_of_a_store_with_a_plan_has_the_plan_section(coarse, tmp_path):
    """`scaling report` on a store whose adaptive sweep ran round 1 (of 3): the section is there,
    in the table of contents, with round 1's figures from its plan file."""
    sim, plan = coarse
    _write(tmp_path / "r", _planned(sim, [plan]), [plan])
    out = tmp_path / "r.html"
    assert run("report", tmp_path / "r", "-o", out, "--boot", "20") == 0
    page = out.read_text()
    assert 'href="#plan"' in page
    rows = _rows(_plan_section(page))
    assert rows[1][:4] == ["1", str(len(plan.trials)), f"{plan.planned_steps:,}",
                           f"{plan.planned_steps:,} ({plan.planned_steps / plan.grid_steps:.1%})"]
    assert f"1 of 3 rounds planned: {len(plan.trials)} of {plan.grid_trials} grid trials" in page
    assert f"{len(plan.trials)} of the planned trials are stored" in page
    one = read_plans(str(tmp_path / "r" / "sim"))  # a sweep's own folder as the root
    assert one == ({"": [json.loads(plan.to_json())]}, [])
    assert read_plans(str(tmp_path / "r"), {"other"}) == ({}, [])  # --sweep other


@pytest.fixture(scope="module")
def adaptive(tmp_path_factory):
    """(store root, the replay, the plan files as parsed JSON) of a 3-round adaptive sweep."""
    sim = simulate(DESIGN, landscape=LANDSCAPES["rule"], noise="digits", seed=7)
    rep = replay(sim.table, rounds=3, budget=0.4, metric="error")
    root = tmp_path_factory.mktemp("adaptive")
    store = _write(root, rep.table, rep.plans)
    sweep = rep.table.column("sweep")[0].as_py()
    files = []
    for k in range(3):
        with open(plan_path(store, sweep, k), encoding="utf-8") as f:
            files.append(json.load(f))
    return root, rep, files


@pytest.fixture(scope="module")
def page(adaptive, tmp_path_factory):
    root, _, _ = adaptive
    out = tmp_path_factory.mktemp("page") / "r.html"
    assert run("report", root, "-o", out, "--boot", "20") == 0
    return out.read_text()


def _plan_section(page: str) -> str:
    found = re.findall(r'<section id="plan">(.*?)</section>', page, re.DOTALL)
    assert len(found) == 1, "one plan section"
    return found[0]


def _rows(html: str) -> list[list[str]]:
    """The cells of the round table (the first table of the section), header included."""
    table = re.search(r"<table>(.*?)</table>", html, re.DOTALL).group(1)
    return [re.findall(r"<t[dh]>(.*?)</t[dh]>", r, re.DOTALL) for r in re.findall(r"<tr>(.*?)</tr>", table, re.DOTALL)]


@pytest.mark.slow
def test_the_report_shows_each_rounds_plan_as_recorded(adaptive, page):
    _, rep, files = adaptive
    html = _plan_section(page)
    assert 'href="#plan"' in page  # in the page's table of contents
    rows = _rows(html)
    assert rows[0][:4] == ["round", "trials", "steps", "planned so far"]
    assert len(rows) == 1 + 3
    for row, plan, live in zip(rows[1:], files, rep.plans):
        assert plan["n_trials"] == len(live.trials) > 0  # the files are the replay's plans
        assert row[0] == str(plan["round"] + 1)
        assert row[1] == str(plan["n_trials"])
        assert row[2] == f"{plan['round_steps']:,}"
        assert row[3] == f"{plan['planned_steps']:,} ({plan['planned_steps'] / plan['grid_steps']:.1%})"
    # round 1 reads nothing; later rounds show the verdict and exponents their plan read
    assert rows[1][4] == "-" and rows[1][5] == "-"
    for row, plan in zip(rows[2:], files[1:]):
        verdict = plan["fits"]["verdict"]["label"]
        assert row[4].startswith(verdict), (row[4], verdict)
        for e in plan["fits"]["exponents"]:
            assert f"{e['name']} {e['value']:.3g} [{e['ci_low']:.3g}, {e['ci_high']:.3g}]" in row[5]
        assert row[7] == ", ".join(f"{k} {v}" for k, v in sorted(plan["fits"]["groups"].items()))
    total = sum(p["n_trials"] for p in files)
    last = files[-1]
    assert (f"3 of 3 rounds planned: {total} of {last['grid_trials']} grid trials, "
            f"{last['planned_steps']:,} of {last['grid_steps']:,} grid steps") in html
    assert f"{total} of the planned trials are stored" in html  # the store holds every planned trial
    # the reasons, counted per round, add up to the round's trials and steps
    for k, plan in enumerate(files):
        block = re.search(rf"round {k + 1}: why each trial was placed \((\d+) trials\)</summary>(.*?)</details>",
                          html, re.DOTALL)
        assert block and int(block.group(1)) == plan["n_trials"]
        counts = _rows(block.group(2))[1:]
        assert sum(int(c[1]) for c in counts) == plan["n_trials"]
        assert sum(int(c[2].replace(",", "")) for c in counts) == plan["round_steps"]
        kinds = {reason_kind(t["reason"]) for t in plan["trials"]}
        assert {c[0].replace("&#x27;", "'") for c in counts} == kinds
        assert all(t["trial_id"] in block.group(2) for t in plan["trials"])


def test_a_hostile_plan_is_escaped_and_a_broken_one_is_a_line(coarse, tmp_path):
    sim, first = coarse
    plans = [replace(first, trials=({**first.trials[0], "reason": EVIL}, *first.trials[1:]), notes=(EVIL,)),
             replace(first, round=1, fits={"verdict": {"label": EVIL, "reason": EVIL, "axes": []}})]
    root = tmp_path / "r"
    store = _write(root, _planned(sim, plans[:1]), plans)
    sweep = sim.table.column("sweep")[0].as_py()
    store.write_bytes(plan_path(store, sweep, 2), b"{not json", "write a broken plan")
    found, notes = read_plans(str(root))
    assert list(found) == [sweep] and len(found[sweep]) == 2  # the rounds before the broken file kept
    assert len(notes) == 1 and "round 3's plan" in notes[0] and "is not a plan file" in notes[0], notes
    html = section(found, notes)
    assert "<script" not in html and "alert(1)</" not in html
    # the verdict's label and reason, round 1's note, the trial's reason in the trials table
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 4
    assert "&lt;script&gt;alert(#)&lt;/script&gt;" in html  # the counted reason (numbers as #)


def test_a_store_without_plans_has_no_plan_section(tmp_path):
    sim = simulate(DESIGN, landscape=LANDSCAPES["rule"], noise="digits", seed=8)
    write_store(sim.table, str(tmp_path))
    assert read_plans(str(tmp_path)) == ({}, [])


@pytest.mark.parametrize("data, why", [(b"[]", "not a JSON object"), (b'{"round": 0}', "no rounds, grid_steps"),
                                       ((b'{"round": 1, "rounds": 3, "grid_steps": 1, "planned_steps": 1, '
                                        b'"budget_steps": 1, "trials": []}'), "it says round 1"),
                                       (b"[" * 100_000, "is not a plan file")])
def test_a_file_that_is_not_a_plan_is_one_line(coarse, tmp_path, data, why):
    sim, plan = coarse
    store = _write(tmp_path, _planned(sim, [plan]), [])
    store.write_bytes(plan_path(store, "sim", 0), data, "write a bad plan")
    found, notes = read_plans(str(tmp_path))
    assert found == {} and len(notes) == 1 and why in notes[0] and "\n" not in notes[0], notes
