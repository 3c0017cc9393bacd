"""Built-in models beyond the MLP: a small CNN, a ResNet with a width multiplier,
and a byte-level Transformer language model. No Ray, no data loading.

Every model takes the inputs a task stores (``scaling.tasks.Dataset``): images
arrive flattened, (n, C*H*W), and are reshaped to ``input_shape``; tokens arrive
as int64 (n, context). ``width`` and ``depth`` (axes of a sweep) set the size:

- ``mlp``: width = hidden units, depth = hidden layers (``scaling.training.models.build_model``);
- ``cnn``: width = channels of the first 3x3 conv (doubling per block), depth =
  conv blocks (0: a linear model on the pixels);
- ``resnet``: width = the multiplier k of a wide ResNet, stages of 16k, 32k and 64k
  channels (Zagoruyko & Komodakis 2016), depth = residual blocks per stage;
- ``transformer``: width = d_model (heads of 32 units unless ``heads`` is given),
  depth = transformer blocks; a byte-level next-token model (Radford et al. 2019's
  GPT-2 layout at toy scale), the model-size axis of L(N, D) sweeps (Kaplan et al.
  2020; Hoffmann et al. 2022).

The ResNet uses GroupNorm, not BatchNorm, so that an example's output depends
on that example alone: per-example gradients and Hessian-vector products
(scaling.training.metrics) are then exact, and train and eval mode agree.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from scaling.tasks.base import Dataset
from scaling.training.params import HEAD_UNITS, default_heads  # noqa: F401 (HEAD_UNITS: the default's name here too)


@contextlib.contextmanager
def seeded(seed: int):
    """Seed torch's global RNG for building a model, and restore it afterwards."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


class SmallCNN(nn.Module):
    """``depth`` blocks of 3x3 conv (``width * 2**i`` channels), ReLU and 2x2 max-pool, then a linear layer."""

    def __init__(self, input_shape: tuple, n_classes: int, width: int, depth: int):
        super().__init__()
        self.input_shape = tuple(input_shape)
        channels, h, w = self.input_shape
        layers: list[nn.Module] = []
        for i in range(depth):
            out = width * 2**i
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU()]
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels * h * w, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x.view(-1, *self.input_shape))
        return self.head(x.flatten(1))


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(channels, 8), channels)


class _PreActBlock(nn.Module):
    """Pre-activation residual block: norm-ReLU-conv twice, plus a (projected) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.project = (nn.Conv2d(c_in, c_out, 1, stride, bias=False)
                        if stride != 1 or c_in != c_out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm1(x))
        shortcut = x if self.project is None else self.project(h)
        out = self.conv1(h)
        return shortcut + self.conv2(torch.relu(self.norm2(out)))


class ResNet(nn.Module):
    """A wide ResNet: a 3x3 stem of 16k channels, three stages of ``depth`` blocks with
    16k, 32k and 64k channels (strides 1, 2, 2), global average pooling, a linear head."""

    def __init__(self, input_shape: tuple, n_classes: int, width: int, depth: int):
        super().__init__()
        self.input_shape = tuple(input_shape)
        widths = [16 * width, 32 * width, 64 * width]
        self.stem = nn.Conv2d(self.input_shape[0], widths[0], 3, padding=1, bias=False)
        blocks, channels = [], widths[0]
        for stage, (out, stride) in enumerate(zip(widths, (1, 2, 2))):
            for i in range(depth):
                blocks.append(_PreActBlock(channels, out, stride if i == 0 else 1))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        self.norm = _norm(channels)
        self.head = nn.Linear(channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x.view(-1, *self.input_shape)))
        return self.head(torch.relu(self.norm(h)).mean(dim=(2, 3)))


class _Attention(nn.Module):
    """Causal multi-head self-attention, written out (twice differentiable, vmap-able)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def matmul_flops(self, inputs, output) -> float:
        """FLOPs of the two attention matmuls (q·kᵀ and weights·v), forward only; their
        projections are nn.Linear layers, counted on their own."""
        b, t, w = inputs[0].shape
        return 2 * 2 * b * t * t * w

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(w // self.heads)
        weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(b, t, w))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(width), _Attention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), mask)
        return x + self.mlp(self.ln2(x))


class ByteTransformer(nn.Module):
    """A GPT-style decoder (pre-LayerNorm blocks, learned positions, untied output layer)
    that predicts the next byte at every position: (n, context) int64 -> (n, context, vocab)."""

    def __init__(self, context: int, vocab: int, width: int, depth: int, heads: int | None = None):
        super().__init__()
        heads = heads or default_heads(width)
        if width % heads:
            raise ValueError(f"transformer width {width} is not a multiple of heads {heads}")
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(_Block(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.register_buffer("mask", torch.ones(context, context, dtype=torch.bool).tril(), persistent=False)
        for module in self.modules():  # GPT-2's initialisation
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[-1]
        h = self.embed(x) + self.position.weight[:t]
        mask = self.mask[:t, :t]
        for block in self.blocks:
            h = block(h, mask)
        return self.head(self.norm(h))


def build(model: dict, data) -> nn.Module:
    """The built-in model a trial's ``model`` dict names, shaped for ``data`` (a Dataset).

    Not seeded here: callers wrap it in :func:`seeded`. The MLP is built by
    ``scaling.training.models.build_model``."""
    name, width, depth = model["name"], int(model["width"]), int(model["depth"])
    if name not in BUILDERS or BUILDERS[name] is None:
        raise ValueError(f"unknown model {name!r}; built here: {', '.join(n for n, b in BUILDERS.items() if b)}")
    return BUILDERS[name](model, data, width, depth)


BUILDERS = {
    "mlp": None,  # built by build_model (the stacked backend writes the same MLP out by hand)
    "cnn": lambda model, data, width, depth: SmallCNN(data.input_shape, data.n_classes, width, depth),
    "resnet": lambda model, data, width, depth: ResNet(data.input_shape, data.n_classes, width, depth),
    "transformer": lambda model, data, width, depth: ByteTransformer(data.input_shape[0], data.n_classes,
                                                                     width, depth, model.get("heads")),
    "task": None,  # the task's own make_model
}
"""The torch builder of each model in scaling.spec.models.SPECS, called as
``builder(model dict, Dataset, width, depth)`` inside a seeded block."""


def build_model(model: dict, input_dim: int, n_classes: int, seed: int) -> nn.Module:
    """An MLP of ``depth`` hidden ReLU layers of ``width`` units, initialised from ``seed``."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        layers: list[nn.Module] = []
        fan_in = input_dim
        for _ in range(model["depth"]):
            layers += [nn.Linear(fan_in, model["width"]), nn.ReLU()]
            fan_in = model["width"]
        layers.append(nn.Linear(fan_in, n_classes))
        return nn.Sequential(*layers)
    finally:
        torch.random.set_rng_state(gen_state)


def make_model(model: dict, data: Dataset, seed: int) -> nn.Module:
    """The trial's model, initialised from ``seed``: the MLP (``build_model``), the task's
    own (``model: {name: task}``) or a built-in one from scaling.training.models."""
    if model["name"] == "mlp":
        return build_model(model, data.input_dim, data.n_classes, seed)
    with seeded(seed):
        if model["name"] == "task":
            if data.make_model is None:
                raise ValueError("model 'task' needs a task whose factory gives make_model")
            return data.make_model(dict(model))
        return build(model, data)
