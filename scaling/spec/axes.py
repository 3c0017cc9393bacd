"""Sweep axes: the values a hyperparameter takes, on a grid or drawn at random.

Grid forms (any search):
  ``7`` or ``[1, 2, 3]``                a single value or an explicit list
  ``{log2: [4, 128]}``                  powers of two between the bounds
  ``{log: [0.01, 1.0], num: 5}``        log-spaced values
  ``{linear: [0.0, 0.9], num: 4}``      evenly spaced values
Random forms (``search: {kind: random}`` only), drawn once per sample:
  ``{loguniform: [1.0e-5, 1.0e-1]}``    log-uniform in [lo, hi]
  ``{uniform: [lo, hi]}``               uniform in [lo, hi]
  ``{one_minus_loguniform: [1.0e-3, 1.0e-1]}``  1 - m log-uniform, so m in [0.9, 0.999]
  ``{choice: [16, 32, 64]}``            one of the listed values

Random search draws ``samples`` points of the random axes, and pairs each
with every point of the grid axes (so a random lr/momentum can be crossed with
a grid over n_train and batch_size). Draw i uses its own generator seeded by
(seed, i), so adding samples keeps the earlier ones.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

import scaling.spec.schema as schema
from scaling.errors import ConfigError
from scaling.spec.schema import canon  # noqa: F401 (re-exported)

GRID_FORMS = ("log2", "log", "linear")
RANDOM_FORMS = ("loguniform", "uniform", "one_minus_loguniform", "choice")
MAX_AXIS_VALUES = 100_000


@dataclass(frozen=True)
class GridAxis:
    values: tuple

    def bounds(self) -> tuple:
        return self.values


@dataclass(frozen=True)
class RandomAxis:
    form: str
    lo: float
    hi: float
    is_int: bool
    choices: tuple = ()

    def bounds(self) -> tuple:
        if self.form == "choice":
            return self.choices
        if self.form == "one_minus_loguniform":
            return (canon(1 - self.hi), canon(1 - self.lo))
        return (self.lo, self.hi)

    def draw(self, rng: np.random.Generator):
        if self.form == "choice":
            return self.choices[int(rng.integers(len(self.choices)))]
        if self.form == "uniform":
            if self.is_int:
                return int(rng.integers(int(self.lo), int(self.hi) + 1))
            return canon(rng.uniform(self.lo, self.hi))
        u = math.exp(rng.uniform(math.log(self.lo), math.log(self.hi)))
        if self.form == "one_minus_loguniform":
            return canon(1.0 - u)
        return int(round(u)) if self.is_int else canon(u)


def parse_axes(raw: Any, random_search: bool) -> dict:
    """Validate the ``axes:`` mapping into {name: GridAxis | RandomAxis}.

    Which names are axes, their types and their range checks come from
    :data:`scaling.spec.schema.FIELDS`."""
    if not isinstance(raw, dict):
        raise ConfigError("axes", f"expected a mapping of axis name to values, got {type(raw).__name__}")
    out = {}
    for name, spec in raw.items():
        if name not in schema.SWEEPABLE:
            raise ConfigError(f"axes.{name}", f"unknown axis; allowed axes are {list(schema.SWEEPABLE)}")
        out[name] = parse_axis(f"axes.{name}", spec, schema.BY_NAME[name], random_search)
    for name in schema.REQUIRED:
        if name not in out:
            raise ConfigError(f"axes.{name}", f"missing; every sweep needs {', '.join(schema.REQUIRED[:-1])} "
                              f"and {schema.REQUIRED[-1]} axes")
    if random_search and not any(isinstance(a, RandomAxis) for a in out.values()):
        raise ConfigError("search.kind", "'random' needs at least one random axis "
                          f"({', '.join(RANDOM_FORMS)}); use kind: grid otherwise")
    return out


def parse_axis(key: str, spec: Any, field: schema.Field, random_search: bool):
    """One axis (``spec`` as written in YAML) of ``field``, its values checked against the field."""
    numeric = field.kind in (int, float)
    if isinstance(spec, dict):
        forms = [k for k in spec if k in GRID_FORMS + RANDOM_FORMS]
        extra = [k for k in spec if k not in GRID_FORMS + RANDOM_FORMS + ("num",)]
        if len(forms) != 1 or extra:
            raise ConfigError(key, f"expected exactly one of {list(GRID_FORMS + RANDOM_FORMS)} "
                              f"(plus 'num' for log/linear), got keys {sorted(map(str, spec))}")
        form = forms[0]
        if not numeric and form != "choice":
            raise ConfigError(key, f"'{form}' needs numbers; {field.name} takes {_kind_text(field)}: "
                              "give a value, a list or {choice: [...]}")
        if form in RANDOM_FORMS:
            if not random_search:
                raise ConfigError(key, f"'{form}' draws random values, which needs "
                                  "search: {kind: random, samples: S}")
            axis = _parse_random(key, form, spec, field)
        else:
            axis = GridAxis(tuple(dict.fromkeys(_grid_values(key, form, spec, field.kind is int))))
    elif isinstance(spec, list):
        axis = GridAxis(tuple(dict.fromkeys(value(key, v, field) for v in spec)))  # drop repeats, keep order
    else:
        axis = GridAxis((value(key, spec, field),))
    if isinstance(axis, GridAxis) and not axis.values:
        raise ConfigError(key, "the axis is empty; give at least one value")
    for v in axis.bounds():
        check(key, v, field)
    return axis


def check(key: str, v: Any, field: schema.Field) -> None:
    """Raise ConfigError unless ``v`` passes the field's range check and choices."""
    if field.choices and v not in field.choices:
        raise ConfigError(key, f"value {v!r} is not allowed; choose one of {list(field.choices)}")
    if field.check is not None and not field.check(v):
        raise ConfigError(key, f"value {v!r} is out of range; expected {field.allowed}")


def value(key: str, v: Any, field: schema.Field):
    """One value written in YAML, as ``field``'s kind (numbers also checked to be finite)."""
    if field.kind is bool:
        if not isinstance(v, bool):
            raise ConfigError(key, f"expected true or false, got {v!r}")
        return v
    if field.kind is str:
        if not isinstance(v, str):
            raise ConfigError(key, f"expected one of {list(field.choices)}, got {v!r}")
        return v
    return _number(key, v, field.kind is int)


def _kind_text(field: schema.Field) -> str:
    if field.kind is bool:
        return "true or false"
    return f"one of {list(field.choices)}" if field.choices else field.kind.__name__


def _grid_values(key: str, form: str, spec: dict, is_int: bool) -> list:
    lo, hi = _pair(key, form, spec[form])
    if form == "log2":
        if "num" in spec:
            raise ConfigError(f"{key}.num", "log2 takes every power of two between the bounds; drop 'num'")
        if lo <= 0:
            raise ConfigError(key, f"log2 bounds must be > 0, got {lo!r}")
        first = math.ceil(math.log2(lo) - 1e-9)
        last = min(math.floor(math.log2(hi) + 1e-9), 1023)  # 2.0**1024 overflows a float
        ks = range(max(first, 0) if is_int else first, last + 1)  # integers: 1, 2, 4, ... only
        if len(ks) > MAX_AXIS_VALUES:
            raise ConfigError(key, f"log2 range gives {len(ks)} values, over {MAX_AXIS_VALUES}")
        values = [2**k if is_int else canon(2.0**k) for k in ks]
        if not values:
            raise ConfigError(key, f"no power of two lies in [{lo}, {hi}]")
        return values
    num = spec.get("num")
    if isinstance(num, bool) or not isinstance(num, int) or not 1 <= num <= MAX_AXIS_VALUES:
        raise ConfigError(f"{key}.num", f"expected an integer in [1, {MAX_AXIS_VALUES}], got {num!r}")
    if form == "log":
        if lo <= 0:
            raise ConfigError(key, f"log bounds must be > 0, got {lo!r}. Did you pass log10 of the value?")
        raw = np.geomspace(lo, hi, num)
    else:
        raw = np.linspace(lo, hi, num)
    return [int(round(v)) if is_int else canon(v) for v in raw]


def _parse_random(key: str, form: str, spec: dict, field: schema.Field) -> RandomAxis:
    is_int = field.kind is int
    if "num" in spec:
        raise ConfigError(f"{key}.num", f"'{form}' is drawn once per sample; set search.samples instead of num")
    if form == "choice":
        if not isinstance(spec[form], list) or not spec[form]:
            raise ConfigError(key, "choice expects a non-empty list of values")
        choices = tuple(dict.fromkeys(value(key, v, field) for v in spec[form]))
        return RandomAxis(form, 0.0, 0.0, is_int, choices)
    lo, hi = _pair(key, form, spec[form])
    if form in ("loguniform", "one_minus_loguniform") and lo <= 0:
        raise ConfigError(key, f"{form} requires a lower bound > 0, got {lo!r}. "
                          "Did you pass a log-transformed value?")
    if form == "one_minus_loguniform" and hi > 1:
        raise ConfigError(key, f"one_minus_loguniform draws 1 - m, so bounds must be in (0, 1]; got {hi!r}")
    return RandomAxis(form, lo, hi, is_int)


def _pair(key: str, form: str, raw: Any) -> tuple:
    if not isinstance(raw, list) or len(raw) != 2:
        raise ConfigError(key, f"{form} expects [low, high], got {raw!r}")
    lo, hi = (_number(key, v, False) for v in raw)
    if lo > hi:
        raise ConfigError(key, f"{form} bounds are reversed: [{lo}, {hi}]; give [low, high]")
    return lo, hi


def _number(key: str, v: Any, is_int: bool):
    if isinstance(v, str):
        raise ConfigError(key, f"expected a number, got the string {v!r}{number_hint(v, is_int)}")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(key, f"expected a number, got {v!r}")
    if not math.isfinite(v):
        raise ConfigError(key, f"expected a finite number, got {v!r}")
    if is_int:
        if isinstance(v, float) and not v.is_integer():
            raise ConfigError(key, f"expected an integer, got {v!r}")
        return int(v)
    return canon(v)


_EXPONENT = re.compile(r"\s*([+-]?)(\d*)\.?(\d*)[eE]([+-]?)(\d+)\s*")


def number_hint(text: str, integer: bool = False) -> str:
    """Why a number came out as text, and how to write it so YAML reads a number (for an
    ``integer`` key: the digits). YAML 1.1 (PyYAML) reads a float only with a dot in the
    mantissa and a sign in the exponent: 1e-3 and 1.0e5 are text, 1.0e-3 and 1.0e+5 are numbers."""
    m = _EXPONENT.fullmatch(text)
    if m and (m[2] or m[3]):
        sign, whole, frac, exp_sign, exp = m.groups()
        fixed = f"{sign}{whole or '0'}.{frac or '0'}e{exp_sign or '+'}{exp}"
        if integer and len(exp) <= 2 and float(fixed).is_integer() and abs(float(fixed)) < 2**63:
            fixed = str(int(float(fixed)))
        if fixed != text.strip():
            return f" (YAML reads {text.strip()} as text: a number needs a dot and a signed exponent; write {fixed})"
    try:  # a number YAML would read, quoted
        ok = math.isfinite(float(text))
    except ValueError:
        ok = False
    return " (a number in quotes is text; drop the quotes)" if ok else ""


def count(axes: dict, search) -> int:
    """Trials the axes expand to (before removing repeated random draws)."""
    n = 1
    for axis in axes.values():
        if isinstance(axis, GridAxis):
            n *= len(axis.values)
    return n * (search.samples if search.kind == "random" else 1)


def expand(axes: dict, search) -> Iterator[dict]:
    """Yield axis points {name: value}: random samples outer, grid product inner."""
    grid = {k: a.values for k, a in axes.items() if isinstance(a, GridAxis)}
    rand = {k: a for k, a in sorted(axes.items()) if isinstance(a, RandomAxis)}
    samples = search.samples if search.kind == "random" else 1
    for i in range(samples):
        rng = np.random.default_rng([search.seed, i])
        drawn = {k: a.draw(rng) for k, a in rand.items()}
        for combo in itertools.product(*grid.values()):
            yield {**dict(zip(grid, combo)), **drawn}
