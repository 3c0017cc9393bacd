r"""The broken neural scaling law with one break (Caballero et al. 2023).

.. math:: y = a + b\,x^{-c_0}\,\big(1 + (x/d_1)^{1/f_1}\big)^{-c_1 f_1}

(Caballero, Gupta, Rish and Krueger, "Broken Neural Scaling Laws", ICLR 2023,
arXiv 2210.14891, eq. 1 with :math:`n = 1`). Below the break :math:`d_1` the
curve falls like :math:`x^{-c_0}`, above it like :math:`x^{-(c_0 + c_1)}`;
:math:`f_1` is the sharpness of the break (small is sharp, in units of
:math:`\log x`). The paper fits by minimising the mean squared log error,
and so does :class:`BNSL`: Levenberg-Marquardt on
:math:`\log\hat y - \log y` (:func:`analysis.stats.robust.batched_lm`, a Huber
threshold far above any residual, i.e. least squares), from the best points
of a grid over :math:`(c_0, c_1, d_1, f_1)` where :math:`a, b \ge 0` solve a
least squares in relative error exactly (variable projection).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from analysis.fit.forms.base import Form, wls
from analysis.stats.robust import batched_lm, huber_objective, multistart_fit

_DELTA = 50.0  # Huber threshold far above any log residual: plain least squares


@dataclass(frozen=True)
class _Model:
    r"""``theta = (la, lb, c0, c1, ld, lf)``, :math:`\log\hat y = \log s + \log(e^{la} + e^{lb+g})`.

    :math:`g = -c_0 \ell - c_1 e^{lf}\,\mathrm{softplus}((\ell - ld)/e^{lf})`
    with :math:`\ell = \log x - m`, so :math:`a = s e^{la}` and
    :math:`b = s e^{lb + c_0 m}` stay positive and every log is finite.
    """

    m: float
    log_s: float
    n_params: int = 6

    def log_pred(self, theta, X, jac=True):
        lx = X[0] - self.m
        la, lb, c0, c1, ld, lf = (theta[:, i:i + 1] for i in range(6))
        f = np.exp(np.clip(lf, -30.0, 30.0))
        u = (lx - ld) / f
        sp = np.logaddexp(0.0, u)
        h = lb - c0 * lx - c1 * f * sp
        out = np.logaddexp(la, h)
        if not jac:
            return out + self.log_s, None
        pa, pb, sig = np.exp(la - out), np.exp(h - out), expit(u)
        J = np.stack([pa, pb, -pb * lx, -pb * f * sp, pb * c1 * sig,
                      -pb * c1 * f * (sp - sig * u)], axis=1)
        return out + self.log_s, J

    def natural(self, theta):
        theta = np.atleast_2d(theta)
        s = np.exp(self.log_s)
        return np.column_stack([s * np.exp(theta[:, 0]),
                                s * np.exp(theta[:, 1] + theta[:, 2] * self.m), theta[:, 2],
                                theta[:, 3], np.exp(self.m + theta[:, 4]),
                                np.exp(np.clip(theta[:, 5], -30.0, 30.0))])

    def internal(self, params):
        """Inverse of :meth:`natural` (``a`` floored at a tiny positive value)."""
        p = np.atleast_2d(params)
        s = np.exp(self.log_s)
        a = np.maximum(p[:, 0], 1e-12 * s)
        return np.column_stack([np.log(a / s), np.log(p[:, 1] / s) - p[:, 2] * self.m, p[:, 2],
                                p[:, 3], np.log(p[:, 4]) - self.m, np.log(p[:, 5])])


class BNSL(Form):
    r""":math:`y = a + b\,x^{-c_0}(1 + (x/d_1)^{1/f_1})^{-c_1 f_1}` by least squares on log y."""

    name = "BNSL"
    formula = "y = a + b*x^(-c0)*(1 + (x/d1)^(1/f1))^(-c1*f1)"
    names = ("a", "b", "c0", "c1", "d1", "f1")
    no_interval = ("its six parameters trade off along ridges the bootstrap does not explore "
                   "from one start, and no simulation backs their percentile intervals")

    def _model(self, x, y):
        return _Model(m=float(np.log(x).mean()), log_s=float(np.log(y).mean()))

    def refit(self, x, y, weights, *, low=0.0, high=None, start=None):
        x, y = np.asarray(x, float), np.asarray(y, float)
        model = self._model(x, y)
        X, ly = (np.log(x),), np.log(y)
        W = np.atleast_2d(np.asarray(weights, float))
        with np.errstate(all="ignore"):
            if start is None:
                sols = [multistart_fit(model, self._starts(model, X[0], ly, w), X, ly, w,
                                       delta=_DELTA) for w in W]
                theta = np.array([s.theta for s in sols])
                value = np.array([s.value for s in sols], float)
                ok = np.array([s.converged for s in sols], bool)
            else:
                th0 = np.broadcast_to(model.internal(start), (W.shape[0], 6))
                sol = batched_lm(model, th0, X, ly, W, delta=_DELTA, max_iter=100)
                theta, value, ok = sol.theta, sol.value, sol.converged
            params = model.natural(theta)
        return params, value * 2.0 * _DELTA, ok & np.all(np.isfinite(params), axis=1)

    def _starts(self, model, lx, ly, w, keep: int = 8):
        """Best points of a grid over :math:`(c_0, c_1, d_1, f_1)`; :math:`a, b \\ge 0` solved."""
        ell = lx - model.m
        c0 = np.array([0.0, 0.1, 0.25, 0.5, 1.0])
        c1 = np.array([-0.5, -0.2, 0.1, 0.3, 0.6, 1.0, 2.0, 4.0])
        ld = np.quantile(ell, [0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 0.95])
        lf = np.log([0.05, 0.3, 1.0])
        G = np.stack(np.meshgrid(c0, c1, ld, lf, indexing="ij"), -1).reshape(-1, 4)
        f = np.exp(G[:, 3:4])
        h = -G[:, :1] * ell - G[:, 1:2] * f * np.logaddexp(0.0, (ell - G[:, 2:3]) / f)
        yn = np.exp(ly - model.log_s)
        z = np.exp(h - h.max(1, keepdims=True))
        A = np.stack(np.broadcast_arrays(1.0 / yn, z / yn), -1)
        ab, _ = wls(A, np.ones_like(z), np.broadcast_to(w, z.shape), (1, 1))
        la = np.log(np.maximum(ab[:, 0], 1e-9))
        lb = np.log(np.maximum(ab[:, 1], 1e-12)) - h.max(1)
        th = np.column_stack([la, lb, G])
        th = th[np.all(np.isfinite(th), axis=1)]
        val = huber_objective(model, th, (lx,), ly, w, _DELTA)
        return th[np.argsort(val)[:keep]]

    def predict(self, params, x):
        p = np.atleast_2d(params)
        lx = np.log(np.asarray(x, float))
        with np.errstate(divide="ignore"):
            f = p[:, 5:6]
            h = np.log(p[:, 1:2]) - p[:, 2:3] * lx \
                - p[:, 3:4] * f * np.logaddexp(0.0, (lx - np.log(p[:, 4:5])) / f)
            out = np.exp(np.logaddexp(np.log(p[:, :1]), h))
        return out if np.ndim(params) == 2 else out[0]
