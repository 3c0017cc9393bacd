"""The results store: Parquet parts under a root (local, s3://, gs://), read through DuckDB views.

Modules: ``writer`` (Store: layout and commits), ``uri`` (filesystems, retries), ``parts``
(judging a part), ``views`` (StoreView, open_store, load_tables), ``compaction``, ``verify``
(verify and repair), ``resume`` (which stored runs count), ``query`` (read-only SQL),
``aggregate``. May import: scaling.spec, scaling.errors, pyarrow, duckdb. Never torch, ray,
tasks, config or training.

``from scaling.store import Store`` imports no duckdb: the names below load lazily (PEP 562).
"""

_LAZY = {"Store": "scaling.store.writer", "reserved_name": "scaling.store.writer",
         "StoreView": "scaling.store.views", "open_store": "scaling.store.views",
         "load_tables": "scaling.store.views"}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'scaling.store' has no attribute {name!r}")
