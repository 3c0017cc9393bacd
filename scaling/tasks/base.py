"""What a task gives a trial: :class:`Dataset` (numpy arrays and the task's optional model,
loss and metric) and :class:`TaskSpec` (how a built-in task checks, sizes and loads itself)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """A task's data as numpy arrays, and optionally its own model, loss and metric."""

    x_train: np.ndarray
    """Training pool, shape (n_pool, ...). Trials draw subsets of it."""
    y_train: np.ndarray
    """Labels of the pool, shape (n_pool,), or (n_pool, context) for a language model."""
    x_test: np.ndarray
    """Held-out test features, the same for every trial."""
    y_test: np.ndarray
    """Held-out test labels."""
    n_classes: int
    """Number of classes (the vocabulary size of a language model)."""
    input_shape: tuple | None = None
    """One example's shape as models see it, e.g. (1, 28, 28) for images stored
    flattened; default ``x_train.shape[1:]``."""
    tokens_per_example: int = 1
    """What one example adds to ``examples_seen`` (the context of a language model)."""
    make_model: Callable | None = None
    """The task's own model, ``make_model(model: dict) -> nn.Module``, or None."""
    loss: Callable | None = None
    """``loss(output, y) -> scalar tensor`` (a batch mean); None: cross-entropy."""
    metric: Callable | None = None
    """``metric(output, y) -> scalar tensor`` (a batch mean) stored as test_acc; None: accuracy."""
    x_val: np.ndarray | None = None
    """Validation features (fixed, disjoint from the pool and the test set), or None."""
    y_val: np.ndarray | None = None
    """Validation labels, or None."""
    data_version: str = "1"
    """Version of this data (its split and preprocessing); stored with every trial."""

    def __post_init__(self):
        if self.input_shape is None and isinstance(self.x_train, np.ndarray):
            object.__setattr__(self, "input_shape", tuple(int(d) for d in self.x_train.shape[1:]))
        elif isinstance(self.input_shape, list):
            object.__setattr__(self, "input_shape", tuple(self.input_shape))

    @property
    def input_dim(self) -> int:
        """Features per example, flattened: what an MLP's first layer takes."""
        return int(np.prod(self.x_train.shape[1:], dtype=np.int64))

    @property
    def kind(self) -> str:
        """'tokens' (integer inputs), 'images' ((C, H, W) inputs) or 'vectors'."""
        if np.issubdtype(self.x_train.dtype, np.integer):
            return "tokens"
        return "images" if len(self.input_shape) == 3 else "vectors"


@dataclass(frozen=True)
class TaskSpec:
    defaults: dict[str, Any]
    """Every option the task takes, with its default and therefore its type."""
    train_size: Callable[[dict], int]
    """Size of the training pool for the given (validated) options."""
    load: Callable[[dict], Dataset]
    """Build the data for the given (validated) options."""
    checks: dict[str, tuple[Callable[[Any], bool], str]]
    """Per-option range check and the description of what is allowed."""
    kind: str = "vectors"
    """What the inputs are: 'vectors', 'images' or 'tokens' (which models fit them)."""
    prepare: Callable[[dict], dict] | None = None
    """Resolve paths and check files cheaply (headers, sizes) when the config is parsed."""
    data_version: str = "1"
    """Version of the task's split and preprocessing (the first release's data is "1")."""
    version: Callable[[dict], str] | None = None
    """The data version for the given (prepared) options, where it depends on them (the text
    task's built-in corpus: a hash of its bytes); None: ``data_version``."""
    headline: str = "error"
    """The metric its learning curve is about by default (``scaling fit``, ``report``, the sweep
    summary): ``error`` (1 - test_acc) for classification, ``test_loss`` for a language model."""

def _show(value: Any, limit: int = 80) -> str:
    """A short repr for messages: cut long values, and survive deep nesting and huge integers."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        return f"a {type(value).__name__} too deep or too long to show"
    return text if len(text) <= limit else text[: limit - 3] + "..."
