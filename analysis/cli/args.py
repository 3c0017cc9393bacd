"""Flags shared by the analysis subcommands, and reading a table the way they ask.

Every subcommand that reads a table takes ``--where COL=VALUE`` (repeatable;
values may contain commas), ``--filter "SQL expression"``
(:mod:`analysis.tables.sqlfilter`), and, for a CSV/Parquet table, ``--axes``,
``--seed`` (:func:`analysis.tables.declare`) and ``--col ROLE=COLUMN``
(:mod:`analysis.tables.roles`).
"""

from __future__ import annotations

import sys

from analysis import tables
from analysis.errors import AnalysisError
from analysis.tables import roles
from analysis.tables.sqlfilter import apply_filter
from scaling import textout

COLUMN_FLAGS = ("x", "metric", "batch", "lr", "n", "d", "loss", "flops", "bopt_metric", "seed")
"""Attributes of a command's arguments that name one column (renamed roles follow them)."""
LIST_FLAGS = ("axes", "by", "scale")
"""Attributes that name comma-separated columns."""


def where(p) -> None:
    p.add_argument("--where", action="append", default=[], metavar="COL=VALUE",
                   help='keep only matching rows; repeat the flag for several columns, e.g. '
                        '--where lr=0.1 --where "Model=28 Enc, 6 Dec" (a value may hold commas); '
                        '"lr=0.1,batch_size=32" works too')
    p.add_argument("--filter", default=None, metavar="SQL",
                   help='keep only rows where an SQL expression holds (DuckDB, no file access), '
                        'e.g. --filter "lr <= 0.1 AND bs IN (48, 96)"')


def declare(p) -> None:
    p.add_argument("--axes", default="", metavar="COLS",
                   help="for a CSV/Parquet table: the columns that define a configuration, tuned "
                        "over (a results store declares its own; columns named by --x, --metric, "
                        "... never are)")
    p.add_argument("--seed", default=None, metavar="COL",
                   help="for a CSV/Parquet table: the column of replicate seeds (default: seed)")
    p.add_argument("--col", action="append", default=[], metavar="ROLE=COLUMN",
                   help="for a CSV/Parquet table: give COLUMN a role; repeat for several, e.g. "
                        "--col n_train=config.train_size --col val=summary.val_loss. ROLE is a "
                        "schema name (n_train, batch_size, lr, momentum, seed, width, test_loss, "
                        "...) or val/test, the metrics winners are chosen/measured on. Columns "
                        "with schema names, and W&B (config.X, summary.X), Optuna (params_X, "
                        "user_attrs_X) and Ray Tune (config/X) exports of them, need none")


def sweep(p) -> None:
    p.add_argument("--sweep", default=None, metavar="NAME",
                   help="analyse one sweep of a results root that holds several")


def direction(p) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--minimize", dest="maximize", action="store_const", const=False,
                   default=None, help="smaller is better (default: guessed from the metric's "
                                      "name: *acc* is maximised, anything else minimised)")
    g.add_argument("--maximize", dest="maximize", action="store_const", const=True,
                   help="larger is better")


def delta_value(text: str):
    """``--delta``: a positive number, or ``auto`` (None: from the residual scale)."""
    if str(text).strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise AnalysisError(f"--delta must be a number > 0 (e.g. 1e-3) or auto, got {text!r}") \
            from None
    if not value > 0:
        raise AnalysisError(f"--delta must be > 0 (e.g. 1e-3) or auto, got {text!r}")
    return value


def common(p, *, plot: bool, delta: str | None = "auto") -> None:
    """--boot, --level, --delta (default ``delta``; None: no flag), --boot-seed, --axes, --seed,
    --json and --plot."""
    p.add_argument("--boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--level", type=float, default=0.95, help="interval coverage (default 0.95)")
    if delta == "auto":
        p.add_argument("--delta", default="auto", metavar="DELTA|auto",
                       help="Huber threshold on log residuals (default auto: from the residual "
                            "scale, at least 1e-3; 1e-3 reproduces Hoffmann et al. 2022)")
    elif delta is not None:
        p.add_argument("--delta", default=delta, metavar="DELTA|auto",
                       help=f"Huber threshold on log residuals (default {delta}, the published "
                            "recipe of Hoffmann et al. 2022 and Besiroglu et al. 2024; auto: "
                            "from the residual scale)")
    p.add_argument("--boot-seed", type=int, default=0, help="seed of the bootstrap's random draws")
    declare(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    if plot:
        p.add_argument("--plot", default=None, metavar="FILE", help="save a figure (png/pdf/svg)")


def read(args, path: str, *named: str, implied=()):
    """The table at ``path`` with the user's --axes/--seed declared and --filter applied.

    ``implied`` are columns the command itself makes axes of a CSV/Parquet table
    (``bopt``'s --batch, --lr and --scale).

    Columns take their roles first (:func:`analysis.tables.read_any`); the command's column
    flags may still use the original names: ``args`` is updated to the names the table has
    now. Without --axes, a table's columns with schema axis names are its axes.
    """
    table = tables.read_any(path, getattr(args, "col", None) or ())
    renamed = roles.renamed(table)
    follow_renames(args, renamed)
    named = tuple(renamed.get(c, c) for c in named if c)
    implied = tuple(renamed.get(c, c) for c in implied if c)
    axes = tables.parse_cols(getattr(args, "axes", ""))
    seed = getattr(args, "seed", None)
    if implied and (table.schema.metadata or {}).get(tables.SOURCE_KEY) != b"store":
        axes = axes or tables.schema_axes(table.column_names, list(named) + [seed or "seed"])
        axes = list(dict.fromkeys(axes + [c for c in implied if c in table.column_names]))
    table = tables.declare(table, axes=axes, seed=seed, named=named)
    note = roles.roles_note(table)
    if note:
        stream = sys.stderr if getattr(args, "json", False) else sys.stdout
        print(textout.render([note], stream), file=stream)
    return apply_filter(table, getattr(args, "filter", None))


def follow_renames(args, renamed: dict) -> None:
    """Point the command's column flags at renamed columns (``--x config.n_train`` ->
    ``n_train``)."""
    if not renamed:
        return
    for name in COLUMN_FLAGS:
        value = getattr(args, name, None)
        if isinstance(value, str) and value in renamed:
            setattr(args, name, renamed[value])
    for name in LIST_FLAGS:
        value = getattr(args, name, None)
        if isinstance(value, str) and value:
            setattr(args, name, ",".join(renamed.get(c, c) for c in tables.parse_cols(value)))


def where_of(args, table) -> dict:
    """``--where`` as ``{column: value}`` (commas split pairs only before a column name; a
    renamed column may go by its original name)."""
    renamed = roles.renamed(table)
    where = tables.parse_where(getattr(args, "where", None), list(table.column_names) + list(renamed))
    return {renamed.get(k, k): v for k, v in where.items()}


def apply_where(table, where: dict):
    """``table`` restricted to the rows matching ``where`` (for commands that filter whole
    tables, like compute-optimal); schema metadata kept."""
    if not where:
        return table
    import pyarrow as pa

    mask = tables.where_mask(tables.frame(table), where)
    return table.filter(pa.array(mask)).replace_schema_metadata(table.schema.metadata)
