"""Built-in models (CNN, ResNet, byte-level Transformer): shapes, sizes, seeding, which
tasks they fit, real training with run_trial, and an L(N, D) sweep through Ray."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import write_config
from test_datasets import cifar_folder, mnist_folder, text_file
from scaling.config.sweep import load_config, parse_config
from scaling.errors import ConfigError
from scaling.training.models import ByteTransformer, ResNet, SmallCNN, default_heads
from scaling.store.views import load_tables
from scaling.tasks.resolve import load_task, task_data_version, validate_task
from scaling.training.models import make_model
from scaling.training.run import run_trial
from scaling.spec.schema import total_steps


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def trial(task: dict, model: dict, **changes) -> dict:
    base = {"task": task, "model": model, "n_train": 32, "batch_size": 8, "lr": 0.05, "momentum": 0.9,
            "weight_decay": 0.0, "seed": 0, "budget": {"steps": 12}, "eval": {"points": 3}}
    return {**base, **changes}


def test_cnn_and_resnet_shapes_and_sizes():
    x = torch.randn(5, 3 * 32 * 32)  # images arrive flattened
    for cls, widths in ((SmallCNN, (4, 8)), (ResNet, (1, 2))):
        small, big = (cls((3, 32, 32), 10, w, 2) for w in widths)
        assert small(x).shape == big(x).shape == (5, 10)
        assert n_params(big) > n_params(small)
    assert n_params(SmallCNN((1, 8, 8), 10, 4, 0)) == 64 * 10 + 10, "depth 0 is a linear model"
    deeper = ResNet((3, 32, 32), 10, 1, 3)
    assert n_params(deeper) > n_params(ResNet((3, 32, 32), 10, 1, 2))


def test_transformer_is_causal_and_sized_by_width_and_depth():
    model = ByteTransformer(context=12, vocab=256, width=32, depth=2).eval()
    x = torch.randint(0, 256, (2, 12))
    out = model(x)
    assert out.shape == (2, 12, 256)
    changed = x.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 256
    with torch.no_grad():
        torch.testing.assert_close(model(changed)[:, :7], out[:, :7])  # the past does not see the future
        assert not torch.allclose(model(changed)[:, 7:], out[:, 7:])
    sizes = [n_params(ByteTransformer(12, 256, w, d)) for w, d in ((32, 1), (64, 1), (64, 2))]
    assert sizes[0] < sizes[1] < sizes[2]
    w = 64  # per block: qkv, out projection, 4x MLP, two LayerNorms
    block = (w * 3 * w + 3 * w) + (w * w + w) + (w * 4 * w + 4 * w + 4 * w * w + w) + 4 * w
    assert sizes[2] - sizes[1] == block
    assert default_heads(64) == 2 and default_heads(48) == 1 and default_heads(96) == 3 and default_heads(8) == 1
    with pytest.raises(ValueError, match="multiple of heads"):
        ByteTransformer(12, 256, 30, 1, heads=4)


def test_models_are_fixed_by_the_seed_and_leave_the_global_rng_alone(tmp_path):
    text_file(tmp_path / "t.txt")
    data = load_task(validate_task({"name": "text", "path": str(tmp_path / "t.txt"), "context": 8}))
    before = torch.random.get_rng_state()
    a, b = (make_model({"name": "transformer", "width": 16, "depth": 1}, data, 3) for _ in range(2))
    c = make_model({"name": "transformer", "width": 16, "depth": 1}, data, 4)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.embed.weight, c.embed.weight)


def config(tmp_path, task: dict, model: dict, **extra) -> dict:
    return {"name": "m", "task": task, "model": model, "axes": {"n_train": 8, "batch_size": 4, "lr": 0.1},
            "budget": {"steps": 2}, **extra}


def test_models_must_fit_the_task(tmp_path):
    text_file(tmp_path / "t.txt")
    text = {"name": "text", "path": str(tmp_path / "t.txt"), "context": 8}
    cases = [(text, {"name": "mlp"}, "model.name", "cannot read the tokens"),
             ({"name": "digits"}, {"name": "transformer"}, "model.name",
              "models for images: ['cnn', 'mlp', 'resnet']"),
             ({"name": "teacher"}, {"name": "cnn"}, "model.name", "cannot read the vectors"),
             ({"name": "digits"}, {"name": "task"}, "model.name", "gives no make_model"),
             (text, {"name": "transformer", "width": 30, "heads": 4}, "model.heads", "30 is not a multiple"),
             ({"name": "digits"}, {"name": "mlp", "heads": 2}, "model.heads", "only the transformer")]
    for task, model, key, text_ in cases:
        with pytest.raises(ConfigError, match=f"'{key}'.*{text_.replace('[', '.').replace(']', '.')}"):
            parse_config(config(tmp_path, task, model))
    with pytest.raises(ConfigError, match="width 48 is not a multiple of heads 5"):
        parse_config(config(tmp_path, text, {"name": "transformer", "heads": 5}, axes={
            "n_train": 8, "batch_size": 4, "lr": 0.1, "width": [40, 48]}))


def test_model_defaults_and_heads_in_the_trial(tmp_path):
    text_file(tmp_path / "t.txt")
    text = {"name": "text", "path": str(tmp_path / "t.txt"), "context": 8}
    lm = parse_config(config(tmp_path, text, {"name": "transformer"}))
    assert lm.trials()[0].to_dict()["model"] == {"name": "transformer", "width": 64, "depth": 2}
    assert lm.engine == "packed", "transformers pack too (the vmap backend)"
    heads = parse_config(config(tmp_path, text, {"name": "transformer", "width": 32, "heads": 4}))
    assert heads.trials()[0].to_dict()["model"] == {"name": "transformer", "width": 32, "depth": 2, "heads": 4}
    mlp = parse_config(config(tmp_path, {"name": "digits"}, {"name": "mlp"}))
    assert mlp.trials()[0].to_dict()["model"] == {"name": "mlp", "width": 256, "depth": 1} and mlp.engine == "packed"


def test_language_model_learns_and_counts_tokens(tmp_path):
    (tmp_path / "t.txt").write_bytes(b"abcdefgh" * 400)  # next byte is a function of this byte
    task = validate_task({"name": "text", "path": str(tmp_path / "t.txt"), "context": 16})
    t = trial(task, {"name": "transformer", "width": 32, "depth": 1}, lr=0.3, budget={"steps": 40})
    out = run_trial(t)
    row, curves = out["trial"], out["curves"]
    assert row["status"] == "ok", row["error"]
    assert row["examples_seen"] == 40 * 8 and curves[-1]["examples_seen"] == row["examples_seen"]
    assert row["tokens_seen"] == 40 * 8 * 16 and curves[-1]["tokens_seen"] == row["tokens_seen"]
    assert curves[-1]["epoch"] == pytest.approx(40 * 8 / 32)
    assert curves[0]["test_loss"] == pytest.approx(math.log(256), abs=0.1), "starts near uniform over bytes"
    assert row["test_loss"] < 1.0 and row["test_acc"] > 0.8
    assert row["n_params"] == n_params(make_model(t["model"], load_task(task), 0))


@pytest.mark.parametrize("model", [{"name": "cnn", "width": 4, "depth": 2}, {"name": "mlp", "width": 16, "depth": 1}])
def test_image_models_train_on_mnist_files(tmp_path, model):
    mnist_folder(tmp_path)
    task = validate_task({"name": "mnist", "data_dir": str(tmp_path)})
    out = run_trial(trial(task, model, lr=0.02, budget={"steps": 30}))
    assert out["trial"]["status"] == "ok", out["trial"]["error"]
    assert out["trial"]["train_loss"] < out["curves"][0]["train_loss"]


def test_resnet_trains_on_cifar_files(tmp_path):
    cifar_folder(tmp_path, n=4)
    task = validate_task({"name": "cifar10", "data_dir": str(tmp_path)})
    out = run_trial(trial(task, {"name": "resnet", "width": 1, "depth": 1}, n_train=16, budget={"steps": 3},
                          eval={"points": 2}))
    assert out["trial"]["status"] == "ok", out["trial"]["error"]
    assert out["trial"]["steps"] == 3 and len(out["curves"]) == 3
    assert all(math.isfinite(c["test_loss"]) for c in out["curves"])


LM_SWEEP = """
name: lm-width
task: {name: text, corpus: stdlib, context: 16, n_test: 64}
model: {name: transformer, depth: 1}
axes:
  width: [16, 32]
  n_train: [32, 48, 64, 96]
  batch_size: 8
  lr: 0.3
  momentum: 0.9
budget: {steps: 15}
eval: {points: 3}
resources: {cpu: 1}
"""


@pytest.mark.slow
def test_lm_sweep_over_width_and_n_train_runs_through_ray(ray_local, tmp_path):
    from cluster.driver.sweep import run_sweep

    path = write_config(tmp_path, LM_SWEEP)  # the built-in corpus: no file to write
    cfg = load_config(path)
    summary = run_sweep(cfg, path.read_text(), str(tmp_path / "results"), progress=False, log=lambda *_: None)
    assert summary.counts == {"ok": 8, "diverged": 0, "failed": 0}
    trials, curves = load_tables(str(tmp_path / "results"))
    rows = trials.to_pylist()
    by_width = {}
    for r in rows:
        by_width.setdefault(r["width"], set()).add(r["n_params"])
        assert r["model"] == "transformer" and (r["engine"], r["backend"]) == ("packed", "vmap")
        assert r["data_version"] == task_data_version(cfg.task) and "-stdlib-" in r["data_version"]
        assert r["tokens_seen"] == total_steps(cfg.trials()[0]) * 8 * 16
        assert math.isfinite(r["test_loss"]) and r["test_loss"] < math.log(256)
    assert {w: len(n) for w, n in by_width.items()} == {16: 1, 32: 1}, "one model size per width"
    assert by_width[16] != by_width[32]
    assert sorted({r["n_train"] for r in rows}) == [32, 48, 64, 96]
    assert curves.num_rows == 8 * 3


def test_the_lm_width_recipe_is_valid(tmp_path):
    import yaml

    from conftest import ROOT

    raw = yaml.safe_load((ROOT / "configs" / "lm_width.yaml").read_text())
    cfg = parse_config(raw)  # as shipped: the built-in corpus holds the largest n_train
    assert cfg.task["corpus"] == "stdlib"
    assert cfg.count() == 4 * 2 * 7 * 3 and cfg.engine == "packed"
    assert {t.model for t in cfg.trials()} == {"transformer"}
    # a file in its place works as before: the largest n_train fits in the 80% of the file
    # before validation and test (10% each)
    text_file(tmp_path / "corpus.txt", 64 * 65536 * 10 // 8 + 200)
    raw["task"] = {k: v for k, v in raw["task"].items() if k != "corpus"} | {"path": str(tmp_path / "corpus.txt")}
    assert parse_config(raw).count() == cfg.count()


def test_the_adamw_lm_recipe_is_valid_as_shipped():
    import yaml

    from conftest import ROOT

    raw = yaml.safe_load((ROOT / "configs" / "adamw_lm.yaml").read_text())
    assert raw["task"]["corpus"] == "stdlib" and "path" not in raw["task"], "runs from a fresh clone"
    cfg = parse_config(raw)
    trials = cfg.trials()
    assert len(trials) == 2 * 4 * 3 and cfg.engine == "packed"
    assert {(t.optimizer, t.schedule, t.beta2, t.warmup_frac, t.final_lr_frac) for t in trials} == {
        ("adamw", "cosine", 0.95, 0.05, 0.1)}
    assert {t.momentum for t in trials} == {0.0}, "momentum does not apply to AdamW"


# ---- the model registry ------------------------------------------------------------------------

def test_every_model_spec_has_a_builder_and_every_table_derives_from_the_specs():
    from scaling.config.sweep import MODEL_INPUTS
    from scaling.spec.models import SPECS, model_spec
    from scaling.spec.schema import MODEL_DEFAULTS, MODELS
    from scaling.training import models as built
    from scaling.training.packing import PACKABLE_MODELS, STACKED_MODELS

    assert list(built.BUILDERS) == list(SPECS) == list(MODELS)
    assert MODEL_DEFAULTS == {n: (s.width, s.depth) for n, s in SPECS.items()}
    assert MODEL_INPUTS == {n: s.inputs for n, s in SPECS.items() if s.inputs}
    assert PACKABLE_MODELS == {n for n, s in SPECS.items() if s.packs}
    assert STACKED_MODELS == {n for n, s in SPECS.items() if s.stacked}
    with pytest.raises(ValueError, match="unknown model 'mlpx'; known models: mlp, cnn, resnet, transformer, task"):
        model_spec("mlpx")
