"""Known-answer data for tests and calibration: ``simulate`` (realistic sweeps with seed
effects, asymmetric optima, divergence, quantised accuracy) and ``synthetic`` (exact tables).
"""
