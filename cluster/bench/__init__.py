"""Benchmarks (``make bench``): ``sweeps`` (packed vs single engine; ``python -m cluster.bench``),
``driver`` (driver overhead), ``store`` (the store at 100k and 1M trials), ``roofline``.
"""
