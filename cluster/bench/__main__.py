import sys

from cluster.bench.sweeps import main

sys.exit(main())
