"""Rows (dicts) to an Arrow table of the store's schema, without pyarrow's pandas shim.

``pa.Table.from_pylist`` (and every other path through ``pa.array``) asks pyarrow's pandas shim
whether a value is a pandas object, and the shim imports pandas to answer: 0.26-0.33 s of CPU and
66 MB in each Ray worker, on its first commit or, preloaded, while it starts; with two workers on
two cores that was a quarter of a second of a small sweep's fixed cost (docs/speed.md). The store's
tables are flat, of five types (``scaling.spec.schema.TABLES``), so :func:`rows_to_table` builds
each column from its buffers (NumPy) and the table from the arrays, which asks the shim nothing.

It gives what ``pa.Table.from_pylist(rows, schema=schema)`` gives, or calls it: any value that is
not plainly of its column's type (a bool in a number column, a NumPy scalar, a string where a
number goes, an integer a double cannot hold exactly, a nested type) sends the whole table through
pyarrow, with pyarrow's result or error. The tests compare the two on rows of every kind.
"""

from __future__ import annotations

import datetime as dt
import operator

import numpy as np
import pyarrow as pa

_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_EPOCH_NAIVE = dt.datetime(1970, 1, 1)
_MICROSECOND = dt.timedelta(microseconds=1)
_EXACT_IN_DOUBLE = 2**53


class _NotPlain(Exception):
    """A value :func:`_column` does not convert itself: pyarrow converts the table."""


def rows_to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """``pa.Table.from_pylist(rows, schema=schema)``, built from column buffers (module doc)."""
    try:
        arrays = [_column(list(values), f) for values, f in zip(_columns(rows, schema.names), schema)]
    except _NotPlain:
        return pa.Table.from_pylist(rows, schema=schema)
    return pa.Table.from_arrays(arrays, schema=schema)


def _columns(rows: list[dict], names: list[str]) -> list[tuple]:
    """The values of each of ``names`` in ``rows`` (None where a row lacks it)."""
    if not rows or not names:
        return [()] * len(names)
    if len(names) == 1:  # itemgetter of one name gives the value, not a tuple
        return [tuple(r.get(names[0]) for r in rows)]
    try:
        return list(zip(*map(operator.itemgetter(*names), rows)))
    except KeyError:
        return [tuple(r.get(name) for r in rows) for name in names]


def _column(values: list, field: pa.Field) -> pa.Array:
    n, kind = len(values), field.type
    types = set(map(type, values))
    validity, nulls = None, 0
    if type(None) in types:
        types.discard(type(None))
        present = np.fromiter((v is not None for v in values), bool, n)
        nulls = n - int(present.sum())
        if not field.nullable:
            raise _NotPlain
        validity = pa.py_buffer(np.packbits(present, bitorder="little"))
        values = [_FILL.get(kind.id, 0) if v is None else v for v in values]
    if pa.types.is_string(kind):
        if not types <= {str}:
            raise _NotPlain
        try:
            data = [v.encode() for v in values]
        except UnicodeEncodeError:  # a lone surrogate: pyarrow's error
            raise _NotPlain from None
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(np.fromiter(map(len, data), np.int64, n), out=offsets[1:])
        if offsets[-1] >= 2**31:
            raise _NotPlain
        buffers = [validity, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(data))]
        return pa.Array.from_buffers(kind, n, buffers, null_count=nulls)
    if pa.types.is_int64(kind) and types <= {int}:
        try:
            data = np.array(values, np.int64)
        except OverflowError:
            raise _NotPlain from None
    elif pa.types.is_float64(kind) and types <= {float, int}:
        if int in types and any(abs(v) > _EXACT_IN_DOUBLE for v in values if type(v) is int):
            raise _NotPlain
        data = np.array(values, np.float64)
    elif pa.types.is_boolean(kind) and types <= {bool}:
        data = np.packbits(np.array(values, bool), bitorder="little")
    elif (pa.types.is_timestamp(kind) and kind.unit == "us" and kind.tz in ("UTC", "+00:00")
          and types <= {dt.datetime}):
        data = np.array([_micros(v) for v in values], np.int64)
    else:
        raise _NotPlain
    return pa.Array.from_buffers(kind, n, [validity, pa.py_buffer(data)], null_count=nulls)


_FILL = {pa.string().id: "", pa.bool_().id: False, pa.timestamp("us", tz="UTC").id: _EPOCH_UTC}
"""What stands in a null's slot (its value is never read); else 0."""


def _micros(value: dt.datetime) -> int:
    """Microseconds since the epoch, as pyarrow stores a datetime in a UTC column (a naive one is
    taken as UTC)."""
    return (value - (_EPOCH_NAIVE if value.tzinfo is None else _EPOCH_UTC)) // _MICROSECOND
