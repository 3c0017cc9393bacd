"""Training trials with torch: one loop, several backends.

Torch-free (the sweep driver imports them): ``loop`` (the schedule of evals, divergence,
finishing and rows), ``schedules`` (learning-rate schedules), ``packing`` (which trials pack
and how much memory a pack needs), ``optim`` (the optimizer registry; torch only inside its
update functions). With torch: ``data``, ``models``, ``metrics``, ``flops``, ``measure``,
``run`` (``run_trial``, ``run_pack``), and ``backends/`` (module, stacked, vmap).
May import: scaling.tasks, scaling.spec, scaling.errors. Never ray, config or the store.
This ``__init__`` imports nothing.
"""
