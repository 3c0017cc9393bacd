"""``python -m scaling``: the ``scaling`` command, the same function as the installed entry point
(``cluster.cli:main`` in pyproject.toml). The command is assembled in cluster/, which wires the
core, the cluster layer and analysis together; this file only hands over to it (importing
cluster.cli loads neither ray nor torch: the commands import them when they run)."""

import sys

from cluster.cli import main

if __name__ == "__main__":
    sys.exit(main())
