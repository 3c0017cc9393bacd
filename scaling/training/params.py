"""How many parameters a built-in model has, counted from its layer sizes: no torch.

The sweep driver sizes packs and refuses models no device holds before anything is built
(cluster.driver.planner); counting a built-in model here, not on torch's ``meta`` device, keeps
torch out of the driver (importing it costs about a second of CPU). Each count mirrors the
builder in :mod:`scaling.training.models` layer by layer; ``tests/test_param_count.py`` checks
it equals ``sum(p.numel() for p in model.parameters())`` of the built model for every built-in
model over a spread of widths, depths and input shapes. A plug-in task's own model
(``model: {name: task}``) is not countable here: :func:`count_params` returns None for it.
"""

from __future__ import annotations

import itertools
import math

HEAD_UNITS = 32
"""Units per attention head by default (scaling.training.models.HEAD_UNITS)."""


def default_heads(width: int) -> int:
    """The largest divisor of ``width`` that is at most max(1, width // HEAD_UNITS)
    (scaling.training.models.default_heads)."""
    h = max(1, width // HEAD_UNITS)
    while width % h:
        h -= 1
    return h


def _linear(fan_in: int, fan_out: int, bias: bool = True) -> int:
    return fan_in * fan_out + (fan_out if bias else 0)


def _conv(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def mlp_params(input_dim: int, n_classes: int, width: int, depth: int) -> int:
    """``depth`` hidden layers of ``width`` units: Σ (a + 1)·b over consecutive layer sizes."""
    dims = [input_dim] + [width] * depth + [n_classes]
    return sum(_linear(a, b) for a, b in itertools.pairwise(dims))


def cnn_params(input_shape: tuple, n_classes: int, width: int, depth: int) -> int:
    """SmallCNN: ``depth`` 3x3 convs of width·2^i channels (each followed by a 2x2 pool while the
    image is at least 2 pixels on a side), then a linear layer on the flattened features."""
    channels, h, w = input_shape
    n = 0
    for i in range(depth):
        out = width * 2**i
        n += _conv(channels, out, 3)
        if min(h, w) >= 2:
            h, w = h // 2, w // 2
        channels = out
    return n + _linear(channels * h * w, n_classes)


def resnet_params(input_shape: tuple, n_classes: int, width: int, depth: int) -> int:
    """The wide ResNet: a bias-free 3x3 stem, ``depth`` pre-activation blocks per stage of 16k,
    32k and 64k channels (two GroupNorms with weight and bias, two bias-free 3x3 convs, a 1x1
    projection where the shape changes), a final GroupNorm and a linear head."""
    widths = [16 * width, 32 * width, 64 * width]
    channels = widths[0]
    n = _conv(input_shape[0], channels, 3, bias=False)
    for out, stride in zip(widths, (1, 2, 2)):
        for i in range(depth):
            s = stride if i == 0 else 1
            n += 2 * channels + _conv(channels, out, 3, bias=False) + 2 * out + _conv(out, out, 3, bias=False)
            if s != 1 or channels != out:
                n += _conv(channels, out, 1, bias=False)
            channels = out
    return n + 2 * channels + _linear(channels, n_classes)


def transformer_params(context: int, vocab: int, width: int, depth: int, heads: int | None = None) -> int:
    """ByteTransformer: token and position embeddings, ``depth`` blocks (two LayerNorms, the qkv
    and output projections, a 4x MLP), a final LayerNorm and a bias-free output layer. The causal
    mask is a buffer, not a parameter. ``heads`` must divide ``width`` (ValueError, as the builder)."""
    heads = heads or default_heads(width)
    if width % heads:
        raise ValueError(f"transformer width {width} is not a multiple of heads {heads}")
    block = (2 * width + _linear(width, 3 * width) + _linear(width, width)  # ln1, attention
             + 2 * width + _linear(width, 4 * width) + _linear(4 * width, width))  # ln2, MLP
    return vocab * width + context * width + depth * block + 2 * width + _linear(width, vocab, bias=False)


def count_params(model: dict, input_shape: tuple, n_classes: int) -> int | None:
    """Parameters of the built-in model ``model`` (a trial's model dict: name, width, depth,
    heads) for inputs of ``input_shape`` (per example: (features,), (C, H, W) or (context,)) and
    ``n_classes`` outputs (the vocabulary for tokens); None for a model not built in (a task's own)."""
    name, width, depth = model["name"], int(model["width"]), int(model["depth"])
    if name == "mlp":
        return mlp_params(math.prod(input_shape), n_classes, width, depth)
    if name == "cnn":
        return cnn_params(tuple(input_shape), n_classes, width, depth)
    if name == "resnet":
        return resnet_params(tuple(input_shape), n_classes, width, depth)
    if name == "transformer":
        return transformer_params(int(input_shape[0]), n_classes, width, depth, model.get("heads"))
    return None
