"""``scaling status``: trial counts by status for each sweep in a store, counted in SQL."""

from __future__ import annotations

import warnings

import pyarrow as pa
import pyarrow.fs as pafs

from scaling.config.sweep import count_trials
from scaling.config.file import MAX_CONFIG_BYTES, parse_yaml
from scaling.errors import UserError, one_line
from scaling.store.writer import Store


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


def status_table(root, view=None) -> pa.Table:
    """One row per sweep: ok, diverged, pruned (stopped early at a rung: scaling.training.prune),
    failed, stored, in the config, pending; and for adaptive sweeps (if any) the plan's latest round,
    with ``in_config`` the trials its rounds planned so far."""
    from scaling.store.views import open_store

    if view is None:
        with open_store(root) as view:
            return status_table(root, view)
    counts = {r["sweep"]: r for r in view.sql(
        "SELECT sweep, count(*) FILTER (WHERE status = 'ok') AS ok, "
        "count(*) FILTER (WHERE status = 'diverged') AS diverged, "
        "count(*) FILTER (WHERE status = 'pruned') AS pruned, "
        "count(*) FILTER (WHERE status = 'failed') AS failed, count(*) AS stored "
        "FROM trials GROUP BY sweep").to_pylist()}
    rows = []
    for sweep in view.sweeps:
        if sweep:
            c = counts.get(sweep, {})
            recorded = view.store.marker_name(sweep)
            if not c and recorded and recorded != sweep and recorded in counts:
                c = counts[recorded]  # a renamed folder: its rows still name the sweep its marker records
                warnings.warn(one_line(
                    f"folder {sweep!r} holds sweep {recorded!r} (its _sweep.json and rows say so): renamed? "
                    f"Its trials are counted here, but `scaling sweep` of a config named {recorded!r} looks "
                    f"for folder {recorded!r} and would run them all again; rename the folder back"))
        else:  # the root is one sweep folder: every row is its
            c = {k: sum(r[k] for r in counts.values()) for k in ("ok", "diverged", "pruned", "failed", "stored")}
        ok, diverged, pruned, failed, stored = (c.get(k, 0) for k in ("ok", "diverged", "pruned", "failed", "stored"))
        expected = expected_trials(view.store, sweep)
        plan, planned = adaptive_plan(view.store, sweep)
        if planned is not None:  # an adaptive sweep runs the trials its rounds planned, not its whole grid
            expected = planned
        rows.append({"sweep": sweep or "(this folder)", "ok": ok, "diverged": diverged, "pruned": pruned,
                     "failed": failed, "stored": stored, "in_config": expected,
                     "pending": None if expected is None else max(expected - ok - diverged - pruned, 0),
                     "plan": plan})
    if not rows:
        raise UserError(f"no sweeps in {view.store.uri!r} (expected sweep folders written by `scaling sweep`)")
    if all(r["plan"] is None for r in rows):
        rows = [{k: v for k, v in r.items() if k != "plan"} for r in rows]  # no adaptive sweep: no column
    return pa.Table.from_pylist(rows)


PLANS = "plans"
"""The folder of an adaptive sweep that holds its rounds' plans (``round-<k>.json``)."""


def plan_path(store: Store, sweep: str, k: int) -> str:
    """Where round ``k``'s plan of adaptive sweep ``sweep`` is (cluster.rounds writes it)."""
    return f"{store.sweep_dir(sweep)}/{PLANS}/round-{k}.json"


def adaptive_plan(store: Store, sweep: str) -> tuple[str | None, int | None]:
    """An adaptive sweep's latest round, in words (``round 2/3, 26% of grid steps``), and the trials
    its rounds planned so far (``<sweep>/plans/round-<k>.json``, written by cluster.rounds); (None,
    None) for any other sweep. A plan file that cannot be read is a one-line warning."""
    import json

    folder = f"{store.sweep_dir(sweep)}/{PLANS}"
    try:
        infos = store.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        files = sorted((int(i.base_name[6:-5]), i) for i in infos if i.type == pafs.FileType.File
                       and i.base_name.startswith("round-") and i.base_name.endswith(".json")
                       and i.base_name[6:-5].isdigit() and (i.size or 0) <= MAX_CONFIG_BYTES * 64)
        if not files:
            return None, None
        planned, last = 0, None
        for _, info in files:
            with store.fs.open_input_stream(info.path) as f:
                last = json.loads(f.read(MAX_CONFIG_BYTES * 64 + 1))
            planned += int(last["n_trials"])
        share = last["planned_steps"] / max(last["grid_steps"], 1)
        return f"round {last['round'] + 1}/{last['rounds']}, {share:.0%} of grid steps", planned
    except (OSError, ValueError, KeyError, TypeError) as e:
        warnings.warn(one_line(f"sweep {sweep or '(this folder)'!r}: its adaptive plan cannot be read: {e}"))
        return None, None
