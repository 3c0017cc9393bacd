"""``python -m cluster.bench`` runs :mod:`cluster.bench.sweeps`."""

import sys

from cluster.bench.sweeps import main

sys.exit(main())
