"""Reading and shaping tables: ``load`` (from a store or any CSV/Parquet/JSON file, with
declared axes), ``columns`` (columns as arrays, metrics, groups), ``sqlfilter``, ``cells``
(configurations and their seeds), ``frontier``, ``roles``. May import: analysis.stats, analysis.errors,
scaling.spec, scaling.store and scaling.tasks (a task's declared headline metric). Never fit, rules, report or cli.

``tables.frame(...)``, ``tables.load_trials(...)`` and the other public names of ``load`` and
``columns`` are re-exported here. ``roles``: the roles of a table's columns (schema names,
``--col``, W&B/Optuna/Ray Tune export shapes).
"""

from analysis.tables.load import (  # noqa: F401
    SOURCE_KEY, AXES_KEY, SEED_KEY, NAMED_KEY, DERIVED, SKIPPED,
    load_trials, load_sweep, from_store, declare, is_table_file, read_any,
)
from analysis.tables.columns import (  # noqa: F401
    Frame, table_axes, frame, n_rows, numeric, metric,
    headline_metric, maximize, status, count_by, usable, nonpositive, candidate_axes, check_replicates,
    varying, hashable, groups, parse_cols, parse_where, where_mask,
    label, label_value, schema_axes, plausible_config,
)
