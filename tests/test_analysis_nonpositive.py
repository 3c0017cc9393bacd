"""A zero or a negative in a log-fitted metric is dropped, counted and named, never an abort
(#25): an error rate that reaches 0 on a small test set is still a learning curve."""

import argparse
import json

import numpy as np

from analysis.cli import register


def run(*argv):
    parser = argparse.ArgumentParser(prog="scaling")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def test_fit_drops_a_zero_error_with_a_warning_naming_the_row(tmp_path, capsys):
    """Quantised error (a 200-example test set: multiples of 0.005) that reaches 0 at the
    largest n_train; the curve is fitted on the other 7 points."""
    n = np.array([100, 200, 400, 800, 1600, 3200, 6400, 12800])
    err = np.round(np.maximum(2.2 * n ** -0.55 - 0.012, 0) / 0.005) * 0.005
    assert err[-1] == 0 and (err[:-1] > 0).all()
    path = tmp_path / "curve.csv"
    path.write_text("n_train,err\n" + "".join(f"{a},{b}\n" for a, b in zip(n, err)))
    assert run("fit", path, "--x", "n_train", "--metric", "err", "--boot", "30") == 0
    out = " ".join(capsys.readouterr().out.split())  # lines wrap at the terminal's width
    assert "dropped 1 of 8 point(s) where err <= 0" in out
    assert "n_train=12800 (row 8; err=0)" in out and "points 7" in out


def test_fit_joint_drops_zero_and_negative_losses_and_still_recovers_the_law(tmp_path, capsys):
    ns, ds = np.meshgrid([1e6, 3e6, 1e7, 3e7], [1e8, 3e8, 1e9, 3e9], indexing="ij")
    loss = 1.7 + 400 / ns.ravel() ** 0.34 + 410 / ds.ravel() ** 0.28
    loss[[3, 9]] = [0.0, -0.1]
    path = tmp_path / "joint.csv"
    path.write_text("n_params,n_train,test_loss\n" + "".join(
        f"{a},{b},{c}\n" for a, b, c in zip(ns.ravel(), ds.ravel(), loss)))
    assert run("fit-joint", path, "--boot", "20", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["outcomes"] == {"ok": 14, "nonpositive": 2}
    (warn,) = [w for w in data["warnings"] if "<= 0" in w]
    assert "row 4 (n_params=1000000, n_train=3000000000, test_loss=0)" in warn
    assert "row 10 (" in warn and "test_loss=-0.1" in warn
    assert data["n_points"] == 14
    assert abs(data["params"]["alpha"]["value"] - 0.34) < 1e-3


def test_a_metric_that_is_never_positive_is_one_line_saying_why(tmp_path, capsys):
    path = tmp_path / "gap.csv"
    path.write_text("n_train,gapx\n" + "".join(f"{n},{-1 / n}\n" for n in (100, 200, 400, 800)))
    assert run("fit", path, "--x", "n_train", "--metric", "gapx") == 2
    err = capsys.readouterr().err.strip()
    assert "nothing left to fit: dropped 4 of 4 point(s) where gapx <= 0" in err
    assert "\n" not in err


def test_a_zero_seed_does_not_change_the_winner_or_the_mean(tmp_path, capsys):
    """Seeds of one configuration: a seed at error 0 is a result, kept in the mean (dropping the
    row would bias the point upwards) and the point is fitted; only a point whose winning mean
    is <= 0 is dropped."""
    rows = ["n_train,lr,seed,err"]
    for n in (100, 200, 400, 800, 1600, 3200):
        for lr in (0.1, 0.2):
            for s in range(4):
                e = 2.0 * n ** -0.5 * (1.0 if lr == 0.1 else 1.3) * (1 + 0.05 * (s - 1.5))
                e = 0.0 if (n == 3200 and lr == 0.1 and s == 0) else e
                rows.append(f"{n},{lr},{s},{e:.6f}")
    path = tmp_path / "seeds.csv"
    path.write_text("\n".join(rows) + "\n")
    assert run("fit", path, "--x", "n_train", "--metric", "err", "--boot", "20", "--json") == 0
    curve = json.loads(capsys.readouterr().out)["curves"][0]
    last = curve["points"][-1]
    assert last["x"] == 3200 and last["config"] == {"lr": 0.1} and last["n_seeds"] == 4
    assert last["y"] < 2.0 * 3200 ** -0.5            # the zero seed is in the mean
    assert curve["fit"]["n_points"] == 6 and not curve["dropped"]
