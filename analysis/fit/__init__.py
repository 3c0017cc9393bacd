"""Laws fitted to data: ``powerlaw`` (error = a*N^b [+ c]), ``curves`` (learning curves of a
sweep), ``joint`` (L(N, D)), ``joint_check``, ``compute_optimal``, and ``forms/`` (curve
families, their registry, choosing among them, prediction). May import: analysis.tables,
analysis.stats, analysis.errors. Never rules, report or cli.
"""
