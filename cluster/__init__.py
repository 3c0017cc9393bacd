"""cluster: the only package that knows Ray.

- ``cli.py``: the ``scaling`` command; it assembles ``sweep`` with the store's commands
  (scaling.cli) and the analysis commands (analysis.cli.COMMANDS).
- ``launch/``: start a local Ray safely or join a cluster.
- ``driver/``: what runs in the ``scaling sweep`` process; never imports torch at module level.
- ``worker/``: what runs inside Ray tasks (units of trials, ddp, the warm-up).
- ``deploy/``: the Dockerfile and cluster YAML, and the constants they share with the code.
- ``bench/``: ``make bench``.

The import rules are in docs/architecture.md and tests/test_layers.py.
"""
