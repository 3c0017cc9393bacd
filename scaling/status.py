"""``scaling status``: trial counts by status for each sweep in a store."""

from __future__ import annotations

import pyarrow as pa

from scaling.errors import UserError
from scaling.store import Store, load_tables


def expected_trials(store: Store, sweep: str) -> int | None:
    """Trials the sweep's saved config expands to, or None if it cannot be read."""
    from scaling.config import parse_config
    import yaml

    path = "/".join([store.root, sweep, "sweep.yaml"]) if sweep else store.root + "/sweep.yaml"
    try:
        with store.fs.open_input_stream(path) as f:
            cfg = parse_config(yaml.safe_load(f.read().decode()))
            return cfg.count() - (cfg.skipped() or 0)
    except (OSError, UserError, yaml.YAMLError, UnicodeDecodeError):
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
