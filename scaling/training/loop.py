"""The one training loop: eval steps, divergence, finishing members and their result rows.

Every engine runs this loop; a *backend* supplies the math:

- ``stacked`` (:mod:`scaling.training.backends.stacked`): many MLPs as one batched model, a
  hand-written backward and the optimizer update on stacked tensors;
- ``vmap`` (:mod:`scaling.training.backends.vmap`): many copies of any model through
  ``torch.func`` (``vmap`` of ``functional_call``), one backward pass, the
  optimizer update on stacked tensors, and the metrics per member;
- ``module`` (:mod:`scaling.training.data`): one ``nn.Module`` with autograd and
  ``torch.optim`` (and the metrics hooks: noise scale, sharpness, gradient norms);
- ``ddp`` (:mod:`cluster.worker.ddp`): ``module`` plus the all-reduce across workers.

A backend holds the live members in the loop's order and provides
``forward(step) -> losses`` (one minibatch loss per live member, a tensor),
``update(lr)`` (backward where ``forward`` did not do it, then one optimizer
step with this step's learning rates, or None for the peak ones),
``evaluate(positions, step) -> [metrics]``, ``keep(positions)``,
``params_of(position)`` and ``final_extra(position, ok)``, and the attributes
``name``, ``n_params``, ``flops_per_example``, ``tokens_per_example``,
``pool_size`` and ``data_version``.

The schedule, the same for every backend:

- evaluate every member at step 0; its train loss there, L₀, sets the member's
  divergence threshold;
- before every optimizer step, check each member's minibatch loss: one that is
  not finite or exceeds L₀ + DIVERGENCE_FACTOR·|L₀| (with L₀ > 0: about
  1000× the initial loss) stops that member, ``diverged``, at the previous
  step; the others go on. The rule is relative, so it works for losses of any
  scale (a plug-in's summed squared error as well as cross-entropy);
- step with the lr of each member's schedule (:mod:`scaling.training.schedules`);
- evaluate each member at its own eval steps; a train loss that is not finite
  there also ends it as ``diverged``; a member ends at its last step.
- with a pruning rule in the trials' ``eval`` (``search.prune``), the rung steps are eval steps
  too, and at each the :class:`scaling.training.prune.Pruner` stops members as ``pruned``.

Each finished member gets one result ``{"trial": row, "curves": [...]}`` built
by :func:`result_row`, passed to ``on_result`` right away. ``on_steps(n)``, if given, hears the
steps done so far (a finished member counts its whole budget), now and then
(:func:`report_interval`): a progress report, never a per-step call. One that raises is dropped
and training goes on.

Importing this module does not import torch (the driver builds ``failed`` rows with it).
"""

from __future__ import annotations

import math
import socket
import time
import uuid
from datetime import datetime, timezone

import numpy as np

from scaling import __version__
from scaling.spec.schema import CODE_VERSION, as_trial
from scaling.training.prune import Pruner, rung_steps
from scaling.training.schedules import Schedules

DIVERGENCE_FACTOR = 1000.0
"""A minibatch loss above L₀ + DIVERGENCE_FACTOR·|L₀| (L₀: the train loss at step 0) is divergence."""


def exploded_message(value: float, step: int, lr: float) -> str:
    """The ``error`` of a trial whose minibatch loss exploded (the same in every backend)."""
    return f"training loss {value:.4g} at step {step} (lr={lr})"


def nonfinite_eval_message(step: int, lr: float) -> str:
    """The ``error`` of a trial whose train loss was not finite at an eval point."""
    return f"train loss not finite at step {step} (lr={lr})"


def divergence_threshold(initial_loss: float) -> float:
    """The largest sane minibatch loss of a trial whose train loss at step 0 was ``initial_loss``."""
    if not math.isfinite(initial_loss):
        return -math.inf
    return initial_loss + DIVERGENCE_FACTOR * max(abs(initial_loss), 1e-12)


def report_interval(elapsed: float) -> float:
    """Seconds to the next ``on_steps`` report, ``elapsed`` seconds into training: a quarter of
    the time trained so far, between STEPS_EVERY_S bounds (frequent at first, so progress shows
    in the first seconds; at most one report a second after that)."""
    low, high = STEPS_EVERY_S
    return min(high, max(low, elapsed / 4))


STEPS_EVERY_S = (0.1, 1.0)
"""The shortest and longest interval between two ``on_steps`` reports (report_interval)."""


def eval_steps(trial, steps: int) -> list[int]:
    """Steps after which the model is evaluated: step 0, log-spaced or regular steps, the rung
    steps of a pruning rule (scaling.training.prune) and the last."""
    ev = as_trial(trial).eval
    if "every_steps" in ev:
        chosen = set(range(0, steps + 1, ev["every_steps"]))
    else:
        chosen = {0} | {int(round(s)) for s in np.geomspace(1, steps, max(ev["points"] - 1, 1))}
    if ev.get("prune"):
        chosen |= {s for _, s in rung_steps(trial)}
    return sorted(chosen | {steps})


class Member:
    """One trial's bookkeeping inside the loop."""

    def __init__(self, index: int, trial):
        self.index, self.trial = index, trial
        self.steps = trial.total_steps
        self.evals = eval_steps(trial, self.steps)
        self.eval_set = set(self.evals)
        self.curves: list[dict] = []
        self.status, self.error, self.done = "ok", None, 0
        self.threshold = math.inf
        self.rungs = {s for _, s in rung_steps(trial)}


def run_members(trials, backend_factory, *, engine: str, on_result=None, return_params: bool = False,
                report: bool = True, on_steps=None, peers=None, on_eval=None) -> list[dict]:
    """Train ``trials`` with the backend ``backend_factory(trials)`` builds; one result per trial,
    in input order. ``report=False`` (DDP ranks other than 0) builds no rows. ``on_steps(n)``:
    steps done so far, now and then (see the module docstring). Trials that carry a pruning rule
    stop at its rungs as :class:`scaling.training.prune.Pruner` decides, ranked with their pack
    and with ``peers()`` (the group members already stored: cluster.worker.peers.store_peers).
    ``on_eval(trial, row)``, if given, hears each curve row as it is recorded (the hook a peer's
    scheduler, such as Ray Tune's ASHA, would report through: docs/pruning.md); one that raises
    is dropped and training goes on. When it returns a non-empty string at a step before the
    member's last, the member stops there as ``pruned`` with that string as its ``error`` (how a
    peer's pruner stops a trial: cluster.bench.peers)."""
    import torch

    # An x86 CPU is up to 100x slower on denormal floats, and training makes them: the momentum
    # buffers of dead ReLU units decay as m^t past 1e-38. Flushed to zero, a small-batch step ran
    # 3-7x faster (python -m cluster.bench.roofline); values that small change no result.
    torch.set_flush_denormal(True)  # see above; switched off again after, for the caller's numbers
    try:
        run = _Run([as_trial(t) for t in trials], backend_factory, engine, on_result, return_params, report,
                   on_steps, peers)
        run.on_eval = on_eval
        run.train()
    finally:
        torch.set_flush_denormal(False)
    return run.results


class _Run:
    def __init__(self, trials, backend_factory, engine, on_result, return_params, report, on_steps=None,
                 peers=None):
        self.start, self.t0 = datetime.now(timezone.utc), time.perf_counter()
        self.engine, self.on_result, self.return_params, self.report = engine, on_result, return_params, report
        self.backend = backend_factory(trials)
        self.members = [Member(i, t) for i, t in enumerate(trials)]
        self.schedules = Schedules(trials, [m.steps for m in self.members])
        self.results: list[dict | None] = [None] * len(trials)
        self.thresholds = None
        self.pruner = Pruner.for_trials(trials, peers)
        self.on_eval = None
        self.on_steps, self.steps_finished, self.next_report = on_steps, 0, self.t0 + STEPS_EVERY_S[0]

    def train(self) -> None:
        backend = self.backend
        stops = set().union(*(m.eval_set for m in self.members))  # eval steps include the last step
        self.record(0, list(range(len(self.members))))
        for m in self.members:
            m.threshold = divergence_threshold(m.curves[0]["train_loss"])
        self.finish([p for p, m in enumerate(self.members) if m.threshold == -math.inf], 0, "start")
        step = 0
        while self.members:
            step += 1
            losses = backend.forward(step)
            if self.thresholds is None:
                self.thresholds = losses.new_tensor([m.threshold for m in self.members])
            sane = losses <= self.thresholds  # NaN compares false
            if not bool(sane.all()):  # the step's one host sync
                bad = (~sane).nonzero().view(-1).tolist()
                for p, value in zip(bad, losses[bad].tolist()):
                    m = self.members[p]
                    m.status, m.error = "diverged", exploded_message(value, step, m.trial.lr)
                self.finish(bad, step - 1)
                if not self.members:
                    break
                losses = backend.forward(step)
            backend.update(None if self.schedules.constant else self.schedules.lr_at(step))
            if step in stops:
                due = [p for p, m in enumerate(self.members) if step in m.eval_set]
                ended = set(self.record(step, due)) | {p for p in due if self.members[p].steps == step}
                if self.pruner is not None:
                    ended |= self.prune(step, [p for p in due if p not in ended])
                if ended:
                    self.finish(sorted(ended), step)
            if self.on_steps is not None and time.perf_counter() >= self.next_report:
                self.report_steps(step)

    def prune(self, step: int, due: list[int]) -> set[int]:
        """Members at a rung at ``step`` that the pruner stops (status ``pruned``)."""
        at = [(p, self.members[p].trial, self.members[p].curves[-1]) for p in due if step in self.members[p].rungs]
        stop = self.pruner.decide(step, at)
        for p, why in stop.items():
            self.members[p].status, self.members[p].error = "pruned", why
        return set(stop)

    def report_steps(self, step: int) -> None:
        """Tell ``on_steps`` the steps done: the finished members' budgets and ``step`` for each live one."""
        now = time.perf_counter()
        self.next_report = now + report_interval(now - self.t0)
        try:
            self.on_steps(self.steps_finished + step * len(self.members))
        except Exception:  # noqa: BLE001 (progress is a courtesy: training goes on without it)
            self.on_steps = None

    def record(self, step: int, positions: list[int]) -> list[int]:
        """Evaluate, append curve rows; return the positions that end here: a train loss that is not
        finite, or ``on_eval`` asked to stop them."""
        bad = []
        lr_now = self.schedules.lr_at(max(step, 1))
        for p, metrics in zip(positions, self.backend.evaluate(positions, step)):
            m = self.members[p]
            m.curves.append(self.curve_row(step, m, metrics, float(lr_now[p])))
            if self.on_eval is not None:
                try:
                    stop = self.on_eval(m.trial, m.curves[-1])
                except Exception:  # noqa: BLE001 (a listener's failure is not the trial's)
                    self.on_eval, stop = None, None
                if stop and 0 < step < m.steps:  # a peer's pruner stops this member here
                    m.status, m.error = "pruned", str(stop)
                    bad.append(p)
            if step > 0 and not math.isfinite(metrics["train_loss"]):
                m.status, m.error = "diverged", nonfinite_eval_message(step, m.trial.lr)
                bad.append(p)
        return bad

    def curve_row(self, step: int, m: Member, metrics: dict, lr_now: float) -> dict:
        examples = step * m.trial.batch_size
        return {"step": step, "epoch": examples / m.trial.n_train, "examples_seen": examples,
                "tokens_seen": examples * self.backend.tokens_per_example, "lr_now": lr_now,
                **metrics, "wall_s": time.perf_counter() - self.t0}

    def finish(self, positions: list[int], done: int, when: str = "") -> None:
        """Report the members at these positions, ``done`` steps in, and drop them."""
        if not positions:
            return
        for p in positions:
            m = self.members[p]
            m.done = done
            self.steps_finished += m.steps
            if when == "start":
                m.status, m.error = "diverged", nonfinite_eval_message(0, m.trial.lr)
            if not self.report:
                continue
            result = {"trial": self.row(m, p), "curves": m.curves}
            if self.return_params:
                result["params"] = self.backend.params_of(p)
            self.results[m.index] = result
            if self.on_result is not None:
                self.on_result(result)
        gone = set(positions)
        keep = [p for p in range(len(self.members)) if p not in gone]
        self.backend.keep(keep)
        self.members = [self.members[p] for p in keep]
        self.schedules = self.schedules.take(keep)
        self.thresholds = None

    def row(self, m: Member, position: int) -> dict:
        b = self.backend
        final = m.curves[-1] if m.status == "ok" else {}
        return result_row(m.trial, status=m.status, error=m.error, steps=m.done, final=final,
                          n_params=b.n_params, flops_per_example=b.flops_per_example,
                          tokens_per_example=b.tokens_per_example, data_version=b.data_version,
                          wall_s=time.perf_counter() - self.t0, start=self.start, engine=self.engine,
                          backend=b.name, extra=b.final_extra(position, m.status == "ok"))


OUTCOME_KEYS = ("train_loss", "val_loss", "val_acc", "test_loss", "test_acc")


def result_row(trial, *, status: str, error: str | None, steps: int, final: dict, n_params: int | None,
               flops_per_example: float | None, tokens_per_example: int, data_version: str | None,
               wall_s: float, start: datetime, engine: str, backend: str | None, extra: dict | None = None,
               host: str | None = None) -> dict:
    """The trial row of one run: the trial's columns, its outcome and bookkeeping (every backend,
    and the driver's ``failed`` rows, build it here)."""
    examples = steps * trial.batch_size
    return {
        **trial.columns(),
        "run_id": uuid.uuid4().hex,
        "status": status,
        "error": error,
        "steps": steps,
        "examples_seen": examples,
        "tokens_seen": examples * tokens_per_example,
        "train_flops": None if flops_per_example is None else float(flops_per_example) * examples,
        "n_params": n_params,
        **{k: final.get(k, math.nan) for k in OUTCOME_KEYS},
        "wall_s": wall_s,
        "host": host or socket.gethostname(),
        "start_time": start,
        "end_time": datetime.now(timezone.utc),
        "version": __version__,
        "code_version": CODE_VERSION,
        "data_version": data_version,
        "engine": engine,
        "backend": backend,
        **(extra or {}),
    }


def failed_row(trial, error: str, engine: str = "single") -> dict:
    """The trial row of a trial that raised on every attempt (written by the driver)."""
    from scaling.tasks.resolve import task_data_version

    trial = as_trial(trial)
    now = datetime.now(timezone.utc)
    return result_row(trial, status="failed", error=error[:4000], steps=0, final={}, n_params=None,
                      flops_per_example=None, tokens_per_example=1, data_version=task_data_version(trial.task),
                      wall_s=0.0, start=now, engine=engine, backend=None)
