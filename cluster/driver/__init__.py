"""What runs in the ``scaling sweep`` process: ``sweep`` (run_sweep), ``drive`` (submit and
collect units), ``planner`` (pack trials into units), ``warmup`` (measure workers before
planning), ``progress``. May import: cluster.worker (only to name task bodies for
``ray.remote``), cluster.launch, scaling.config/store/tasks/spec, scaling.training's torch-free
modules. Never torch at module import (tested in a fresh process).
"""
