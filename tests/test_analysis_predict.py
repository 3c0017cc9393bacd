"""scaling fit / fit-joint: curve families, predictions with intervals, honest warnings, holdout."""

import argparse
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest

from analysis.cli import register
from analysis.fit.forms.bounds import Bounds
from analysis.fit.forms.fit import fit_form
from analysis.fit.forms.on_curves import power_law_warnings
from analysis.fit.powerlaw import fit_power_law
from analysis.testing.synthetic import sweep_table, write_store

ROOT = Path(__file__).resolve().parents[1]


def run(*argv):
    parser = argparse.ArgumentParser(prog="scaling")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def bnsl(x, a=0.05, b=1.0, c0=0.05, c1=0.8, d1=3e3, f1=0.15):
    """A broken power law (Caballero et al. 2023, eq. 1): none of M1-M4, nor a*x^b + c."""
    return a + b * x ** -c0 * (1 + (x / d1) ** (1 / f1)) ** (-c1 * f1)


def _csv(tmp_path, name, **cols):
    path = tmp_path / name
    pcsv.write_csv(pa.table(cols), path)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    write_store(sweep_table(n_trains=(250, 500, 1000, 2000, 4000, 8000, 16000, 32000),
                            lrs=(0.05, 0.1), momenta=(0.0,),
                            batch_sizes=tuple(2 ** i for i in range(1, 13)),
                            seed=2), str(root))
    return root


# --- the broken power law (acceptance) ------------------------------------------------------


@pytest.mark.parametrize("d1, c1", [(2e4, 0.8), (3e3, 3.0)])
def test_broken_curve_picks_the_broken_form_or_warns_and_never_prints_an_undefined_number(
        tmp_path, capsys, monkeypatch, d1, c1):
    monkeypatch.setenv("COLUMNS", "400")  # one line per statement, as the checks below read them
    x = np.logspace(1, 5, 17)
    y = bnsl(x, d1=d1, c1=c1) * np.exp(0.002 * np.random.default_rng(5).standard_normal(17))
    path = _csv(tmp_path, "bnsl.csv", n=x[:14], test_loss=y[:14])
    argv = ("fit", path, "--x", "n", "--metric", "test_loss", "--boot", "100")
    assert run(*argv) == 0
    text = capsys.readouterr().out
    assert run(*argv, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    curve = out["curves"][0]
    fam = curve["family"]
    warned = [w for w in out["warnings"] if "held-out" in w]
    assert fam["selection"]["chosen"] == "BNSL" or warned, (fam["selection"], out["warnings"])
    assert "form auto: chose" in text and all(f in text for f in ("M1", "M2", "M3", "M4", "BNSL"))
    for w in warned:
        assert w.split("] ", 1)[1] in text
    # an undefined log error is "undefined" in text and None in JSON, never a number
    for line in text.splitlines():
        if "held-out RMSE" in line and "undefined" not in line:
            assert re.search(r"held-out RMSE[^,]* \d", line)
    hold = curve["fit"]["holdout"]
    if hold["n_undefined"]:
        assert hold["rmse_log"] is None and "log(pred/true) undefined" in text
    assert (hold["rmse_log"] is None) == (hold["n_undefined"] > 0)


def test_the_issue_case_a_power_law_whose_held_out_predictions_go_negative(tmp_path, capsys):
    """Unbounded, the power law's check predicts below zero (undefined, said so); by default the
    fit keeps a >= 0, b <= 0, c >= 0, so every held-out prediction is a positive number."""
    x = np.logspace(1, 5, 17)[:14]
    path = _csv(tmp_path, "bend.csv", n=x, test_loss=bnsl(x, d1=3e3, c1=3.0))
    argv = ("fit", path, "--x", "n", "--metric", "test_loss", "--boot", "50", "--json")
    assert run(*argv, "--unbounded") == 0
    out = json.loads(capsys.readouterr().out)
    hold = out["curves"][0]["fit"]["holdout"]
    assert out["curves"][0]["fit"]["monotone"] is None
    assert hold["rmse_log"] is None and hold["n_undefined"] >= 1
    assert any("held-out predictions of a*x^b + c are undefined" in w for w in out["warnings"])
    assert run(*argv) == 0
    fit = json.loads(capsys.readouterr().out)["curves"][0]["fit"]
    assert fit["monotone"] == "falling" and fit["bounds"].startswith("a >= 0, b <= 0, c >= 0")
    assert fit["holdout"]["n_undefined"] == 0 and fit["holdout"]["rmse_log"] > 0
    a, b, c = (fit["params"][k] for k in "abc")
    assert a["value"] >= 0 and b["value"] <= 0 and c["value"] >= 0
    assert a["ci_low"] >= 0 and b["ci_high"] <= 0 and c["ci_low"] >= 0


# --- predictions, forms and bounds ----------------------------------------------------------


def test_fit_predicts_with_a_band_and_a_prediction_interval_in_text_and_json(store, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # headers and notes unwrapped, as the checks below read them
    argv = ("fit", store, "--metric", "error", "--boot", "100", "--predict", "64000,128000")
    assert run(*argv, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    pred = out["curves"][0]["prediction"]
    for i in range(2):
        assert pred["pi_low"][i] <= pred["band_low"][i] <= pred["y"][i] <= pred["band_high"][i] \
            <= pred["pi_high"][i]
    assert pred["pi_high"][1] - pred["pi_low"][1] > pred["pi_high"][0] - pred["pi_low"][0]
    assert pred["form"] == out["curves"][0]["family"]["form"]
    assert "clustered seed replicates" in out["curves"][0]["family_note"]
    assert out["curves"][0]["fit"]["form"] == "a*x^b + c"  # the printed exponent stays its own
    assert run(*argv) == 0
    text = capsys.readouterr().out
    assert "predictions:" in text and "95% band" in text and "95% prediction interval" in text
    assert f"error ({pred['form']})" in text
    assert "treated as bounded in [0, 1]" in text


def test_prediction_intervals_hold_new_observations_of_simulated_sweeps():
    """On :mod:`analysis.testing.simulate` (preset ``shifted``: a seed moves every group's
    optimum at one N, t3 trial noise; winners chosen again in every seed replicate): the
    largest size's measured frontier, never fitted, is a new observation; the prediction
    interval must hold it, and the band (the fitted curve's own uncertainty, which leaves out
    the noise and the extrapolation error) must be narrower. Two replications here; the
    stress run (150 sweeps, the binomial arithmetic in
    :func:`analysis.bench.fits.sweep_coverage`) is ``python -m analysis.bench.fits
    --sweep-coverage 150``."""
    from analysis.bench.fits import sweep_coverage

    c = sweep_coverage(2, n_boot=100)
    assert c["total"] == 2 and c["narrower"] == 2
    assert c["hits"] == 2 and c["band_hits"] <= c["hits"], c


def test_form_replaces_the_power_law_and_every_number_names_its_form(store, capsys):
    assert run("fit", store, "--metric", "error", "--form", "M4", "--boot", "50",
               "--predict", "64000") == 0
    text = capsys.readouterr().out
    assert "a*x^b + c" not in text and "form M4:" in text and "error (M4)" in text
    assert "M4: points 8" in text and "extrapolation check (M4;" in text
    assert run("fit", store, "--metric", "error", "--form", "M2", "--json", "--boot", "50",
               "--bounded", "0,1") == 0
    curve = json.loads(capsys.readouterr().out)["curves"][0]
    assert curve["fit"] is None and curve["family"]["form"] == "M2"
    assert curve["family"]["bounds"]["reason"] == "given as (0, 1)"
    # issue 24: no family interval on a seeded sweep, with the reason in JSON (and text)
    assert curve["family"]["params"]["c"]["ci_low"] is None
    assert curve["family"]["interval_note"].startswith("no M2 parameter intervals on a seeded "
                                                       "sweep")


def test_an_undefined_prediction_prints_undefined(tmp_path, capsys):
    x = np.logspace(3, 5, 12)
    path = _csv(tmp_path, "rate.csv", n=x, test_error=0.6 * (x / 1e3) ** -0.3)
    assert run("fit", path, "--x", "n", "--metric", "test_error", "--form", "M1", "--predict",
               "1,1e6", "--boot", "50") == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if line.strip().startswith("1 "))
    assert row.split()[2] == "undefined"
    assert "1 of 2 predictions are undefined" in text


def test_bad_predict_and_bounded_values_are_one_line_errors(store, capsys):
    for flag, value, words in (("--predict", "1e5,x", "numbers separated by commas"),
                               ("--predict", "-5", "> 0"), ("--bounded", "1", "LOW,HIGH"),
                               ("--bounded", "1,0", "LOW < HIGH"), ("--delta", "-1", "> 0"),
                               ("--holdout", "-1", ">= 0")):
        assert run("fit", store, "--metric", "error", flag, value) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err


# --- --holdout: the Huber delta is chosen on the remaining points; the family is the one that predicts


def test_holdout_chooses_delta_on_the_remaining_points_and_checks_the_predicting_family():
    x = np.logspace(1, 5, 17)
    y = bnsl(x, d1=2e4)  # the held-out points bend away: with them the residual scale grows
    fit = fit_power_law(x, y, n_boot=0, holdout=4)
    alone = fit_power_law(x[:13], y[:13], n_boot=0, holdout=0)
    assert fit.holdout.delta == pytest.approx(alone.delta)
    assert fit.delta != pytest.approx(alone.delta)
    assert fit.holdout.params == pytest.approx(alone.params, rel=1e-6)
    fam = fit_form(x, y, "auto", n_boot=0, holdout=4)
    assert fam.holdout.form == fam.form == fam.selection.chosen  # one family, named once
    refit = fit_form(x[:13], y[:13], fam.form, n_boot=0, holdout=0)
    assert fam.holdout.in_sample_rmse_log == pytest.approx(refit.rmse_log)


# --- auto's choice depends on the fitted points only -----------------------------------------


def test_predicting_at_2x_or_32x_gives_the_same_family_and_parameters(tmp_path, capsys):
    """Issue 25: the family (and so every prediction) must not depend on where predictions are
    asked; text, JSON and warnings name one family."""
    x = np.logspace(3, 5, 10)
    y = (0.9 * x ** -0.3 + 0.05) * np.exp(0.01 * np.random.default_rng(3).standard_normal(10))
    path = _csv(tmp_path, "curve.csv", n=x, test_error=y)
    outs = []
    for at in (2 * x[-1], 32 * x[-1]):
        assert run("fit", path, "--x", "n", "--metric", "test_error", "--boot", "20",
                   "--predict", f"{at:g}", "--json") == 0
        outs.append(json.loads(capsys.readouterr().out)["curves"][0])
    (a, b) = outs
    assert a["family"]["form"] == b["family"]["form"] == a["prediction"]["form"] \
        == b["prediction"]["form"] == a["family"]["holdout"]["form"]
    assert a["family"]["params"] == b["family"]["params"]
    assert a["family"]["selection"] == b["family"]["selection"]
    assert run("fit", path, "--x", "n", "--metric", "test_error", "--boot", "20",
               "--predict", f"{32 * x[-1]:g}") == 0
    text = capsys.readouterr().out
    fam = a["family"]["form"]
    for line in text.splitlines():  # the check and any family warning name the predicting one
        if "extrapolation check (" in line or re.search(r"warning: the fitted (M\d|BNSL)", line):
            assert f"({fam}" in line or f"fitted {fam} " in line, line
    assert f"test_error ({a['family']['form']})" in text


def test_power_law_warnings_for_a_falling_metric():
    x = np.logspace(2, 4, 8)

    def fake(params, hold=None):
        return SimpleNamespace(form="a*x^b + c", params=params, x=x, holdout=hold)
    loss = Bounds()
    assert power_law_warnings(fake((2.0, -0.5, 0.1)), loss, False) == []
    unbounded = power_law_warnings(fake((-1e-3, 0.8, 2.0)), loss, False)  # c - small*x^0.8
    assert any("<= 0" in w for w in unbounded)
    rising = power_law_warnings(fake((1e-3, 0.5, 0.3)), loss, False)
    assert any("rises within the data" in w for w in rising)
    rate = Bounds(low=0.0, high=1.0)
    assert any("outside [0, 1]" in w for w in power_law_warnings(fake((5.0, -0.1, -3.0)), rate,
                                                                 False))
    ratio = SimpleNamespace(rmse_log=0.05, in_sample_rmse_log=0.01, ratio=5.0, x=(1e4,),
                            n_undefined=0)
    assert any("5.0x its in-sample" in w for w in power_law_warnings(fake((2.0, -0.5, 0.1),
                                                                          ratio), loss, False))


# --- fit-joint ------------------------------------------------------------------------------


def kaplan(n, d, an=0.076, ad=0.095, nc=8.8e13, dc=5.4e13):
    """1.5 + L(N, D) of Kaplan et al. (2020, eq. 1.5): not the additive law fitted here."""
    return 1.5 + ((nc / n) ** (an / ad) + dc / d) ** ad


def _joint_csv(tmp_path, seed=0):
    rng = np.random.default_rng(seed)
    n = np.repeat(np.logspace(6, 9, 5), 5)
    d = np.tile(np.logspace(8, 11, 5), 5)
    y = kaplan(n, d) * np.exp(0.01 * rng.standard_normal(n.size))
    return _csv(tmp_path, f"runs{seed}.csv", params=n, tokens=d, loss=y)


def test_fit_joint_predicts_with_intervals_and_checks_extrapolation(tmp_path, capsys):
    path = _joint_csv(tmp_path)
    argv = ("fit-joint", path, "--n", "params", "--d", "tokens", "--loss", "loss", "--boot", "100",
            "--predict", "N=1e10,D=1e12", "--predict", "params=1e8,tokens=1e10")
    assert run(*argv, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["delta"] == 1e-3  # the published recipe by default
    pred = out["predictions"]
    assert pred["n"] == [1e10, 1e8] and pred["d"] == [1e12, 1e10]
    for i, t in enumerate([kaplan(1e10, 1e12), kaplan(1e8, 1e10)]):
        assert pred["pi_low"][i] <= pred["band_low"][i] < pred["y"][i] < pred["band_high"][i] \
            <= pred["pi_high"][i]
        assert pred["pi_low"][i] <= t <= pred["pi_high"][i]  # data from another law
    assert pred["pi_high"][0] - pred["pi_low"][0] > pred["pi_high"][1] - pred["pi_low"][1]
    hold = out["holdout"]
    assert hold["rmse_log"] > 0 and hold["in_sample_rmse_log"] > 0 and len(hold["n"]) >= 1
    assert run(*argv) == 0
    text = capsys.readouterr().out
    assert "extrapolation check (E + A/N^alpha + B/D^beta" in text
    assert "predictions:" in text and "95% prediction interval" in text
    assert run(*argv[:-4], "--delta", "auto", "--json", "--holdout", "0") == 0
    auto = json.loads(capsys.readouterr().out)
    assert auto["delta"] >= 1e-3 and auto["holdout"] is None
    assert auto["holdout_note"] == "extrapolation check turned off"


def test_joint_prediction_intervals_hold_another_laws_truth():
    """Data from Kaplan et al.'s law, fitted with the additive one: the confidence band misses
    the truth far past the data's compute, the prediction interval (with the extrapolation
    error the check measured) holds it."""
    from analysis.fit.joint import fit_joint
    from analysis.fit.joint_check import joint_holdout, joint_predict

    points = [(1e10, 1e12), (3e9, 3e11), (1e8, 1e10)]
    hits = total = band_hits = 0
    for rep in range(5):
        rng = np.random.default_rng(rep)
        n = np.repeat(np.logspace(6, 9, 5), 5)
        d = np.tile(np.logspace(8, 11, 5), 5)
        y = kaplan(n, d) * np.exp(0.01 * rng.standard_normal(n.size))
        fit = fit_joint(n, d, y, n_boot=200, seed=rep)
        check, _ = joint_holdout(n, d, y, delta=1e-3)
        p = joint_predict(fit, *zip(*points), check=check, seed=rep)
        for i, (a, b) in enumerate(points):
            t = kaplan(a, b)
            hits += p.pi_low[i] <= t <= p.pi_high[i]
            band_hits += p.band_low[i] <= t <= p.band_high[i]
            total += 1
    assert hits >= total - 1 and band_hits < total, (hits, band_hits, total)


def test_fit_joint_predict_needs_n_and_d(tmp_path, capsys):
    path = _joint_csv(tmp_path)
    for bad in ("N=1e9", "N=1e9,X=2", "N=abc,D=1"):
        assert run("fit-joint", path, "--n", "params", "--d", "tokens", "--loss", "loss",
                   "--predict", bad) == 2
        assert "--predict" in capsys.readouterr().err


def test_fit_joint_warns_when_the_law_rises(tmp_path, capsys):
    rng = np.random.default_rng(3)
    n = np.repeat(np.logspace(6, 9, 5), 5)
    d = np.tile(np.logspace(8, 11, 5), 5)
    y = (2.0 + 400 / n ** 0.34 + 1e-4 * d ** 0.3) * np.exp(0.005 * rng.standard_normal(n.size))
    path = _csv(tmp_path, "rises.csv", N=n, D=d, L=y)
    assert run("fit-joint", path, "--n", "N", "--d", "D", "--loss", "L", "--boot", "50",
               "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert any("rises with D" in w for w in out["warnings"]), out["warnings"]


# --- every new flag is documented and in --help ----------------------------------------------

NEW_FLAGS = {"fit": ("--form", "--predict", "--bounded", "--holdout", "--where", "--filter",
                     "--minimize", "--maximize", "--delta"),
             "fit-joint": ("--predict", "--holdout", "--delta", "--where", "--filter"),
             "bopt": ("--batch", "--lr", "--scale", "--over", "--minimize", "--maximize",
                      "--where", "--filter"),
             "compute-optimal": ("--flops", "--where", "--filter"),
             "report": ("--filter",)}


@pytest.mark.parametrize("command", sorted(NEW_FLAGS))
def test_help_shows_every_new_flag(command, capsys):
    with pytest.raises(SystemExit) as stop:
        run(command, "--help")
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for flag in NEW_FLAGS[command]:
        assert flag in out, (command, flag)


def test_readme_and_docs_have_every_new_flag_with_an_example():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    examples = [line for page in pages for line in page.read_text().splitlines() if line.startswith("scaling ")]
    for command, flags in NEW_FLAGS.items():
        for flag in flags:
            assert any(line.startswith(f"scaling {command} ") and flag in line
                       for line in examples), (command, flag)


# --- the report and the plots ---------------------------------------------------------------


def test_report_shows_autos_choice_and_every_score_escaped(tmp_path):
    from analysis.report.html import write_report

    x = np.logspace(2, 4.5, 12)
    rows = {"n": np.tile(x, 2), "grp": ["<b>a</b>"] * 12 + ["b & c"] * 12,
            "test_loss": np.concatenate([2 * x ** -0.4 + 0.1, 3 * x ** -0.3 + 0.2])}
    path = _csv(tmp_path, "curves.csv", **rows)
    out = write_report(str(path), str(tmp_path / "r.html"), x="n", metric="test_loss",
                       by=("grp",), n_boot=50)
    page = Path(out).read_text()
    assert page.count("form auto: chose") == 2
    for form in ("M1", "M2", "M3", "M4", "BNSL"):
        assert f"\n  {form}  " in page or f"\n  {form} " in page
    assert "<b>a</b>" not in page and "&lt;b&gt;a&lt;/b&gt;" in page and "b &amp; c" in page
    assert "a*x^b + c" in page  # the exponent shown stays the power law's


def test_plots_of_a_family_fit_and_of_the_joint_optimum(store, tmp_path, capsys):
    png = tmp_path / "form.png"
    assert run("fit", store, "--metric", "error", "--form", "M2", "--boot", "20", "--plot",
               png) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    import lrgrid
    grid = tmp_path / "grid.csv"
    pcsv.write_csv(lrgrid.lr_batch_grid(seeds=(0,)), grid)
    png = tmp_path / "over.png"
    assert run("bopt", grid, "--over", "lr", "--batch", "bs", "--lr", "lr", "--scale", "N,D",
               "--metric", "eval_loss", "--plot", png) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "residuals and treat cells as independent" in capsys.readouterr().out


def test_plot_with_predict_draws_the_predicting_family_its_points_and_intervals(tmp_path):
    """Issue 25: without --form the power law is fitted, but the figure must show the family
    that predicted (solid over the data, dashed past it), the predicted points with their
    intervals, and no power-law band or check."""
    from analysis.fit.curves import fit_learning_curves
    from analysis.fit.forms.on_curves import add_forms
    from analysis.report.plots import plot_curves

    x = np.logspace(3, 5, 12)
    y = (0.9 * x ** -0.3 + 0.05) * np.exp(0.01 * np.random.default_rng(3).standard_normal(12))
    table = pa.table({"n": x, "test_error": y})
    curves = fit_learning_curves(table, x="n", metric="test_error", n_boot=30)
    at = [2e5, 8e5]
    [c] = add_forms(curves, predict=at, n_boot=40)
    ax = plot_curves([c]).axes[0]
    solid = [ln for ln in ax.lines if ln.get_linestyle() == "-"]
    dashed = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    gx, gy = solid[0].get_data()
    np.testing.assert_allclose(gy, c.family.predict(gx))  # the family, not the power law
    dx, dy = dashed[0].get_data()
    assert dx.min() == pytest.approx(x.max()) and dx.max() > max(at)
    np.testing.assert_allclose(dy, c.family.predict(dx))
    [bars] = ax.containers  # the predicted points with their prediction intervals
    px, py = bars.lines[0].get_data()
    np.testing.assert_allclose(px, at)
    np.testing.assert_allclose(py, c.prediction.y)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(f"prediction by {c.family.form}" in t for t in labels)
    assert any("prediction interval past the data" in t for t in labels)
    assert not any("extrapolation check" in t for t in labels)  # the power law's is not drawn
    assert len(ax.collections) >= 1  # the shaded interval
