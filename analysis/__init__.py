"""analysis: fit scaling laws to sweep results, without torch or ray.

Computing (each returns a frozen dataclass with ``to_dict()``):

- :func:`analysis.powerlaw.fit_power_law` -- ``y = a*x^b + c`` or ``a*x^b`` from arrays
- :func:`analysis.curves.fit_learning_curves` -- the same on the frontier of a sweep
- :func:`analysis.joint.fit_joint` / :func:`analysis.joint.fit_joint_table` --
  ``L(N, D) = E + A/N^alpha + B/D^beta``
- :func:`analysis.bopt.find_bopt` -- optimal batch size per group and the check of
  ``B_opt ∝ lr*N/(1-m)`` (:mod:`analysis.rule`, censored fits in :mod:`analysis.tobit`);
  :func:`analysis.bopt.collapse`
- :func:`analysis.boptover.find_joint_optimum` -- the joint (lr, B) optimum of each cell
  (:mod:`analysis.optima`) and power laws of B_opt and lr_opt in scale columns
- :func:`analysis.formfit.fit_form` -- curve families M1-M4 and BNSL, ``auto`` by
  rolling-origin validation (:mod:`analysis.selection`), predictions with bands and
  prediction intervals (:mod:`analysis.prediction`); on a sweep's learning curves
  :func:`analysis.curveforms.add_forms`
- :mod:`analysis.jointcheck` -- the joint law's extrapolation check, predictions, warnings
- :func:`analysis.compute_optimal.compute_optimal_table` -- N_opt ∝ C^a by Approaches 2 and 3

Shared machinery: :mod:`analysis.cells` (trials as cells x seeds, selection on
validation or cross-fitted, the clustered seed bootstrap and its small-cluster
correction), :mod:`analysis.frontier` (the tuning frontier), :mod:`analysis.sqlfilter`
(``--filter``: one SQL expression in a locked-down DuckDB connection).

Testing: :mod:`analysis.simulate` (realistic sweeps with a known answer, noise
calibrated on the digits sweeps) for anything statistical; :mod:`analysis.synthetic`
(an exact parabola with independent noise) for smoke tests.

Presenting: :mod:`analysis.format` and :mod:`analysis.formtext` (text),
:mod:`analysis.plots` (figures), :mod:`analysis.report` (one HTML page),
:mod:`analysis.commands` (the ``fit``, ``fit-joint``, ``bopt``,
``compute-optimal`` and ``report`` subcommands; flags in :mod:`analysis.cliargs`,
handlers in :mod:`analysis.handlers`).

Modules are imported on demand; ``import analysis`` loads nothing heavy.
"""
