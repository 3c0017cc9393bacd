"""The HTML report: headline cards, training curves, predictions on the fit plot, honest
held-out marks, no SGD collapse for AdamW, readable ticks, escaping, and sections that fail
alone. Stores are written in the real layout (trials and curves parts) without running Ray."""

import argparse
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import tables
from analysis.cli import register
from analysis.fit.curves import fit_learning_curves
from analysis.fit.forms.on_curves import add_forms
from analysis.report import plots
from analysis.report import training as tr
from analysis.report.html import build_report
from analysis.rules.bopt import find_bopt
from analysis.testing.synthetic import sweep_table, write_store

N_TRAINS = (500, 1000, 2000, 4000, 8000)
BATCHES = (4, 16, 64, 256, 1024)


def run(*argv):
    parser = argparse.ArgumentParser(prog="scaling")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def _trials(**kw):
    return sweep_table(n_trains=N_TRAINS, batch_sizes=BATCHES, lrs=(0.1,), momenta=(0.0, 0.9),
                       seeds=(0, 1), seed=3, **kw)


def _curves(trials: pa.Table) -> pa.Table:
    """Eval points of every trial: the loss falls from 2.3 to the trial's final test_loss."""
    from scaling.spec.schema import CURVES_SCHEMA

    rows = []
    for t in trials.to_pylist():
        final = t["test_loss"]
        for k, frac in enumerate((0.0, 0.05, 0.1, 0.25, 0.5, 1.0)):
            seen = int(frac * t["examples_seen"])
            loss = float("nan") if final != final else final + (2.3 - final) * np.exp(-8 * frac)
            rows.append({"sweep": t["sweep"], "trial_id": t["trial_id"], "run_id": t["run_id"],
                         "step": int(frac * t["steps"]), "examples_seen": seen,
                         "test_loss": loss, "test_acc": 1 - loss / 3, "val_loss": loss})
    return pa.Table.from_pylist(rows, schema=CURVES_SCHEMA)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    trials = _trials()
    folder = write_store(trials, str(root))
    (root / "synthetic" / "curves").mkdir()
    pq.write_table(_curves(trials), f"{folder}/curves/part-0.parquet")
    return root


@pytest.fixture(scope="module")
def loaded(store):
    return tables.load_sweep(str(store))


@pytest.fixture(scope="module")
def fitted(loaded):
    trials, _ = loaded
    curves = fit_learning_curves(trials, metric="test_loss", n_boot=60)
    return add_forms(curves, predict=[16000, 32000], n_boot=60)


@pytest.fixture(scope="module")
def page(store, tmp_path_factory):
    """The page of ``scaling report`` on the store, with a group's training curves."""
    out = tmp_path_factory.mktemp("page") / "r.html"
    assert run("report", store, "-o", out, "--boot", "40", "--curves",
               "n_train=1000,momentum=0.9") == 0
    return out.read_text()


def _sections(page: str) -> dict:
    return dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', page, re.S))


# --- training curves -------------------------------------------------------------------------


def test_training_curves_draw_one_line_per_winner(loaded, fitted):
    trials, curves = loaded
    [curve] = fitted
    tc = tr.winners(trials, curves, curve, "test_loss")
    assert [ln.label.split(":")[0] for ln in tc.lines] == [f"n_train={n}" for n in N_TRAINS]
    assert all(ln.n_seeds == 2 for ln in tc.lines) and tc.axis == "n_train"
    for ln, chosen in zip(tc.lines, curve.chosen):  # the winner's own curve: it ends at its loss
        assert f"batch_size={chosen['batch_size']}" in ln.label
    fig = tr.plot_training(tc)
    drawn = [ln for ln in fig.axes[0].get_lines() if not ln.get_label().startswith("_")]
    assert len(drawn) == len(N_TRAINS)
    assert fig.axes[0].get_xlabel() == "examples seen"


def test_curves_flag_draws_the_group_asked_for(page, loaded):
    trials, curves = loaded
    tc = tr.group(trials, curves, "n_train=1000,momentum=0.9", "test_loss")
    assert tc.axis == "batch_size"
    assert [ln.label for ln in tc.lines] == [f"batch_size={b}" for b in BATCHES]
    sql = tr.group(trials, curves, "n_train = 1000 AND batch_size IN (16, 256)", "test_loss")
    assert len(sql.lines) == 4  # two batch sizes x two momenta
    assert {ln.label.split(", ")[0] for ln in sql.lines} == {"batch_size=16", "batch_size=256"}
    section = _sections(page)["training"]
    assert section.count("<img") == 2  # the winners and the group
    assert "training curves of n_train=1000,momentum=0.9" in section


def test_a_bad_curves_filter_is_one_error(store, tmp_path, capsys):
    assert run("report", store, "-o", tmp_path / "r.html", "--curves", "n_train=3") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no trial matches" in err[0]


def test_a_csv_without_curves_says_so_in_one_line(tmp_path):
    import pyarrow.csv as pcsv

    path = tmp_path / "t.csv"
    t = _trials()
    pcsv.write_csv(t.select(["n_train", "batch_size", "lr", "momentum", "seed", "status",
                             "test_loss", "test_acc"]), path)
    assert run("report", path, "-o", tmp_path / "r.html", "--boot", "30",
               "--axes", "batch_size,lr,momentum") == 0
    section = _sections((tmp_path / "r.html").read_text())["training"]
    assert "<img" not in section and section.count("<p") == 1 and "No training curves" in section


# --- the learning-curve figure --------------------------------------------------------------


def test_fit_plot_draws_predictions_and_a_dashed_extrapolation(fitted):
    [curve] = fitted
    fig = plots.plot_curves(fitted)
    ax = fig.axes[0]
    top = max(curve.x)
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--" and len(ln.get_xdata()) > 2]
    solid = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-" and len(ln.get_xdata()) > 2]
    assert dashed and min(dashed[0].get_xdata()) == pytest.approx(top)
    assert max(dashed[0].get_xdata()) > 32000  # out past the furthest prediction
    assert solid and max(solid[0].get_xdata()) == pytest.approx(top)
    diamonds = [ln for ln in ax.get_lines() if ln.get_marker() == "D" and len(ln.get_xdata())]
    assert sorted(diamonds[0].get_xdata()) == [16000, 32000]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("prediction interval" in t for t in labels)
    assert not any("hollow" in t or "held out" in t for t in labels)


def test_the_check_is_drawn_as_its_own_fit_and_nothing_else_claims_held_out(loaded):
    trials, _ = loaded
    [curve] = fit_learning_curves(trials, metric="test_loss", n_boot=40)
    ax = plots.plot_curves([curve]).axes[0]
    dotted = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    solid = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-" and len(ln.get_xdata()) > 2]
    assert len(dotted) == 1  # the fit without the held-out points, not the curve drawn solid
    x = np.asarray(dotted[0].get_xdata())
    assert not np.allclose(dotted[0].get_ydata(), curve.fit.predict(x), rtol=1e-3)
    assert np.allclose(solid[0].get_ydata(), curve.fit.predict(solid[0].get_xdata()), rtol=1e-6)
    assert any("refit without the ringed" in t.get_text() for t in ax.get_legend().get_texts())
    [off] = fit_learning_curves(trials, metric="test_loss", n_boot=40, holdout=0)
    ax = plots.plot_curves([off]).axes[0]
    assert not [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert not any("ringed" in t or "prediction" in t for t in texts)  # no mark, no entry


# --- the B_opt figure and ticks -------------------------------------------------------------


def test_bopt_lines_stay_inside_the_batch_sizes_and_the_title_is_short(loaded):
    trials, _ = loaded
    result = find_bopt(trials, n_boot=40)
    ax = plots.plot_bopt(result).axes[0]
    lines = [ln for ln in ax.get_lines() if ln.get_linestyle() in ("-", "--")
             and len(ln.get_xdata()) == 50]
    assert len(lines) == 2
    for ln in lines:
        y = np.asarray(ln.get_ydata())
        assert y.min() >= min(BATCHES) * 0.999 and y.max() <= max(BATCHES) * 1.001
    assert "\n" not in ax.get_title() and len(ax.get_title()) < 60


def test_tick_labels_of_a_short_log_axis_do_not_overlap():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=110)
    ax = fig.add_subplot()
    ax.plot([2600, 4400], [1, 2])
    ax.set_xscale("log")
    plots.readable_ticks(ax)
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    labels = [t for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True)
              if t.get_text() and t.get_visible()
              and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
    assert len(labels) >= 2 and {"3000", "4000"} <= {t.get_text() for t in labels}
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:]))


# --- the page --------------------------------------------------------------------------------


def test_page_opens_with_cards_then_figures_with_long_text_folded(page):
    assert page.index('class="cards"') < page.index("<section")
    cards = re.findall(r'<div class="k">(.*?)</div><div class="v">(.*?)</div>', page)
    assert [k for k, _ in cards][:2] == ["trials", "learning-curve exponent b"]
    assert dict(cards)["trials"] == str(len(N_TRAINS) * len(BATCHES) * 2 * 2)
    assert re.fullmatch(r"-0\.\d+", dict(cards)["learning-curve exponent b"])
    for name, body in _sections(page).items():
        pre = body.find("<pre>")
        assert pre < 0 or body.rfind("<details", 0, pre) >= 0, name  # long text is folded
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)  # inlined, not fetched
    assert "<script" not in text and "http" not in text and "<img" in text


def test_no_collapse_section_on_an_adamw_sweep(loaded, page):
    trials, _ = loaded
    adamw = trials.set_column(trials.column_names.index("optimizer"), "optimizer",
                              pa.array(["adamw"] * trials.num_rows))
    text = build_report(adamw, n_boot=30)
    sections = _sections(text)
    assert "collapse" not in sections and "Noise-scale collapse" not in text
    assert "No noise-scale collapse plot" in sections["bopt"] and "adamw" in sections["bopt"]
    assert "against lr*N/(1-m)" not in sections["bopt"][:200]
    assert "<img" in _sections(page)["collapse"]  # the same sweep with SGD has the plot


def test_a_mixed_sweep_collapses_its_sgd_trials_only(loaded):
    from analysis.report import html

    trials, _ = loaded
    half = ["adamw" if i % 2 else "sgd" for i in range(trials.num_rows)]
    mixed = trials.set_column(trials.column_names.index("optimizer"), "optimizer", pa.array(half))
    assert html._optimizers(mixed) == (True, ["adamw"])
    assert html._optimizers(trials) == (True, [])  # no value: the schema's default, SGD
    body = html._collapse(mixed, [], "test_acc", ["adamw"])
    assert "SGD trials only" in body and body.count("<img") == 1


def test_hostile_values_are_escaped(loaded):
    trials, curves = loaded
    evil = "<script>alert(1)</script>"
    t = trials.set_column(trials.column_names.index("task"), "task",
                          pa.array([evil] * trials.num_rows))
    t = t.set_column(t.column_names.index("sweep"), "sweep", pa.array([evil] * t.num_rows))
    page = build_report(t, source=evil, n_boot=30, by=("task",), curves=curves,
                        curves_where=f"task = '{evil}' AND n_train = 999")
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_degenerate_section_leaves_the_rest_of_the_page(loaded):
    trials, curves = loaded
    page = build_report(trials, metric="no_such_metric", n_boot=30, curves=curves,
                        curves_where="n_train=2000,momentum=0")
    sections = _sections(page)
    assert "not available: unknown metric &#x27;no_such_metric&#x27;" in sections["learning-curves"]
    assert "<img" not in sections["learning-curves"]
    assert "could not be fitted" in sections["training"] and "<img" in sections["training"]
    assert "<img" in sections["bopt"] and "<img" in sections["collapse"]
    assert "not available (see the learning-curve section)" in page
