"""Rows to Arrow without pandas (scaling.store.rows): the same table as ``pa.Table.from_pylist`` on
rows of every kind, pyarrow's result or error on values it does not convert itself, and a
worker's warm-up and commit that never import pandas."""

from __future__ import annotations

import datetime as dt
import math
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from scaling.spec.schema import TABLES
from scaling.store.rows import rows_to_table

ZONES = (dt.timezone.utc, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(dt.timedelta(hours=-8)))


def value_of(kind: pa.DataType, rng: random.Random):
    """A value of the Python type the runner stores in a column of ``kind``: typical, extreme or None."""
    if rng.random() < 0.15:
        return None
    if pa.types.is_string(kind):
        return rng.choice(["", "ok", "héllo wörld", "日本語", "a\x00b", "x" * rng.randrange(300),
                           f"{rng.random()}"])
    if pa.types.is_int64(kind):
        return rng.choice([0, -1, 1, 2**63 - 1, -(2**63), rng.randrange(-10**12, 10**12)])
    if pa.types.is_float64(kind):
        return rng.choice([0.0, -0.0, math.nan, math.inf, -math.inf, 5e-324, 1.7976931348623157e308,
                           rng.uniform(-1e6, 1e6), rng.randrange(-2**53, 2**53 + 1)])
    if pa.types.is_boolean(kind):
        return rng.random() < 0.5
    assert pa.types.is_timestamp(kind), kind
    when = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=rng.randrange(-2 * 10**15, 4 * 10**15))
    return when if rng.random() < 0.2 else when.replace(tzinfo=rng.choice(ZONES))


def plain(table: pa.Table) -> list[dict]:
    """Rows with NaN spelled out (NaN equals nothing, itself included) and -0.0 told from 0.0."""
    def spell(v):
        return ("nan" if math.isnan(v) else ("-0.0" if v == 0 and math.copysign(1, v) < 0 else v)) \
            if isinstance(v, float) else v
    return [{k: spell(v) for k, v in r.items()} for r in table.to_pylist()]


@pytest.mark.parametrize("name", sorted(TABLES))
def test_the_same_table_as_pyarrow_on_rows_of_every_kind(name):
    schema, rng = TABLES[name], random.Random(f"rows-{name}")
    for _ in range(150):
        rows = []
        for _ in range(rng.choice([0, 1, 2, 7, 40])):
            row = {f.name: value_of(f.type, rng) for f in schema if rng.random() > 0.05}  # some keys missing
            if rng.random() < 0.1:
                row["not_a_column"] = object()  # ignored, as from_pylist ignores it
            rows.append(row)
        ours, theirs = rows_to_table(rows, schema), pa.Table.from_pylist(rows, schema=schema)
        ours.validate(full=True)
        assert ours.schema.equals(theirs.schema, check_metadata=True)
        assert plain(ours) == plain(theirs)
        assert [c.null_count for c in ours.columns] == [c.null_count for c in theirs.columns]


@pytest.mark.parametrize("rows", [[], [{}], [{"a": 1}, {}], [{"a": 2, "b": "x"}]])
def test_a_one_column_table_and_an_empty_one_are_pyarrows(rows):
    for schema in (pa.schema([("a", pa.int64())]), pa.schema([])):
        ours, theirs = rows_to_table(rows, schema), pa.Table.from_pylist(rows, schema=schema)
        assert ours.equals(theirs) and ours.num_rows == theirs.num_rows


ODD = {
    "a bool in an int column": (pa.int64(), [1, True]),
    "a bool in a double column": (pa.float64(), [1.5, True]),
    "an int a double cannot hold": (pa.float64(), [2**53 + 1]),
    "an int past int64": (pa.int64(), [2**63]),
    "a NumPy scalar": (pa.float64(), [np.float64(0.25), 1.0]),
    "a NumPy int": (pa.int64(), [np.int64(3)]),
    "a string in a number column": (pa.float64(), ["1.5"]),
    "a number in a string column": (pa.string(), ["a", 1]),
    "a lone surrogate": (pa.string(), ["\ud800"]),
    "a date in a timestamp column": (pa.timestamp("us", tz="UTC"), [dt.date(2026, 1, 1)]),
    "an int in a bool column": (pa.bool_(), [1]),
    "a list column": (pa.list_(pa.int64()), [[1, 2], None]),
}


@pytest.mark.parametrize("case", sorted(ODD))
def test_values_it_does_not_convert_itself_get_pyarrows_result_or_error(case):
    kind, values = ODD[case]
    schema = pa.schema([("x", kind), ("y", pa.string())])
    rows = [{"x": v, "y": "row"} for v in values]
    try:
        theirs = pa.Table.from_pylist(rows, schema=schema)
    except Exception as e:  # noqa: BLE001 (the same error, from the same call, is what is checked)
        with pytest.raises(type(e)):
            rows_to_table(rows, schema)
        return
    assert plain(rows_to_table(rows, schema)) == plain(theirs)


WORKER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from cluster.worker.units import warm_worker
    from scaling.store.writer import Store
    from test_integrity import result
    assert "pandas" not in sys.modules, "imported before the warm-up"
    warm_worker({{"name": "digits"}}, "cpu", 1, [])
    Store({root!r}).commit("s", "unit", [result(seed) for seed in range(3)])
    print("pandas" in sys.modules)
""")


def test_a_workers_warm_up_and_commit_never_import_pandas(tmp_path):
    """pandas costs a worker 0.26 s of CPU and about 50 MB (module doc); what a worker runs before
    and at its first commit must not import it, and what it wrote reads back."""
    from scaling.store.views import load_tables

    code = WORKER.format(tests=str(Path(__file__).parent), root=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False", "a worker's warm-up or commit imported pandas"
    trials, curves = load_tables(str(tmp_path))
    assert (trials.num_rows, curves.num_rows) == (3, 9)
