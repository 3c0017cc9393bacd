r"""Realistic sweep tables with a known answer, for calibration tests.

:mod:`analysis.testing.synthetic` draws independent noise around an exact parabola in
:math:`\log B`, the estimators' own model, so coverage tests on it pass by
construction. Here a trial's measured error is

.. math::

    \mathrm{err}_X(c, s) = \frac{1}{n_X}\,\mathrm{round}\Big(\frac{n_X}{n'_X}
        \mathrm{Bin}\big(n'_X,\; \min(q_{cs}, q_{\max})\big)\Big),\qquad
    q_{cs} = E(c)\, e^{u_s(N) + e_{cs}},\qquad n'_X = n_X / f^2

for evaluation set :math:`X \in \{\text{val}, \text{test}\}`, where

- :math:`E(c) = (\alpha N^\beta + \gamma)\, e^{L(\ln B - \ln B^*)}\, (256/w)^{\omega}`
  is the expected error of configuration :math:`c`, with the optimum
  :math:`B^* = k\,\varepsilon^{p_\varepsilon} N^{p_N} (1-m)^{-p_m}` and the
  asymmetric (Linex) bowl :math:`L(u) = \kappa\,(e^{-\lambda u} + \lambda u - 1)/\lambda^2`:
  quadratic with curvature :math:`\kappa` at the optimum, exponentially steep
  towards small batches, linear towards large ones (or, with ``Landscape.steep``, a
  split parabola ``steep`` times steeper below the optimum than above);
- :math:`u_s(N)` is the seed's effect, shared by every batch size, learning
  rate, momentum and width at one N (a seed fixes the init, the nested subset
  and the data order), correlated across N as
  :math:`e^{-|\ln N_1 - \ln N_2|/\ell}`;
- optionally (``Noise.opt_shift_sd``) the seed also moves the optimum:
  :math:`\ln B^*` gains :math:`\delta_s(N)`, shared by every group at one N and
  correlated across N like :math:`u_s`; a shift shared by all groups at one N does not
  cancel in an argmin, unlike :math:`u_s`;
- :math:`e_{cs}` is the trial's own training luck, shared by its val and test
  metrics (normal, or Student-t with ``Noise.trial_df`` degrees of freedom); the binomial draw is the evaluation noise, independent between the
  two sets, a fraction :math:`f` of a fresh binomial sample's sd (the sets are
  fixed, so much of the sampling error is common to every trial);
- a trial diverges with probability :math:`\Phi((\ln(B^*/B) - \ln c)/s)`, i.e. at
  large :math:`\varepsilon/B` (:math:`B^* \propto \varepsilon`): status ``diverged`` and
  NaN metrics, or with probability ``collapse_ok`` status ``ok`` at chance error, as
  the digits trainer records such runs.

Truth: the generating exponents, the curve :math:`\alpha N^\beta + \gamma`, the
oracle frontier (the cell of least expected error at each N) and each group's
true :math:`B_{opt}`, the argmin over continuous :math:`B` of the expected
error with diverged runs counted at chance.

Calibration (:data:`PRESETS`). The digits sweeps of ``make reproduce``
(``configs/learning_curve.yaml``: 14 sizes, 18 cells, 10 seeds;
``configs/bopt_rule.yaml``: 24 groups, 11 batch sizes, 5 seeds; 297 test
images, no validation column yet) were run on 2026-12-01 with the packed
engine (``python -m cluster.cli sweep configs/<name>.yaml --results DIR
--engine packed``) and decomposed per N as ``log err = cell + seed + residual``
over cells within 1.5x of the best error:

- seed-effect sd (log error): learning_curve 0.05-0.28, median 0.19;
  bopt_rule 0.18, 0.12, 0.06, 0.06 at N = 200..1500. Preset ``digits``: 0.15.
- seed-effect correlation across N: 0.42 between adjacent sizes of
  learning_curve (log spacing 0.31), 0.13 on average; :math:`\ell = 0.36`.
- residual sd (log error): 0.06-0.14 at errors above 5 %, 0.17-0.26 at
  1.3-3 %; in absolute error 0.004-0.02, *below* the binomial sd of a fresh
  297-image sample (0.007-0.027). Fitted as training luck 0.10 plus
  evaluation noise at :math:`f = 0.5` of the binomial sd. The split between
  the two is not identifiable without a validation column; the preset
  assumes it.
- bowl: error rises 7-23 % one doubling above the best batch size, 30-90 %
  three doublings above (:math:`\kappa = 0.6, \lambda = 1.5`); below the best,
  training collapses to chance where :math:`\varepsilon/((1-m)B) > 0.11-0.19`,
  one to two doublings below the best batch size (all such digits runs were
  recorded ``ok`` at 10 % accuracy; :math:`c = 3-4`, ``collapse_ok = 0.9``);
  best errors follow :math:`3.0\,N^{-0.75}`; test loss is 3.6x the error.
- check: simulated ``bopt_rule`` sweeps (``digits``, landscape ``rule``) give
  per-N seed sds 0.04-0.24 and residual sds 0.16-0.44 (measured 0.09-0.21 and
  0.16-0.32); per-group B_opt interval widths (ln, same-seed selection, 400
  resamples) have median 1.0-1.06 (measured 0.65: the digits optimum sits
  against the collapse, which pins it); the rule's exponent half-widths are
  0.12-0.15 / 0.09-0.12 / 0.06-0.07 for lr / n_train / 1/(1-m) (measured
  0.18 / 0.15 / 0.09, where groups scatter 1.9x more than seed noise explains:
  the digits B_opt is not a power law of the three axes).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
from scipy.special import ndtr


@dataclass(frozen=True, kw_only=True)
class Noise:
    """Noise levels of a simulated sweep (all sds in log error)."""

    name: str
    seed_sd: float = 0.15
    """Seed effect, shared by every cell at one n_train."""
    seed_corr_len: float = 0.36
    r"""Correlation of seed effects across sizes: :math:`e^{-|\Delta\ln N|/\ell}`."""
    trial_sd: float = 0.10
    """A trial's own training luck, shared by its val and test metrics."""
    eval_frac: float = 0.5
    """Evaluation noise per trial, as a fraction of a fresh binomial sample's sd."""
    n_test: int = 297
    n_val: int = 300
    opt_shift_sd: float = 0.0
    r"""Seed-level shift of the optimum's location, in :math:`\ln B`, shared by every group
    (lr, momentum, width) at one n_train and correlated across sizes like the seed effect:
    the seed moves :math:`B^*` (and the divergence threshold with it). 0: off."""
    trial_df: float = 0.0
    """Student-t degrees of freedom of the trial luck (scaled to sd ``trial_sd``; 3: heavy
    tails); 0: normal."""


PRESETS = {
    "digits": Noise(name="digits"),
    "noisy": Noise(name="noisy", seed_sd=0.3, trial_sd=0.2, eval_frac=1.0),
    "shifted": Noise(name="shifted", opt_shift_sd=0.25, trial_df=3.0),
}
"""Named noise levels: ``digits`` as measured (module docstring), ``noisy`` about twice it,
``shifted`` the digits levels plus a seed-level shift of the optimum (sd 0.25 in ln B, shared
by every group at one N) and t3 trial luck: what an audit showed group-independent intervals
miss (issue 24)."""


@dataclass(frozen=True, kw_only=True)
class Landscape:
    """Expected error of every configuration, and where trials diverge."""

    curve: tuple[float, float, float] = (3.0, -0.75, 0.0)
    r""":math:`(\alpha, \beta, \gamma)` of the best error :math:`\alpha N^\beta + \gamma`."""
    k: float = 0.04
    r""":math:`B^* = k\,\varepsilon^{p_\varepsilon} N^{p_N} (1-m)^{-p_m}`."""
    exponents: tuple[float, float, float] = (1.0, 1.0, 1.0)
    r""":math:`(p_\varepsilon, p_N, p_m)`; all 1 is the rule of Smith & Le (2018)."""
    kappa: float = 0.6
    r"""Curvature of log error in :math:`\ln B` at the optimum."""
    asym: float = 1.5
    r"""Linex asymmetry :math:`\lambda`: steeper towards small batches."""
    width_cost: float = 0.03
    """Log error per unit of ln(256/width)."""
    diverge_below: float = 4.0
    r"""Half the trials diverge at :math:`B = B^*/\text{this}` (two doublings below the
    optimum by default); fewer above, more below."""
    diverge_spread: float = 0.25
    """Spread :math:`s` of the divergence threshold, in ln units."""
    collapse_ok: float = 0.9
    """Fraction of divergent trials recorded ``ok`` at chance error instead of ``diverged``."""
    steep: float = 0.0
    r"""When > 0 the bowl is a split parabola instead of the Linex one:
    :math:`\tfrac{\kappa}{2} u^2` above the optimum and ``steep`` times that below it (3: log
    error rises 3x faster towards small batches; the parabola vertex through three points is
    biased by up to a quarter of the grid step there)."""
    chance: float = 0.9
    loss_per_error: float = 3.6


LANDSCAPES = {
    "rule": Landscape(k=0.04),
    "rule_steep": Landscape(k=0.04, steep=3.0),
    "no_n": Landscape(k=22.0, exponents=(1.0, 0.0, 1.0)),
    "learning_curve": Landscape(k=16.0, exponents=(1.0, 0.0, 1.0), diverge_below=3.0),
}
"""Landscapes for the two ``make reproduce`` designs, with optima where the digits
sweeps found them (B_opt 2.8-180, about 16-22 lr/(1-m) at N = 550). ``rule``:
B_opt ∝ lr*N/(1-m) exactly, optima from 2 (the bottom of ``configs/bopt_rule.yaml``)
to 600; ``rule_steep`` the same with a split-parabola bowl 3x steeper towards small
batches. ``no_n``: the same without N dependence (what the digits sweep shows).
``learning_curve``: B* = 16 lr/(1-m), so the best configuration is the same at every N
and the oracle frontier follows 3.0 N^-0.75."""


@dataclass(frozen=True, kw_only=True)
class Design:
    """Configurations ``(n_train, batch_size, lr, momentum, width)`` and seeds."""

    configs: tuple[tuple[float, float, float, float, float], ...]
    seeds: tuple[int, ...]

    @staticmethod
    def grid(*, n_trains, batch_sizes, lrs, momenta=(0.0,), widths=(256,), seeds=(0, 1, 2, 3, 4),
             skip_b_over_n: bool = True) -> "Design":
        """Every combination; batch sizes above n_train are skipped, as the grid does."""
        configs = tuple((float(n), float(b), float(lr), float(m), float(w)) for n, b, lr, m, w in
                        itertools.product(n_trains, batch_sizes, lrs, momenta, widths)
                        if not (skip_b_over_n and b > n))
        return Design(configs=configs, seeds=tuple(int(s) for s in seeds))


def design_from_config(path: str) -> Design:
    """The design of a sweep config file (``configs/*.yaml``), without batches above n_train."""
    from scaling.config.sweep import load_config

    configs, seeds = set(), set()
    for t in load_config(path).trials(limit=None):  # batch_size > n_train is never generated
        configs.add((float(t.n_train), float(t.batch_size), float(t.lr), float(t.momentum), float(t.width)))
        seeds.add(int(t.seed))
    return Design(configs=tuple(sorted(configs)), seeds=tuple(sorted(seeds)))


@dataclass(frozen=True, kw_only=True)
class Truth:
    """What a simulated sweep was generated from."""

    exponents: dict
    """Generating exponents of B* by axis: ``{"lr": .., "n_train": .., "momentum": ..}``."""
    curve: tuple[float, float, float]
    r"""Best error :math:`\alpha N^\beta + \gamma`."""
    n_trains: np.ndarray
    oracle_error: np.ndarray
    """Expected test error of the truly best grid cell at each n_train."""
    oracle_config: tuple
    """That cell's ``(batch_size, lr, momentum, width)`` at each n_train."""
    design: Design = field(repr=False)
    landscape: Landscape = field(repr=False)
    noise: Noise = field(repr=False)

    def log_b_opt(self, n_train, lr, momentum, width=256.0) -> float:
        """True ln B_opt of a group: the argmin over continuous B of the expected error
        (diverged runs counted at chance), searched 4 ln units beyond the grid."""
        cfg = np.array(self.design.configs, float)
        key = (float(n_train), float(lr), float(momentum), float(width))
        bs = cfg[np.all(cfg[:, [0, 2, 3, 4]] == key, axis=1), 1]
        t = np.linspace(np.log(bs.min()) - 4.0, np.log(bs.max()) + 4.0, 8001)
        err = _observed(self.landscape, self.noise, key[0], np.exp(t), key[1], key[2], key[3])
        return float(t[np.argmin(err)])

    def oracle_exponent(self) -> float:
        """Slope of log oracle error on log n_train (the pure power law's exponent)."""
        return float(np.polyfit(np.log(self.n_trains), np.log(self.oracle_error), 1)[0])


@dataclass(frozen=True, kw_only=True)
class Simulated:
    table: pa.Table
    truth: Truth
    noise: Noise
    landscape: Landscape = field(repr=False)


def linex(u, kappa: float, lam: float):
    r""":math:`\kappa (e^{-\lambda u} + \lambda u - 1)/\lambda^2`, capped to stay finite."""
    v = np.minimum(-lam * np.asarray(u, float), 50.0)
    return kappa * (np.exp(v) - v - 1.0) / lam ** 2


def bowl(land: Landscape, u):
    """Log-error penalty at ``u = ln B - ln B*``: Linex, or the split parabola (``steep``)."""
    if land.steep > 0:
        u = np.asarray(u, float)
        return 0.5 * land.kappa * u * u * np.where(u < 0, land.steep, 1.0)
    return linex(u, land.kappa, land.asym)


def log_b_star(land: Landscape, n, b_lr, m):
    pe, pn, pm = land.exponents
    return np.log(land.k) + pe * np.log(b_lr) + pn * np.log(n) - pm * np.log1p(-np.asarray(m))


def expected_error(land: Landscape, n, b, lr, m, w, shift=0.0):
    """Expected error without noise or divergence (before the chance cap); ``shift``: the
    seed's move of ln B*."""
    a, beta, g = land.curve
    u = np.log(b) - log_b_star(land, n, lr, m) - shift
    with np.errstate(over="ignore"):
        width = land.width_cost * np.log(256.0 / np.asarray(w, float))
        return (a * np.asarray(n, float) ** beta + g) * np.exp(bowl(land, u) + width)


def p_diverge(land: Landscape, n, b, lr, m, shift=0.0):
    r"""Probability that a trial diverges: :math:`\Phi((\ln(B^*/B) - \ln c)/s)`."""
    x = log_b_star(land, n, lr, m) + shift - np.log(b) - np.log(land.diverge_below)
    return ndtr(x / land.diverge_spread)


def _observed(land: Landscape, noise: Noise, n, b, lr, m, w):
    """Expected measured error with divergence counted at chance (for the truth), averaged
    over the seed's shift of the optimum (Gauss-Hermite, 21 nodes) when there is one."""
    mean_noise = np.exp(0.5 * (noise.seed_sd ** 2 + noise.trial_sd ** 2))
    nodes, weights = np.polynomial.hermite_e.hermegauss(21 if noise.opt_shift_sd > 0 else 1)
    out = 0.0
    for z, wt in zip(nodes, weights / weights.sum()):
        shift = noise.opt_shift_sd * z
        e = np.minimum(expected_error(land, n, b, lr, m, w, shift) * mean_noise, land.chance)
        p = p_diverge(land, n, b, lr, m, shift)
        out = out + wt * ((1.0 - p) * e + p * land.chance)
    return out


def truth_of(design: Design, land: Landscape, noise: Noise) -> Truth:
    cfg = np.array(design.configs, float)
    ns = np.unique(cfg[:, 0])
    err = _observed(land, noise, cfg[:, 0], cfg[:, 1], cfg[:, 2], cfg[:, 3], cfg[:, 4])
    best, best_cfg = [], []
    for n in ns:
        i = np.flatnonzero(cfg[:, 0] == n)
        k = i[np.argmin(err[i])]
        best.append(err[k])
        best_cfg.append(tuple(cfg[k, 1:]))
    pe, pn, pm = land.exponents
    return Truth(exponents={"lr": pe, "n_train": pn, "momentum": pm}, curve=land.curve,
                 n_trains=ns, oracle_error=np.array(best), oracle_config=tuple(best_cfg),
                 design=design, landscape=land, noise=noise)


def _seed_effects(ns: np.ndarray, n_seeds: int, noise: Noise, rng, sd=None) -> np.ndarray:
    """(n_seeds, len(ns)) seed effects of sd ``sd`` (default the seed sd), correlated across
    sizes."""
    ln = np.log(ns)
    sd = noise.seed_sd if sd is None else sd
    cov = sd ** 2 * np.exp(-np.abs(ln[:, None] - ln[None, :]) / noise.seed_corr_len)
    chol = np.linalg.cholesky(cov + 1e-12 * np.eye(ns.size))
    return rng.standard_normal((n_seeds, ns.size)) @ chol.T


def _measure(q, n_set: int, frac: float, rng):
    """Error counted on ``n_set`` examples: a thinned binomial, rounded to 1/n_set."""
    n_eff = max(int(round(n_set / max(frac, 1e-6) ** 2)), n_set)
    return np.round(rng.binomial(n_eff, q) * (n_set / n_eff)) / n_set


def simulate(design: Design, *, landscape: Landscape | None = None, noise: Noise | str = "digits",
             seed: int = 0, validation: bool = True, sweep: str = "sim") -> Simulated:
    """One simulated sweep: a trials table in the store's schema and its :class:`Truth`.

    Parameters
    ----------
    design : Design
        Configurations and seeds (:meth:`Design.grid`, :func:`design_from_config`).
    landscape : Landscape, optional
        Expected errors, optimum and divergence; default :class:`Landscape()`.
    noise : Noise or str
        Noise levels or the name of a preset in :data:`PRESETS`.
    seed : int
        Seed of the generator (one replication).
    validation : bool
        Include ``val_loss`` and ``val_acc`` (False: a table from before the
        validation split, or an external file).
    sweep : str
        Value of the ``sweep`` column.
    """
    land = landscape or Landscape()
    noise = PRESETS[noise] if isinstance(noise, str) else noise
    rng = np.random.default_rng(seed)
    cfg = np.array(design.configs, float)
    seeds = np.array(design.seeds)
    S, C = seeds.size, cfg.shape[0]
    ns = np.unique(cfg[:, 0])
    at = np.searchsorted(ns, cfg[:, 0])
    u = _seed_effects(ns, S, noise, rng)[:, at]                                 # (S, C)
    n, b, lr, m, w = (np.tile(cfg[:, j], S) for j in range(5))
    seed_col = np.repeat(seeds, C)
    shift = 0.0
    if noise.opt_shift_sd > 0:  # drawn only when on: default sweeps are unchanged
        shift = _seed_effects(ns, S, noise, rng, noise.opt_shift_sd)[:, at].ravel()
    err = expected_error(land, n, b, lr, m, w, shift)
    luck = rng.standard_normal(n.size)
    if noise.trial_df > 0:
        df = noise.trial_df
        luck = rng.standard_t(df, n.size) * np.sqrt((df - 2.0) / df) if df > 2 else \
            rng.standard_t(df, n.size)
    q = np.minimum(err * np.exp(u.ravel() + noise.trial_sd * luck), land.chance)
    bad = rng.random(n.size) < p_diverge(land, n, b, lr, m, shift)
    collapsed = bad & (rng.random(n.size) < land.collapse_ok)
    q = np.where(collapsed, land.chance, q)
    diverged = bad & ~collapsed
    cols = {}
    for name, size in (("test", noise.n_test), ("val", noise.n_val)):
        e = _measure(q, size, noise.eval_frac, rng)
        rel = noise.eval_frac * np.sqrt((1.0 - q) / (size * q))
        loss = land.loss_per_error * q * np.exp(rel * rng.standard_normal(n.size) - 0.5 * rel ** 2)
        cols[f"{name}_acc"] = np.where(diverged, np.nan, 1.0 - e)
        cols[f"{name}_loss"] = np.where(diverged, np.nan, loss)
    train = 0.5 * land.loss_per_error * q * np.exp(0.05 * rng.standard_normal(n.size))
    table = _table(n, b, lr, m, w, seed_col, diverged, cols, np.where(diverged, np.nan, train),
                   sweep, validation)
    return Simulated(table=table, truth=truth_of(design, land, noise), noise=noise, landscape=land)


def _table(n, b, lr, m, w, seed, diverged, cols, train, sweep, validation) -> pa.Table:
    rows = n.size
    epochs = 20.0
    steps = np.maximum(1, (epochs * n // b)).astype(np.int64)
    data = {
        "sweep": [sweep] * rows, "trial_id": [f"t{i:06d}" for i in range(rows)],
        "run_id": [f"r{i:06d}" for i in range(rows)],
        "status": np.where(diverged, "diverged", "ok").tolist(),
        "error": [("loss is nan" if d else None) for d in diverged],
        "task": ["sim"] * rows, "model": ["mlp"] * rows, "width": w.astype(np.int64),
        "depth": np.ones(rows, np.int64), "n_train": n.astype(np.int64),
        "batch_size": b.astype(np.int64), "lr": lr, "momentum": m,
        "weight_decay": np.zeros(rows), "seed": seed.astype(np.int64),
        "epochs": np.full(rows, epochs), "steps": steps,
        "examples_seen": (steps * b).astype(np.int64),
        "noise_scale": lr * n / (b * (1.0 - m)), "n_params": np.full(rows, 10_000, np.int64),
        "train_loss": train, "test_loss": cols["test_loss"], "test_acc": cols["test_acc"],
    }
    if validation:
        data["val_loss"], data["val_acc"] = cols["val_loss"], cols["val_acc"]
    data["optimizer"] = ["sgd"] * rows
    schema = _store_schema()
    if schema is None:
        return pa.table(data)
    if "noise_scale_exact" in schema.names:
        data["noise_scale_exact"] = lr * (n / b - 1.0) / (1.0 - m)
    fields = list(schema) + [pa.field(k, pa.table({k: v}).schema.field(k).type)
                             for k, v in data.items() if k not in schema.names]
    arrays = [pa.array(data[f.name], type=f.type) if f.name in data else pa.nulls(rows, f.type)
              for f in fields if validation or f.name not in ("val_loss", "val_acc")]
    keep = [f for f in fields if validation or f.name not in ("val_loss", "val_acc")]
    from analysis.tables.load import from_store

    return from_store(pa.Table.from_arrays(arrays, schema=pa.schema(keep)))  # a store's: the schema's axes


def _store_schema():
    """The results store's trials schema, so simulated tables follow it (None without it)."""
    try:
        from scaling.spec.schema import TRIALS_SCHEMA
    except ImportError:
        return None
    return TRIALS_SCHEMA


def with_noise(sim_noise: str | Noise, **changes) -> Noise:
    """A preset with some fields changed, e.g. ``with_noise("digits", seed_sd=0.3)``."""
    base = PRESETS[sim_noise] if isinstance(sim_noise, str) else sim_noise
    return replace(base, **changes)
