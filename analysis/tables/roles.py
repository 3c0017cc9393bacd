"""Roles of a table's columns from elsewhere: the schema's names, ``--col ROLE=COLUMN`` and the
common export shapes.

A column that carries a name of :data:`scaling.spec.schema.FIELDS` (``n_train``, ``lr``,
``test_loss``, ...) has that role. Three export shapes prefix those names, and a prefixed
column whose stripped name is a schema name takes that name when no other column has it
(exactly one candidate; anything ambiguous is left alone and ``--col`` decides):

- Weights & Biases runs export: ``config.lr``, ``summary.val_loss`` (``State``: finished,
  crashed, failed);
- Optuna ``study.trials_dataframe()``: ``params_lr``, ``user_attrs_seed``, ``value``,
  ``state`` (COMPLETE, FAIL, PRUNED);
- Ray Tune ``ResultGrid.get_dataframe()``: ``config/lr``, metrics unprefixed.

``--col ROLE=COLUMN`` (repeatable) names a role explicitly: ``ROLE`` is a schema name (the
column is renamed to it) or ``val``/``test``, the validation/test pair winners are chosen
and measured on (:func:`analysis.tables.cells.selection_values`). A ``State``/``state`` column
of one of the shapes above becomes ``status`` when the table has none. Renames are kept in
the table's metadata so ``--where``, ``--filter`` and the command's column flags may still use
the original names.
"""

from __future__ import annotations

import json

import pyarrow as pa

import scaling.spec.schema as schema
from analysis.errors import AnalysisError

RENAMED_KEY, PAIR_KEY, NOTE_KEY = b"scaling.renamed", b"scaling.pair", b"scaling.roles_note"
"""Arrow schema metadata: ``{original: role}`` renames, ``{"val": col, "test": col}`` and the
note line that says what was recognised."""

PREFIXES = ("config.", "summary.", "config/", "params_", "user_attrs_")
"""Export prefixes: W&B (``config.``, ``summary.``), Ray Tune (``config/``), Optuna."""

PAIR_ROLES = ("val", "test")
STATES = {"finished": "ok", "complete": "ok", "crashed": "failed", "failed": "failed",
          "fail": "failed", "killed": "killed", "pruned": "pruned", "running": "running",
          "waiting": "running"}
"""W&B and Optuna run states and the store's status they mean."""


RESULTS = ("steps", "examples_seen", "tokens_seen", "train_flops", "noise_scale", "n_params", "wall_s")
"""Result columns of the schema a table from elsewhere may carry (``n_params`` for ``fit-joint``)."""


def role_names() -> tuple[str, ...]:
    """Schema names a column may take: axes, outcomes and :data:`RESULTS`."""
    return schema.AXIS_COLUMNS + schema.OUTCOMES + tuple(r for r in RESULTS if r in schema.BY_NAME)


def parse_col(items) -> dict[str, str]:
    """``--col ROLE=COLUMN`` flags to ``{role: column}``."""
    out: dict[str, str] = {}
    for item in items or ():
        role, sep, col = str(item).partition("=")
        role, col = role.strip(), col.strip()
        if not sep or not role or not col:
            raise AnalysisError(f"--col wants ROLE=COLUMN, e.g. --col lr=config.lr, got {item!r}")
        if role not in role_names() and role not in PAIR_ROLES:
            raise AnalysisError(f"--col {item}: unknown role {role!r}; a role is val or test "
                                f"(the selection pair) or a schema name: {', '.join(role_names())}")
        if role in out and out[role] != col:
            raise AnalysisError(f"--col names role {role!r} twice ({out[role]!r} and {col!r})")
        out[role] = col
    return out


def apply_roles(table: pa.Table, cols=()) -> pa.Table:
    """``table`` with ``--col`` and the recognised export shapes applied (see the module
    docstring); what was done is one note line in its metadata (:func:`roles_note`)."""
    given = parse_col(cols)
    names = table.column_names
    for role, col in given.items():
        if col not in names:
            raise AnalysisError(f"--col {role}={col}: the table has no column {col!r}; it has: "
                                f"{', '.join(names)}")
    renames = {col: role for role, col in given.items() if role not in PAIR_ROLES}
    for col, role in renames.items():
        if role in names and role != col and role not in renames:
            raise AnalysisError(f"--col {role}={col}: the table already has a column {role!r}; "
                                f"rename or drop it first, or use --col {role}={role}")
    auto = _recognised(names, renames)
    renames.update(auto)
    status = _state_column(table, renames)
    out = table.rename_columns([renames.get(n, n) for n in names])
    notes = []
    if auto:
        notes.append("export columns taken as their schema names: " + _grouped(auto))
    if status:
        out = _states(out, status)
        renames[status] = "status"
        notes.append(f"{status} as status")
    pair = {r: renames.get(given[r], given[r]) for r in PAIR_ROLES if r in given}
    if pair:
        notes.append("winners chosen on " + pair.get("val", "?") + " (validation)"
                     + (f", measured on {pair['test']}" if "test" in pair else ""))
    meta = {**(out.schema.metadata or {}), RENAMED_KEY: json.dumps(renames).encode(),
            PAIR_KEY: json.dumps(pair).encode()}
    if notes:
        meta[NOTE_KEY] = ("note: " + "; ".join(notes) + " (--col ROLE=COLUMN names others)").encode()
    return out.replace_schema_metadata(meta)


def _recognised(names, taken: dict) -> dict[str, str]:
    """``{prefixed column: schema name}`` for the unambiguous export columns."""
    targets = set(taken.values())
    found: dict[str, list[str]] = {}
    for name in names:
        if name in taken:
            continue
        for prefix in PREFIXES:
            stem = name[len(prefix):]
            if name.startswith(prefix) and stem in role_names():
                found.setdefault(stem, []).append(name)
    return {cands[0]: stem for stem, cands in found.items()
            if len(cands) == 1 and stem not in names and stem not in targets}


def _grouped(auto: dict) -> str:
    """``config.{lr, seed}, summary.{val_loss}`` for ``{config.lr: lr, ...}``."""
    by: dict[str, list[str]] = {}
    for col, stem in auto.items():
        by.setdefault(col[:len(col) - len(stem)], []).append(stem)
    return ", ".join(f"{p}{{{', '.join(s)}}}" if len(s) > 1 else p + s[0] for p, s in by.items())


def _state_column(table: pa.Table, renames: dict) -> str | None:
    """A ``State``/``state`` column whose values are all W&B/Optuna run states, when the table
    has no status column."""
    names = table.column_names
    if "status" in names or "status" in renames.values():
        return None
    for name in ("State", "state"):
        if name in names and pa.types.is_string(table.column(name).type):
            values = {str(v).lower() for v in table.column(name).unique().to_pylist() if v is not None}
            if values and values <= set(STATES):
                return name
    return None


def _states(table: pa.Table, column: str) -> pa.Table:
    values = [None if v is None else STATES[str(v).lower()] for v in table.column(column).to_pylist()]
    i = table.column_names.index(column)
    return table.set_column(i, "status", pa.array(values, pa.string()))


def renamed(table: pa.Table) -> dict[str, str]:
    """``{original column: role}`` of :func:`apply_roles`."""
    return json.loads((table.schema.metadata or {}).get(RENAMED_KEY, b"{}"))


def pair_of(table: pa.Table) -> dict[str, str]:
    """``{"val": col, "test": col}`` named with ``--col`` (either may be missing)."""
    return json.loads((table.schema.metadata or {}).get(PAIR_KEY, b"{}"))


def roles_note(table: pa.Table) -> str | None:
    """The one note line of :func:`apply_roles`, or None when nothing was recognised or named."""
    note = (table.schema.metadata or {}).get(NOTE_KEY)
    return note.decode() if note else None
