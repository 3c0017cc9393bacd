"""The torch-free parameter count (scaling.training.params) against the built models: for every
built-in model and a spread of widths, depths and input shapes, it equals
sum(p.numel() for p in model.parameters()) of the model the builder makes (on torch's meta
device: nothing allocated). The driver's count (cluster.worker.sizes) takes it for built-in models
and builds a plug-in's own model on meta."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from cluster.worker.sizes import model_params
from scaling.spec.models import SPECS
from scaling.spec.schema import as_trial
from scaling.training.models import BUILDERS, build_model
from scaling.training.params import count_params, default_heads


def built(model: dict, input_shape: tuple, n_classes: int) -> int:
    class Data:  # what the builders read of a Dataset
        pass

    data = Data()
    data.input_shape, data.n_classes = input_shape, n_classes
    with torch.device("meta"):
        if model["name"] == "mlp":
            net = build_model(model, int(torch.Size(input_shape).numel()), n_classes, 0)
        else:
            net = BUILDERS[model["name"]](model, data, model["width"], model["depth"])
        return sum(p.numel() for p in net.parameters())


SHAPES = {  # input shapes each model takes: vectors, images (odd sizes and one pixel too), tokens
    "mlp": [(64,), (3,), (1, 8, 8), (3, 32, 32)],
    "cnn": [(1, 8, 8), (3, 32, 32), (1, 5, 7), (2, 1, 1), (1, 28, 28)],
    "resnet": [(1, 8, 8), (3, 32, 32), (1, 5, 7)],
    "transformer": [(32,), (1,), (128,)],
}
SIZES = {
    "mlp": list(itertools.product([1, 7, 256], [0, 1, 3])),
    "cnn": list(itertools.product([1, 3, 32], [0, 1, 2, 4])),
    "resnet": list(itertools.product([1, 2, 3], [0, 1, 3])),
    "transformer": list(itertools.product([32, 48, 96, 8], [0, 1, 3])),
}


def test_every_built_in_model_has_a_count():
    built_in = {n for n, b in BUILDERS.items() if n != "task"}
    assert built_in == set(SHAPES) == {n for n in SPECS if n != "task"}
    assert count_params({"name": "task", "width": 8, "depth": 1}, (64,), 10) is None


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_the_count_equals_the_built_models_parameters(name):
    checked = 0
    for (width, depth), shape in itertools.product(SIZES[name], SHAPES[name]):
        for n_classes in (2, 10, 256)[name == "transformer":]:
            model = {"name": name, "width": width, "depth": depth}
            assert count_params(model, shape, n_classes) == built(model, shape, n_classes), (model, shape, n_classes)
            checked += 1
    assert checked >= 27


def test_transformer_heads_given_and_refused_as_the_builder_does():
    for width, heads in ((64, 4), (96, 3), (64, 1)):
        model = {"name": "transformer", "width": width, "depth": 2, "heads": heads}
        assert count_params(model, (16,), 256) == built(model, (16,), 256)
    bad = {"name": "transformer", "width": 64, "depth": 1, "heads": 3}
    with pytest.raises(ValueError, match="not a multiple of heads 3") as counted:
        count_params(bad, (16,), 256)
    with pytest.raises(ValueError) as builder:
        built(bad, (16,), 256)
    assert str(counted.value) == str(builder.value)
    assert [default_heads(w) for w in (64, 48, 96, 8)] == [2, 1, 3, 1]


def trial(task: dict, model: str, width: int, depth: int) -> dict:
    return {"task": task, "model": {"name": model, "width": width, "depth": depth}, "n_train": 32, "batch_size": 8,
            "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0, "seed": 0, "budget": {"steps": 4},
            "eval": {"points": 2}}


def test_the_drivers_count_for_built_in_tasks_and_a_plug_ins_own_model(monkeypatch):
    from scaling.tasks.resolve import load_task, validate_task

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent / "plugin_example"))

    digits = validate_task({"name": "digits"})
    teacher = validate_task({"name": "teacher", "input_dim": 12, "n_classes": 3})
    text = validate_task({"name": "text", "corpus": "stdlib"})
    for task, model, width, depth in ((digits, "mlp", 256, 1), (digits, "cnn", 8, 2), (digits, "resnet", 1, 1),
                                      (teacher, "mlp", 5, 2), (text, "transformer", 32, 2)):
        t = as_trial(trial(task, model, width, depth))
        data = load_task(t.task)
        assert model_params(t) == built(t.model_spec, data.input_shape, data.n_classes), (task, model)
    assert model_params(as_trial(trial(digits, "mlp", 256, 1))) == 65 * 256 + 257 * 10  # (64 + 1)·256 + (256 + 1)·10
    plugin = validate_task({"name": "toy_tasks.regression:make_task"})
    t = trial(plugin, "task", 16, 1)
    n = model_params(t)
    data = load_task(as_trial(t).task)
    with torch.device("meta"):
        assert n == sum(p.numel() for p in data.make_model(as_trial(t).model_spec).parameters()) > 0
