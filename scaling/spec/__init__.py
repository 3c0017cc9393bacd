"""What a trial is: the declared columns (axes, outcomes, results, bookkeeping) and trial ids.

``schema.FIELDS`` is the one declaration that config keys, range checks, trial ids, the
Parquet schemas and the analysis' axes all derive from. May import: scaling.errors,
numpy, pyarrow. Never torch, ray or duckdb.
"""
