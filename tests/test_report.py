"""The HTML report: headline cards, training curves, predictions on the fit plot, honest
held-out marks, no SGD collapse for AdamW, readable ticks, escaping, and sections that fail
alone; its figures are the dashboard's Plotly JSON (analysis.report.figures), read back from the
page and checked against the fits, and (slow) drawn by a real headless Chromium. Stores are
written in the real layout (trials and curves parts) without running Ray."""

import argparse
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import tables
from analysis.cli import register
from analysis.fit.curves import fit_learning_curves
from analysis.fit.forms.on_curves import add_forms
from analysis.report import figures as figs
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
    assert run("report", store, "-o", out, "--boot", "40", "--metric", "test_loss", "--curves",
               "n_train=1000,momentum=0.9") == 0
    return out.read_text()


def _sections(page: str) -> dict:
    return dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', page, re.S))


def _figures(html: str) -> list[dict]:
    """The Plotly figures embedded in a page or section, parsed back from their JSON."""
    found = re.findall(r'<script type="application/json" class="fig-json">(.*?)</script>', html, re.S)
    return [json.loads(f) for f in found]


def _named(fig: dict, start: str) -> list[dict]:
    return [t for t in fig["data"] if t.get("name", "").startswith(start)]


# --- training curves -------------------------------------------------------------------------


def test_training_curves_draw_one_line_per_winner(loaded, fitted):
    trials, curves = loaded
    [curve] = fitted
    tc = tr.winners(trials, curves, curve, "test_loss")
    assert [ln.label.split(":")[0] for ln in tc.lines] == [f"n_train={n}" for n in N_TRAINS]
    assert all(ln.n_seeds == 2 for ln in tc.lines) and tc.axis == "n_train"
    for ln, chosen in zip(tc.lines, curve.chosen):  # the winner's own curve: it ends at its loss
        assert f"batch_size={chosen['batch_size']}" in ln.label
    fig = figs.training(tc)
    drawn = [t for t in fig["data"] if t.get("name")]
    assert len(drawn) == len(N_TRAINS)
    assert fig["layout"]["xaxis"]["title"]["text"] == "examples seen"
    for t, ln in zip(drawn, tc.lines):  # each line is its configuration's mean over seeds
        assert t["y"] == pytest.approx(list(ln.y)) and t["x"] == pytest.approx(list(ln.x))
    bands = [t for t in fig["data"] if t.get("fill") == "toself"]
    assert len(bands) == len(N_TRAINS)  # the seeds' range of each (two seeds each)


def test_curves_flag_draws_the_group_asked_for(page, loaded):
    trials, curves = loaded
    tc = tr.group(trials, curves, "n_train=1000,momentum=0.9", "test_loss")
    assert tc.axis == "batch_size"
    assert [ln.label for ln in tc.lines] == [f"batch_size={b}" for b in BATCHES]
    sql = tr.group(trials, curves, "n_train = 1000 AND batch_size IN (16, 256)", "test_loss")
    assert len(sql.lines) == 4  # two batch sizes x two momenta
    assert {ln.label.split(", ")[0] for ln in sql.lines} == {"batch_size=16", "batch_size=256"}
    section = _sections(page)["training"]
    winners, asked = _figures(section)  # the winners and the group
    assert [t["name"] for t in asked["data"] if t.get("name")] == \
        [f"{ln.label} (2 seeds)" for ln in tc.lines]
    shown = asked["layout"]["yaxis"]["title"]["text"]  # the page's metric (the headline: error)
    same = tr.group(trials, curves, "n_train=1000,momentum=0.9", shown)
    assert asked == json.loads(json.dumps(figs.training(same)))  # the dashboard's figure, as it is
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
    assert not _figures(section) and section.count("<p") == 1 and "No training curves" in section


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


def test_the_pages_learning_curve_is_the_fit_with_its_predictions(page, fitted):
    [curve] = fitted
    [fig] = _figures(_sections(page)["learning-curves"])
    [points] = _named(fig, "all: winners")
    assert points["x"] == list(N_TRAINS) and points["y"] == pytest.approx(list(curve.y), rel=1e-9)
    pred = curve.prediction  # the page predicts at 2x and 4x the largest n_train, as the fixture
    [diamonds] = _named(fig, f"prediction by {pred.form}")
    assert diamonds["x"] == [16000, 32000]
    assert diamonds["y"] == pytest.approx(list(pred.y), rel=1e-6)
    lo = np.array(diamonds["y"]) - diamonds["error_y"]["arrayminus"]
    assert np.all(lo < diamonds["y"]) and np.all(np.array(diamonds["error_y"]["array"]) > 0)
    [solid] = [t for t in fig["data"] if t.get("mode") == "lines" and "dash" not in t["line"]
               and not t.get("fill")]
    [dashed] = _named(fig, "extrapolated past the data")
    assert max(solid["x"]) == pytest.approx(max(N_TRAINS)) == pytest.approx(min(dashed["x"]))
    assert max(dashed["x"]) > 32000  # out past the furthest prediction
    assert _named(fig, "95% prediction interval past the data")
    assert fig["layout"]["xaxis"]["type"] == "log" and fig["layout"]["yaxis"]["type"] == "log"
    lo, hi = fig["layout"]["yaxis"]["range"]  # the points inside the y range (log10)
    assert 10 ** lo < min(curve.y) and max(curve.y) < 10 ** hi


def test_the_check_is_its_own_dotted_fit_in_the_shared_figure(loaded):
    trials, _ = loaded
    [curve] = fit_learning_curves(trials, metric="test_loss", n_boot=40)
    fig = figs.learning_curves([curve])
    [dotted] = _named(fig, "extrapolation check")
    assert dotted["line"]["dash"] == "dot"
    x = np.array(dotted["x"])
    assert not np.allclose(dotted["y"], curve.fit.predict(x), rtol=1e-3)  # not the fit drawn
    [solid] = _named(fig, "fit: b = ")
    assert np.allclose(solid["y"], curve.fit.predict(np.array(solid["x"])), rtol=1e-6)
    v, lo, hi = curve.fit.param("b")
    assert solid["name"] == f"fit: b = {v:.3g} [{lo:.3g}, {hi:.3g}]"
    ringed = [t for t in fig["data"] if t.get("marker", {}).get("symbol") == "circle-open"]
    assert len(ringed) == 1 and set(ringed[0]["x"]) <= set(curve.fit.holdout.x)
    assert len(_named(fig, "95% band")) == 2  # over the data and past it
    [off] = fit_learning_curves(trials, metric="test_loss", n_boot=40, holdout=0)
    names = [t.get("name", "") for t in figs.learning_curves([off])["data"]]
    assert not any("check" in n or "prediction" in n for n in names)  # no mark, no entry


# --- the B_opt figure and ticks -------------------------------------------------------------


def test_the_pages_bopt_figure_is_the_rule_check(page, loaded):
    trials, _ = loaded
    [fig] = _figures(_sections(page)["bopt"])
    metric = re.fullmatch(r"B_opt \(best (\w+)\)", fig["layout"]["yaxis"]["title"]["text"])[1]
    result = find_bopt(trials, metric=metric, n_boot=40)
    ok = [g for g in result.groups if g.status == "ok" and g.b_opt > 0]
    [interior] = _named(fig, "interior B_opt")
    assert interior["y"] == pytest.approx([g.b_opt for g in ok])
    assert interior["x"] == pytest.approx([g.rule_x for g in ok])
    assert fig["layout"]["title"]["text"].endswith(result.rule.verdict.label)
    [rule] = _named(fig, "rule, slope 1")
    assert np.allclose(rule["y"], np.array(rule["x"]) / result.rule.g_opt.value)
    lo, hi = fig["layout"]["yaxis"]["range"]
    assert 10 ** lo < min(BATCHES) and max(BATCHES) < 10 ** hi




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
    lines = [t for t in figs.bopt(result)["data"] if t["mode"] == "lines"]  # the shared figure
    assert len(lines) == 2
    for t in lines:
        assert min(t["y"]) >= min(BATCHES) * 0.999 and max(t["y"]) <= max(BATCHES) * 1.001


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
    text = _outside_bundle(page)  # plotly.js inlined once, figures inline: nothing fetched
    assert "http:" not in text and "https:" not in text and " src=" not in text and "<link" not in text
    assert text.count("<script>") == 1 and "Plotly.newPlot" in text  # the bundle, then the drawing
    policy = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', text)[1]
    assert policy.startswith("default-src &#x27;none&#x27;;") and policy.count("sha256-") == 2
    assert text.count('<script type="application/json" class="fig-json">') == len(_figures(page)) == 7


def test_the_pages_parallel_coordinates_are_the_dashboards(page, loaded):
    trials, _ = loaded
    [fig] = _figures(_sections(page)["parcoords"])
    fr = tables.frame(trials)
    values = tables.metric(fr, "test_loss")
    assert fig == json.loads(json.dumps(figs.parcoords(  # the dashboard's figure, as it is
        fr, ["n_train", "batch_size", "momentum"], "test_loss", values, fr["trial_id"])))
    dims = fig["data"][0]["dimensions"]
    assert [d["label"] for d in dims] == ["n_train (log)", "batch_size (log)", "momentum", "test_loss"]
    finite = np.isfinite(values)
    assert len(dims[-1]["values"]) == finite.sum() > 0 and dims[-1]["values"] == \
        pytest.approx(values[finite].tolist())


def _outside_bundle(page: str) -> str:
    """The page without the inlined plotly.js (asserted to be the installed package's, once)."""
    with open(figs.plotly_js(), encoding="utf-8") as f:
        bundle = f"<script>{f.read()}</script>"
    assert page.count(bundle) == 1
    return page.replace(bundle, "")


def test_no_collapse_section_on_an_adamw_sweep(loaded, page):
    trials, _ = loaded
    adamw = trials.set_column(trials.column_names.index("optimizer"), "optimizer",
                              pa.array(["adamw"] * trials.num_rows))
    text = build_report(adamw, n_boot=30)
    sections = _sections(text)
    assert "collapse" not in sections and "Noise-scale collapse" not in text
    assert "No noise-scale collapse plot" in sections["bopt"] and "adamw" in sections["bopt"]
    assert "against lr*N/(1-m)" not in sections["bopt"][:200]
    [fig] = _figures(sections["bopt"])  # B_opt per group: the groups' labels on a category axis
    assert fig["layout"]["xaxis"]["type"] == "category"
    drawn = {x for t in fig["data"] for x in t["x"]}
    assert drawn and drawn <= set(fig["layout"]["xaxis"]["categoryarray"])
    assert all(x.startswith("n_train=") for x in drawn)
    [fig] = _figures(_sections(page)["collapse"])  # the same sweep with SGD has the plot
    [dots] = fig["data"]
    usable = [r for r in trials.to_pylist() if r["status"] == "ok" and r["batch_size"] <= r["n_train"]]
    g = sorted(r["lr"] * r["n_train"] / (r["batch_size"] * (1 - r["momentum"])) for r in usable)
    assert sorted(dots["x"]) == pytest.approx(g)  # g = lr N / (B (1-m)) of every usable trial
    left = trials.num_rows - len(usable)
    assert fig["layout"]["title"]["text"].startswith(
        f"noise-scale collapse: {len(usable)} trials plotted, {left} infeasible not shown")


def test_a_large_collapse_draws_an_even_spread_and_says_so():
    from analysis.rules.bopt import Collapse

    g = np.geomspace(1, 1000, 50)
    col = Collapse(metric="test_acc", g=g, y=np.linspace(0, 1, 50), n_train=np.full(50, 100.0),
                   outcomes={"ok": 50, "diverged": 3})
    fig = figs.collapse(col, limit=10)
    [dots] = fig["data"]
    assert len(dots["x"]) == 10 and dots["x"][0] == pytest.approx(1) and dots["x"][-1] == pytest.approx(1000)
    assert fig["layout"]["title"]["text"] == ("noise-scale collapse: 10 of 50 trials plotted (evenly "
                                              "spread), 3 infeasible not shown (diverged: 3)")
    assert len(figs.collapse(col)["data"][0]["x"]) == 50


def test_a_mixed_sweep_collapses_its_sgd_trials_only(loaded):
    from analysis.report import html

    trials, _ = loaded
    half = ["adamw" if i % 2 else "sgd" for i in range(trials.num_rows)]
    mixed = trials.set_column(trials.column_names.index("optimizer"), "optimizer", pa.array(half))
    assert html._optimizers(mixed) == (True, ["adamw"])
    assert html._optimizers(trials) == (True, [])  # no value: the schema's default, SGD
    body = html._collapse(mixed, [], "test_acc", ["adamw"])
    assert "SGD trials only" in body and len(_figures(body)) == 1
    assert len(_figures(body)[0]["data"][0]["x"]) <= (trials.num_rows + 1) // 2


def test_hostile_values_are_escaped(loaded):
    trials, curves = loaded
    evil = "<script>alert(1)</script>"
    t = trials.set_column(trials.column_names.index("task"), "task",
                          pa.array([evil] * trials.num_rows))
    t = t.set_column(t.column_names.index("sweep"), "sweep", pa.array([evil] * t.num_rows))
    page = build_report(t, source=evil, n_boot=30, by=("task",), curves=curves,
                        curves_where=f"task = '{evil}' AND n_train = 999")
    text = _outside_bundle(page)
    assert evil not in text and "alert(1)</script>" not in text and "<script>alert" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    names = [t.get("name", "") for f in _figures(text) for t in f["data"]]  # read back from JSON:
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in n for n in names)  # plotly shows it as text
    assert not any(evil in n for n in names)


def test_a_degenerate_section_leaves_the_rest_of_the_page(loaded):
    trials, curves = loaded
    page = build_report(trials, metric="no_such_metric", n_boot=30, curves=curves,
                        curves_where="n_train=2000,momentum=0")
    sections = _sections(page)
    assert "not available: unknown metric &#x27;no_such_metric&#x27;" in sections["learning-curves"]
    assert not _figures(sections["learning-curves"])
    assert "could not be fitted" in sections["training"] and _figures(sections["training"])
    assert _figures(sections["bopt"]) and _figures(sections["collapse"])
    assert "not available (see the learning-curve section)" in page


@pytest.mark.slow
def test_the_report_draws_every_figure_in_a_real_browser(page, tmp_path):
    """The page opened from a file in headless Chromium (no server, no network): every figure
    drawn by the inlined plotly.js with the traces of its JSON, and no console error."""
    from test_serve import _browser, _wait

    path = tmp_path / "report.html"
    path.write_text(page)
    expected = [len(f["data"]) for f in _figures(page)]
    browser = _browser()
    try:
        browser.get(path.as_uri())
        js = browser.execute_script
        drawn = _wait("every figure drawn", lambda: js(
            "const f = [...document.querySelectorAll('.plotly-fig')];"
            "return f.every(d => d.querySelector('.plot-container svg.main-svg')) && "
            "f.map(d => d.data ? d.data.length : -1)"))
        assert drawn == expected and len(drawn) == 7
        legend = js("return [...document.querySelectorAll('#learning-curves .legendtext')]"
                    ".map(t => t.textContent)")
        assert any(t.startswith("all: winners") for t in legend), legend
        severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
        # the page's policy: a script it did not write does not run, nothing is fetched
        hostile = tmp_path / "hostile.html"
        hostile.write_text(page.replace("</body>", "<script>document.title = 'ran'</script>"
                                        "<img src='http://127.0.0.1:9/x.png'></body>"))
        browser.get(hostile.as_uri())
        _wait("the figures of the altered page", lambda: js(
            "return document.querySelectorAll('.plotly-fig .main-svg').length > 0"))
        assert browser.title != "ran"
        refused = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert any("Content Security Policy" in m for m in refused), refused
    finally:
        browser.quit()
