"""Estimators that know nothing of sweeps: ``robust`` (Huber objective, LM solver, bootstrap),
``tobit`` (censored regression), ``result`` (the base of fit results).
May import: analysis.errors only.
"""
