"""Any table in: --where with commas and repeats, --filter, named columns and bopt --over lr."""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest

from analysis import tables
from analysis.rules.joint_optimum import find_joint_optimum
from analysis.cli import register
from analysis.errors import AnalysisError
from analysis.tables.sqlfilter import apply_filter, filter_rows

sys.path.insert(0, str(Path(__file__).parent))
import lrgrid  # noqa: E402


def run(*argv):
    parser = argparse.ArgumentParser(prog="scaling")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.fixture(scope="module")
def grid_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("grid") / "published.csv"
    pcsv.write_csv(lrgrid.lr_batch_grid(), path)
    return path


# --- --where and --filter -----------------------------------------------------------------


def test_where_values_may_hold_commas_and_the_flag_repeats():
    cols = ["Model", "lr", "batch_size"]
    assert tables.parse_where("Model=28 Enc, 6 Dec", cols) == {"Model": "28 Enc, 6 Dec"}
    assert tables.parse_where("lr=0.1,batch_size=32", cols) == {"lr": "0.1", "batch_size": "32"}
    assert tables.parse_where(["lr=0.1", "Model=28 Enc, 6 Dec, x"], cols) == \
        {"lr": "0.1", "Model": "28 Enc, 6 Dec, x"}
    with pytest.raises(AnalysisError, match="twice"):
        tables.parse_where(["lr=0.1", "lr=0.2"], cols)
    with pytest.raises(AnalysisError, match="COL=VALUE"):
        tables.parse_where("lr", cols)


def test_fit_selects_a_model_whose_name_has_a_comma(tmp_path, capsys):
    x = np.logspace(2, 4, 8)
    rows = {"Model": ["28 Enc, 6 Dec"] * 8 + ["6 Enc, 6 Dec"] * 8, "n": np.tile(x, 2),
            "loss": np.concatenate([2 * x ** -0.3 + 0.1, 5 * x ** -0.5 + 0.2])}
    path = tmp_path / "models.csv"
    pcsv.write_csv(pa.table(rows), path)
    assert run("fit", path, "--x", "n", "--metric", "loss", "--where", "Model=28 Enc, 6 Dec",
               "--boot", "50", "--json", "--holdout", "0") == 0
    curve = json.loads(capsys.readouterr().out)["curves"][0]
    assert curve["fit"]["n_points"] == 8
    assert curve["fit"]["params"]["b"]["value"] == pytest.approx(-0.3, abs=0.02)
    assert run("fit", path, "--x", "n", "--metric", "loss", "--filter",
               "Model = '6 Enc, 6 Dec' AND n >= 100", "--boot", "50", "--json", "--holdout",
               "0") == 0
    curve = json.loads(capsys.readouterr().out)["curves"][0]
    assert curve["fit"]["params"]["b"]["value"] == pytest.approx(-0.5, abs=0.02)


def test_filter_is_one_expression_in_a_locked_down_connection(tmp_path):
    table = pa.table({"a": [1, 2, 3], "Model": ["x", "28 Enc, 6 Dec", "y"],
                      "train loss": [1.0, 2.0, 3.0]}).replace_schema_metadata({b"k": b"v"})
    assert list(filter_rows(table, "a > 1")) == [1, 2]
    assert list(filter_rows(table, "a IS DISTINCT FROM 2")) == [0, 2]
    assert list(filter_rows(table, '"train loss" < 2.5')) == [0, 1]
    assert apply_filter(table, "a > 1").schema.metadata == {b"k": b"v"}  # declared axes kept
    secret = tmp_path / "secret.csv"
    secret.write_text("x\n1\n")
    for bad, words in [("a > 1; DROP TABLE t", "one SQL expression"),
                       (f"(SELECT count(*) FROM read_csv('{secret}')) > 0", "one SQL expression"),
                       ("(FROM t SELECT count(*)) > 0", "one SQL expression"),
                       ("1=1) OR (1=1", "not a single SQL expression"),
                       (f"read_text('{secret}') <> ''", "failed"),
                       ("install httpfs", "failed"),
                       ("nope > 1", "the table has: a, Model"),
                       ("a > 10", "no row matches")]:
        with pytest.raises(AnalysisError, match=words):
            filter_rows(table, bad)


def test_filter_mistakes_are_one_line_errors(grid_csv, capsys):
    assert run("bopt", grid_csv, "--metric", "eval_loss", "--batch", "bs", "--filter",
               "lr > 1; DROP TABLE t") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --filter")


# --- named columns, bookkeeping and replicates ---------------------------------------------


def test_bookkeeping_columns_that_differ_between_seeds_do_not_split_or_stop(grid_csv, capsys):
    """run ids, timestamps and hosts differ on every row; only --axes and the named columns
    define a configuration, and rows of one cell that differ only there are seeds."""
    assert run("bopt", grid_csv, "--metric", "eval_loss", "--batch", "bs", "--lr", "lr",
               "--axes", "N,D", "--boot", "50", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["groups"]) == len(lrgrid.NS) * len(lrgrid.DS) * len(lrgrid.LRS)
    assert set(out["axes"]) == {"N", "D", "lr"} and out["batch"] == "bs"
    assert out["verdict"] is None and "missing: n_train, momentum" in out["rule_note"]
    assert all(max(g["n_seeds"]) == 3 for g in out["groups"])


def test_rows_sharing_a_seed_in_one_cell_still_stop_with_the_column_to_declare(grid_csv, capsys):
    assert run("bopt", grid_csv, "--metric", "eval_loss", "--batch", "bs", "--boot", "20") == 2
    err = capsys.readouterr().err
    assert "different configurations, not seeds" in err and "--axes" in err


def test_minimize_and_maximize_override_the_name(tmp_path, capsys):
    table = lrgrid.lr_batch_grid()
    score = pa.array([-v if v == v else v for v in table.column("eval_loss").to_pylist()])
    path = tmp_path / "score.csv"
    pcsv.write_csv(table.append_column("neg_loss", score), path)
    common = ("--batch", "bs", "--lr", "lr", "--scale", "N,D", "--over", "lr", "--boot", "0",
              "--json")
    assert run("bopt", path, "--metric", "neg_loss", "--maximize", *common) == 0
    best = json.loads(capsys.readouterr().out)
    assert run("bopt", path, "--metric", "eval_loss", *common) == 0
    ref = json.loads(capsys.readouterr().out)
    assert best["maximize"] is True and ref["maximize"] is False
    assert [c["b_best"] for c in best["cells"]] == [c["b_best"] for c in ref["cells"]]
    assert run("bopt", path, "--metric", "neg_loss", "--minimize", *common) == 0
    worst = json.loads(capsys.readouterr().out)
    assert [c["b_best"] for c in worst["cells"]] != [c["b_best"] for c in ref["cells"]]


# --- the joint (lr, B) optimum -------------------------------------------------------------


def test_over_lr_recovers_every_grid_optimum_and_the_batch_exponent(grid_csv, capsys):
    """Acceptance: known per-cell optima over several (N, D), batch sizes not powers of two,
    bookkeeping columns present, nothing renamed."""
    assert not any(b & (b - 1) == 0 for b in lrgrid.BATCHES)
    assert run("bopt", grid_csv, "--over", "lr", "--batch", "bs", "--lr", "lr", "--scale", "N,D",
               "--metric", "eval_loss", "--boot", "200", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["cells"]) == len(lrgrid.NS) * len(lrgrid.DS)
    for cell in out["cells"]:
        assert (cell["lr_best"], cell["b_best"]) == pytest.approx(
            lrgrid.grid_argmin(cell["cell"]["N"], cell["cell"]["D"]), rel=1e-12), cell
    laws = {law["target"]: law["params"] for law in out["laws"] if law["scale"] == ["N", "D"]}
    b_d = laws["B_opt"]["exponent of D"]
    assert abs(b_d["value"] - lrgrid.B_EXP) < 0.05 and b_d["ci_low"] < b_d["value"] < b_d["ci_high"]
    assert abs(laws["B_opt"]["exponent of N"]["value"]) < 0.05
    assert abs(laws["lr_opt"]["exponent of N"]["value"] - lrgrid.LR_N) < 0.05
    assert abs(laws["lr_opt"]["exponent of D"]["value"] - lrgrid.LR_D) < 0.05
    assert any(c["flagged"] for c in out["cells"])  # the diverged corner is left out, and said
    assert run("bopt", grid_csv, "--over", "lr", "--batch", "bs", "--lr", "lr", "--scale", "N,D",
               "--metric", "eval_loss", "--boot", "50") == 0
    text = capsys.readouterr().out
    assert "B_opt = k * N^e_N * D^e_D" in text and "exponent of D" in text
    assert "quadratic bowl" in text and "verdict" not in text


def test_intervals_of_the_laws_cover_the_truth_across_seeds():
    """Over independent draws (seed effects and trial noise), the 95% intervals of the three
    generating exponents hold them in most; a small run, not a calibration study."""
    hits, total = 0, 0
    for rep in range(6):
        table = tables.declare(lrgrid.lr_batch_grid(seed=rep, noise=3e-4),
                               axes=["N", "D", "lr", "bs"])
        res = find_joint_optimum(table, metric="eval_loss", batch="bs", lr="lr",
                                 scale=("N", "D"), n_boot=100, seed=rep)
        laws = {law.target: law for law in res.laws if law.scale == ("N", "D")}
        for target, name, truth in (("B_opt", "exponent of D", lrgrid.B_EXP),
                                    ("lr_opt", "exponent of N", lrgrid.LR_N),
                                    ("lr_opt", "exponent of D", lrgrid.LR_D)):
            _, lo, hi = laws[target].param(name)
            hits += lo <= truth <= hi
            total += 1
    assert hits >= total - 2, (hits, total)


def test_an_edge_optimum_is_a_bound_not_an_estimate():
    table = lrgrid.lr_batch_grid(seeds=(0, 1))
    keep = pa.array([b >= 136 for b in table.column("bs").to_pylist()])  # cut the small batches
    res = find_joint_optimum(tables.declare(table.filter(keep), axes=["N", "D", "lr", "bs"]),
                             metric="eval_loss", batch="bs", lr="lr", scale=("N", "D"),
                             n_boot=50)
    low = [c for c in res.cells if c.b_best == 136]
    assert {c.key["D"] for c in low} >= {lrgrid.DS[0]}  # true B_opt 100 < 136 there
    bound = np.sqrt(136 * 224)  # the optimum lies below halfway (in log) to the neighbour
    assert all(c.b_side == "low" and c.b_opt == pytest.approx(bound) and not np.isfinite(c.b_ci[0])
               for c in low)
    assert all(c.b_side == "" for c in res.cells if c.b_best > 136)
    law = next(l for l in res.laws if l.target == "B_opt")
    assert law.n_censored == len(low) and law.n_observed == len(res.cells) - len(low)


def test_over_lr_needs_scale_columns_and_scale_needs_over(grid_csv, capsys):
    assert run("bopt", grid_csv, "--over", "lr", "--batch", "bs", "--metric", "eval_loss") == 2
    assert "--scale" in capsys.readouterr().err
    assert run("bopt", grid_csv, "--scale", "N,D", "--batch", "bs", "--metric", "eval_loss") == 2
    assert "--over lr" in capsys.readouterr().err


def test_a_replicate_column_named_by_seed_is_never_tuned_over(tmp_path, capsys):
    """--seed run_seed: the replicate column is not an axis to choose a winner over (before,
    every seed became its own configuration and the frontier came out empty)."""
    rng = np.random.default_rng(0)
    rows = [{"n": n, "lr": lr, "run_seed": s, "host": f"h{s}",
             "loss": (2 * n ** -0.4 + 0.1) * (1.1 if lr == 0.2 else 1.0)
             * np.exp(0.01 * rng.standard_normal())}
            for n in (100, 200, 400, 800, 1600, 3200) for lr in (0.1, 0.2) for s in range(4)]
    path = tmp_path / "seeds.csv"
    pcsv.write_csv(pa.Table.from_pylist(rows), path)
    assert run("fit", path, "--x", "n", "--metric", "loss", "--axes", "lr", "--seed", "run_seed",
               "--boot", "50", "--json") == 0
    curve = json.loads(capsys.readouterr().out)["curves"][0]
    assert curve["over"] == ["lr"] and all(p["n_seeds"] == 4 for p in curve["points"])
    assert all(p["config"] == {"lr": 0.1} for p in curve["points"])


def test_a_scale_column_fixed_by_the_cell_need_not_be_an_axis():
    table = lrgrid.lr_batch_grid(seeds=(0, 1))
    table = table.append_column("n_params", pa.array([1.1 * n for n in
                                                      table.column("N").to_pylist()]))
    table = table.append_column("step_time", pa.array(np.arange(table.num_rows) + 1.0))
    res = find_joint_optimum(tables.declare(table, axes=["N", "D", "lr", "bs"]),
                             metric="eval_loss", batch="bs", lr="lr",
                             scale=("n_params", "D", "step_time"), n_boot=50)
    laws = {law.target: law for law in res.laws if len(law.scale) == 3}
    assert abs(laws["lr_opt"].param("exponent of n_params")[0] - lrgrid.LR_N) < 0.05
    assert "not one value per cell" in laws["B_opt"].not_estimated["step_time"]


def _two_models_sharing_d(tmp_path):
    """lrgrid with each model size's learning rates off by 1e-4 relative (the 4th digit), as a
    published grid rounds them: no (D, lr, B) point repeats across model sizes."""
    table = lrgrid.lr_batch_grid(seeds=(0,))
    rank = {n: i for i, n in enumerate(lrgrid.NS)}
    lr = [v * (1 + 1e-4 * rank[n]) for v, n in zip(table.column("lr").to_pylist(),
                                                   table.column("N").to_pylist())]
    table = table.set_column(table.schema.get_field_index("lr"), "lr", pa.array(lr))
    path = tmp_path / "sizes.csv"
    pcsv.write_csv(table, path)
    return path


def test_over_lr_refuses_to_merge_model_sizes_that_share_d(tmp_path, capsys):
    """Acceptance (#25): --scale D on a grid with several N per D is refused, naming N and the
    fix, never merged into one cell per D (which found 4 cells instead of 12 before)."""
    path = _two_models_sharing_d(tmp_path)
    common = ("--over", "lr", "--batch", "bs", "--lr", "lr", "--metric", "eval_loss", "--boot", "0")
    assert run("bopt", path, "--scale", "D", *common) == 2
    err = capsys.readouterr().err
    assert "differ in N (10000000, 30000000, 120000000)" in err and "--scale N,D" in err
    assert err.count("\n") == 1
    assert run("bopt", path, "--scale", "D", "--by", "N", *common, "--json") == 0   # split
    out = json.loads(capsys.readouterr().out)
    assert len(out["cells"]) == len(lrgrid.NS) * len(lrgrid.DS)


def test_over_lr_prints_the_d_only_and_the_n_d_laws_in_one_run(tmp_path, capsys):
    path = _two_models_sharing_d(tmp_path)
    assert run("bopt", path, "--scale", "N,D", "--over", "lr", "--batch", "bs", "--lr", "lr",
               "--metric", "eval_loss", "--boot", "0", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["cells"]) == len(lrgrid.NS) * len(lrgrid.DS)
    laws = {(law["target"], tuple(law["scale"])): law["params"] for law in out["laws"]}
    assert set(laws) == {(t, s) for t in ("B_opt", "lr_opt") for s in (("N", "D"), ("N",), ("D",))}
    assert abs(laws["B_opt", ("D",)]["exponent of D"]["value"] - lrgrid.B_EXP) < 0.02
    assert abs(laws["B_opt", ("N", "D")]["exponent of D"]["value"] - lrgrid.B_EXP) < 0.02
    assert abs(laws["lr_opt", ("N", "D")]["exponent of N"]["value"] - lrgrid.LR_N) < 0.02
    assert run("bopt", path, "--scale", "N,D", "--over", "lr", "--batch", "bs", "--lr", "lr",
               "--metric", "eval_loss", "--boot", "0") == 0
    text = capsys.readouterr().out
    assert "B_opt = k * D^e_D" in text and "B_opt = k * N^e_N * D^e_D" in text
