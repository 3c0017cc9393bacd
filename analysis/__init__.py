"""analysis: fit scaling laws to sweep results, without torch or ray.

Computing (each returns a frozen dataclass with ``to_dict()``):

- :func:`analysis.fit.powerlaw.fit_power_law` -- ``y = a*x^b + c`` or ``a*x^b`` from arrays
- :func:`analysis.fit.curves.fit_learning_curves` -- the same on the frontier of a sweep
- :func:`analysis.fit.joint.fit_joint` / :func:`analysis.fit.joint.fit_joint_table` --
  ``L(N, D) = E + A/N^alpha + B/D^beta``
- :func:`analysis.rules.bopt.find_bopt` -- optimal batch size per group and the check of
  ``B_opt ∝ lr*N/(1-m)`` (:mod:`analysis.rules.sgd_rule`, censored fits in :mod:`analysis.stats.tobit`);
  :func:`analysis.rules.bopt.collapse`
- :func:`analysis.rules.joint_optimum.find_joint_optimum` -- the joint (lr, B) optimum of each cell
  (:mod:`analysis.rules.optima`) and power laws of B_opt and lr_opt in scale columns
- :func:`analysis.fit.forms.fit.fit_form` -- curve families M1-M4 and BNSL, ``auto`` by
  rolling-origin validation (:mod:`analysis.fit.forms.selection`), predictions with bands and
  prediction intervals (:mod:`analysis.fit.forms.prediction`); on a sweep's learning curves
  :func:`analysis.fit.forms.on_curves.add_forms`
- :mod:`analysis.fit.joint_check` -- the joint law's extrapolation check, predictions, warnings
- :func:`analysis.fit.compute_optimal.compute_optimal_table` -- N_opt ∝ C^a by Approaches 2 and 3

Shared machinery: :mod:`analysis.tables.cells` (trials as cells x seeds, selection on
validation or cross-fitted, the clustered seed bootstrap and its small-cluster
correction), :mod:`analysis.tables.frontier` (the tuning frontier), :mod:`analysis.tables.sqlfilter`
(``--filter``: one SQL expression in a locked-down DuckDB connection).

Testing: :mod:`analysis.testing.simulate` (realistic sweeps with a known answer, noise
calibrated on the digits sweeps) for anything statistical; :mod:`analysis.testing.synthetic`
(an exact parabola with independent noise) for smoke tests.

Presenting: :mod:`analysis.report.text` and :mod:`analysis.report.fit_text` (text),
:mod:`analysis.report.plots` (figures), :mod:`analysis.report` (one HTML page),
:mod:`analysis.cli` (``COMMANDS``: the ``fit``, ``fit-joint``, ``bopt``, ``bcrit``,
``compute-optimal`` and ``report`` subcommands, one module each; shared flags in
:mod:`analysis.cli.args`).

One flat import of the entry points above: :mod:`analysis.api` (``from analysis.api import
fit_form``), loaded name by name on first use.

Modules are imported on demand; ``import analysis`` loads nothing heavy.
"""
