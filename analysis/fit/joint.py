r"""Joint scaling law in model size and data: :math:`L(N, D) = E + A/N^\alpha + B/D^\beta`.

The parametric fit of Hoffmann et al. (2022, "Training Compute-Optimal Large
Language Models", Approach 3), re-examined by Besiroglu et al. (2024,
"Chinchilla Scaling: A replication attempt"): Huber loss on log residuals,
multi-start, and here percentile-bootstrap intervals for all five parameters
(:mod:`analysis.stats.robust`). ``N`` and ``D`` are any two positive columns; the
table may be a sweep (the frontier over the remaining axes is fitted, see
:mod:`analysis.tables.frontier`) or any CSV/Parquet file (every row is a point).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

import analysis.tables.cells as cl
from analysis import tables
from analysis.errors import AnalysisError
from analysis.stats.result import ScalingFit, summarise
from analysis.tables.frontier import frontier, positive_points
from analysis.fit.powerlaw import safe_log
from analysis.stats.robust import bootstrap, fit_auto, huber_objective


LAWS = {
    "chinchilla": ("E + A/N^alpha + B/D^beta", ("E", "A", "alpha", "B", "beta")),
    "tied": ("E + A/N^alpha + B/D^alpha", ("E", "A", "alpha", "B")),
    "over-training": ("E + (a*M^eta + b*M^-eta)*C^-eta, C = 6*N*D, M = D/N", ("E", "a", "b", "eta")),
}
r"""The joint laws: their formula and parameter names.

``tied`` is Chinchilla's law with one exponent for N and D (:math:`\alpha = \beta`);
``over-training`` is the same law written in compute :math:`C = 6ND` and token multiplier
:math:`M = D/N` (Gadre et al. 2024, "Language models scale reliably with over-training and on
downstream tasks", eq. 4): :math:`L(C, M) = E + (a M^\eta + b M^{-\eta}) C^{-\eta}` with
:math:`\eta = \alpha/2`, :math:`a = A\,6^\eta`, :math:`b = B\,6^\eta` (substitute
:math:`N = \sqrt{C/(6M)}`, :math:`D = \sqrt{CM/6}`)."""


@dataclass(frozen=True)
class JointModel:
    r""":math:`\hat y = s\,(E + A e^{-\alpha(\log N - m_N)} + B e^{-\beta(\log D - m_D)})`.

    ``theta = (E, A, alpha, B, beta)`` in units of :math:`s` (geometric mean
    of y) with centred logs, so all are of order one; natural parameters are
    :math:`(sE,\; sAe^{\alpha m_N},\; \alpha,\; sBe^{\beta m_D},\; \beta)`. A tied law
    (``law`` ``tied`` or ``over-training``, :data:`LAWS`) has ``theta = (E, A, alpha, B)`` and
    :math:`\beta = \alpha`; ``over-training`` reports Gadre's :math:`(E, a, b, \eta)`.
    """

    m_n: float = 0.0
    m_d: float = 0.0
    log_s: float = 0.0
    n_params: int = 5
    law: str = "chinchilla"

    def full(self, theta):
        """Rows of ``(E, A, alpha, B, beta)`` (scaled) from rows of ``theta``."""
        theta = np.atleast_2d(theta)
        return theta if self.n_params == 5 else np.column_stack([theta, theta[:, 2]])

    def log_pred(self, theta, X, jac=True):
        ln, ld = X[0] - self.m_n, X[1] - self.m_d
        e, a, al, b, be = (self.full(theta)[:, i:i + 1] for i in range(5))
        zn = np.exp(np.minimum(-al * ln, 700.0))
        zd = np.exp(np.minimum(-be * ld, 700.0))
        f, dfdp = safe_log(e + a * zn + b * zd)
        if not jac:
            return f + self.log_s, None
        if self.n_params == 4:
            J = np.stack([np.ones_like(f), zn, -a * zn * ln - b * zd * ld, zd], axis=1)
        else:
            J = np.stack([np.ones_like(f), zn, -a * zn * ln, zd, -b * zd * ld], axis=1)
        return f + self.log_s, J * dfdp[:, None, :]

    def chinchilla(self, theta):
        """Rows of natural ``(E, A, alpha, B, beta)`` in N and D, whatever the law."""
        t = self.full(theta)
        s = np.exp(self.log_s)
        return np.column_stack([s * t[:, 0], s * t[:, 1] * np.exp(t[:, 2] * self.m_n), t[:, 2],
                                s * t[:, 3] * np.exp(t[:, 4] * self.m_d), t[:, 4]])

    def natural(self, theta):
        """Rows of the law's own parameters (:data:`LAWS`)."""
        p = self.chinchilla(theta)
        if self.law == "chinchilla":
            return p
        if self.law == "tied":
            return p[:, :4]
        eta = p[:, 2] / 2.0
        return np.column_stack([p[:, 0], p[:, 1] * 6.0 ** eta, p[:, 3] * 6.0 ** eta, eta])


@dataclass(frozen=True, kw_only=True)
class JointFit(ScalingFit):
    r""":math:`L(N, D) = E + A/N^\alpha + B/D^\beta` with bootstrap intervals."""

    n_name: str = "N"
    """Column used as N."""
    d_name: str = "D"
    """Column used as D."""
    law: str = "chinchilla"
    """Which law of :data:`LAWS`."""
    input_warnings: tuple[str, ...] = ()
    """What was left out of the table before fitting (rows where the loss is <= 0)."""
    n: np.ndarray = field(repr=False, compare=False, default=None)
    d: np.ndarray = field(repr=False, compare=False, default=None)
    y: np.ndarray = field(repr=False, compare=False, default=None)

    def predict(self, n, d) -> np.ndarray:
        """Best-fit loss at ``(n, d)``."""
        X = (np.log(np.asarray(n, float)), np.log(np.asarray(d, float)))
        return np.exp(self._log_pred(X, self.theta)[0])

    @property
    def chinchilla_params(self) -> tuple[float, ...]:
        """``(E, A, alpha, B, beta)`` in N and D (``beta = alpha`` for a tied law)."""
        return tuple(float(v) for v in self.model.chinchilla(self.theta)[0])

    def to_dict(self) -> dict:
        return {**super().to_dict(), "n_name": self.n_name, "d_name": self.d_name, "law": self.law,
                "input_warnings": list(self.input_warnings)}


def _starts(ln, ld, ly, delta, law="chinchilla"):
    """Grid over (alpha, beta) (alpha alone for a tied law); (E, A, B) by least squares, weights
    1/y (variable projection)."""
    tied = law != "chinchilla"
    model = JointModel(m_n=float(ln.mean()), m_d=float(ld.mean()), log_s=float(ly.mean()),
                       n_params=4 if tied else 5, law=law)
    yn = np.exp(ly - model.log_s)
    grid = np.array([0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0, 1.3, 1.7, 2.2])
    if tied:
        al = be = grid
    else:
        al, be = (g.ravel() for g in np.meshgrid(grid, grid, indexing="ij"))
    cols = np.stack([np.ones((al.size, ln.size)), np.exp(-al[:, None] * (ln - model.m_n)),
                     np.exp(-be[:, None] * (ld - model.m_d))], axis=-1) / yn[:, None]
    gram = np.einsum("gnp,gnq->gpq", cols, cols) + 1e-10 * np.eye(3)
    coef = np.linalg.solve(gram, cols.sum(1)[..., None])[..., 0]
    th = np.column_stack([coef[:, 0], coef[:, 1], al, coef[:, 2]] + ([] if tied else [be]))
    th = th[np.all(np.isfinite(th), axis=1)]
    val = huber_objective(model, th, (ln, ld), ly, np.ones_like(ly), delta)
    return model, th[np.argsort(val)[:8]]


def check_joint(n, d, y, n_name="N", d_name="D", n_params: int = 5):
    """Validate joint-fit input; raise :class:`AnalysisError` naming the problem."""
    n, d, y = (np.asarray(v, float).ravel() for v in (n, d, y))
    bad = ~(np.isfinite(n) & np.isfinite(d) & np.isfinite(y))
    if bad.any():
        raise AnalysisError(f"{int(bad.sum())} of {y.size} rows have NaN or inf in "
                            f"{n_name}, {d_name} or the loss; drop them first")
    for name, v in ((n_name, n), (d_name, d), ("the loss", y)):
        if v.size and v.min() <= 0:
            raise AnalysisError(f"{name} must be > 0 for a log-scale fit, got min {v.min():g}; "
                                "did you pass a log-transformed column?")
    if y.size < n_params + 1:
        tie = "" if n_params < 5 else " (--tie fits 4, one exponent for both)"
        raise AnalysisError(f"need at least {n_params + 1} points to fit {n_params} parameters and "
                            f"judge the misfit, got {y.size}{tie}")
    for name, v in ((n_name, n), (d_name, d)):
        if np.unique(v).size < 3:
            raise AnalysisError(f"{name} takes {np.unique(v).size} distinct value(s); its exponent "
                                "needs at least 3")
    if np.ptp(np.log(y)) < 1e-12:
        raise AnalysisError(f"the loss is constant ({y[0]:g} at every point): nothing to fit")
    return n, d, y


def solve_joint(n, d, y, delta: float | None, law: str = "chinchilla"):
    """``(model, solution, delta)`` of the full fit, without intervals; ``delta=None`` chooses
    the Huber threshold from these points (:func:`analysis.stats.robust.fit_auto`)."""
    X, ly = (np.log(n), np.log(d)), np.log(y)
    with np.errstate(all="ignore"):
        model, starts = _starts(X[0], X[1], ly, 1.0, law)
    sol, delta = fit_auto(model, starts, X, ly, delta)
    return model, sol, delta


def fit_joint(n, d, y, *, replicates=None, n_boot: int = 1000, level: float = 0.95,
              delta: float | None = 1e-3, seed: int = 0, n_name: str = "N",
              d_name: str = "D", resampling=None, law: str = "chinchilla") -> JointFit:
    r"""Fit :math:`L(N, D) = E + A/N^\alpha + B/D^\beta` robustly with bootstrap intervals.

    Parameters
    ----------
    n, d, y : array_like
        Positive model size, data size and loss per point.
    replicates : array_like, shape (R, n), optional
        Bootstrap replicates of ``y`` (e.g. resampled seeds); otherwise the
        pairs bootstrap draws ``n_boot`` resamples of the points.
    n_boot, level, seed
        As in :func:`analysis.fit.powerlaw.fit_power_law`.
    delta : float or None
        Huber threshold on log residuals: 1e-3 by default, the published recipe
        (Hoffmann et al. 2022; Besiroglu et al. 2024); None chooses it from the
        residual scale (:func:`analysis.stats.robust.auto_delta`).
    n_name, d_name : str
        Names for messages and output.
    resampling : analysis.tables.cells.Resampling, optional
        For replicates from the clustered seed bootstrap: t intervals on the rescaled sd.
    law : {"chinchilla", "tied", "over-training"}
        :data:`LAWS`: the five-parameter law, one exponent for N and D (4 parameters, so 5
        points suffice, as in Gadre et al.'s 5-run protocol), or that tied law in compute and
        token multiplier.

    Returns
    -------
    JointFit
        Parameters ``E, A, alpha, B, beta`` (tied: ``E, A, alpha, B``; over-training:
        ``E, a, b, eta``).
    """
    if law not in LAWS:
        raise AnalysisError(f"unknown joint law {law!r}; one of {', '.join(LAWS)}")
    n, d, y = check_joint(n, d, y, n_name, d_name, 5 if law == "chinchilla" else 4)
    if replicates is not None and (np.ndim(replicates) != 2 or np.shape(replicates)[1] != y.size):
        raise AnalysisError(f"replicates must have shape (R, {y.size}), "
                            f"got {np.shape(replicates)}")
    X, ly = (np.log(n), np.log(d)), np.log(y)
    model, sol, delta = solve_joint(n, d, y, delta, law)
    onehots = [np.unique(v, return_inverse=True)[1] for v in (n, d)]
    onehots = [inv[:, None] == np.arange(inv.max() + 1) for inv in onehots]

    def well_posed(counts):
        return np.all([((counts @ oh) > 0).sum(1) >= 3 for oh in onehots], axis=0)

    boot = bootstrap(model, sol.theta, X, ly, delta=delta, replicates=replicates,
                     n_boot=n_boot, seed=seed, well_posed=well_posed)
    form, names = LAWS[law]
    return JointFit(form=form, names=names,
                    **summarise(model, sol, boot, X, ly, level=level, delta=delta,
                                resampling=resampling if replicates is not None else None),
                    n_name=n_name, d_name=d_name, n=n, d=d, y=y, law=law)


def fit_joint_table(table: pa.Table, *, n: str, d: str, loss: str, where: dict | None = None,
                    sweep: str | None = None, n_boot: int = 1000, level: float = 0.95,
                    delta: float | None = 1e-3, seed: int = 0,
                    law: str = "chinchilla") -> tuple[JointFit, dict]:
    """Joint fit from a table; returns ``(fit, outcomes)`` with trial counts by outcome.

    A table with a ``status`` column is treated as a sweep: failed and
    diverged trials are counted, their configurations left out of selection, and
    each ``(N, D)`` point is the best configuration of the other axes
    (:mod:`analysis.tables.frontier`: chosen on validation, or cross-fitted). Any other
    table is used row by row.
    """
    is_sweep = "status" in table.column_names
    notes = []
    prep = cl.prepare(table, loss, where=where, sweep=sweep) if is_sweep else None
    fr = prep.fr if is_sweep else tables.frame(table)
    nv, dv = tables.numeric(fr, n, "--n column"), tables.numeric(fr, d, "--d column")
    if is_sweep:
        y, mask, ok, outcome = prep.y, prep.mask, prep.ok, prep.outcome
    else:
        y = tables.metric(fr, loss)
        mask = tables.where_mask(fr, where) if where else np.ones(tables.n_rows(fr), bool)
        ok, outcome = tables.usable(fr, y)
        ok, outcome, warn = tables.nonpositive(fr, np.where(mask, y, 1.0), ok, outcome, loss)
        notes = [warn] if warn else []
    finite = np.isfinite(nv) & np.isfinite(dv)
    outcome = np.where(ok & ~finite, "nonfinite", outcome)
    ok &= finite
    outcomes = tables.count_by(outcome[mask])
    rows = np.flatnonzero(ok & mask)
    if rows.size == 0:
        raise AnalysisError(f"no usable rows for {loss!r}: outcomes {outcomes}")
    rng = np.random.default_rng(seed)
    res = None
    if is_sweep:
        front = frontier(fr, np.flatnonzero(mask & finite), (n, d), y, outcome=outcome,
                         maximize=tables.maximize(loss), n_boot=n_boot, rng=rng, sel=prep.sel,
                         sel_name=prep.sel_name)
        front, warn = positive_points(front, fr, np.flatnonzero(mask & finite), loss)
        notes = [warn] if warn else []
        if front.points.shape[0] == 0:
            raise AnalysisError(f"no (N, D) point left to fit: {warn}")
        nn, dd, yy, reps = front.points[:, 0], front.points[:, 1], front.y, front.replicates
        res = front.resampling
    else:
        nn, dd, yy, reps = nv[rows], dv[rows], y[rows], None
    fit = fit_joint(nn, dd, yy, replicates=reps, n_boot=n_boot, level=level, delta=delta,
                    seed=int(rng.integers(2**31)), n_name=n, d_name=d, resampling=res, law=law)
    warn = tuple(w.removeprefix("warning: ") for w in notes)
    return (dataclasses.replace(fit, input_warnings=warn) if warn else fit), outcomes
