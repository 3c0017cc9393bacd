"""run_trial: real torch training on the built-in tasks, no Ray."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scaling.spec.schema import trial_id
from scaling.tasks.resolve import load_task
from scaling.training.data import BatchStream, subset_indices
from scaling.training.loop import eval_steps
from scaling.training.run import run_trial
from scaling.spec.schema import total_steps


def trial(**kw):
    base = {"task": {"name": "digits"}, "model": {"name": "mlp", "width": 32, "depth": 1},
            "n_train": 200, "batch_size": 32, "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0,
            "seed": 0, "budget": {"epochs": 5.0}, "eval": {"points": 6}}
    return {**base, **kw}


def test_subsets_are_nested_and_seeded():
    small, big = subset_indices(3, 1500, 100), subset_indices(3, 1500, 400)
    assert len(set(small)) == 100 and set(small) <= set(big)
    assert not np.array_equal(subset_indices(4, 1500, 100), small)


def test_batch_stream_covers_each_epoch_once():
    stream = BatchStream(0, 10)
    first_epoch = np.concatenate([stream.take(4), stream.take(4), stream.take(2)])
    assert sorted(first_epoch) == list(range(10))


def test_eval_steps_include_start_and_end():
    t = trial()
    steps = total_steps(t)
    assert steps == math.ceil(5 * 200 / 32)
    points = eval_steps(t, steps)
    assert points[0] == 0 and points[-1] == steps and points == sorted(set(points))
    assert eval_steps(trial(eval={"every_steps": 10}), 35) == [0, 10, 20, 30, 35]


def test_training_learns_and_records_a_curve():
    out = run_trial(trial())
    row, curves = out["trial"], out["curves"]
    assert row["status"] == "ok" and row["error"] is None
    assert row["trial_id"] == trial_id(trial())
    assert row["steps"] == total_steps(trial()) and row["examples_seen"] == row["steps"] * 32
    assert curves[0]["step"] == 0 and curves[-1]["step"] == row["steps"]
    assert curves[-1]["test_acc"] > 0.8 > curves[0]["test_acc"]
    assert curves[-1]["train_loss"] < curves[0]["train_loss"]
    assert row["test_acc"] == curves[-1]["test_acc"]
    assert row["n_params"] == 64 * 32 + 32 + 32 * 10 + 10
    assert row["noise_scale"] == pytest.approx(0.1 * 200 / (32 * 0.1))


def test_seed_fixes_everything():
    a, b = run_trial(trial()), run_trial(trial())
    assert [c["train_loss"] for c in a["curves"]] == [c["train_loss"] for c in b["curves"]]
    c = run_trial(trial(seed=1))
    assert c["trial"]["train_loss"] != a["trial"]["train_loss"]


def test_huge_learning_rate_is_diverged_not_an_error():
    out = run_trial(trial(lr=1000.0))
    row = out["trial"]
    assert row["status"] == "diverged"
    assert "step" in row["error"]
    assert math.isnan(row["test_acc"])
    assert row["steps"] < total_steps(trial())


def test_teacher_task_is_learnable_and_fixed_by_its_options():
    task = {"name": "teacher", "input_dim": 8, "n_classes": 3, "teacher_width": 16, "pool": 2000,
            "n_test": 500, "label_noise": 0.0, "data_seed": 0}
    data = load_task(task)
    assert data.x_train.shape == (2000, 8) and data.x_test.shape == (500, 8)
    assert set(np.unique(data.y_train)) <= {0, 1, 2}
    out = run_trial(trial(task=task, n_train=1000, budget={"epochs": 10.0}))
    assert out["trial"]["test_acc"] > 0.7


def test_budget_in_steps():
    out = run_trial(trial(budget={"steps": 17}, batch_size=64, n_train=50))
    assert out["trial"]["steps"] == 17
    assert out["curves"][-1]["epoch"] == pytest.approx(17 * 64 / 50)


@pytest.mark.parametrize("name, shape, classes", [("mlp", None, 10), ("cnn", (3, 8, 8), 10),
                                                  ("resnet", (3, 8, 8), 10), ("transformer", None, 256)])
def test_train_flops_agree_with_torch_flop_counter(name, shape, classes):
    """count_flops (forward hooks) against torch.utils.flop_counter on each built-in model."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from scaling.tasks.base import Dataset
    from scaling.training.flops import count_flops
    from scaling.training.data import cross_entropy
    from scaling.training.models import make_model

    rng = np.random.default_rng(0)
    if name == "transformer":
        x, y = rng.integers(0, 256, (3, 12)), rng.integers(0, 256, (3, 12))
    else:
        x, y = rng.random((3, int(np.prod(shape or (64,))))).astype(np.float32), np.array([1, 2, 3])
    data = Dataset(x_train=x, y_train=y, x_test=x, y_test=y, n_classes=classes, input_shape=shape)
    model = make_model({"name": name, "width": 2 if name == "resnet" else 16, "depth": 2}, data, 0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    mine = count_flops(model, cross_entropy, xt, yt)
    assert all(p.grad is None for p in model.parameters()), "count_flops leaves no gradients"
    with FlopCounterMode(display=False) as counter:
        cross_entropy(model(xt), yt).backward()
    assert mine == counter.get_total_flops() / 3 > 0


def test_trial_rows_count_compute_and_tokens():
    out = run_trial(trial(budget={"steps": 10}))
    row = out["trial"]
    per_example = 2 * (64 * 32 + 32 * 10) * 2 + 2 * 32 * 10  # forward, weight grads, input grad of layer 2
    assert row["train_flops"] == per_example * row["examples_seen"]
    assert row["tokens_seen"] == row["examples_seen"] == 10 * 32
    assert row["code_version"] == "1" and row["data_version"] == "2" and row["backend"] == "module"
    assert 0 <= row["val_acc"] <= 1 and row["val_loss"] > 0
