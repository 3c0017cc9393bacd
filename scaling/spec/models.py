"""The model registry: one torch-free ``ModelSpec`` per model name.

Everything the system asks about a model lives in its entry: the config's choices and default
width and depth (scaling.spec.schema), the task inputs it takes (scaling.config), whether it
packs and whether the stacked backend writes it out (scaling.training.packing). Its torch
builder is the entry of the same name in ``scaling.training.models.BUILDERS``.

Adding a model is this entry plus its builder (docs/extending.md); ``test_models.py`` checks
that the two tables name the same models.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    name: str
    """The ``model: {name: ...}`` of a config."""
    inputs: tuple[str, ...]
    """Task inputs it takes (``Dataset.kind``): vectors, images, tokens; () means the task's own."""
    width: int
    """Default width (hidden units, channels or model dim)."""
    depth: int
    """Default depth (hidden layers, blocks)."""
    packs: bool = True
    """Whether the packed engine trains it (several trials per step)."""
    stacked: bool = False
    """Whether the stacked backend writes it out by hand (else the vmap backend packs it)."""


SPECS: dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec(name="mlp", inputs=("vectors", "images"), width=256, depth=1, stacked=True),
    ModelSpec(name="cnn", inputs=("images",), width=32, depth=2),
    ModelSpec(name="resnet", inputs=("images",), width=1, depth=1),
    ModelSpec(name="transformer", inputs=("tokens",), width=64, depth=2),
    ModelSpec(name="task", inputs=(), width=256, depth=1),
)}


def model_spec(name: str) -> ModelSpec:
    """The entry for ``name``; the error lists every model there is."""
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(SPECS)}") from None
