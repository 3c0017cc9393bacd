"""The Revisiting-NSL extrapolation benchmark: shipped data, protocol, and a fast subset."""

import csv

import numpy as np
import pytest

import analysis.bench.extrapolation as bench


@pytest.fixture(scope="module")
def curves():
    return bench.load_curves()


def test_the_shipped_file_holds_the_72_curves_of_the_protocol(curves):
    assert len(curves) == 72
    assert {c.dataset for c in curves} == {"Birds", "CIFAR100", "Caltech101", "ImageNet"}
    assert {c.shot for c in curves} == {"5-shot", "10-shot", "25-shot"}
    for c in curves:
        assert c.x_test.size > 0 and c.x_fit.size >= 10
        assert c.x_test.min() > c.x_fit.max()  # held-out points are extrapolations
        assert np.all((c.y_fit > 0) & (c.y_fit < 1))


def test_the_development_split_never_touches_held_out_points(curves):
    dev = bench.load_curves(dev=True)
    for c, d in zip(curves, dev):
        assert (c.task, c.model) == (d.task, d.model)
        assert d.x_test.max() <= c.x_fit.max()
        assert np.isin(d.x_test, c.x_fit).all() and np.isin(d.x_fit, c.x_fit).all()


def test_a_subset_scores_every_method_and_m4_beats_a_plain_power_law(curves):
    subset = [c for c in curves if c.task == "inet_10"]  # six architectures, ImageNet 10-shot
    results = bench.run(subset, n_boot=50, calibrate=False)
    s = bench.summarize(results)
    assert s["n_scored"] == 6
    means = s["means"]["all"]
    assert means["M4"] < means["M1"]  # the paper's finding: the bounded form extrapolates better
    assert all(np.isfinite(v) and v > 0 for v in means.values())
    assert 0.0 < s["coverage"]["auto"] <= 1.0
    assert sum(s["chosen"].values()) == 6
    assert sum(s["wins"].values()) == pytest.approx(1.0)


def test_main_prints_the_table_from_a_given_file(tmp_path, capsys):
    with open(bench.DATA, newline="") as fh:
        rows = list(csv.DictReader(fh))
    keep = [r for r in rows if r["Model"] == "ViT/B/16" and r["Task"] in ("bird_5", "cal_25")]
    path = tmp_path / "small.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    assert bench.main(["--data", str(path), "--workers", "1", "--boot", "30"]) == 0
    out = capsys.readouterr().out
    assert "paper's protocol" in out and "2 of 2 curves" in out
    header = next(line for line in out.splitlines() if line.startswith("curves"))
    assert header.split()[2:] == list(bench.COLUMNS)  # every family, auto, auto tuned LODO
    assert "prediction intervals" in out and "auto vs M4" in out
    assert "curves with no more misses than 95% implies" in out
    assert "leave-one-dataset-out: auto" in out and "calibrated across curves" in out


def test_an_undefined_prediction_scores_none_not_a_number(curves):
    c = curves[0]
    broken = bench.Curve(task=c.task, model=c.model, x_fit=c.x_fit, y_fit=c.y_fit,
                         x_test=np.array([1.0]), y_test=np.array([0.5]))  # x = 1: M1 predicts > 1
    r = bench.evaluate(broken, n_boot=20)
    assert r.rmse["M1"] is None
    assert bench.summarize([r])["n_scored"] == 0
