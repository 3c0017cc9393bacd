"""digits are 8x8 images: the CNN and ResNet read them as 1x8x8, the MLP still reads the same 64
features (so the trial ids and results of MLP-on-digits sweeps do not change), and a CNN sweep
on digits packs through the vmap backend on a real local Ray (one pack per width: a pack holds
one model shape)."""

from __future__ import annotations

import pytest
import torch

from conftest import write_config
from scaling.config.sweep import load_config, parse_config
from scaling.spec.schema import trial_id
from scaling.store.views import load_tables
from scaling.tasks.resolve import load_task, task_kind, task_shape, validate_task
from scaling.training.models import ResNet, SmallCNN, make_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_digits_are_one_channel_8x8_images_stored_flat():
    task = validate_task({"name": "digits"})
    data = load_task(task)
    assert data.input_shape == (1, 8, 8) and data.kind == "images" == task_kind(task)
    assert data.x_train.shape == (1200, 64) and data.input_dim == 64, "stored flat, as before"
    assert task_shape(task) == (64, 10, 1200, 597)


def test_the_mlp_on_digits_keeps_its_trial_ids_and_its_first_layer():
    cfg = parse_config({"name": "t", "task": {"name": "digits"}, "model": {"name": "mlp", "width": 16, "depth": 1},
                        "axes": {"n_train": 100, "batch_size": 32, "lr": 0.1, "momentum": 0.9},
                        "budget": {"epochs": 20}})
    (trial,) = cfg.trials()
    assert trial.trial_id == trial_id(trial.to_dict()) == "cc9b1092f475e000", "tests/test_config.py's golden id"
    mlp = make_model({"name": "mlp", "width": 16, "depth": 1}, load_task(trial.task), 0)
    assert mlp[0].in_features == 64


@pytest.mark.parametrize("depth", [0, 1, 2, 3, 4, 5])
def test_the_cnn_works_at_8x8_at_any_depth(depth):
    model = SmallCNN((1, 8, 8), 10, 4, depth)
    assert model(torch.randn(3, 64)).shape == (3, 10)  # pooling stops at 1x1, never below


@pytest.mark.parametrize("depth", [1, 2])
def test_the_resnet_works_at_8x8(depth):
    assert ResNet((1, 8, 8), 10, 1, depth)(torch.randn(3, 64)).shape == (3, 10)  # 8 -> 8 -> 4 -> 2


def test_cnn_and_resnet_on_digits_validate():
    for model in ({"name": "cnn", "width": 8, "depth": 2}, {"name": "resnet", "width": 1, "depth": 1}):
        cfg = parse_config({"name": "t", "task": {"name": "digits"}, "model": model,
                            "axes": {"n_train": 64, "batch_size": 16, "lr": 0.05}, "budget": {"steps": 2}})
        assert cfg.engine == "packed" and cfg.trials()[0].model == model["name"]


CNN_SWEEP = """
name: cnn-digits
task: {name: digits}
model: {name: cnn, depth: 2}
axes:
  width: [4, 8]
  n_train: [64, 128]
  batch_size: 16
  lr: [0.05, 0.1]
  momentum: 0.9
budget: {steps: 6}
eval: {points: 2}
resources: {cpu: 1}
"""


@pytest.mark.slow
def test_a_cnn_sweep_on_digits_runs_packed_through_vmap(ray_local, tmp_path):
    from cluster.driver.sweep import run_sweep

    path = write_config(tmp_path, CNN_SWEEP)
    summary = run_sweep(load_config(path), path.read_text(), str(tmp_path / "results"), progress=False,
                        log=lambda *_: None)
    assert summary.counts == {"ok": 8, "diverged": 0, "failed": 0}
    trials, _ = load_tables(str(tmp_path / "results"))
    rows = trials.to_pylist()
    assert len(rows) == 8 and {r["status"] for r in rows} == {"ok"}
    assert {(r["model"], r["engine"], r["backend"]) for r in rows} == {("cnn", "packed", "vmap")}
    assert {r["width"] for r in rows} == {4, 8} and all(r["train_flops"] > 0 for r in rows)
