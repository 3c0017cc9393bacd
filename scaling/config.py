"""Sweep configs: parse and validate YAML, expand axes into trials, hash trials.

A sweep config is a YAML mapping::

    name: demo
    task: {name: digits}
    model: {name: mlp, width: 256, depth: 1}
    axes:
      n_train: [100, 200, 400, 800]
      batch_size: {log2: [4, 128]}
      lr: {log: [0.01, 1.0], num: 5}
      momentum: [0.0, 0.9]
      seed: [0, 1, 2]
    budget: {epochs: 20}
    eval: {points: 20}
    resources: {cpu: 1, gpu: 0}

Everything is checked before any work starts; a mistake raises
:class:`~scaling.errors.ConfigError` naming the key, the value and what is
allowed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scaling import axes as axes_mod
from scaling.errors import ConfigError
from scaling.tasks import own_model, packable, task_kind, task_train_size, validate_task

MODELS = {"mlp", "cnn", "resnet", "transformer", "task"}
MODEL_DEFAULTS = {"mlp": (256, 1), "cnn": (32, 2), "resnet": (1, 1), "transformer": (64, 2), "task": (256, 1)}
"""(width, depth) of each model when the config gives none (see scaling.models for their meaning)."""
MODEL_INPUTS = {"mlp": ("vectors", "images"), "cnn": ("images",), "resnet": ("images",),
                "transformer": ("tokens",)}
"""The task inputs (scaling.tasks.Dataset.kind) each built-in model takes."""
ENGINES = {"packed", "single"}
MAX_TRIALS = 100_000
MAX_DEPTH = 32
MAX_VALUES = 1_000_000
INT64 = 2**63
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
TOP_KEYS = {"name", "description", "task", "model", "axes", "search", "budget", "eval",
            "resources", "engine", "packing", "retries", "workers_per_trial",
            "metrics"}


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    name: str = "mlp"
    """Architecture name; one of MODELS ('task': the plug-in task's own model)."""
    width: int | None = None
    """Hidden units per layer for the MLP, channels or a multiplier for the others
    (scaling.models); an axis may override it per trial. Default: MODEL_DEFAULTS."""
    depth: int | None = None
    """Hidden layers, conv blocks, residual blocks per stage or transformer blocks;
    0 gives a linear model. Default: MODEL_DEFAULTS."""
    heads: int | None = None
    """Attention heads of the transformer; width must be a multiple. Default: width // 32
    rounded down to a divisor of width."""

    def __post_init__(self):
        if not isinstance(self.name, str) or self.name not in MODELS:
            raise ConfigError("model.name", f"unknown model {self.name!r}; choose one of {sorted(MODELS)}")
        width, depth = MODEL_DEFAULTS[self.name]
        object.__setattr__(self, "width", width if self.width is None else self.width)
        object.__setattr__(self, "depth", depth if self.depth is None else self.depth)
        _check_int("model.width", self.width, 1)
        _check_int("model.depth", self.depth, 0)
        if self.heads is not None:
            if self.name != "transformer":
                raise ConfigError("model.heads", f"only the transformer has attention heads, not {self.name!r}")
            _check_int("model.heads", self.heads, 1)


@dataclass(frozen=True, kw_only=True)
class MetricsConfig:
    noise_scale: bool = False
    """Record the gradient noise scale B_simple = tr(Σ)/|G|² (McCandlish et al. 2018) in the
    curves, from each training batch split in two halves (scaling.metrics)."""
    sharpness: bool = False
    """Record the top Hessian eigenvalue at the start and end (trial columns sharpness_init,
    sharpness_final), by power iteration on Hessian-vector products."""
    grad_norms: bool = False
    """Record the mean and std of per-example gradient norms at each eval point."""
    noise_ema: float = 0.95
    """Decay of the moving averages of |G|² and tr(Σ), in [0, 1)."""
    sharpness_iters: int = 20
    """Most Hessian-vector products per sharpness estimate."""
    sharpness_examples: int = 256
    """Training examples (the first of the trial's subset) the sharpness is measured on."""
    grad_norm_examples: int = 32
    """Training examples (the first of the subset) of the per-example gradient norms."""

    def __post_init__(self):
        for key in ("noise_scale", "sharpness", "grad_norms"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"metrics.{key}", f"expected true or false, got {getattr(self, key)!r}")
        _check_number("metrics.noise_ema", self.noise_ema, "a number in [0, 1)", lambda v: 0 <= v < 1)
        for key in ("sharpness_iters", "sharpness_examples", "grad_norm_examples"):
            _check_int(f"metrics.{key}", getattr(self, key), 1)

    @property
    def enabled(self) -> bool:
        return self.noise_scale or self.sharpness or self.grad_norms

    def to_trial(self) -> dict:
        """The canonical mapping that goes into a trial config (only when enabled)."""
        return {"noise_scale": self.noise_scale, "sharpness": self.sharpness, "grad_norms": self.grad_norms,
                "noise_ema": axes_mod.canon(self.noise_ema), "sharpness_iters": self.sharpness_iters,
                "sharpness_examples": self.sharpness_examples, "grad_norm_examples": self.grad_norm_examples}


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    kind: str = "grid"
    """'grid' (cartesian product of axes) or 'random' (samples x grid)."""
    samples: int = 1
    """Random draws of the random axes; each draw is paired with every grid point."""
    seed: int = 0
    """Seed of the random draws: the same seed gives the same trials."""

    def __post_init__(self):
        if self.kind not in ("grid", "random"):
            raise ConfigError("search.kind", f"value {self.kind!r} is not allowed; use 'grid' or 'random'")
        _check_int("search.samples", self.samples, 1)
        _check_int("search.seed", self.seed, 0)


@dataclass(frozen=True, kw_only=True)
class BudgetConfig:
    epochs: float | None = None
    """Passes over the n_train examples; steps = ceil(epochs * n_train / batch_size)."""
    steps: int | None = None
    """Fixed number of optimizer steps, whatever n_train and batch_size."""

    def __post_init__(self):
        if (self.epochs is None) == (self.steps is None):
            raise ConfigError("budget", "give exactly one of {epochs: E} or {steps: S}")
        if self.epochs is not None:
            _check_number("budget.epochs", self.epochs, "a number > 0", lambda v: v > 0)
        else:
            _check_int("budget.steps", self.steps, 1)


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    points: int | None = None
    """Number of log-spaced eval steps (step 0 and the last step always included)."""
    every_steps: int | None = None
    """Evaluate every k steps instead (and at step 0 and the last step)."""

    def __post_init__(self):
        if self.points is not None and self.every_steps is not None:
            raise ConfigError("eval", "give one of {points: P} or {every_steps: K}, not both")
        if self.every_steps is not None:
            _check_int("eval.every_steps", self.every_steps, 1)
        else:
            _check_int("eval.points", 20 if self.points is None else self.points, 1)


@dataclass(frozen=True, kw_only=True)
class ResourcesConfig:
    cpu: float = 1.0
    """CPUs per trial (fractions allowed); torch uses max(1, floor(cpu)) threads."""
    gpu: float = 0.0
    """GPUs per trial (fractions allowed)."""

    def __post_init__(self):
        _check_number("resources.cpu", self.cpu, "a number > 0", lambda v: v > 0)
        _check_number("resources.gpu", self.gpu, "a number >= 0", lambda v: v >= 0)


@dataclass(frozen=True, kw_only=True)
class PackingConfig:
    max_members: int = 128
    """The most trials trained together in one pack."""
    memory_mb: float | None = None
    """Memory budget of one pack in MiB; default: measured (a share of the node's free memory)."""

    def __post_init__(self):
        _check_int("packing.max_members", self.max_members, 1)
        if self.memory_mb is not None:
            _check_number("packing.memory_mb", self.memory_mb, "a number > 0", lambda v: v > 0)


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    name: str
    """Sweep name; also the folder name under the results directory."""
    task: dict
    """Validated task: {'name': ..., **options}."""
    model: ModelConfig
    axes: dict = field(default_factory=dict)
    """Axis name -> parsed axis (see scaling.axes)."""
    search: SearchConfig = field(default_factory=SearchConfig)
    budget: BudgetConfig
    eval: EvalConfig = field(default_factory=EvalConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    engine: str = "packed"
    """'packed' trains trials that share task, model and batch size as one vectorised
    model (scaling.packed); 'single' trains one model per Ray task."""
    packing: PackingConfig = field(default_factory=PackingConfig)
    retries: int = 2
    """Retries of a trial whose worker died or whose code raised."""
    workers_per_trial: int = 1
    """Data-parallel workers per trial (DDP with Ray Train); the batch is split across them."""
    description: str = ""
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    """Training diagnostics to record (off by default)."""

    def __post_init__(self):
        if not isinstance(self.name, str) or not NAME_RE.fullmatch(self.name):
            raise ConfigError("name", f"value {self.name!r} is not a valid sweep name; use letters, "
                              "digits, '_', '-', '.' (it becomes a folder name, so no '/' or '..')")
        if not isinstance(self.engine, str) or self.engine not in ENGINES:
            raise ConfigError("engine", f"value {self.engine!r} is not allowed; choose one of {sorted(ENGINES)}")
        _check_int("retries", self.retries, 0)
        _check_int("workers_per_trial", self.workers_per_trial, 1)
        batch = self.axes.get("batch_size")
        k = self.workers_per_trial
        for b in (batch.bounds() if batch is not None else ()):
            if b % k:
                raise ConfigError("workers_per_trial", f"batch_size {b} is not divisible by "
                                  f"workers_per_trial {k}; the global batch is split evenly across workers")

    def count(self) -> int:
        """Number of trials the sweep expands to, computed without expanding it."""
        return axes_mod.count(self.axes, self.search)

    def trials(self, limit: int | None = MAX_TRIALS) -> list[dict]:
        """Expand into trial configs (plain dicts), in a stable order."""
        n = self.count()
        if limit is not None and n > limit:
            raise ConfigError("axes", f"the sweep expands to {n:,} trials, over the limit of {limit:,}; "
                              "shrink the axes or pass --allow-large if you mean it")
        base = {"task": self.task, "model": self.model, "budget": self.budget, "eval": self.eval,
                "metrics": self.metrics}
        unique: dict[str, dict] = {}
        for point in axes_mod.expand(self.axes, self.search):
            trial = make_trial(base, point)
            unique.setdefault(trial_id(trial), trial)  # random draws may repeat a point
        return list(unique.values())


def trial_id(trial: dict) -> str:
    """Stable id of a trial: a hash of its canonical JSON, the same on any machine and run."""
    blob = json.dumps(trial, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_trial(base: dict, point: dict) -> dict:
    """The canonical, JSON-able trial config from a sweep's fixed parts and one axis point."""
    model, budget, ev = base["model"], base["budget"], base["eval"]
    trial = {
        "task": dict(base["task"]),
        "model": {"name": model.name, "width": int(point.get("width", model.width)),
                  "depth": int(point.get("depth", model.depth))},
        "n_train": int(point["n_train"]),
        "batch_size": int(point["batch_size"]),
        "lr": axes_mod.canon(point["lr"]),
        "momentum": axes_mod.canon(point.get("momentum", 0.0)),
        "weight_decay": axes_mod.canon(point.get("weight_decay", 0.0)),
        "seed": int(point.get("seed", 0)),
        "budget": ({"epochs": axes_mod.canon(budget.epochs)} if budget.epochs is not None
                   else {"steps": int(budget.steps)}),
        "eval": ({"every_steps": int(ev.every_steps)} if ev.every_steps is not None
                 else {"points": int(ev.points or 20)}),
    }
    if getattr(model, "heads", None) is not None:
        trial["model"]["heads"] = int(model.heads)
    metrics = base.get("metrics")
    if metrics is not None and metrics.enabled:  # absent otherwise, so older trial ids stay the same
        trial["metrics"] = metrics.to_trial()
    return trial


def load_config(path: str | Path, overrides: dict | None = None) -> SweepConfig:
    """Read and validate a sweep config file (YAML, loaded with safe_load).

    ``overrides`` replaces top-level keys (command-line flags) before validation."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("file", f"no config file at {str(path)!r}") from None
    except OSError as e:
        raise ConfigError("file", f"cannot read {str(path)!r}: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError("file", f"{str(path)!r} is not UTF-8 text (byte {e.start})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError("file", f"{str(path)!r} is not valid YAML{at}: {problem}") from None
    except RecursionError:
        raise ConfigError("file", f"{str(path)!r} is nested too deeply") from None
    except (ValueError, TypeError, AttributeError, LookupError, ArithmeticError) as e:
        # PyYAML's constructors raise these for values like 2020-13-45, !!int abc, !!bool maybe,
        # !!timestamp x or an integer of over 4300 digits
        raise ConfigError("file", f"{str(path)!r} has a value YAML cannot convert ({type(e).__name__}: "
                          f"{e}); quote it if it is text") from None
    if overrides and isinstance(raw, dict):
        raw = {**raw, **overrides}
    return parse_config(raw)


def parse_config(raw: Any) -> SweepConfig:
    """Validate a config mapping (as loaded from YAML) into a SweepConfig."""
    if not isinstance(raw, dict):
        raise ConfigError("(top level)", f"a sweep config must be a mapping, got {type(raw).__name__}")
    _check_shape(raw)
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(str(key), f"unknown key; allowed top-level keys are {sorted(TOP_KEYS)}")
    for key in ("name", "task", "axes", "budget"):
        if key not in raw:
            raise ConfigError(key, "missing; every sweep needs name, task, axes and budget")
    task = validate_task(raw["task"])
    model = _section(ModelConfig, "model", raw.get("model", {}))
    search = _section(SearchConfig, "search", raw.get("search", {}))
    axes = axes_mod.parse_axes(raw["axes"], search.kind == "random")
    _check_axis_ranges(axes, task)
    _check_model_fits_task(model, task, axes)
    metrics = _section(MetricsConfig, "metrics", raw.get("metrics", {}) or {})
    workers = raw.get("workers_per_trial", 1)
    if metrics.enabled and isinstance(workers, int) and workers > 1:
        raise ConfigError("metrics", f"metrics are measured in one-process trials only, not with "
                          f"workers_per_trial: {workers}; drop one or the other")
    if isinstance(workers, int) and workers > 1 and (model.name != "mlp" or not packable(task)):
        raise ConfigError("workers_per_trial", f"data-parallel trials (workers_per_trial: {workers}) "
                          "train the MLP on built-in vector and image tasks only; got model "
                          f"{model.name!r} on task {task['name']!r}")
    single_only = metrics.enabled or not packable(task)
    engine = raw.get("engine", "single" if single_only else "packed")
    if engine == "packed" and single_only and model.name == "mlp":
        why = "metrics are measured" if metrics.enabled else "this task is trained"
        raise ConfigError("engine", f"'packed' cannot train this sweep: {why} by the single engine only; "
                          "use engine: single (the default here)")
    sweep = SweepConfig(
        name=raw["name"],
        description=_typed("description", raw.get("description", ""), str),
        task=task,
        model=model,
        axes=axes,
        search=search,
        budget=_section(BudgetConfig, "budget", raw["budget"]),
        eval=_section(EvalConfig, "eval", raw.get("eval", {}) or {}),
        resources=_section(ResourcesConfig, "resources", raw.get("resources", {}) or {}),
        engine=engine,
        packing=_section(PackingConfig, "packing", raw.get("packing", {}) or {}),
        retries=raw.get("retries", 2),
        workers_per_trial=raw.get("workers_per_trial", 1),
        metrics=metrics,
    )
    return sweep


def _check_model_fits_task(model: ModelConfig, task: dict, axes: dict) -> None:
    """The model can read the task's inputs, and the transformer's widths split into its heads."""
    if model.name == "task":
        if not own_model(task):
            raise ConfigError("model.name", f"'task' uses the task's own model, but task {task['name']!r} "
                              "gives no make_model; choose one of "
                              f"{sorted(MODELS - {'task'})} or add make_model to the plug-in")
        return
    kind = task_kind(task)
    if kind not in MODEL_INPUTS[model.name]:
        fits = sorted(m for m, kinds in MODEL_INPUTS.items() if kind in kinds)
        raise ConfigError("model.name", f"model {model.name!r} cannot read the {kind} of task "
                          f"{task['name']!r}; models for {kind}: {fits}")
    if model.heads is not None:
        widths = axes["width"].bounds() if "width" in axes else (model.width,)
        for width in widths:
            if width % model.heads:
                raise ConfigError("model.heads", f"width {width} is not a multiple of heads {model.heads}")


def _check_shape(raw: Any) -> None:
    """Refuse what no sweep config needs before anything walks or prints it: nesting over
    MAX_DEPTH levels, over MAX_VALUES values (a YAML alias counts each time it is used), and
    integers beyond 64 bits (the store keeps int64)."""
    stack, count = [(raw, "(top level)", 0)], 0
    while stack:
        value, where, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError("(top level)", f"the config holds over {MAX_VALUES:,} values; "
                              "does a YAML alias (*name) repeat a large block?")
        if depth > MAX_DEPTH:
            raise ConfigError(where, f"nested over {MAX_DEPTH} levels deep; a sweep config needs only a few")
        if isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < INT64:
            raise ConfigError(where, f"an integer of {value.bit_length()} bits is out of range; "
                              "numbers must fit in 64 bits")
        if isinstance(value, dict):
            for k, v in value.items():
                name = _key_text(k) if depth == 0 else f"{where}.{_key_text(k)}"
                stack += [(k, where, depth + 1), (v, name, depth + 1)]
        elif isinstance(value, (list, tuple, set, frozenset)):
            stack += [(v, where, depth + 1) for v in value]


def _key_text(key: Any) -> str:
    if isinstance(key, int) and not isinstance(key, bool) and not -INT64 <= key < INT64:
        return "<huge integer>"
    return key if isinstance(key, str) else repr(key)


def _section(cls, key: str, raw: Any):
    if not isinstance(raw, dict):
        raise ConfigError(key, f"expected a mapping, got {raw!r}")
    allowed = cls.__dataclass_fields__
    for k in raw:
        if k not in allowed:
            raise ConfigError(f"{key}.{k}", f"unknown key; allowed: {sorted(allowed)}")
    return cls(**raw)


def _check_axis_ranges(axes: dict, task: dict) -> None:
    limit = task_train_size(task)
    checks = {
        "n_train": (lambda v: 1 <= v <= limit,
                    f"an integer in [1, {limit}] (the {task['name']!r} task has {limit} training examples)"),
        "batch_size": (lambda v: v >= 1, "an integer >= 1"),
        "lr": (lambda v: v > 0, "a number > 0 (the learning rate)"),
        "momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
        "weight_decay": (lambda v: v >= 0, "a number >= 0"),
        "seed": (lambda v: v >= 0, "an integer >= 0"),
        "width": (lambda v: v >= 1, "an integer >= 1"),
        "depth": (lambda v: v >= 0, "an integer >= 0"),
    }
    for name, axis in axes.items():
        ok, allowed = checks[name]
        for value in axis.bounds():
            if not ok(value):
                raise ConfigError(f"axes.{name}", f"value {value!r} is out of range; expected {allowed}")
            if name in axes_mod.INT_AXES and value >= INT64:
                raise ConfigError(f"axes.{name}", f"value {value!r} is out of range; the store keeps "
                                  "64-bit integers")


def _typed(key: str, value: Any, kind: type):
    if not isinstance(value, kind):
        raise ConfigError(key, f"expected {kind.__name__}, got {value!r}")
    return value


def _check_int(key: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(key, f"value {value!r} is out of range; expected an integer >= {minimum}")


def _check_number(key: str, value: Any, allowed: str, ok) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(key, f"expected {allowed}, got {value!r}")
    if not ok(value):
        raise ConfigError(key, f"value {value!r} is out of range; expected {allowed}")


def total_steps(trial: dict) -> int:
    """Optimizer steps in a trial's budget: ``steps``, or ceil(epochs * n_train / batch_size)."""
    budget = trial["budget"]
    if "steps" in budget:
        return int(budget["steps"])
    return max(1, math.ceil(budget["epochs"] * trial["n_train"] / trial["batch_size"]))


def noise_scale(lr: float, n_train: int, batch_size: int, momentum: float) -> float:
    """SGD noise scale g = eps N / (B (1 - m)) (Smith & Le 2018)."""
    return lr * n_train / (batch_size * (1.0 - momentum))


def config_columns(trial: dict) -> dict:
    """The flat, queryable columns of a trial config (the full config is kept as JSON too)."""
    return {
        "trial_id": trial_id(trial),
        "task": trial["task"]["name"],
        "model": trial["model"]["name"],
        "width": trial["model"]["width"],
        "depth": trial["model"]["depth"],
        "n_train": trial["n_train"],
        "batch_size": trial["batch_size"],
        "lr": trial["lr"],
        "momentum": trial["momentum"],
        "weight_decay": trial["weight_decay"],
        "seed": trial["seed"],
        "epochs": trial["budget"].get("epochs"),
        "noise_scale": noise_scale(trial["lr"], trial["n_train"], trial["batch_size"], trial["momentum"]),
        "config": json.dumps(trial, sort_keys=True, separators=(",", ":")),
    }
