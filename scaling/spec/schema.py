"""The declared schema: every column of the store, what it is, and how a trial is made of it.

One list, :data:`FIELDS`, says for every column its type, its *role* and a
line of documentation:

- ``axis``: a hyperparameter that defines the trial (hashed into ``trial_id``;
  the analysis groups and tunes over these, ``seed`` being the replicate axis);
- ``outcome``: a measured metric (losses, accuracies, sharpness);
- ``result``: what a run produced besides metrics (status, steps, compute);
- ``bookkeeping``: ids, hosts, times, versions.

Everything else derives from the list: which keys a sweep config's ``axes:``
and sections (``model:``, ``optimizer:``, ``schedule:``) accept and their range
checks (:mod:`scaling.config`), the :class:`Trial` dataclass and its canonical
form (what :attr:`Trial.trial_id` hashes), the Parquet schemas
:data:`TRIALS_SCHEMA` and :data:`CURVES_SCHEMA`, and the analysis' axis columns
(:data:`AXIS_COLUMNS`). Adding a hyperparameter is one :class:`Field` here plus
its use in each backend.

The canonical form keeps ids stable across releases: a key equal to its
default is left out, except the keys of the first release (``legacy``), which
were always written. A field that does not apply to a trial (``beta2`` under
SGD, ``momentum`` under AdamW or Lion) takes its default, so such trials are not
duplicated.

No torch and no ray here: the driver and the analysis import this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Callable

import pyarrow as pa

from scaling.spec.models import SPECS

AXIS, OUTCOME, RESULT, BOOKKEEPING = "axis", "outcome", "result", "bookkeeping"
ROLES = (AXIS, OUTCOME, RESULT, BOOKKEEPING)
CODE_VERSION = "1"
"""Version of the training arithmetic. Bump it when a change alters the numbers a trial
produces; a resume then refuses to mix versions in one sweep (``--rerun-stale``,
``--accept-mixed``). Rows written before it existed read as version "1"."""
LEGACY_VERSION = "1"
"""What a missing ``code_version``/``data_version`` (a store of the first release) means."""
MODELS = tuple(SPECS)
"""Model names, from the model registry (scaling.spec.models)."""
MODEL_DEFAULTS = {n: (m.width, m.depth) for n, m in SPECS.items()}
"""(width, depth) of each model when the config gives none (see scaling.training.models for their meaning)."""
INT64 = 2**63
_TS = pa.timestamp("us", tz="UTC")
_ARROW = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string()}


@dataclass(frozen=True)
class Field:
    """One column: its type, role, and, for an axis, how a config sets and checks it."""

    name: str
    """Column name (and config key)."""
    kind: type
    """Python type of a value: int, float, bool or str."""
    role: str
    """``axis``, ``outcome``, ``result`` or ``bookkeeping``."""
    doc: str
    """One line: what it is, with its unit."""
    default: Any = None
    """Value when a config does not set it; a callable takes the trial's other values."""
    check: Callable[[Any], bool] | None = None
    """Range check of one value (axes)."""
    allowed: str = ""
    """What ``check`` allows, for error messages."""
    tables: tuple = ("trials",)
    """Tables that hold the column: 'trials' and/or 'curves'."""
    arrow: pa.DataType | None = None
    """Arrow type; default from ``kind``."""
    path: tuple = ()
    """Where an axis sits in the canonical trial JSON; default ``(name,)``."""
    legacy: bool = False
    """Written to the canonical form even at its default (keys of the first release)."""
    section: str | None = None
    """Config section that may also set it ('model', 'optimizer', 'schedule')."""
    key: str | None = None
    """Its key in that section (default: the name)."""
    sweepable: bool = True
    """Whether ``axes:`` may vary it."""
    required: bool = False
    """Whether every sweep must give it."""
    choices: tuple = ()
    """Allowed values of a text axis."""
    applies: Callable[[dict], bool] | None = None
    """Whether it means anything for a trial with these values; if not, it takes its default."""

    @property
    def arrow_type(self) -> pa.DataType:
        return self.arrow or _ARROW[self.kind]

    @property
    def trial_path(self) -> tuple:
        return self.path or (self.name,)

    @property
    def config_key(self) -> str:
        return self.key or self.name

    def default_for(self, values: dict) -> Any:
        return self.default(values) if callable(self.default) else self.default


def _between(lo, hi, *, open_hi: bool = False, open_lo: bool = False):
    def ok(v) -> bool:
        return (v > lo if open_lo else v >= lo) and (v < hi if open_hi else v <= hi)
    return ok


def _sgd(v: dict) -> bool:
    return v.get("optimizer", "sgd") == "sgd"


def _adamw(v: dict) -> bool:
    return v.get("optimizer", "sgd") == "adamw"


def _betas(v: dict) -> bool:
    return v.get("optimizer", "sgd") in ("adamw", "lion")


def _beta2_default(v: dict) -> float:
    """0.999 (AdamW's, and what beta2 reads under SGD), 0.99 under Lion (the paper's)."""
    return 0.99 if v.get("optimizer") == "lion" else 0.999


def _decays(v: dict) -> bool:
    return v.get("schedule", "constant") in ("cosine", "wsd")


_MAX_LR = 1e6
_MAX_SIZE = 10**9
FIELDS: tuple[Field, ...] = (
    # ---- axes: what a trial is --------------------------------------------------------------
    Field("task", str, AXIS, "task name; its options are in `config`", sweepable=False, path=("task", "name")),
    Field("model", str, AXIS, "architecture: mlp, cnn, resnet, transformer or task (the task's own)",
          default="mlp", choices=MODELS, section="model", key="name", sweepable=False,
          path=("model", "name"), legacy=True),
    Field("width", int, AXIS, "hidden units (MLP), channels or multiplier (CNN, ResNet), d_model (transformer)",
          default=lambda v: MODEL_DEFAULTS[v["model"]][0], check=_between(1, 1 << 16),
          allowed="an integer in [1, 65536]", section="model", path=("model", "width"), legacy=True),
    Field("depth", int, AXIS, "hidden layers, conv blocks, residual blocks per stage or transformer blocks",
          default=lambda v: MODEL_DEFAULTS[v["model"]][1], check=_between(0, 1024),
          allowed="an integer in [0, 1024]", section="model", path=("model", "depth"), legacy=True),
    Field("heads", int, AXIS, "attention heads of the transformer (null: width // 32)", check=_between(1, 1 << 16),
          allowed="an integer in [1, 65536]", section="model", path=("model", "heads"), sweepable=False),
    Field("n_train", int, AXIS, "N, training examples: the first N of the seed's permutation of the pool",
          check=_between(1, _MAX_SIZE), allowed="an integer >= 1", required=True, legacy=True),
    Field("batch_size", int, AXIS, "B, examples per optimizer step (at most n_train)",
          check=_between(1, 1 << 24), allowed="an integer in [1, 16777216]", required=True, legacy=True),
    Field("lr", float, AXIS, "ε, the peak learning rate", check=_between(0, _MAX_LR, open_lo=True),
          allowed="a number in (0, 1e6] (the learning rate)", required=True, legacy=True),
    Field("optimizer", str, AXIS, "sgd (momentum, coupled weight decay), adamw (decoupled weight decay) or "
          "lion (sign of an interpolated momentum, decoupled weight decay); scaling.training.optim",
          default="sgd", choices=("sgd", "adamw", "lion"), section="optimizer", key="name"),
    Field("momentum", float, AXIS, "m, SGD momentum (heavy ball, dampening 0)", default=0.0,
          check=_between(0, 1, open_hi=True), allowed="a number in [0, 1)", section="optimizer",
          legacy=True, applies=_sgd),
    Field("nesterov", bool, AXIS, "Nesterov momentum (SGD with momentum > 0)", default=False,
          section="optimizer", applies=lambda v: _sgd(v) and v.get("momentum", 0.0) > 0),
    Field("weight_decay", float, AXIS, "weight decay: added to the gradient (SGD) or decoupled (AdamW, Lion)",
          default=0.0, check=_between(0, _MAX_LR), allowed="a number >= 0", section="optimizer", legacy=True),
    Field("beta1", float, AXIS, "β₁: AdamW's first-moment decay; Lion's weight of the momentum in its update",
          default=0.9, check=_between(0, 1, open_hi=True), allowed="a number in [0, 1)", section="optimizer",
          applies=_betas),
    Field("beta2", float, AXIS, "β₂: AdamW's second-moment decay (default 0.999); Lion's momentum decay "
          "(default 0.99)", default=_beta2_default, check=_between(0, 1, open_hi=True),
          allowed="a number in [0, 1)", section="optimizer", applies=_betas),
    Field("eps", float, AXIS, "AdamW's ε added to the root of the second moment", default=1e-8,
          check=_between(0, 1, open_lo=True), allowed="a number in (0, 1]", section="optimizer", applies=_adamw),
    Field("schedule", str, AXIS, "learning-rate schedule after warmup: constant, cosine or wsd (warmup-stable-decay)",
          default="constant", choices=("constant", "cosine", "wsd"), section="schedule", key="name"),
    Field("warmup_steps", int, AXIS, "steps of linear warmup from lr/W to lr", default=0,
          check=_between(0, _MAX_SIZE), allowed="an integer >= 0", section="schedule"),
    Field("warmup_frac", float, AXIS, "warmup as a fraction of the step budget (instead of warmup_steps)",
          default=0.0, check=_between(0, 1, open_hi=True), allowed="a number in [0, 1)", section="schedule"),
    Field("decay_frac", float, AXIS, "WSD: fraction of the budget over which lr decays linearly at the end",
          default=0.2, check=_between(0, 1, open_lo=True), allowed="a number in (0, 1]", section="schedule",
          applies=lambda v: v.get("schedule") == "wsd"),
    Field("final_lr_frac", float, AXIS, "cosine and WSD: the last step's lr as a fraction of lr", default=0.0,
          check=_between(0, 1), allowed="a number in [0, 1]", section="schedule", applies=_decays),
    Field("seed", int, AXIS, "replicate: fixes init, training subset and batch order", default=0,
          check=_between(0, INT64, open_hi=True), allowed="an integer >= 0", legacy=True),
    Field("epochs", float, AXIS, "budget in passes over the N examples (null: a step budget)",
          path=("budget", "epochs"), sweepable=False),
    Field("budget_steps", int, AXIS, "budget in optimizer steps (null: an epochs budget)",
          path=("budget", "steps"), sweepable=False),
    # ---- keys and bookkeeping ---------------------------------------------------------------
    Field("sweep", str, BOOKKEEPING, "sweep name", tables=("trials", "curves")),
    Field("trial_id", str, BOOKKEEPING, "hash of the trial's canonical config", tables=("trials", "curves")),
    Field("run_id", str, BOOKKEEPING, "one run (attempt) of a trial; curves carry their run's id",
          tables=("trials", "curves")),
    # ---- results ----------------------------------------------------------------------------
    Field("status", str, RESULT, "ok, diverged, pruned (stopped at a rung: scaling.training.prune) or failed"),
    Field("error", str, RESULT, "why a trial diverged or failed (null when ok)"),
    Field("step", int, RESULT, "optimizer steps taken at this eval point", tables=("curves",)),
    Field("epoch", float, RESULT, "examples_seen / n_train at this eval point", tables=("curves",)),
    Field("lr_now", float, RESULT, "learning rate of the step just taken (at step 0: of the first step)",
          tables=("curves",)),
    Field("steps", int, RESULT, "optimizer steps taken (fewer than the budget if diverged)"),
    Field("examples_seen", int, RESULT, "training examples consumed: steps × batch_size",
          tables=("trials", "curves")),
    Field("tokens_seen", int, RESULT, "examples_seen × tokens per example (the context of a language model)",
          tables=("trials", "curves")),
    Field("train_flops", float, RESULT, "training FLOPs counted from the model's matmuls and convolutions "
          "(forward and backward), not 6·N·D"),
    Field("noise_scale", float, RESULT, "SGD noise scale g = εN/(B(1−m)) (Smith & Le 2018); null for AdamW"),
    Field("noise_scale_exact", float, RESULT, "g for sampling without replacement, ε(N/B − 1)/(1−m); "
          "null for AdamW"),
    Field("n_params", int, RESULT, "trainable parameters (embeddings included)"),
    Field("wall_s", float, RESULT, "seconds from the trial's (or pack's) start", tables=("trials", "curves")),
    # ---- outcomes ---------------------------------------------------------------------------
    Field("train_loss", float, OUTCOME, "mean loss on the trial's N training examples",
          tables=("trials", "curves")),
    Field("val_loss", float, OUTCOME, "mean loss on the task's validation set (select on this)",
          tables=("trials", "curves")),
    Field("val_acc", float, OUTCOME, "accuracy (or the task's metric) on the validation set",
          tables=("trials", "curves")),
    Field("test_loss", float, OUTCOME, "mean loss on the task's test set (report this)",
          tables=("trials", "curves")),
    Field("test_acc", float, OUTCOME, "accuracy (or the task's metric) on the test set",
          tables=("trials", "curves")),
    Field("sharpness_init", float, OUTCOME, "top Hessian eigenvalue at the start (metrics: {sharpness: true})"),
    Field("sharpness_final", float, OUTCOME, "top Hessian eigenvalue at the end"),
    Field("b_simple", float, OUTCOME, "gradient noise scale B_simple = tr(Σ)/|G|² (McCandlish et al. 2018)",
          tables=("curves",)),
    Field("grad_sq_norm", float, OUTCOME, "moving-average estimate of |G|²", tables=("curves",)),
    Field("grad_cov_trace", float, OUTCOME, "moving-average estimate of tr(Σ)", tables=("curves",)),
    Field("example_grad_norm_mean", float, OUTCOME, "mean per-example gradient norm", tables=("curves",)),
    Field("example_grad_norm_std", float, OUTCOME, "std of per-example gradient norms", tables=("curves",)),
    # ---- bookkeeping ------------------------------------------------------------------------
    Field("host", str, BOOKKEEPING, "host that trained it"),
    Field("start_time", str, BOOKKEEPING, "start of the run (UTC)", arrow=_TS),
    Field("end_time", str, BOOKKEEPING, "end of the run (UTC)", arrow=_TS),
    Field("version", str, BOOKKEEPING, "scaling package version"),
    Field("code_version", str, BOOKKEEPING, "version of the training arithmetic (schema.CODE_VERSION)"),
    Field("data_version", str, BOOKKEEPING, "version of the task's data split and preprocessing"),
    Field("engine", str, BOOKKEEPING, "packed, single or ddp: how the sweep scheduled it"),
    Field("backend", str, BOOKKEEPING, "stacked, vmap, module or ddp: the math that trained it"),
    Field("config", str, BOOKKEEPING, "the trial's canonical config as JSON"),
)
BY_NAME = {f.name: f for f in FIELDS}
AXES = tuple(f for f in FIELDS if f.role == AXIS)
AXIS_COLUMNS = tuple(f.name for f in AXES)
"""Columns that define a trial: what the analysis groups and tunes over."""
REPLICATE = "seed"
"""The axis whose values are replicates (averaged over, resampled as clusters)."""
SWEEPABLE = tuple(f.name for f in AXES if f.sweepable)
"""Keys an ``axes:`` mapping accepts."""
REQUIRED = tuple(f.name for f in AXES if f.required)
OUTCOMES = tuple(f.name for f in FIELDS if f.role == OUTCOME)


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of 'trials' or 'curves', in declared order (axes are trial columns)."""
    return pa.schema([(f.name, f.arrow_type) for f in FIELDS if table in f.tables])


TRIALS_SCHEMA = arrow_schema("trials")
CURVES_SCHEMA = arrow_schema("curves")
TABLES = {"trials": TRIALS_SCHEMA, "curves": CURVES_SCHEMA}


# ---- values ---------------------------------------------------------------------------------

_canon_memo: dict = {}


def canon(x: Any) -> float:
    """A float rounded to 12 significant digits, so ids are stable across machines (-0.0 is 0.0)."""
    try:
        return _canon_memo[x]
    except (KeyError, TypeError):
        pass
    value = float(f"{float(x):.12g}") + 0.0
    if len(_canon_memo) < 1 << 16 and isinstance(x, (int, float)) and x == x:
        _canon_memo[x] = value
    return value


def coerce(f: Field, value: Any) -> Any:
    """A checked value of ``f``'s kind in canonical form (floats rounded by :func:`canon`)."""
    if value is None:
        return None
    if f.kind is float:
        return canon(value)
    if f.kind is int:
        return int(value)
    return value


# ---- the trial ------------------------------------------------------------------------------

class _TrialMethods:
    """Methods of :class:`Trial` (whose fields are generated from :data:`AXES`)."""

    @property
    def trial_id(self) -> str:
        """Stable id: a hash of the canonical JSON, the same on any machine and run (computed from a
        template of that JSON per shape of trial, see :func:`_template_id`)."""
        cached = self.__dict__.get("_id")
        if cached is None:
            cached = _template_id(self)
            object.__setattr__(self, "_id", cached)
        return cached

    def to_dict(self) -> dict:
        """The canonical, JSON-able config: what ``trial_id`` hashes (see the module docstring)."""
        out: dict = {"task": dict(self.task), "eval": dict(self.eval)}
        values = self.values()
        for name, legacy, dynamic, default, path in _CANON:
            value = values[name]
            if value is None or (not legacy and value == (default(values) if dynamic else default)):
                continue
            node = out
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
        if self.metrics:
            out["metrics"] = dict(self.metrics)
        return out

    def values(self) -> dict:
        """{axis name: value} (the task as its name)."""
        out = {"task": self.task["name"]}
        for name in _AXIS_NAMES:
            out[name] = getattr(self, name)
        return out

    @property
    def total_steps(self) -> int:
        """Optimizer steps in the budget: ``budget_steps``, or ceil(epochs · n_train / batch_size)."""
        if self.budget_steps is not None:
            return int(self.budget_steps)
        return max(1, math.ceil(self.epochs * self.n_train / self.batch_size))

    @property
    def model_spec(self) -> dict:
        """``{"name", "width", "depth"[, "heads"]}``: what the model builders take."""
        spec = {"name": self.model, "width": self.width, "depth": self.depth}
        if self.heads is not None:
            spec["heads"] = self.heads
        return spec

    def columns(self) -> dict:
        """The flat, queryable columns of the trial (its axes, ids and the derived noise scales)."""
        sgd = self.optimizer == "sgd"
        n, b, m = self.n_train, self.batch_size, self.momentum
        return {**self.values(), "trial_id": self.trial_id,
                "noise_scale": self.lr * n / (b * (1.0 - m)) if sgd else None,
                "noise_scale_exact": self.lr * (n / b - 1.0) / (1.0 - m) if sgd else None,
                "config": json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))}

    def replace(self, **changes) -> "Trial":
        return make_trial(self.task, {**self.values(), **changes}, eval=self.eval, metrics=self.metrics)


Trial = dataclasses.make_dataclass(
    "Trial",
    [("task", dict), ("eval", dict), ("metrics", dict | None)]
    + [(f.name, f.kind | None) for f in AXES if f.name != "task"],
    bases=(_TrialMethods,), frozen=True, kw_only=True, eq=True)
Trial.__module__ = __name__  # so pickle (Ray) finds scaling.spec.schema.Trial
Trial.__doc__ = ("One trial: its task and eval settings and one value per axis of scaling.spec.schema.FIELDS. "
                 "Build it with make_trial or Trial.from_dict; it is frozen.")


def make_trial(task: dict, values: dict, *, eval: dict, metrics: dict | None = None) -> "Trial":
    """A :class:`Trial` from checked axis values: defaults filled in, values canonical, and
    fields that do not apply to this trial (``applies``) reset to their defaults."""
    resolved: dict = {"task": task["name"]}
    get = values.get
    for name, kind, dynamic, default, f in _RESOLVE:
        value = get(name)
        if value is None:
            value = f.default(resolved) if dynamic else default
        if value is not None:
            value = canon(value) if kind is float else int(value) if kind is int else value
        resolved[name] = value
    for name, applies, reset, f in _APPLIES_RESET:
        if not applies(resolved):
            resolved[name] = coerce(f, f.default_for(resolved)) if reset is _DYNAMIC else reset
    del resolved["task"]
    # what Trial(**fields) does (a frozen dataclass without __post_init__ sets each field with
    # object.__setattr__), at a third of the cost: the driver builds a million of these
    trial = _new_trial(Trial)
    trial.__dict__.update(task=dict(task), eval=dict(eval), metrics=dict(metrics) if metrics else None,
                          **resolved)
    return trial


def trial_from_dict(d: dict) -> "Trial":
    """The :class:`Trial` of a canonical config dict (as stored in the ``config`` column)."""
    values = {}
    for f in AXES:
        node = d
        for part in f.trial_path:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            values[f.name] = node
    return make_trial(d["task"], values, eval=d.get("eval", {"points": 20}), metrics=d.get("metrics"))


Trial.from_dict = staticmethod(trial_from_dict)

_new_trial = object.__new__
assert not hasattr(Trial, "__post_init__") and not hasattr(Trial, "__slots__")
assert {f.name for f in dataclasses.fields(Trial)} == {"task", "eval", "metrics"} | {f.name for f in AXES if f.name != "task"}
_NOT_TASK = tuple(f for f in AXES if f.name != "task")
_AXIS_NAMES = tuple(f.name for f in _NOT_TASK)
_RESOLVE = tuple((f.name, f.kind, callable(f.default), f.default, f) for f in _NOT_TASK)
_DYNAMIC = object()
_APPLIES_RESET = tuple((f.name, f.applies, _DYNAMIC if callable(f.default) else coerce(f, f.default), f)
                       for f in AXES if f.applies is not None)
"""(name, applies, the coerced default a field that does not apply is reset to, field): computed
once for static defaults (make_trial runs a million times in a large sweep)."""
_CANON = tuple((f.name, f.legacy, callable(f.default), f.default, f.trial_path) for f in _NOT_TASK)


# ---- ids from templates ----------------------------------------------------------------------
#
# ``trial_id`` hashes the canonical JSON (``to_dict`` dumped with sorted keys). Building that
# dict and dumping it costs ~40 us a trial, too much for sweeps of millions. The JSON of every
# trial with the same context (task, eval, metrics) and the same set of present keys differs
# only in the values, so it is a template: literal text with a slot per value. A template is
# made from the first such trial by dumping its dict with placeholders in the slots, and checked
# by filling it with that trial's values and comparing with the plain dump; a template that
# does not reproduce it is not used. Filling one costs a few microseconds, and gives the same
# bytes, hence the same id.

_templates: dict = {}
_PLACE = "@@slot{}@@"


def _encode(value) -> str:
    """One JSON value as ``json.dumps`` writes it."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is float:
        return float.__repr__(value)
    if type(value) is int:
        return int.__repr__(value)
    return json.dumps(value)


def _frozen(d) -> Any:
    if d is None:
        return None
    try:
        key = tuple(sorted(d.items()))
        hash(key)
        return key
    except TypeError:
        return json.dumps(d, sort_keys=True, default=str)


def _template_id(trial) -> str:
    values = trial.values()
    present = tuple(name for name, legacy, dynamic, default, _ in _CANON
                    if (v := values[name]) is not None
                    and (legacy or v != (default(values) if dynamic else default)))
    key = (_frozen(trial.task), _frozen(trial.eval), _frozen(trial.metrics), present)
    template = _templates.get(key)
    if template is None:
        template = _make_template(trial, present)
        if template is None:
            return trial_id(trial.to_dict())
        if len(_templates) > 50_000:
            _templates.clear()
        _templates[key] = template
    return _fill(template, values)


def _fill(template, values) -> str:
    literals, names = template
    out = [literals[0]]
    add = out.append
    for name, literal in zip(names, literals[1:]):
        v = values[name]
        t = type(v)
        # exact types (never bool); no float zero: 0.0 and -0.0 are one key but two texts
        cache = (_FLOATS if v else None) if t is float else _INTS if t is int else None
        if cache is None:
            add(_encode(v))
        else:
            text = cache.get(v)
            if text is None:
                text = _encode(v)
                if len(cache) < 1 << 16:
                    cache[v] = text
            add(text)
        add(literal)
    return hashlib.sha256("".join(out).encode()).hexdigest()[:16]


_FLOATS: dict = {}
_INTS: dict = {}
"""JSON text of the numbers ids are made of, by exact type (1 and 1.0 are equal keys, so one dict
each; a sweep has few distinct values per axis and a million points)."""


def _pieces(marked: dict, names) -> tuple | None:
    """(literal pieces, slot names) of the canonical JSON of ``marked``, whose slot i holds the
    placeholder ``_PLACE.format(i)`` for ``names[i]``; None if a placeholder is not found once."""
    text = json.dumps(marked, sort_keys=True, separators=(",", ":"), allow_nan=False)
    found = []
    for i, name in enumerate(names):
        marker = json.dumps(_PLACE.format(i))
        if text.count(marker) != 1:
            return None
        found.append((text.index(marker), len(marker), name))
    literals, order, at = [], [], 0
    for start, length, name in sorted(found):
        literals.append(text[at:start])
        order.append(name)
        at = start + length
    literals.append(text[at:])
    return tuple(literals), tuple(order)


def _make_template(trial, present: tuple):
    """(literal pieces, slot names) of the canonical JSON of trials shaped like ``trial``, or None."""
    canonical = trial.to_dict()
    paths = {name: path for name, _, _, _, path in _CANON}
    marked = json.loads(json.dumps(canonical))
    for i, name in enumerate(present):
        node = marked
        for part in paths[name][:-1]:
            node = node[part]
        node[paths[name][-1]] = _PLACE.format(i)
    template = _pieces(marked, present)
    if template is None:
        return None
    expected = hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":"),
                                         allow_nan=False).encode()).hexdigest()[:16]
    return template if _fill(template, trial.values()) == expected else None


def as_trial(trial) -> "Trial":
    """``trial`` itself, or the Trial of a canonical config dict."""
    return trial if isinstance(trial, Trial) else trial_from_dict(trial)


def trial_id(config) -> str:
    """Stable id of a trial or of its canonical config: a hash of the JSON, the same on any
    machine and run."""
    if isinstance(config, Trial):
        return config.trial_id
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def total_steps(trial) -> int:
    """Optimizer steps in a trial's budget (a Trial or its canonical config)."""
    return as_trial(trial).total_steps


def row_versions(code_version: Any, data_version: Any) -> tuple[str, str]:
    """(code, data) versions of a stored row; null (a first-release row) reads as LEGACY_VERSION."""
    return (code_version or LEGACY_VERSION, data_version or LEGACY_VERSION)


def shape_fields(varying) -> tuple:
    """(name, kind, default, whether the default is computed, whether the value itself keys the
    shape) of each varying axis, for :func:`point_shape`."""
    # a text or boolean value, or a number whose default is computed from the other values and
    # that is left out where it equals it (beta2's follows the optimizer), keys the shape itself
    return tuple((name, BY_NAME[name].kind, BY_NAME[name].default, callable(BY_NAME[name].default),
                  BY_NAME[name].kind in (str, bool) or (callable(BY_NAME[name].default) and not BY_NAME[name].legacy))
                 for name in varying)


def point_shape(fields: tuple, point: dict) -> tuple:
    """The shape of an axis point (:class:`PointIds`): its text and boolean values, and whether each
    number is positive and equal to its default. Points of one shape have the same canonical keys,
    and the same fields reset because they do not apply (``applies``)."""
    shape = []
    for name, kind, default, dynamic, by_value in fields:
        v = point[name]
        shape.append(v if by_value else (v > 0, dynamic or v == default))
    return tuple(shape)


class ByShape:
    """A value of each axis point, computed fast from what the first point of its *shape*
    (:func:`point_shape`) gave, and checked against ``make(point)`` (``SweepConfig.make``: the
    point's Trial) for the shape's first :attr:`CHECKS` points and then for one point in
    :attr:`SAMPLE`; a mismatch raises rather than give a wrong value. ``varying`` names the
    point's keys. A subclass gives ``_checked(point, shape, entry)`` (the value from ``make``;
    it makes the shape's entry, a list whose last item counts the checks left, and counts
    down) and ``_fast(entry, point)``: :class:`PointIds` (ids), :class:`scaling.spec.points.PointTrials`
    (Trials)."""

    CHECKS = 4
    SAMPLE = 256

    def __init__(self, make, varying):
        self.make = make
        self.fields = shape_fields(varying)
        self._shapes: dict = {}
        self._n = 0

    def __call__(self, point: dict):
        shape = point_shape(self.fields, point)
        entry = self._shapes.get(shape)
        self._n += 1
        if entry is None or entry[-1] > 0 or self._n % self.SAMPLE == 0:
            return self._checked(point, shape, entry)
        return self._fast(entry, point)


class PointIds(ByShape):
    """Trial ids of one sweep's axis points without building Trials (the driver hashes millions):
    ``ids(point)`` is the 16-hex-digit ``make(point).trial_id``.

    ``make(point)`` builds the Trial of a point (``SweepConfig.make``) and ``varying`` names the
    point's keys. Points alike in every text and boolean value, and in whether each number is
    positive and equal to its default, have canonical JSONs that differ only in those numbers:
    which keys are present, and which values a field that does not apply resets, follow from
    exactly that (:data:`FIELDS`: ``applies`` tests the optimizer, the schedule and whether the
    momentum is positive; legacy fields, always written, have computed defaults, and so has
    ``beta2``, whose value therefore keys the shape like a text's). So each
    such *shape* gets a template from its first point, checked against the Trial's own id for
    its first few points and then for one point in 256; a mismatch raises rather than give a
    wrong id.
    """

    def _fast(self, entry, point: dict) -> str:
        return _fill(entry[0], point)

    def _checked(self, point: dict, shape: tuple, entry) -> str:
        trial = self.make(point)
        expected = trial.trial_id
        if entry is None:
            template = self._template(trial, point)
            if template is None:
                return expected
            entry = self._shapes[shape] = [template, self.CHECKS]
        got = _fill(entry[0], point)
        if got != expected:
            raise RuntimeError(f"trial id template of shape {shape} gives {got}, the trial's own id is "
                               f"{expected}: a field's rules changed and PointIds needs them (scaling.spec.schema)")
        entry[1] -= 1
        return expected

    def _template(self, trial, point: dict):
        """(literal pieces, slot names) with a slot for each number of the point that the canonical
        JSON holds as given; everything else literal."""
        canonical = trial.to_dict()
        marked = json.loads(json.dumps(canonical))
        slots = []
        for name, kind, _, _, _ in self.fields:
            if kind is str or kind is bool:
                continue
            path = BY_NAME[name].trial_path
            node = marked
            for part in path[:-1]:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict) and path[-1] in node and node[path[-1]] == point[name] \
                    and type(node[path[-1]]) is type(point[name]):
                node[path[-1]] = _PLACE.format(len(slots))
                slots.append(name)
        return _pieces(marked, slots)
