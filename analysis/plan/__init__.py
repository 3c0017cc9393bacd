"""Plans of adaptive sweeps: which trials of a config's full grid to run next, from the fits of
what is stored (:mod:`analysis.plan.adaptive`). Pure functions over Arrow tables: no torch, no
ray, no store access."""
