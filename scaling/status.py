"""``scaling status``: trial counts by status for each sweep in a store."""

from __future__ import annotations

import warnings

import pyarrow as pa
import pyarrow.fs as pafs

from scaling.config import count_trials
from scaling.configfile import MAX_CONFIG_BYTES, parse_yaml
from scaling.errors import UserError, one_line
from scaling.store import Store, load_tables


def expected_trials(store: Store, sweep: str) -> int | None:
    """Trials the sweep's stored config expands to, or None (a blank ``in_config``, with a
    one-line warning) if it cannot be read.

    The stored config is read as data (scaling.config.count_trials): nothing it names is
    imported or called, and it is bounded like a config file (a regular file of at most
    MAX_CONFIG_BYTES bytes, YAML without Python tags or duplicate keys)."""
    path = "/".join([store.root, sweep, "sweep.yaml"]) if sweep else store.root + "/sweep.yaml"
    try:
        info = store.fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            return None
        if info.type != pafs.FileType.File:
            raise UserError(f"{path!r} is not a regular file")
        if (info.size or 0) > MAX_CONFIG_BYTES:
            raise UserError(f"{path!r} is over the limit of {MAX_CONFIG_BYTES:,} bytes")
        with store.fs.open_input_stream(path) as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise UserError(f"{path!r} is over the limit of {MAX_CONFIG_BYTES:,} bytes")
        return count_trials(parse_yaml(data.decode("utf-8"), repr(path)))
    except (OSError, UserError, UnicodeDecodeError) as e:
        warnings.warn(one_line(f"sweep {sweep or '(this folder)'!r}: in_config left blank, the stored "
                               f"sweep.yaml cannot be counted: {e}"))
        return None


def status_table(root: str) -> pa.Table:
    """One row per sweep: ok, diverged, failed, stored, in the config, pending."""
    store = Store(root)
    trials, _ = load_tables(root)
    rows = []
    for sweep in store.sweeps():
        statuses = [s for s, w in zip(trials.column("status").to_pylist(),
                                      trials.column("sweep").to_pylist()) if w == (sweep or w)]
        counts = {k: statuses.count(k) for k in ("ok", "diverged", "failed")}
        expected = expected_trials(store, sweep)
        stored = len(statuses)
        rows.append({"sweep": sweep or "(this folder)", **counts, "stored": stored,
                     "in_config": expected,
                     "pending": None if expected is None else max(expected - counts["ok"]
                                                                  - counts["diverged"], 0)})
    if not rows:
        raise UserError(f"no sweeps in {root!r} (expected folders with trials/ inside)")
    return pa.Table.from_pylist(rows)
