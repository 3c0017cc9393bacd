"""The fit, fit-joint, bopt and report subcommands on stores written in the real layout."""

import argparse
import json
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest

from analysis.cli import register
from analysis.cli.base import summary_lines
from analysis.testing.synthetic import sweep_table, write_store


def run(*argv):
    parser = argparse.ArgumentParser(prog="scaling")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sweep where B_opt = 0.2 lr N/(1-m) holds, some large-batch trials diverge."""
    root = tmp_path_factory.mktemp("results")
    table = sweep_table(n_trains=(500, 1000, 2000, 4000, 8000, 16000), lrs=(0.05, 0.1, 0.2),
                        momenta=(0.0, 0.9), diverge_above=1500.0, seed=1)
    write_store(table, str(root))
    return root


def test_fit_json_has_params_with_intervals(store, capsys):
    assert run("fit", store, "--metric", "test_loss", "--json", "--boot", "200") == 0
    out = json.loads(capsys.readouterr().out)
    [curve] = out["curves"]
    fit = curve["fit"]
    assert set(fit["params"]) == {"a", "b", "c"}
    for p in fit["params"].values():
        assert p["ci_low"] <= p["value"] <= p["ci_high"]
    assert fit["n_points"] == 6 and fit["converged"] is True
    assert curve["outcomes"]["diverged"] > 0 and curve["over"] == ["batch_size", "lr", "momentum"]
    assert curve["selection"].startswith("chosen and measured on the same seeds")
    assert fit["interval"] == "cluster-t" and fit["n_boot_failed"] == 0


def test_fit_text_by_group_with_where_and_plot(store, capsys, tmp_path):
    png = tmp_path / "curves.png"
    rc = run("fit", store, "--metric", "error", "--by", "momentum", "--where", "lr=0.1",
             "--boot", "100", "--plot", png)
    assert rc == 0
    text = capsys.readouterr().out
    assert "[momentum=0]" in text and "[momentum=0.9]" in text and "best over batch_size" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bopt_json_says_consistent(store, capsys, tmp_path):
    png = tmp_path / "bopt.png"
    assert run("bopt", store, "--json", "--boot", "200", "--plot", png) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("slope", "g_opt", "verdict", "groups", "exponents", "selection", "margin"):
        assert key in out
    assert out["verdict"]["label"] == "consistent" and out["verdict"]["axes"] == []
    assert out["slope"]["ci_low"] <= 1.0 <= out["slope"]["ci_high"]
    for e in out["exponents"]:
        assert {"value", "ci_low", "ci_high"} <= set(e) and e["ci_low"] <= 1.0 <= e["ci_high"]
    assert len(out["groups"]) == 36 and out["outcomes"]["diverged"] > 0
    assert png.stat().st_size > 1000


def test_bopt_margin_changes_what_counts_as_consistent(store, capsys):
    assert run("bopt", store, "--json", "--boot", "200", "--margin", "0.001") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["margin"] == 0.001 and out["verdict"]["label"] == "inconclusive"
    assert "underpowered" in out["verdict"]["reason"]


def test_bopt_text_names_flagged_groups(tmp_path, capsys):
    root = tmp_path / "edge"
    write_store(sweep_table(batch_sizes=(1, 2, 4), n_trains=(1000,), lrs=(0.1,), seed=0), str(root))
    assert run("bopt", root, "--boot", "20") == 0
    text = capsys.readouterr().out
    assert "verdict: inconclusive" in text and "\n  edge1: best batch size" in text
    rows = [line for line in text.splitlines() if line.startswith("momentum=")]
    assert len(rows) == 3 and all(r.endswith("edge1") for r in rows)  # the code, explained once


def test_fit_joint_on_a_csv(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = np.repeat(np.logspace(6, 9, 5), 5)
    d = np.tile(np.logspace(8, 11, 5), 5)
    y = (1.7 + 400 / n ** 0.34 + 410 / d ** 0.28) * np.exp(0.01 * rng.standard_normal(n.size))
    path = tmp_path / "runs.csv"
    pcsv.write_csv(pa.table({"N": n, "D": d, "L": y}), path)
    assert run("fit-joint", path, "--n", "N", "--d", "D", "--loss", "L", "--json",
               "--boot", "100") == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["params"]) == {"E", "A", "alpha", "B", "beta"}
    assert out["n_points"] == 25 and out["converged"] is True


def test_report_is_one_page_with_every_plot(store, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert run("report", store, "-o", out, "--boot", "100") == 0
    assert "wrote" in capsys.readouterr().out
    page = out.read_text()
    found = re.findall(r'<script type="application/json" class="fig-json">(.*?)</script>', page)
    figures = [json.loads(f) for f in found]
    assert len(figures) == 4  # parallel coordinates, learning curves, B_opt, collapse (Plotly)
    assert all(any(t.get("x") or t.get("dimensions") for t in f["data"]) for f in figures)
    from analysis.report.figures import plotly_js

    with open(plotly_js(), encoding="utf-8") as f:  # self-contained: plotly.js inlined once
        rest = page.replace(f"<script>{f.read()}</script>", "")
    assert rest.count("<script>") == 1 and "http:" not in rest and "https:" not in rest
    assert " src=" not in rest
    assert "not available" not in rest
    assert "diverged" in rest and "verdict: consistent" in rest and "selection:" in rest


def _error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize("argv, words", [
    (("fit", "{missing}"), "no results directory"),
    (("fit", "{empty}"), "holds no trials"),
    (("bopt", "{empty}"), "holds no trials"),
    (("report", "{empty}", "-o", "{tmp}/r.html"), "holds no trials"),
    (("fit", "{store}", "--metric", "nope"), "unknown metric"),
    (("fit", "{store}", "--x", "nope"), "no x column"),
    (("fit", "{store}", "--by", "nope"), "--by names unknown column"),
    (("fit", "{store}", "--where", "lr"), "COL=VALUE"),
    (("fit", "{store}", "--where", "lr=9"), "no trial matches"),
    (("fit", "{store}", "--where", "n_train=500"), "distinct"),
    (("fit", "{store}", "--boot", "-1"), "--boot"),
    (("fit", "{const}", "--boot", "10"), "constant"),
    (("bopt", "{store}", "--metric", "nope"), "unknown metric"),
    (("fit-joint", "{missing}.csv", "--n", "a", "--d", "b", "--loss", "c"), "no such file"),
    (("fit-joint", "{store}", "--n", "n_params", "--d", "n_train", "--loss", "test_loss"),
     "distinct value"),
    (("report", "{store}", "-o", "{missing}/r.html"), "cannot write the report"),
])
def test_user_errors_print_one_line_and_return_2(argv, words, store, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    const = tmp_path / "const"
    write_store(sweep_table(n_trains=(100, 200, 400, 800), batch_sizes=(8, 16, 32), lrs=(0.1,),
                            momenta=(0.0,), seeds=(0,), curve=(0.0, -0.5, 0.1), width=0.0,
                            noise=0.0), str(const))
    names = {"store": store, "empty": empty, "missing": tmp_path / "nope", "tmp": tmp_path,
             "const": const}
    assert run(*(a.format(**names) for a in argv)) == 2
    assert words in _error_line(capsys)
    assert capsys.readouterr().out == ""


def test_summary_lines_count_every_status(store):
    lines = summary_lines(str(store))
    assert lines[0].split()[:4] == ["sweep", "trials", "ok", "diverged"]
    assert set(lines[1]) == {"-", " "}  # the rule under the header
    assert lines[2].split()[0] == "synthetic"


def test_analysis_never_imports_torch_or_ray():
    code = ("import sys, analysis.cli, analysis.report, analysis.bench, analysis.report.plots, "
            "analysis.fit.joint, analysis.rules.bopt, analysis.fit.curves, analysis.testing.synthetic, scaling.store; "
            "bad = [m for m in ('torch', 'ray') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout


def test_commands_accept_a_trials_file_outside_a_store(tmp_path, capsys):
    import pyarrow.parquet as pq

    path = tmp_path / "trials.parquet"
    pq.write_table(sweep_table(n_trains=(1000, 4000), seed=3), path)
    assert run("bopt", path, "--json", "--boot", "50") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"]["label"] in ("consistent", "inconsistent", "inconclusive")
    assert "val_acc is missing" in out["selection"]
    rows = pa.table({"n_train": [100.0, 200, 400, 800, 1600],
                     "test_loss": [1.0, 0.72, 0.52, 0.39, 0.3]})
    csv = tmp_path / "curve.csv"
    pcsv.write_csv(rows, csv)
    assert run("fit", csv, "--boot", "50", "--json") == 0
    fit = json.loads(capsys.readouterr().out)["curves"][0]["fit"]
    assert fit["n_points"] == 5 and fit["resampling"] == "points"


def test_duplicate_rows_in_a_file_are_collapsed_with_a_warning(tmp_path, capsys):
    table = sweep_table(n_trains=(1000, 2000, 4000, 8000), lrs=(0.1,), momenta=(0.0,), seed=5)
    path = tmp_path / "dups.csv"
    pcsv.write_csv(pa.concat_tables([table, table.slice(0, 7)]).drop_columns(
        ["start_time", "end_time"]), path)
    axes = ("--axes", "batch_size,lr,momentum")  # a CSV declares nothing: name the configuration
    assert run("fit", path, "--metric", "test_loss", "--json", "--boot", "50", *axes) == 0
    captured = capsys.readouterr()
    assert "warning: collapsed 7 exact duplicate row(s)" in captured.err
    assert "collapsed 7" in json.loads(captured.out)["notes"][0]
    assert run("bopt", path, "--boot", "20", "--axes", "lr,momentum") == 2  # n_train is one too
    assert "differ in n_train" in capsys.readouterr().err
    assert run("bopt", path, "--boot", "20", "--axes", "lr,momentum,n_train") == 0
    assert "warning: collapsed 7 exact duplicate row(s)" in capsys.readouterr().out
