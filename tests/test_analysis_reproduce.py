"""The headline figures of make reproduce, on synthetic sweeps with a known answer."""

from __future__ import annotations

import analysis.report.reproduce as reproduce
from analysis.testing.synthetic import sweep_table, write_store


def test_reproduce_reports_known_exponents_and_where_the_rule_breaks(tmp_path):
    # B_opt = k (lr N/(1-m))^0.5: the combined slope and each exponent are 0.5, not 1
    write_store(sweep_table(power=0.5, sweep="bopt_rule", seed=1), str(tmp_path))
    write_store(sweep_table(batch_sizes=(64,), lrs=(0.1,), momenta=(0.9,), seeds=(0, 1, 2, 3),
                            n_trains=(100, 200, 400, 800, 1600, 3200), curve=(2.0, -0.5, 0.0), width=0.0,
                            sweep="learning_curve", seed=2), str(tmp_path))
    fig = reproduce.measure(str(tmp_path), metric="test_loss", n_boot=200)
    b = fig["power_law_offset"]["b"]
    assert b["ci_low"] <= -0.5 <= b["ci_high"]
    verdict = fig["bopt"]["verdict"]
    assert verdict["label"] == "inconsistent"
    assert set(verdict["axes"]) == {"lr", "n_train", "momentum"}
    slope = fig["bopt"]["slope"]
    assert slope["ci_low"] <= 0.5 <= slope["ci_high"]
    lines = reproduce.figure_lines(fig)
    assert any(line.startswith("verdict: inconsistent (lr, n_train, momentum)") for line in lines)
    assert any("n_train exponent" in line and "excludes 1" in line for line in lines)
    out = reproduce.write(str(tmp_path), str(tmp_path / "report.html"), fig, n_boot=200)
    page = open(out).read()
    assert page.count('<script type="application/json" class="fig-json">') >= 3  # plotly figures
    assert "Headline figures" in page


def test_missing_sweep_is_one_clear_error(tmp_path):
    write_store(sweep_table(sweep="bopt_rule"), str(tmp_path))
    assert reproduce.main([str(tmp_path)]) == 2
