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

import bisect
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import scaling.spec.axes as axes_mod
import scaling.spec.schema as schema
from scaling.config.file import MAX_CONFIG_BYTES, parse_yaml, read_text
from scaling.errors import ConfigError
from scaling.spec.models import SPECS
from scaling.spec.schema import MODEL_DEFAULTS, MODELS, Trial, make_trial, total_steps, trial_id  # noqa: F401
from scaling.tasks.resolve import own_model, packable, task_kind, task_train_size, validate_task

MODEL_INPUTS = {s.name: s.inputs for s in SPECS.values() if s.inputs}
"""The task inputs (scaling.tasks.Dataset.kind) each built-in model takes."""
ENGINES = {"packed", "single"}
MAX_TRIALS = 100_000
"""Trials a sweep may expand to without --allow-large."""
MAX_TRIALS_HELD = 1_000_000
"""Trials one driver holds in memory, even with --allow-large (about 1 KB and 0.3 ms each)."""
MAX_DEPTH = 32
MAX_VALUES = 1_000_000
INT64 = 2**63
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
SECTIONS = tuple(dict.fromkeys(f.section for f in schema.AXES if f.section))
"""Config sections that set axis values for every trial: model, optimizer, schedule."""
TOP_KEYS = {"name", "description", "task", "axes", "search", "budget", "eval",
            "resources", "engine", "packing", "retries", "workers_per_trial",
            "metrics", *SECTIONS}
MAX_STEPS = 10**9
"""The most optimizer steps one trial may take (a budget beyond it cannot finish)."""


@dataclass(frozen=True, kw_only=True)
class MetricsConfig:
    noise_scale: bool = False
    """Record the gradient noise scale B_simple = tr(Σ)/|G|² (McCandlish et al. 2018) in the
    curves, from each training batch split in two halves (scaling.training.metrics)."""
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
            _check_int(f"metrics.{key}", getattr(self, key), 1, 1 << 20)

    @property
    def enabled(self) -> bool:
        return self.noise_scale or self.sharpness or self.grad_norms

    def to_trial(self) -> dict:
        """The canonical mapping that goes into a trial config (only when enabled)."""
        return {"noise_scale": self.noise_scale, "sharpness": self.sharpness, "grad_norms": self.grad_norms,
                "noise_ema": schema.canon(self.noise_ema), "sharpness_iters": self.sharpness_iters,
                "sharpness_examples": self.sharpness_examples, "grad_norm_examples": self.grad_norm_examples}


PRUNE_METRICS = {"val_loss": False, "train_loss": False, "test_loss": False, "val_acc": True, "test_acc": True}
"""Metrics pruning may rank on, and whether larger is better."""
PRUNE_NEVER_GROUP = ("batch_size", "seed")
"""Axes a pruning group never holds fixed: the batch size is what a group ranks, seeds are averaged."""


@dataclass(frozen=True, kw_only=True)
class PruneConfig:
    """Early stopping inside packs (successive halving / ASHA; scaling.training.prune)."""

    rungs: tuple = (0.1, 0.3)
    """Fractions of each trial's step budget at which its group is ranked, increasing, in (0, 1)."""
    keep: float = 0.34
    """Fraction of a group's configurations that go on past a rung (the best by ``metric``)."""
    metric: str = "val_loss"
    """What ranks them (lower is better for losses, higher for accuracies)."""
    group_by: tuple | None = None
    """Axes whose values define a group (default: every axis but batch_size, lr and seed)."""
    bowl: int = 2
    """Grid steps (of batch_size and lr) around a group's current best that are never pruned: 2 by
    default, what B_opt's asymmetric refinement reads (a best batch size next to a pruned one
    whose optimum leans toward it is a bound; docs/pruning.md)."""

    def __post_init__(self):
        rungs = self.rungs
        if not isinstance(rungs, (list, tuple)) or not rungs:
            raise ConfigError("search.prune.rungs", f"expected a list of fractions of the budget like "
                              f"[0.1, 0.3], got {rungs!r}")
        for r in rungs:
            _check_number("search.prune.rungs", r, "fractions in (0, 1)", lambda v: 0 < v < 1)
        if list(rungs) != sorted(set(rungs)):
            raise ConfigError("search.prune.rungs", f"value {list(rungs)!r} must increase strictly, "
                              "like [0.1, 0.3]")
        object.__setattr__(self, "rungs", tuple(float(r) for r in rungs))
        _check_number("search.prune.keep", self.keep, "a fraction in (0, 1), like 0.34 (a third)",
                      lambda v: 0 < v < 1)
        if self.metric not in PRUNE_METRICS:
            raise ConfigError("search.prune.metric", f"value {self.metric!r} is not allowed; choose one of "
                              f"{sorted(PRUNE_METRICS)}")
        _check_int("search.prune.bowl", self.bowl, 0, 64)
        if self.group_by is not None:
            if not isinstance(self.group_by, (list, tuple)):
                raise ConfigError("search.prune.group_by", f"expected a list of axis names, got {self.group_by!r}")
            for name in self.group_by:
                if name not in schema.SWEEPABLE:
                    raise ConfigError("search.prune.group_by", f"unknown axis {name!r}; allowed: "
                                      f"{sorted(set(schema.SWEEPABLE) - set(PRUNE_NEVER_GROUP))}")
                if name in PRUNE_NEVER_GROUP:
                    raise ConfigError("search.prune.group_by", f"{name!r} cannot group: a group ranks its "
                                      "batch sizes and averages its seeds")
            object.__setattr__(self, "group_by", tuple(dict.fromkeys(self.group_by)))

    def to_trial(self, grid: dict) -> dict:
        """The mapping that goes into a trial's ``eval`` (``grid``: the sorted batch_size and lr values)."""
        out = {"rungs": list(self.rungs), "keep": schema.canon(float(self.keep)), "metric": self.metric,
               "bowl": self.bowl, "grid": grid}
        if self.group_by is not None:
            out["group_by"] = list(self.group_by)
        return out


ADAPTIVE_BUDGET = 0.33
"""An adaptive sweep's default budget: a third of its full grid's training steps."""
ADAPTIVE_ROUNDS = 3
"""An adaptive sweep's default rounds."""


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    kind: str = "grid"
    """'grid' (cartesian product of axes), 'random' (samples x grid) or 'adaptive' (rounds of trials
    of the grid placed where the fits need them: analysis.plan.adaptive, cluster.rounds)."""
    samples: int = 1
    """Random draws of the random axes; each draw is paired with every grid point."""
    seed: int = 0
    """Seed of the random draws: the same seed gives the same trials."""
    prune: PruneConfig | None = None
    """Early stopping inside packs (``{rungs: [0.1, 0.3], keep: 0.34, metric: val_loss}``); None: off."""
    rounds: int | None = None
    """An adaptive sweep's rounds (default 3): round 0 a coarse grid, each later one placed by the
    fits of what is stored."""
    budget: float | dict | None = None
    """An adaptive sweep's training steps: a fraction in (0, 1] of its full grid's (default 0.33),
    or ``{steps: S}``."""

    def __post_init__(self):
        if self.kind not in ("grid", "random", "adaptive"):
            raise ConfigError("search.kind", f"value {self.kind!r} is not allowed; use 'grid', 'random' or "
                              "'adaptive'")
        _check_int("search.samples", self.samples, 1, MAX_VALUES)
        _check_int("search.seed", self.seed, 0)
        if self.prune is not None and not isinstance(self.prune, PruneConfig):
            object.__setattr__(self, "prune", _section(PruneConfig, "search.prune", self.prune))
        for key in ("rounds", "budget"):
            if getattr(self, key) is not None and self.kind != "adaptive":
                raise ConfigError(f"search.{key}", f"is for an adaptive sweep; add kind: adaptive or remove "
                                  f"{key} (this search is {self.kind!r})")
        if self.kind == "adaptive":
            _check_int("search.rounds", self.n_rounds, 1, 100)
            budget = self._budget
            if isinstance(budget, dict):
                if set(budget) != {"steps"}:
                    raise ConfigError("search.budget", f"expected a fraction of the full grid's steps like 0.33, "
                                      f"or {{steps: S}}, got {budget!r}")
                _check_int("search.budget.steps", budget["steps"], 1)
            else:
                _check_number("search.budget", budget, "a fraction in (0, 1] of the full grid's training "
                              "steps like 0.33, or {steps: S}", lambda v: 0 < v <= 1)

    def budget_steps(self, grid_steps: int) -> int:
        """An adaptive sweep's budget in training steps, given its full grid's."""
        budget = self._budget
        return int(budget["steps"]) if isinstance(budget, dict) else int(budget * grid_steps)

    @property
    def _budget(self) -> float | dict:
        return ADAPTIVE_BUDGET if self.budget is None else self.budget

    @property
    def n_rounds(self) -> int:
        """An adaptive sweep's rounds (default ADAPTIVE_ROUNDS)."""
        return ADAPTIVE_ROUNDS if self.rounds is None else self.rounds


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
            _check_number("budget.epochs", self.epochs, "a number in (0, 1e6]", lambda v: 0 < v <= 1e6)
        else:
            _check_int("budget.steps", self.steps, 1, MAX_STEPS)


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
            _check_int("eval.every_steps", self.every_steps, 1, MAX_STEPS)
        else:
            _check_int("eval.points", 20 if self.points is None else self.points, 1, 100_000)

    def to_trial(self) -> dict:
        """The canonical mapping that goes into a trial config."""
        return {"every_steps": self.every_steps} if self.every_steps is not None else {"points": self.points or 20}


@dataclass(frozen=True, kw_only=True)
class ResourcesConfig:
    cpu: float = 1.0
    """CPUs per trial (fractions allowed); torch uses max(1, floor(cpu)) threads."""
    gpu: float = 0.0
    """GPUs per trial (fractions allowed)."""

    def __post_init__(self):
        _check_number("resources.cpu", self.cpu, "a number in (0, 4096]", lambda v: 0 < v <= 4096)
        _check_number("resources.gpu", self.gpu, "a number in [0, 1024]", lambda v: 0 <= v <= 1024)


@dataclass(frozen=True, kw_only=True)
class PackingConfig:
    max_members: int = 128
    """The most trials trained together in one pack."""
    memory_mb: float | None = None
    """Memory budget of one pack in MiB; default: measured (a share of the node's free memory)."""

    def __post_init__(self):
        _check_int("packing.max_members", self.max_members, 1, 1 << 16)
        if self.memory_mb is not None:
            _check_number("packing.memory_mb", self.memory_mb, "a number of MiB in (0, 16777216] (16 TiB; "
                          "no node has more)", lambda v: 0 < v <= 1 << 24)


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    name: str
    """Sweep name; also the folder name under the results directory."""
    task: dict
    """Validated task: {'name': ..., **options}."""
    fixed: dict = field(default_factory=dict)
    """Axis values set for every trial by the sections (model, optimizer, schedule); ``axes`` override them."""
    axes: dict = field(default_factory=dict)
    """Axis name -> parsed axis (see scaling.spec.axes)."""
    search: SearchConfig = field(default_factory=SearchConfig)
    budget: BudgetConfig
    eval: EvalConfig = field(default_factory=EvalConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    engine: str = "packed"
    """'packed' trains trials that share task, model and batch size as one vectorised
    model (scaling.training.backends.stacked); 'single' trains one model per Ray task."""
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
        from scaling.store.writer import reserved_name  # the store's layout says which names it uses

        if reserved_name(self.name):
            raise ConfigError("name", f"value {self.name!r} is not allowed: {reserved_name(self.name)}")
        if not isinstance(self.engine, str) or self.engine not in ENGINES:
            raise ConfigError("engine", f"value {self.engine!r} is not allowed; choose one of {sorted(ENGINES)}")
        _check_int("retries", self.retries, 0, 100)
        _check_int("workers_per_trial", self.workers_per_trial, 1, 1024)
        k = self.workers_per_trial
        for b in self.possible("batch_size"):
            if b % k:
                raise ConfigError("workers_per_trial", f"batch_size {b} is not divisible by "
                                  f"workers_per_trial {k}; the global batch is split evenly across workers")

    def possible(self, name: str) -> tuple:
        """The values (or, for a random axis, the bounds) axis ``name`` takes in this sweep."""
        if name in self.axes:
            return self.axes[name].bounds()
        if name in self.fixed:
            return (self.fixed[name],)
        f = schema.BY_NAME[name]
        return () if callable(f.default) or f.default is None else (f.default,)

    def count(self) -> int:
        """Number of axis points the sweep expands to, computed without expanding it
        (combinations with batch_size > n_train among them; see ``skipped``)."""
        return axes_mod.count(self.axes, self.search)

    def skipped(self) -> int | None:
        """Grid combinations left out because batch_size > n_train (None: random, known only
        after drawing)."""
        return _skipped(self.axes, self.search)

    def points(self) -> Iterator[dict]:
        """Axis points {name: value} with the sections' values filled in, B <= N only."""
        for point in axes_mod.expand(self.axes, self.search):
            values = {**self.fixed, **point}
            if values["batch_size"] <= values["n_train"]:
                yield values

    def trials(self, limit: int | None = MAX_TRIALS) -> list[Trial]:
        """Expand into trials, in a stable order (each once; random draws may repeat a point)."""
        n = self.count()
        if limit is not None and n > limit:
            raise ConfigError("axes", f"the sweep expands to {n:,} trials, over the limit of {limit:,}; "
                              "shrink the axes or pass --allow-large if you mean it")
        if n > MAX_TRIALS_HELD:
            raise ConfigError("axes", f"the sweep expands to {n:,} trials, over the {MAX_TRIALS_HELD:,} one "
                              "driver can hold in memory (even with --allow-large); split it into sweeps "
                              "over parts of an axis")
        unique: dict[str, Trial] = {}
        for values in self.points():
            trial = self.make(values)
            unique.setdefault(trial.trial_id, trial)
        if not unique:  # random draws only: a grid like this is refused when parsed
            raise ConfigError("axes.batch_size", "every drawn combination has batch_size > n_train, which "
                              "would repeat examples inside a batch; draw batch sizes up to n_train or "
                              "raise search.samples")
        return list(unique.values())

    def make(self, values: dict) -> Trial:
        """The trial of one axis point (values of this sweep's axes and sections)."""
        budget = ({"epochs": self.budget.epochs} if self.budget.epochs is not None
                  else {"budget_steps": self.budget.steps})
        return make_trial(self.task, {**values, **budget}, eval=self._eval_trial(),
                          metrics=self.metrics.to_trial() if self.metrics.enabled else None)


    def _eval_trial(self) -> dict:
        """The trial's ``eval`` mapping: the eval schedule, and the pruning rule when there is one."""
        ev = self.eval.to_trial()
        prune = self.search.prune
        if prune is None:
            return ev
        cached = self.__dict__.get("_eval_cache")
        if cached is None:
            grid = {a: sorted(schema.canon(float(v)) if a == "lr" else int(v) for v in self.possible(a))
                    for a in ("batch_size", "lr")
                    if not isinstance(self.axes.get(a), axes_mod.RandomAxis)}  # drawn: no grid
            cached = {**ev, "prune": prune.to_trial(grid)}
            object.__setattr__(self, "_eval_cache", cached)
        return cached


def load_config(path: str | Path, overrides: dict | None = None, *,
                max_bytes: int = MAX_CONFIG_BYTES) -> SweepConfig:
    """Read and validate a sweep config file (see scaling.config.file: a regular file of at
    most ``max_bytes`` bytes, YAML without Python tags or duplicate keys).

    ``overrides`` replaces top-level keys (command-line flags) before validation."""
    return config_from_text(read_text(path, max_bytes), repr(str(path)), overrides)


def config_from_text(text: str, where: str = "the config", overrides: dict | None = None) -> SweepConfig:
    """Parse and validate the YAML text of a sweep config (``where`` names it in messages)."""
    raw = parse_yaml(text, where)
    if overrides and isinstance(raw, dict):
        raw = {**raw, **overrides}
    return parse_config(raw)


def count_trials(raw: Any) -> int:
    """Trials a config mapping expands to (combinations with batch_size > n_train left out),
    reading it as data: only its shape, ``search`` and ``axes`` are checked. The task is
    neither validated nor loaded, so no plug-in module is imported, no factory called and no
    data file read: what a read-only command (``scaling status``) may do with a stored config."""
    if not isinstance(raw, dict):
        raise ConfigError("(top level)", f"a sweep config must be a mapping, got {type(raw).__name__}")
    _check_shape(raw)
    search = _section(SearchConfig, "search", raw.get("search", {}))
    axes = axes_mod.parse_axes(raw.get("axes"), search.kind == "random")
    return axes_mod.count(axes, search) - (_skipped(axes, search) or 0)


def _skipped(axes: dict, search: SearchConfig) -> int | None:
    """Grid combinations with batch_size > n_train (None: random, known only after drawing),
    counted without forming the pairs (two axes of 100,000 values are 10^10 of them)."""
    n, b = axes["n_train"], axes["batch_size"]
    if any(isinstance(a, axes_mod.RandomAxis) for a in (n, b)):
        return None
    sizes = sorted(b.values)
    bad = sum(len(sizes) - bisect.bisect_right(sizes, nt) for nt in n.values)
    return bad * (axes_mod.count(axes, search) // (len(n.values) * len(b.values)))


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
    search = _section(SearchConfig, "search", raw.get("search", {}))
    fixed = _parse_sections(raw)
    axes = axes_mod.parse_axes(raw["axes"], search.kind == "random")
    if search.kind == "adaptive" and len(axes.get("batch_size").bounds() if "batch_size" in axes else ()) < 2:
        raise ConfigError("search.kind", "'adaptive' needs a batch_size axis of several values (its rounds place "
                          "batch sizes around each group's optimum); use kind: grid otherwise")
    budget = _section(BudgetConfig, "budget", raw["budget"])
    possible = _possible_values(fixed, axes)
    _check_task_fits(task, possible)
    _check_model_fits_task(task, possible)
    _check_schedule(possible)
    _check_applicable(possible, axes)
    _check_steps(budget, possible)
    metrics = _section(MetricsConfig, "metrics", raw.get("metrics", {}) or {})
    workers = raw.get("workers_per_trial", 1)
    model = possible["model"][0]
    if metrics.enabled and isinstance(workers, int) and workers > 1:
        raise ConfigError("metrics", f"metrics are measured in one-process trials only, not with "
                          f"workers_per_trial: {workers}; drop one or the other")
    if isinstance(workers, int) and workers > 1 and (model != "mlp" or not packable(task)):
        raise ConfigError("workers_per_trial", f"data-parallel trials (workers_per_trial: {workers}) "
                          "train the MLP on built-in vector and image tasks only; got model "
                          f"{model!r} on task {task['name']!r}")
    # packs measure metrics and train any model vmap batches (scaling.training.backends.vmap); the planner
    # runs single what cannot pack, and says why
    engine = raw.get("engine", "packed")
    sweep = SweepConfig(
        name=raw["name"],
        description=_typed("description", raw.get("description", ""), str),
        task=task,
        fixed=fixed,
        axes=axes,
        search=search,
        budget=budget,
        eval=_section(EvalConfig, "eval", raw.get("eval", {}) or {}),
        resources=_section(ResourcesConfig, "resources", raw.get("resources", {}) or {}),
        engine=engine,
        packing=_section(PackingConfig, "packing", raw.get("packing", {}) or {}),
        retries=raw.get("retries", 2),
        workers_per_trial=raw.get("workers_per_trial", 1),
        metrics=metrics,
    )
    if min(possible["batch_size"]) > max(possible["n_train"]):
        raise ConfigError("axes.batch_size", f"every batch_size (from {min(possible['batch_size'])}) is larger "
                          f"than every n_train (up to {max(possible['n_train'])}), which would repeat examples "
                          "inside a batch; use batch sizes up to n_train")
    return sweep


def _parse_sections(raw: dict) -> dict:
    """{axis name: value} from the sections (``model: {name: cnn, width: 64}``,
    ``optimizer: adamw``, ``schedule: {name: cosine, warmup_frac: 0.05}``)."""
    fixed: dict = {}
    for section in SECTIONS:
        body = raw.get(section, {}) or {}
        fields = {f.config_key: f for f in schema.AXES if f.section == section}
        if isinstance(body, str) and "name" in fields:
            body = {"name": body}
        if not isinstance(body, dict):
            raise ConfigError(section, f"expected a mapping like {{name: ...}}, got {body!r}")
        for key, value in body.items():
            if key not in fields:
                raise ConfigError(f"{section}.{_key_text(key)}", f"unknown key; allowed: {sorted(fields)}")
            f = fields[key]
            where = f"{section}.{key}"
            fixed[f.name] = axes_mod.value(where, value, f)
            axes_mod.check(where, fixed[f.name], f)
    return fixed


def _possible_values(fixed: dict, axes: dict) -> dict:
    """{axis name: the values (bounds for random axes) it can take}, defaults resolved."""
    out: dict = {}
    for f in schema.AXES:
        if f.name == "task":
            continue
        if f.name in axes:
            out[f.name] = tuple(axes[f.name].bounds())
        elif f.name in fixed:
            out[f.name] = (fixed[f.name],)
        else:
            out[f.name] = (f.default_for({k: v[0] for k, v in out.items()}),)
    return out


def _check_task_fits(task: dict, possible: dict) -> None:
    limit = task_train_size(task)
    for n in possible["n_train"]:
        if n > limit:
            raise ConfigError("axes.n_train", f"value {n!r} is out of range; expected an integer in "
                              f"[1, {limit}] (the {task['name']!r} task has {limit} training examples)")


def _check_model_fits_task(task: dict, possible: dict) -> None:
    """The model can read the task's inputs, and the transformer's widths split into its heads."""
    model, heads = possible["model"][0], possible["heads"][0]
    if heads is not None and model != "transformer":
        raise ConfigError("model.heads", f"only the transformer has attention heads, not {model!r}")
    if model == "task":
        if not own_model(task):
            raise ConfigError("model.name", f"'task' uses the task's own model, but task {task['name']!r} "
                              "gives no make_model; choose one of "
                              f"{sorted(set(MODELS) - {'task'})} or add make_model to the plug-in")
        return
    kind = task_kind(task)
    if kind not in MODEL_INPUTS[model]:
        fits = sorted(m for m, kinds in MODEL_INPUTS.items() if kind in kinds)
        raise ConfigError("model.name", f"model {model!r} cannot read the {kind} of task "
                          f"{task['name']!r}; models for {kind}: {fits}")
    if heads is not None:
        for width in possible["width"]:
            if width % heads:
                raise ConfigError("model.heads", f"width {width} is not a multiple of heads {heads}")


def _check_schedule(possible: dict) -> None:
    if any(possible["warmup_steps"]) and any(possible["warmup_frac"]):
        raise ConfigError("schedule", "give warmup_steps or warmup_frac, not both")


def _check_applicable(possible: dict, axes: dict) -> None:
    """A field set to something other than its default must apply to some trial of the sweep
    (``beta2`` needs optimizer adamw, ``decay_frac`` schedule wsd, ...)."""
    for f in schema.AXES:
        if f.applies is None or f.name == "task":
            continue
        if all(v == f.default_for({k: p[0] for k, p in possible.items()}) for v in possible[f.name]):
            continue
        if not _applies_to_some(f.applies, possible):
            where = f"axes.{f.name}" if f.name in axes else f"{f.section or 'axes'}.{f.config_key}"
            raise ConfigError(where, f"{f.name} ({f.doc}) does not apply to any trial of this sweep "
                              f"(optimizer {list(possible['optimizer'])}, schedule "
                              f"{list(possible['schedule'])}); drop it or change those")


class _Reads(dict):
    """A mapping that records the keys read from it (with ``get``, ``[]`` or ``in``)."""

    def __init__(self, values: dict):
        super().__init__(values)
        self.read: set = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


def _applies_to_some(applies, possible: dict) -> bool:
    """Whether ``applies`` holds for some combination of the possible values. Only the fields it
    reads are combined (the product of every axis can be 10^15 combinations): once no
    combination of those reads another field, their combinations decide it."""
    first = {k: v[0] for k, v in possible.items()}
    keys: list = []
    while True:
        for combo in itertools.product(*(possible[k] for k in keys)):
            values = _Reads({**first, **dict(zip(keys, combo))})
            if applies(values):
                return True
            new = sorted(k for k in values.read if k in possible and k not in keys)
            if new:
                keys += new
                break
        else:
            return False


def _check_steps(budget: BudgetConfig, possible: dict) -> None:
    """No trial's budget may exceed MAX_STEPS optimizer steps."""
    if budget.steps is not None:
        return
    steps = budget.epochs * max(possible["n_train"]) / min(possible["batch_size"])
    if steps > MAX_STEPS:
        raise ConfigError("budget.epochs", f"{budget.epochs:g} epochs of n_train {max(possible['n_train'])} "
                          f"at batch_size {min(possible['batch_size'])} is {steps:.3g} steps, over the "
                          f"limit of {MAX_STEPS:,}; lower the epochs or raise the smallest batch_size")


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
            raise ConfigError(f"{key}.{_key_text(k)}", f"unknown key; allowed: {sorted(allowed)}")
    return cls(**raw)


def _typed(key: str, value: Any, kind: type):
    if not isinstance(value, kind):
        raise ConfigError(key, f"expected {kind.__name__}, got {value!r}")
    return value


def _check_int(key: str, value: Any, minimum: int, maximum: int = INT64 - 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected an integer >= {minimum}, got {value!r}{_hint(value, True)}")
    if not minimum <= value <= maximum:
        raise ConfigError(key, f"value {value!r} is out of range; expected an integer in [{minimum}, {maximum:,}]")


def _check_number(key: str, value: Any, allowed: str, ok) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(key, f"expected {allowed}, got {value!r}{_hint(value)}")
    if not ok(value):
        raise ConfigError(key, f"value {value!r} is out of range; expected {allowed}")


def _hint(value: Any, integer: bool = False) -> str:
    return axes_mod.number_hint(value, integer) if isinstance(value, str) else ""
