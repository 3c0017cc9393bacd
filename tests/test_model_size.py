"""A model the validator's width and depth bounds allow but no device can hold, and one too large
to build in the driver (issue 26, item 10), and a tiny resources.cpu (item 14), through the real
command's --dry-run (nothing of Ray started): one line, never a traceback, nothing allocated."""

from __future__ import annotations

import re

import pytest
from conftest import run_cli_measured, write_config

pytestmark = pytest.mark.slow

CONFIG = """
name: {name}
task: {task}
model: {{name: {model}, width: {width}, depth: {depth}}}
axes: {{n_train: [100], batch_size: [8], lr: [0.1, 0.2]}}
budget: {{steps: 2}}
eval: {{points: 2}}
resources: {{cpu: {cpu}}}
"""
TEXT = "{name: text, corpus: stdlib}"
DIGITS = "{name: digits}"


def dry_run(tmp_path, **fields) -> tuple[int, str, str, int]:
    """``scaling sweep --dry-run``: exit code, stdout, stderr and its peak RSS in MiB."""
    config = write_config(tmp_path, CONFIG.format(**{"cpu": 1, "depth": 1, **fields}))
    r = run_cli_measured("sweep", str(config), "--results", str(tmp_path / "r"), "--dry-run")
    return r["rc"], r["out"], r["err"], int(r["rss_mb"])


@pytest.mark.parametrize("model, task, width, depth", [("transformer", TEXT, 65536, 1), ("cnn", DIGITS, 65536, 2)])
def test_a_model_no_device_can_hold_is_one_line_before_anything_is_built(tmp_path, model, task, width, depth):
    code, out, err, rss = dry_run(tmp_path, name="huge", model=model, task=task, width=width, depth=depth)
    assert code == 2, (out, err)
    assert re.match(rf"error: config key 'model': a {model} of width {width} and depth {depth} has [\d,]+ "
                    r"parameters \([\d,]+ GiB in float32\), over the 8,589,934,592 one device can train", err), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert rss < 2048, f"nothing of the model was allocated ({rss} MiB)"


def test_a_model_too_large_to_measure_is_never_built_in_the_driver_and_a_tiny_cpu_share_is_bounded(tmp_path):
    """A transformer of width 4096 (201 million parameters, allowed): the planner used to build two
    (1.6 GB) in the driver to size its packs; it counts them on torch's meta device now. With
    resources.cpu 0.001 (2,000 trials at once on 2 CPUs), the trials run at once are bounded."""
    code, out, err, rss = dry_run(tmp_path, name="big", model="transformer", task=TEXT, width=4096, cpu=0.001)
    assert code == 0, err
    text = " ".join(out.split())
    assert re.search(r"engine: 2 trials run single, not packed: model 'transformer' of width 4096 has "
                     r"[\d,]+ parameters", text), out
    print(f"dry run peak RSS {rss} MiB")
    assert rss < 1200, f"the models were not built in the driver (peak {rss} MiB)"
    at_once, cpus = map(int, re.search(r"(\d+) at once on (\d+) CPUs", text).groups())
    assert 1 <= at_once <= 8 * cpus and f"running at most {at_once} " in text, out
