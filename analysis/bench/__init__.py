"""Benchmarks of the fits: ``fits`` (``python -m analysis.bench``) and ``extrapolation``
(the Revisiting-NSL benchmark).
"""
