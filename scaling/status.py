"""``scaling status``: trial counts by status for each sweep in a store, counted in SQL."""

from __future__ import annotations

import pyarrow as pa

from scaling.errors import UserError
from scaling.store import Store


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


def status_table(root, view=None) -> pa.Table:
    """One row per sweep: ok, diverged, failed, stored, in the config, pending."""
    from scaling.views import open_store

    if view is None:
        with open_store(root) as view:
            return status_table(root, view)
    counts = {r["sweep"]: r for r in view.sql(
        "SELECT sweep, count(*) FILTER (WHERE status = 'ok') AS ok, "
        "count(*) FILTER (WHERE status = 'diverged') AS diverged, "
        "count(*) FILTER (WHERE status = 'failed') AS failed, count(*) AS stored "
        "FROM trials GROUP BY sweep").to_pylist()}
    rows = []
    for sweep in view.sweeps:
        if sweep:
            c = counts.get(sweep, {})
        else:  # the root is one sweep folder: every row is its
            c = {k: sum(r[k] for r in counts.values()) for k in ("ok", "diverged", "failed", "stored")}
        ok, diverged, failed, stored = (c.get(k, 0) for k in ("ok", "diverged", "failed", "stored"))
        expected = expected_trials(view.store, sweep)
        rows.append({"sweep": sweep or "(this folder)", "ok": ok, "diverged": diverged, "failed": failed,
                     "stored": stored, "in_config": expected,
                     "pending": None if expected is None else max(expected - ok - diverged, 0)})
    if not rows:
        raise UserError(f"no sweeps in {view.store.uri!r} (expected sweep folders written by `scaling sweep`)")
    return pa.Table.from_pylist(rows)
