"""Fuzzing sweep configs: every malformed config is refused before any work starts with
one line (a ConfigError), or accepted only when it is valid. No other exception escapes.

Over 3,000 generated configs: mutations of valid configs (wrong types, missing and
unknown keys, odd values), axis specs with extreme bounds and sizes, sweeps of
billions of trials, file bytes through ``load_config`` (non-UTF-8, YAML that is
not a mapping, YAML tags, aliases, deep nesting), files around the size limit,
paths that are no regular file, keys given twice at any depth, a huge value for
every numeric key (each has an upper bound, seeds aside), and sweep names and
plug-in references (a module is never imported unless the function named is
marked @task_factory in its source). A few cases run through the real command
line. Below them, one minimal case per bug the fuzzing found.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from scaling.config.sweep import MAX_TRIALS, count_trials, load_config, parse_config
from scaling.spec.schema import trial_id
from scaling.spec.schema import BY_NAME
from scaling.errors import ConfigError
from scaling.spec.schema import TRIALS_SCHEMA
from scaling.tasks.resolve import task_train_size

ROOT = Path(__file__).resolve().parents[1]
EXPAND_UP_TO = 5_000  # accepted sweeps this small are expanded and checked trial by trial
INT64 = 2**63
MAX_MESSAGE = 1000
# No shrinking: a failure is reported as found (the minimal cases are the found-bug tests below),
# so a failing run stays as quick as a passing one.
FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True,
                phases=[Phase.explicit, Phase.reuse, Phase.generate])
EXAMPLES = {"mutated": 1400, "extreme axes": 400, "valid": 150, "billions": 50, "files": 400, "sizes": 150,
            "duplicate keys": 250, "numeric bounds": 300, "names": 200}


# ---- the property ----------------------------------------------------------------------

def refused_or_valid(load) -> str:
    """Run ``load()``; check a refusal is one short line and an accepted config is valid."""
    try:
        cfg = load()
    except ConfigError as e:
        assert_one_line(e)
        return "refused"
    check_valid(cfg)
    return "accepted"


def assert_one_line(e: ConfigError) -> None:
    msg = str(e)
    assert msg.startswith("config key '"), msg[:200]
    assert len(msg.splitlines()) == 1, f"message spans lines: {msg[:300]!r}"
    assert len(msg) <= MAX_MESSAGE, f"message of {len(msg):,} characters: {msg[:200]!r}..."


def check_valid(cfg) -> None:
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", cfg.name), f"bad sweep name {cfg.name!r}"
    for name, axis in cfg.axes.items():
        if BY_NAME[name].kind is int:
            values = getattr(axis, "values", None) or getattr(axis, "choices", ())
            assert all(isinstance(v, int) for v in values), f"integer axis {name} holds {values}"
    n = cfg.count()
    assert isinstance(n, int) and n >= 1
    if n > MAX_TRIALS:
        with pytest.raises(ConfigError, match="--allow-large") as err:
            cfg.trials()
        assert_one_line(err.value)
        return
    if n > EXPAND_UP_TO:
        return  # the 100,000 boundary itself is tested below
    if cfg.search.kind == "random":  # draws may all land on batch_size > n_train: one line then
        try:
            cfg.trials()
        except ConfigError as e:
            assert_one_line(e)
            assert "every drawn combination" in str(e)
            return
    trials = cfg.trials()
    assert 1 <= len(trials) <= n
    assert len({trial_id(t) for t in trials}) == len(trials), "trials are unique"
    size = task_train_size(cfg.task)
    for t in trials:
        assert math.isfinite(t.lr) and t.lr > 0, t
        assert 0 <= t.momentum < 1, t
        assert math.isfinite(t.weight_decay) and t.weight_decay >= 0, t
        assert 1 <= t.batch_size <= t.n_train <= size, t
        assert 0 <= t.seed < INT64 and 1 <= t.width < INT64 and 0 <= t.depth < INT64
        assert 1 <= t.total_steps <= 10**9, t
    storable(trials[:20])


def storable(trials: list) -> None:
    """The store can hold the trials' config columns (64-bit integers, no NaN)."""
    rows = [t.columns() for t in trials]
    schema = pa.schema([f for f in TRIALS_SCHEMA if f.name in rows[0]])
    pa.Table.from_pylist(rows, schema=schema)


# ---- values ----------------------------------------------------------------------------------

EXTREMES = [0, -1, 1, 2**63 - 1, 2**63, -(2**63) - 1, 10**30, 10**400, 0.0, -0.0, 0.5, 1.5, 1e-300, 5e-324,
            1.7976931348623157e308, 9.223372036854775e18, 1e19, -1e308, math.nan, math.inf, -math.inf]
ODD_TEXT = ["", " ", "\n", "a\nb", "mlp\n", "digits\r", "t\x00", "\u2028", "1e-3", "0x10", "nan", "grid",
            "random", "packed", "../up", "x" * 200, "é", "🙂", "teacher", "text", "mnist", "cifar10", "/dev/null",
            "cnn", "resnet", "transformer", "task",
            "no_such_module_fuzz:make", "json:dumps", "math:pi", "os.path:join", ":", "a:b:c"]  # never real factories
SAFE_PLUGINS = {s for s in ODD_TEXT if ":" in s}


def nest(depth: int, leaf=0):
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def laughs(levels: int):
    """A YAML-alias bomb as safe_load builds it: one list, shared 9 times per level."""
    value = [1] * 9
    for _ in range(levels):
        value = [value] * 9
    return value


class Big:
    """A deep or alias-bomb value, built only inside the test, so that hypothesis prints
    ``Big(nest, 3000)`` and not megabytes when it reports an example."""

    def __init__(self, kind, n):
        self.kind, self.n = kind, n

    def __repr__(self):
        return f"Big({self.kind.__name__}, {self.n})"


def build(value, small=False):
    """``value`` with each Big replaced by the structure it stands for (and, to be safe, any
    text that names a plug-in task factory other than the harmless ones above renamed)."""
    if isinstance(value, Big):
        return value.kind(min(value.n, 50 if value.kind is nest else 3) if small else value.n)
    if isinstance(value, str) and ":" in value and value not in SAFE_PLUGINS:
        return value.replace(":", "; ")  # a config may import a module: never a random one here
    if isinstance(value, dict):
        return {build(k, small): build(v, small) for k, v in value.items()}
    if isinstance(value, list):
        return [build(v, small) for v in value]
    return value


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3000), st.integers(), st.sampled_from(EXTREMES),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.sampled_from(ODD_TEXT),
    st.binary(max_size=6), st.dates(), st.datetimes(timezones=st.just(dt.timezone.utc)))
keys = st.one_of(st.text(max_size=10), st.sampled_from(ODD_TEXT), st.integers(), st.none(), st.booleans(),
                 st.floats(allow_nan=False), st.sampled_from([2**70, -(2**70)]))
junk = st.one_of(
    scalars,
    st.lists(scalars, max_size=5),
    st.dictionaries(keys, scalars, max_size=4),
    st.sets(st.integers(), max_size=4),
    st.builds(Big, st.just(nest), st.integers(1, 3000)),
    st.builds(Big, st.just(laughs), st.integers(1, 4)),
    st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
                 max_leaves=12),
)


# ---- valid configs and their mutations ------------------------------------------------------------

def pair(lo, hi):
    return st.tuples(lo, hi).map(sorted).map(list)


def axis(value, powers, random=False):
    """Valid specs of one axis whose values are drawn from ``value``; ``powers`` = (lowest,
    highest) exponent k of 2**k in range (None: log forms do not fit the axis)."""
    positive = value.filter(lambda v: v > 0)
    forms = [value, st.lists(value, min_size=1, max_size=4),
             st.fixed_dictionaries({"linear": pair(value, value), "num": st.integers(1, 6)})]
    if powers:
        k = st.integers(*powers)
        forms += [st.fixed_dictionaries({"log2": st.tuples(k, k).map(sorted).map(lambda ks: [2**ks[0], 2**ks[1]])}),
                  st.fixed_dictionaries({"log": pair(positive, positive), "num": st.integers(1, 6)})]
    if random:
        forms += [st.fixed_dictionaries({"uniform": pair(value, value)}),
                  st.fixed_dictionaries({"choice": st.lists(value, min_size=1, max_size=4)})]
        if powers:
            forms += [st.fixed_dictionaries({"loguniform": pair(positive, positive)})]
    return st.one_of(*forms)


TASKS = st.one_of(st.just({"name": "digits"}), st.just("digits"), st.fixed_dictionaries(
    {"name": st.just("teacher")}, optional={"pool": st.sampled_from([600, 1500, 20000]),
                                            "label_noise": st.floats(0, 1), "n_classes": st.integers(2, 20)}))
AXES = {random: {
    # n_train >= 512 >= batch_size, so no combination repeats examples in a batch (refused otherwise)
    "n_train": {n: axis(st.integers(512, n), (9, n.bit_length() - 1), random) for n in (600, 1200)},
    "batch_size": axis(st.integers(1, 512), (0, 9), random),
    "lr": axis(st.floats(1e-6, 10.0), (-19, 3), random),
    "momentum": axis(st.floats(0.0, 0.99), (-9, -1), random),
    "weight_decay": axis(st.floats(0.0, 1.0), (-9, 0), random),
    "seed": axis(st.integers(0, 2**40), (0, 40), random),
    "width": axis(st.integers(1, 512), (0, 9), random),
    "depth": axis(st.integers(0, 4), None, random)} for random in (False, True)}
OPTIONAL_AXES = st.sets(st.sampled_from(["momentum", "weight_decay", "seed", "width", "depth"]), max_size=3)
UNIT = pair(st.floats(1e-3, 1.0), st.floats(1e-3, 1.0))
NAMES = st.tuples(st.sampled_from("abcXYZ019"), st.text("abcXYZ019_.-", max_size=20)).map("".join)
SECTIONS = {
    "model": st.fixed_dictionaries({}, optional={"name": st.just("mlp"), "width": st.integers(1, 512),
                                                 "depth": st.integers(0, 4)}),
    "eval": st.one_of(st.fixed_dictionaries({"points": st.integers(1, 50)}),
                      st.fixed_dictionaries({"every_steps": st.integers(1, 50)})),
    "resources": st.fixed_dictionaries({}, optional={"cpu": st.floats(0.1, 8), "gpu": st.floats(0, 1)}),
    "engine": st.sampled_from(["single", "packed"]),
    "packing": st.fixed_dictionaries({}, optional={"max_members": st.integers(1, 256),
                                                   "memory_mb": st.floats(1, 1e5)}),
    "retries": st.integers(0, 5), "description": st.text(max_size=30), "workers_per_trial": st.just(1),
    "metrics": st.fixed_dictionaries({}, optional={"noise_scale": st.booleans(), "sharpness": st.booleans(),
                                                   "grad_norms": st.booleans(), "noise_ema": st.floats(0, 0.99)})}
SOME_SECTIONS = st.sets(st.sampled_from(sorted(SECTIONS)), max_size=len(SECTIONS))
BUDGETS = st.one_of(st.fixed_dictionaries({"epochs": st.floats(0.01, 100)}),
                    st.fixed_dictionaries({"steps": st.integers(1, 10**6)}))


def small_config(raw, limit: int = 3000):
    """The parsed config of a drawn one (:func:`valid_configs`), or None when it is refused or
    expands to more than ``limit`` trials (too many to check one by one in a property test)."""
    try:
        cfg = parse_config(build(raw))
    except ConfigError:
        return None
    return cfg if cfg.count() <= limit else None


@st.composite
def valid_configs(draw):
    random = draw(st.booleans())
    task = draw(TASKS)
    pool = task.get("pool", 20000) if isinstance(task, dict) and task["name"] == "teacher" else 1200
    strategies = AXES[random]
    axes = {"n_train": draw(strategies["n_train"][min(pool, 1200)]),
            "batch_size": draw(strategies["batch_size"]), "lr": draw(strategies["lr"])}
    for name in draw(OPTIONAL_AXES):
        axes[name] = draw(strategies[name])
    raw = {"name": draw(NAMES), "task": task, "axes": axes, "budget": draw(BUDGETS)}
    for key in draw(SOME_SECTIONS):
        raw[key] = draw(SECTIONS[key])
    if any(v is True for v in raw.get("metrics", {}).values()):
        raw["engine"] = "single"  # metrics are measured by the single engine only
    if random:  # at least one random axis
        axes["lr"] = {"loguniform": draw(pair(st.floats(1e-6, 1.0), st.floats(1e-6, 1.0)))}
        if "momentum" in axes and draw(st.booleans()):
            axes["momentum"] = {"one_minus_loguniform": draw(UNIT)}
        raw["search"] = {"kind": "random", "samples": draw(st.integers(1, 8)), "seed": 3}
    return copy.deepcopy(raw)  # st.just() gives the same dict each time, and mutations edit it


def locations(node, path=()):
    """(container, key) of every place in a config, at any depth."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in list(items):
        yield node, key
        yield from locations(value, path + (key,))


@st.composite
def mutated_configs(draw):
    raw = draw(valid_configs())
    for _ in range(draw(st.integers(1, 3))):
        container, key = draw(st.sampled_from(list(locations(raw))))
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "unknown", "wrap", "rekey"]))
        if action == "replace":
            container[key] = draw(junk)
        elif action == "delete" and isinstance(container, dict):
            del container[key]
        elif action == "unknown" and isinstance(container, dict):
            container[draw(keys)] = draw(junk)
        elif action == "wrap":
            container[key] = draw(st.sampled_from([[container[key]], {"log": container[key]},
                                                   {"choice": container[key]}, [container[key]] * 2]))
        elif action == "rekey" and isinstance(container, dict):
            container[draw(keys)] = container.pop(key)
    if draw(st.integers(0, 9)) == 0:
        raw = draw(junk)  # not a mapping at all, most of the time
    return raw


@st.composite
def extreme_axes(draw):
    """Axis specs with extreme bounds, counts and forms, on an otherwise valid config."""
    raw = draw(valid_configs())
    value = st.one_of(st.sampled_from(EXTREMES), st.floats(allow_nan=True, allow_infinity=True),
                      st.integers(-10, 10**20))
    num = st.sampled_from([0, 1, 2, 3, -1, 2.0, 2.5, True, None, "3", 10**9, 2**70, 100_001])
    form = draw(st.sampled_from(["log2", "log", "linear", "loguniform", "uniform", "one_minus_loguniform",
                                 "choice", "list", "scalar", "many"]))
    bounds = draw(st.one_of(st.lists(value, min_size=0, max_size=3), value))
    spec = {"list": bounds, "scalar": draw(value), "choice": {"choice": bounds},
            "many": {form: bounds, "log": bounds, "num": draw(num)}}.get(form, {form: bounds})
    if form in ("log", "linear") and draw(st.booleans()):
        spec["num"] = draw(num)
    name = draw(st.sampled_from(["n_train", "batch_size", "lr", "momentum", "weight_decay", "seed", "width",
                                 "depth"]))
    raw["axes"][name] = spec
    if draw(st.booleans()):
        raw["search"] = {"kind": "random", "samples": draw(st.sampled_from([1, 3, 0, -1, 10**12, 2**63, 1.5]))}
    return raw


# ---- the fuzz tests --------------------------------------------------------------------------------

def counted_as_data(raw) -> None:
    """``scaling status`` counts a stored config as data: one line or a count, which agrees with
    the parsed config's whenever that parses."""
    try:
        n = count_trials(raw)
    except ConfigError as e:
        assert_one_line(e)
        return
    assert isinstance(n, int) and n >= 0
    try:
        cfg = parse_config(raw)
    except ConfigError:
        return
    assert n == cfg.count() - (cfg.skipped() or 0)


@pytest.mark.slow
@settings(FUZZ, max_examples=EXAMPLES["mutated"])
@given(mutated_configs())
def test_mutated_configs_are_refused_in_one_line_or_valid(raw):
    raw = build(raw)
    refused_or_valid(lambda: parse_config(raw))
    counted_as_data(raw)


@settings(FUZZ, max_examples=EXAMPLES["extreme axes"])
@given(extreme_axes())
def test_extreme_axes_are_refused_in_one_line_or_valid(raw):
    raw = build(raw)
    refused_or_valid(lambda: parse_config(raw))
    counted_as_data(raw)


@settings(FUZZ, max_examples=EXAMPLES["valid"])
@given(valid_configs())
def test_valid_configs_are_accepted(raw):
    assert refused_or_valid(lambda: parse_config(build(raw))) == "accepted"


@settings(FUZZ, max_examples=EXAMPLES["billions"])
@given(st.integers(1, 8), st.sampled_from([1000, 10**4]), st.integers(1, 10**6))
def test_sweeps_of_billions_of_trials_are_counted_not_expanded(n_axes, values, samples):
    names = ["n_train", "batch_size", "lr", "momentum", "weight_decay", "seed", "width", "depth"][:max(3, n_axes)]
    lo = {"lr": 1e-4, "momentum": 0.0, "weight_decay": 0.0, "seed": 0, "depth": 0}
    hi = {"n_train": 1200, "batch_size": 10**6, "lr": 1.0, "momentum": 0.9, "weight_decay": 1.0,
          "seed": 10**9, "width": 65536, "depth": 1024}
    axes = {n: {"linear": [lo.get(n, 1), hi[n]], "num": values} for n in names}
    axes["lr"] = {"loguniform": [1e-4, 1.0]}
    raw = {"name": "big", "task": "digits", "axes": axes, "budget": {"steps": 1},
           "search": {"kind": "random", "samples": samples}}
    cfg = parse_config(raw)
    assert cfg.count() > MAX_TRIALS
    assert refused_or_valid(lambda: cfg) == "accepted"  # counted, and trials() asks for --allow-large


# ---- files -------------------------------------------------------------------------------------------

TAGS = ["!!python/object/apply:os.system", "!!python/name:os.system", "!!python/object:os.system",
        "!!python/tuple", "!!int", "!!float", "!!bool", "!!timestamp", "!!binary", "!!null", "!!str", "!!set",
        "!!omap", "!!pairs", "!!seq", "!!map", "!!merge", "!!value", "!custom", "!<tag:yaml.org,2002:int>"]
TAG_VALUES = ["", "x", "1", "[ls]", "{a: 1}", "2020-13-45", "ls -la", "''", "0x", "maybe", "-", "."]
VALID_TEXT = ("name: t\ntask: {name: digits}\naxes: {n_train: [100, 200], batch_size: 16, lr: {log: [0.01, 1.0], "
              "num: 3}}\nbudget: {epochs: 1}\n")


def alias_bomb(levels: int) -> bytes:
    items = ["&a0 [1,1,1,1,1,1,1,1,1]"] + [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]"
                                          for i in range(1, levels)]
    return (VALID_TEXT.replace("lr: {log: [0.01, 1.0], num: 3}", "lr: {log: [" + ", ".join(items) + "]}")).encode()


@st.composite
def config_files(draw):
    kind = draw(st.sampled_from(["tag", "dump", "bytes", "deep", "bomb", "scalar", "edit", "number"]))
    if kind == "tag":
        where = draw(st.sampled_from(["name: {}", "task: {}", "axes: {{n_train: 100, batch_size: 16, lr: {}}}",
                                      "{}", "budget: {{epochs: {}}}"]))
        value = f"{draw(st.sampled_from(TAGS))} {draw(st.sampled_from(TAG_VALUES))}"
        return (VALID_TEXT + where.format(value) + "\n").encode()
    if kind == "dump":  # (Big values shrunk: the YAML dumper recurses)
        return yaml.safe_dump(build(draw(mutated_configs()), small=True), allow_unicode=True).encode()
    if kind == "bytes":
        return draw(st.one_of(st.binary(max_size=200), st.sampled_from([
            b"\xff\xfe" + VALID_TEXT.encode("utf-16-le"), VALID_TEXT.encode("latin-1") + b"description: caf\xe9\n",
            b"\xef\xbb\xbf" + VALID_TEXT.encode(), b"", b"---\n---\n", b"\x00", b"name: \xed\xa0\x80\n"])))
    if kind == "deep":
        n = draw(st.integers(10, 5000))
        return draw(st.sampled_from([b"[" * n + b"]" * n, b"{a: " * n + b"1" + b"}" * n, b"- " * n + b"1"]))
    if kind == "bomb":
        return alias_bomb(draw(st.integers(1, 5)))
    if kind == "scalar":
        return draw(st.sampled_from([b"- 1\n- 2\n", b"42\n", b"'text'\n", b"null\n", b"~\n", b"&a [*a]\n",
                                     b"? [1, 2]\n: 3\n", b"!!set {a, b}\n"]))
    if kind == "number":
        digits = draw(st.sampled_from(["9" * 5000, "0x" + "f" * 5000, "0b" + "1" * 20000, "1e400", ".nan",
                                       "2020-13-45", "2001-12-14t21:59:43.10+99:99", "1_000", "0o777", "1:2:3"]))
        key = draw(st.sampled_from(["name", "description", "retries"]))
        return (VALID_TEXT + f"{key}: {digits}\n").encode() if key != "name" else \
            VALID_TEXT.replace("name: t", f"name: {digits}").encode()
    data = bytearray(VALID_TEXT.encode())
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data)))
        data[i:i + draw(st.integers(0, 3))] = draw(st.binary(max_size=3))
    return bytes(data)


_FILES = Path(tempfile.mkdtemp(prefix="fuzz-configs-"))


@settings(FUZZ, max_examples=EXAMPLES["files"])
@given(config_files())
def test_config_files_are_refused_in_one_line_or_valid(data):
    path = _FILES / "sweep.yaml"
    path.write_bytes(data)
    refused_or_valid(lambda: load_config(path))


def test_the_fuzzing_adds_up_to_over_2000_configs():
    assert sum(EXAMPLES.values()) >= 2000


# ---- sizes, kinds of file, duplicate keys -------------------------------------------------------------

@st.composite
def sized_files(draw):
    """A config's bytes padded to a drawn size, and a limit drawn around that size."""
    text = draw(st.sampled_from([VALID_TEXT, VALID_TEXT + "retries: 101\n", "- 1\n", "name: [\n"]))
    pad = draw(st.sampled_from(["description: {}\n", "# {}\n", "{}"]))
    data = (text + pad.format("x" * draw(st.integers(0, 5000)))).encode()
    return data, max(1, len(data) + draw(st.integers(-64, 64)))


@settings(FUZZ, max_examples=EXAMPLES["sizes"])
@given(sized_files())
def test_a_file_over_the_size_limit_is_refused_before_parsing_and_one_under_is_parsed(case):
    data, limit = case
    path = _FILES / "sized.yaml"
    path.write_bytes(data)
    try:
        load_config(path, max_bytes=limit)
    except ConfigError as e:
        assert_one_line(e)
        assert ("over the limit" in str(e)) == (len(data) > limit), (len(data), limit, str(e)[:200])
    else:
        assert len(data) <= limit


def path_kinds():
    """Paths that are no regular file: each refused by its stat, before it is opened."""
    base = Path(tempfile.mkdtemp(prefix="fuzz-kinds-"))
    os.mkfifo(base / "fifo")
    for name, target in {"to_zero": "/dev/zero", "to_fifo": base / "fifo", "dangling": base / "nowhere",
                         "loop": base / "loop", "to_dir": base}.items():
        os.symlink(target, base / name)
    return {"fifo": base / "fifo", "/dev/zero": "/dev/zero", "/dev/null": "/dev/null", "/dev/stdin": "/dev/stdin",
            "symlink to /dev/zero": base / "to_zero", "symlink to a fifo": base / "to_fifo",
            "dangling symlink": base / "dangling", "symlink loop": base / "loop", "directory": base,
            "symlink to a directory": base / "to_dir", "empty name": "", "NUL in the name": "a\0b",
            "name too long": "x" * 5000, "below a file": Path(__file__) / "sweep.yaml", "/proc/self/mem": "/proc/self/mem"}


@pytest.mark.parametrize("kind", sorted(path_kinds()))
def test_paths_that_are_no_regular_file_are_refused_in_one_line(kind):
    with pytest.raises(ConfigError) as err:
        load_config(path_kinds()[kind])
    assert_one_line(err.value)


def flow(value, dup_at: int, rng) -> str:
    """``value`` as one line of YAML flow text, in which the ``dup_at``-th non-empty mapping met
    (depth first) gives one of its keys twice; ``rng`` picks the key, the place and the value."""
    seen = [0]

    def emit(v):
        if isinstance(v, dict):
            items = [(emit(k), emit(x)) for k, x in v.items()]
            if items and seen[0] == dup_at:
                key, _ = items[rng.randrange(len(items))]
                items.insert(rng.randrange(len(items) + 1), (key, emit(rng.choice([0, "x", [1], {"k": 1}]))))
            seen[0] += bool(items)
            return "{" + ", ".join(f"{k}: {x}" for k, x in items) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(emit(x) for x in v) + "]"
        if isinstance(v, float):
            return repr(v) if "e" not in repr(v) else f"{v:.17f}"
        return json.dumps(v, ensure_ascii=False)

    return emit(value)


def mappings(value) -> int:
    """Non-empty mappings in ``value``, itself included."""
    if isinstance(value, dict):
        return bool(value) + sum(mappings(v) for v in value.values())
    return sum(mappings(v) for v in value) if isinstance(value, list) else 0


@st.composite
def duplicate_key_files(draw):
    """A valid config written with one key given twice somewhere: at the top level (the copy on its
    own line, anywhere) or inside a nested mapping (both on one line). Returns (text, top-level key)."""
    raw = draw(valid_configs())
    raw.pop("description", None)
    rng = draw(st.randoms(use_true_random=False))
    lines = [f"{json.dumps(k)}: {flow(v, -1, rng)}" for k, v in raw.items()]
    nested = [k for k, v in raw.items() if mappings(v)]
    if draw(st.booleans()) or not nested:
        key = json.dumps(draw(st.sampled_from(list(raw))))
        lines.insert(draw(st.integers(0, len(lines))), f"{key}: {draw(st.sampled_from(['1', 'x', '[1]', '{}']))}")
        return "\n".join(lines) + "\n", json.loads(key)
    key = draw(st.sampled_from(nested))
    lines[list(raw).index(key)] = f"{json.dumps(key)}: {flow(raw[key], draw(st.integers(0, mappings(raw[key]) - 1)), rng)}"
    return "\n".join(lines) + "\n", None


@settings(FUZZ, max_examples=EXAMPLES["duplicate keys"])
@given(duplicate_key_files())
def test_a_key_given_twice_is_refused_naming_it_and_both_lines(case):
    text, top_key = case
    path = _FILES / "duplicate.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert_one_line(err.value)
    message = str(err.value)
    assert re.search(r"is given twice in .*, (at lines \d+ and \d+|on line \d+ \(columns \d+ and \d+\))",
                     message), message[:300]
    if top_key is not None:
        assert message.startswith(f"config key {top_key!r}: is given twice"), message[:300]


# ---- numeric bounds: every numeric key has an upper bound, except seeds -----------------------------

SEEDS = {"axes.seed", "search.seed", "task.data_seed"}
"""Keys any 64-bit integer suits: a seed is a label, not a size."""


def numeric_keys() -> list[str]:
    """Every numeric key a config has, read from the declarations (sections, schema, tasks)."""
    import dataclasses

    import scaling.config.sweep as cfg_mod
    from scaling.spec.schema import AXES
    from scaling.tasks.builtin import TASKS as TASK_SPECS

    keys = ["retries", "workers_per_trial"]
    for cls, section in [(cfg_mod.SearchConfig, "search"), (cfg_mod.BudgetConfig, "budget"),
                         (cfg_mod.EvalConfig, "eval"), (cfg_mod.ResourcesConfig, "resources"),
                         (cfg_mod.PackingConfig, "packing"), (cfg_mod.MetricsConfig, "metrics")]:
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(cls)
                 if re.search(r"\b(int|float)\b", str(f.type))]
    for f in AXES:
        if f.kind in (int, float) and f.section:
            keys.append(f"{f.section}.{f.config_key}")
        if f.kind in (int, float) and f.sweepable:
            keys.append(f"axes.{f.name}")
    for name, section in (("teacher", "task"), ("text", "task(text)")):
        keys += [f"{section}.{k}" for k, v in TASK_SPECS[name].defaults.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sorted(set(keys))


NUMERIC_KEYS = numeric_keys()
HUGE = [2**63 - 1, 2**62, 10**18, 10**12, 2**53 + 1, 1e300, 1.7976931348623157e308, 1e19, 1e12]
_TEXT_FILE = _FILES / "corpus.txt"
_TEXT_FILE.write_bytes(bytes(range(256)) * 40)


def with_value(raw: dict, key: str, value) -> dict:
    section, name = key.split(".", 1) if "." in key else (None, key)
    raw = copy.deepcopy(raw)
    if section is None:
        raw[name] = value
    elif section.startswith("task"):
        task = "text" if section == "task(text)" else "teacher"
        raw["task"] = {"name": task, name: value, **({"path": str(_TEXT_FILE)} if task == "text" else {})}
        if task == "text":
            raw.update(model={"name": "transformer", "width": 32, "depth": 1}, engine="single")
            raw["axes"] = {"n_train": 2, "batch_size": 1, "lr": 0.1}
    elif section in ("budget", "eval"):
        raw[section] = {name: value}
    else:
        body = raw.get(section)
        raw[section] = {**(body if isinstance(body, dict) else {}), name: value}
    return raw


@settings(FUZZ, max_examples=EXAMPLES["numeric bounds"])
@given(valid_configs(), st.sampled_from(NUMERIC_KEYS), st.sampled_from(HUGE))
def test_a_huge_value_of_any_numeric_key_is_refused_in_one_line(raw, key, value):
    raw = with_value(raw, key, value)
    if key in SEEDS:
        refused_or_valid(lambda: parse_config(raw))
        return
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert_one_line(err.value)


@pytest.mark.parametrize("key", NUMERIC_KEYS)
def test_every_numeric_key_has_an_upper_bound(key):
    base = {"name": "t", "task": "digits", "budget": {"steps": 10},
            "axes": {"n_train": 100, "batch_size": 16, "lr": 0.1}}
    for value in (2**63 - 1, 1e300):
        try:
            parse_config(with_value(base, key, value))
        except ConfigError as e:
            assert_one_line(e)
            assert str(e).startswith(f"config key '{key.replace('task(text)', 'task')}'"), str(e)
        else:
            assert key in SEEDS, f"{key}: {value!r} accepted"


# ---- names: sweep names and plug-in references --------------------------------------------------------

_PLUGINS = Path(tempfile.mkdtemp(prefix="fuzz-plugins-"))
(_PLUGINS / "fuzz_side_effect.py").write_text(
    f"open({str(_PLUGINS / 'imported')!r}, 'a').write('x')\n"
    "from scaling.tasks import task_factory\n\n\ndef plain(**o):\n    return {}\n\n\n"
    "class Klass:\n    pass\n\n\n@task_factory\ndef marked(**o):\n    raise ValueError('no')\n")
sys.path.append(str(_PLUGINS))
NOT_IMPORTED = ["fuzz_side_effect", "this", "antigravity", "tabnanny", "turtledemo", "idlelib.idle"]
IDENTIFIERS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
RESERVED = ["trials", "curves", "quarantine", "sweep.yaml", ".", "..", "-", "_", "a" * 101, "CON", "nul",
            ".hidden", "t/", "t\\u", "s3:", "x" * 100]


@st.composite
def named_configs(draw):
    raw = draw(valid_configs())
    if draw(st.booleans()):
        raw["name"] = draw(st.one_of(st.sampled_from(RESERVED), NAMES, st.text(max_size=12)))
        return raw, None
    module = draw(st.one_of(st.sampled_from(NOT_IMPORTED), st.lists(IDENTIFIERS, min_size=1, max_size=3).map(".".join)))
    func = draw(st.one_of(st.sampled_from(["plain", "Klass", "marked", "task_factory", "open", "run"]), IDENTIFIERS))
    raw["task"] = {"name": f"{module}:{func}", **draw(st.dictionaries(IDENTIFIERS, st.integers(), max_size=2))}
    return raw, (module, func)


@settings(FUZZ, max_examples=EXAMPLES["names"])
@given(named_configs())
def test_names_are_refused_in_one_line_and_no_unmarked_plugin_is_imported(case):
    raw, plugin = case
    if plugin is None:
        refused_or_valid(lambda: parse_config(raw))
        return
    module, func = plugin
    before = set(sys.modules)
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert_one_line(err.value)
    if (module, func) != ("fuzz_side_effect", "marked"):
        new = {m for m in set(sys.modules) - before if m == module or m.startswith(module + ".")}
        assert not new, f"{module}:{func} imported {sorted(new)}"
        assert not (_PLUGINS / "imported").exists(), f"{module}:{func} ran fuzz_side_effect"
    sys.modules.pop("fuzz_side_effect", None)
    (_PLUGINS / "imported").unlink(missing_ok=True)


# ---- the 100,000 boundary ------------------------------------------------------------------------------

def test_a_sweep_at_the_limit_expands_and_one_over_asks_for_allow_large():
    axes = {"n_train": 100, "batch_size": 16, "lr": 0.1, "seed": {"linear": [0, 99_999], "num": 100_000}}
    at = parse_config({"name": "t", "task": "digits", "axes": axes, "budget": {"steps": 1}})
    assert at.count() == MAX_TRIALS and len(at.trials()) == MAX_TRIALS
    over = parse_config({"name": "t", "task": "digits", "axes": {**axes, "n_train": [100, 200]},
                         "budget": {"steps": 1}})
    with pytest.raises(ConfigError, match="--allow-large"):
        over.trials()


# ---- the real command line ---------------------------------------------------------------------------

CLI_CASES = {
    "billions": "name: big\ntask: {name: digits}\nbudget: {epochs: 1}\naxes: {n_train: {linear: [1, 1200], "
                "num: 1200}, batch_size: {linear: [1, 1000], num: 1000}, lr: {log: [0.01, 1.0], num: 1000}}\n",
    "python tag": VALID_TEXT + "description: !!python/object/apply:os.system ['touch PWNED']\n",
    "not utf-8": VALID_TEXT + "description: caf\xe9\n",
    "unhashable model name": VALID_TEXT + "model: {name: [mlp]}\n",
    "impossible date": VALID_TEXT.replace("name: t", "name: 2020-13-45"),
    "duplicate name": VALID_TEXT + "name: other\n",
    "retries of 2^63-1": VALID_TEXT + "retries: 9223372036854775807\n",
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_refuses_with_exit_2_one_line_and_no_results(tmp_path, case):
    text = CLI_CASES[case]
    path = tmp_path / "sweep.yaml"
    path.write_bytes(text.encode("latin-1") if case == "not utf-8" else text.encode())
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "sweep", str(path), "--results", str(results)],
                          capture_output=True, text=True, cwd=tmp_path if case == "python tag" else ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not results.exists(), "nothing is written for a refused config"
    assert not (tmp_path / "PWNED").exists()
    if case == "billions":
        assert "--allow-large" in lines[0]
    if case == "duplicate name":
        assert "'name': is given twice" in lines[0] and "at lines 1 and 5" in lines[0]


# ---- one minimal case per bug found (each failed before the fix) ---------------------------------------

BASE = {"name": "t", "task": {"name": "digits"}, "budget": {"epochs": 1},
        "axes": {"n_train": [100], "batch_size": [16], "lr": [0.1]}}
RANDOM = {"search": {"kind": "random", "samples": 2}}


def with_(axes=None, **top):
    return {**BASE, **top, "axes": {**BASE["axes"], **(axes or {})}}


BUGS = {
    "unhashable model name -> TypeError": with_(model={"name": ["mlp"]}),
    "unhashable engine -> TypeError": with_(engine=["single"]),
    "unhashable task name -> TypeError": with_(task={"name": ["digits"]}),
    "a set as task name -> TypeError": with_(task={"name": {"digits"}}),
    "huge int task option -> TypeError in np.isfinite": with_(task={"name": "teacher", "label_noise": 10**400}),
    "huge int resources.cpu -> OverflowError": with_(resources={"cpu": 10**400}),
    "huge int budget.epochs -> OverflowError": with_(budget={"epochs": 10**400}),
    "huge int packing.memory_mb -> OverflowError": with_(packing={"memory_mb": 10**400}),
    "huge int axis value -> OverflowError": with_({"lr": 10**400}),
    "log2 up to the largest float -> OverflowError": with_({"lr": {"log2": [1, 1.7976931348623157e308]}}),
    "int uniform past int64 -> ValueError in numpy": with_({"batch_size": {"uniform": [1, 1e19]}}, **RANDOM),
    "int axis past int64 is accepted, the store cannot hold it": with_({"batch_size": [10**30]}),
    "int log2 past int64 is accepted": with_({"batch_size": {"log2": [1, 1e300]}}),
    "sweep name with a trailing newline is accepted": with_(name="t\n"),
    "unknown key with a newline gives a two-line message": with_(**{"a\nb": 1}),
    "deeply nested task option -> RecursionError": with_(task={"name": "teacher", "pool": nest(5000)}),
    "deeply nested axis -> RecursionError": with_({"lr": nest(5000)}),
    "alias bomb in a message -> 20 MB error line": with_({"lr": {"log": laughs(6)}}),
    "log2 below 1 on an int axis gives seed 0.5": with_({"seed": {"log2": [0.25, 2]}}),
    "beta2 under SGD beside axes of 10^12 combinations -> hang": with_({
        "n_train": {"linear": [1, 1200], "num": 1200}, "batch_size": {"linear": [1, 1000], "num": 1000},
        "lr": {"log": [0.001, 1], "num": 1000}, "seed": {"linear": [0, 999], "num": 1000}, "beta2": [0.9, 0.95]}),
}


@pytest.mark.parametrize("case", sorted(BUGS))
def test_found_bug(case):
    refused_or_valid(lambda: parse_config(BUGS[case]))


FILE_BUGS = {
    "impossible date -> ValueError": b"name: 2020-13-45\n",
    "!!timestamp with text -> AttributeError": b"name: !!timestamp x\n",
    "!!int with text -> ValueError": b"name: !!int abc\n",
    "!!int empty -> IndexError": b"name: !!int ''\n",
    "!!bool with text -> KeyError": b"name: !!bool maybe\n",
    "integer of 5000 digits -> ValueError": b"name: " + b"9" * 5000 + b"\n",
    "hex integer of 5000 digits -> ValueError in repr": VALID_TEXT.encode() + b"retries: 0x" + b"f" * 5000 + b"\n",
}


@pytest.mark.parametrize("case", sorted(FILE_BUGS))
def test_found_file_bug(tmp_path, case):
    path = tmp_path / "sweep.yaml"
    path.write_bytes(FILE_BUGS[case])
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert_one_line(err.value)
