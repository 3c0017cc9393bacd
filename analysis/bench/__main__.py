"""``python -m analysis.bench`` runs :mod:`analysis.bench.fits`."""

from analysis.bench.fits import main

raise SystemExit(main())
