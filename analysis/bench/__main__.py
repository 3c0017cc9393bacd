from analysis.bench.fits import main

raise SystemExit(main())
