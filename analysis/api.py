"""The public entry points of analysis in one flat namespace::

    from analysis.api import fit_form, load_trials
    import analysis.api as sa

Each name is imported from its home module on first use (PEP 562), so ``import analysis.api``
loads nothing heavy. Every name is a function or a class; :data:`__all__` lists them.

Reading tables (:mod:`analysis.tables`): ``load_trials``, ``load_sweep``, ``read_any``,
``declare``. Fitting laws (:mod:`analysis.fit`): ``fit_power_law``, ``fit_learning_curves``,
``fit_joint``, ``fit_joint_table``, ``joint_predict``, ``fit_form``, ``select_form``,
``detect_bounds``, ``Bounds``, ``predict``, ``compute_optimal``, ``compute_optimal_table``.
Batch-size rules (:mod:`analysis.rules`): ``find_bopt``, ``collapse``, ``find_joint_optimum``,
``critical_batch``. Known-answer sweeps (:mod:`analysis.testing.simulate`): ``simulate``,
``Design``, ``Landscape``, ``Noise``.
"""

from __future__ import annotations

import importlib

_HOMES: dict[str, str] = {
    "load_trials": "analysis.tables.load",
    "load_sweep": "analysis.tables.load",
    "read_any": "analysis.tables.load",
    "declare": "analysis.tables.load",
    "fit_power_law": "analysis.fit.powerlaw",
    "fit_learning_curves": "analysis.fit.curves",
    "fit_joint": "analysis.fit.joint",
    "fit_joint_table": "analysis.fit.joint",
    "joint_predict": "analysis.fit.joint_check",
    "fit_form": "analysis.fit.forms.fit",
    "select_form": "analysis.fit.forms.selection",
    "detect_bounds": "analysis.fit.forms.bounds",
    "Bounds": "analysis.fit.forms.bounds",
    "predict": "analysis.fit.forms.prediction",
    "compute_optimal": "analysis.fit.compute_optimal",
    "compute_optimal_table": "analysis.fit.compute_optimal",
    "find_bopt": "analysis.rules.bopt",
    "collapse": "analysis.rules.bopt",
    "find_joint_optimum": "analysis.rules.joint_optimum",
    "critical_batch": "analysis.rules.critical",
    "simulate": "analysis.testing.simulate",
    "Design": "analysis.testing.simulate",
    "Landscape": "analysis.testing.simulate",
    "Noise": "analysis.testing.simulate",
}
"""Public name -> the module that defines it (under the same name)."""

__all__ = list(_HOMES)


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}; "
                             f"it offers: {', '.join(__all__)}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
