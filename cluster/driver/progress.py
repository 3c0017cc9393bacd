"""The sweep driver's progress line: trials done, steps done (inside packs too), rates and ETA.

Workers tell a small Ray actor, :class:`StepTally`, the steps their unit has done, now and then and
fire and forget (cluster.worker.units.StepReporter, from the training loop's ``on_steps``). The
driver asks it for the units in flight a few times a second (:class:`StepPoller`) without waiting
on the answer. Steps of a unit that returned come from its trials' budgets instead, so a report
never doubles or loses anything, and the final counts are the trials' own. The ETA is shown once
ETA_FROM of the steps are done.
"""

from __future__ import annotations

import shutil
import sys
import time

ETA_FROM = 0.05
"""The share of all steps done before the progress line shows an ETA."""

RATE_AFTER_S = 0.5
"""Seconds of step reports before the rate is measured from them alone."""

LINE_WIDTH = 100
"""The longest progress line (a terminal narrower than this gets a shorter one)."""


def fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _fmt_count(n: float) -> str:
    """3 significant figures past 1,000: 950, 14.2k, 3.10M."""
    n = float(n)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            v = n / scale
            return f"{v:.3g}{unit}" if v < 1000 else f"{v:.0f}{unit}"
    return f"{n:.0f}"


def _fmt_rate(r: float) -> str:
    return _fmt_count(r) if r >= 100 else f"{r:.3g}"


class Progress:
    """Redraws in place on a terminal; on a pipe or log prints a line every ``every_s`` seconds.

    ``plan(trials, steps)`` adds planned trials and their steps (the total is extrapolated from
    them until every pending trial is planned), ``live_steps({unit: steps})`` the steps the units
    in flight report, and ``finish_steps(steps, unit)`` the steps of a unit's trials once it
    returned (its reports no longer count)."""

    def __init__(self, total: int, *, stream=None, enabled: bool = True, every_s: float = 10.0):
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every_s = every_s
        self.counts = {"ok": 0, "diverged": 0, "pruned": 0, "failed": 0}
        self.running = 0
        self.t0 = time.monotonic()
        self._last = 0.0
        self.planned_trials = self.planned_steps = 0
        self.steps_finished, self.live = 0, {}
        self._first: tuple[float, int] | None = None  # (when, steps) steps were first seen

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    @property
    def total_steps(self) -> float:
        """All steps of the pending trials: exact once every one is planned, extrapolated before."""
        if not self.planned_trials:
            return 0.0
        return self.planned_steps * max(1.0, self.total / self.planned_trials)

    @property
    def steps_done(self) -> int:
        return self.steps_finished + sum(self.live.values())

    def plan(self, trials: int, steps: int) -> None:
        self.planned_trials += trials
        self.planned_steps += steps

    def finish_steps(self, steps: int, unit=None) -> None:
        self.steps_finished += steps
        self.live.pop(unit, None)

    def live_steps(self, reports: dict) -> None:
        self.live = dict(reports)

    def update(self, status: str | None = None, running: int | None = None) -> None:
        if status is not None:
            self.counts[status] = self.counts.get(status, 0) + 1
        if running is not None:
            self.running = running
        now = time.monotonic()
        if self._first is None and self.steps_done > 0:
            self._first = (now, self.steps_done)
        if self.enabled and (self.tty and now - self._last > 0.2 or now - self._last > self.every_s):
            self._draw(now)

    def steps_per_s(self, now: float) -> float | None:
        """Steps a second since steps were first seen (over the whole run until that is RATE_AFTER_S
        ago: the run's start, the warm-up and the first evals are no training speed)."""
        elapsed = now - self.t0
        if self._first is not None and now - self._first[0] >= RATE_AFTER_S and self.steps_done > self._first[1]:
            return (self.steps_done - self._first[1]) / (now - self._first[0])
        return self.steps_done / elapsed if elapsed > 0 and self.steps_done else None

    def eta(self, now: float) -> float | None:
        """Seconds left, from the step rate, once ETA_FROM of the steps are done (None before)."""
        total, done = self.total_steps, self.steps_done
        rate = self.steps_per_s(now)
        if not total or done < ETA_FROM * total or not rate:
            return None
        return max(0.0, total - done) / rate

    def line(self, now: float | None = None, width: int = LINE_WIDTH) -> str:
        """The progress line, at most ``width`` columns: the least useful parts go first."""
        now = time.monotonic() if now is None else now
        elapsed = now - self.t0
        total_steps, steps = self.total_steps, self.steps_done
        share = min(1.0, steps / total_steps) if total_steps else self.done / max(1, self.total)
        bar = "[" + "#" * int(10 * share) + "." * (10 - int(10 * share)) + "]"
        trials = f"{self.done}/{self.total} done" + "".join(
            f", {self.counts[s]} {s}" for s in ("diverged", "pruned", "failed") if self.counts[s])
        about = "~" if self.planned_trials < self.total else ""
        steps_text = (f"{_fmt_count(steps)}/{about}{_fmt_count(total_steps)} steps {100 * share:.0f}%"
                      if total_steps else f"{_fmt_count(steps)} steps")
        rate = self.steps_per_s(now)
        rates = f"{_fmt_rate(rate or 0)} steps/s {_fmt_rate(self.done / elapsed if elapsed > 0 else 0)} trials/s"
        eta = self.eta(now)
        clock = f"{fmt_duration(elapsed)}, ETA {'?' if eta is None else fmt_duration(eta)}"
        parts = {"bar": bar, "trials": trials, "running": f"{self.running} running", "steps": steps_text,
                 "rates": rates, "clock": clock}
        for drop in (None, "bar", "running", "rates", "steps"):  # the order parts go when the line is too long
            parts.pop(drop, None)
            text = " | ".join(v for k, v in parts.items() if k != "bar")
            text = f"{parts['bar']} {text}" if "bar" in parts else text
            if len(text) <= width:
                return text
        return text[: width - 3] + "..."

    def _width(self) -> int:
        if not self.tty:
            return LINE_WIDTH
        return max(20, min(LINE_WIDTH, shutil.get_terminal_size((LINE_WIDTH, 24)).columns - 1))

    def _draw(self, now: float) -> None:
        self._last = now
        if self.tty:
            self.stream.write("\r\033[K" + self.line(now, self._width()))
        else:
            self.stream.write(self.line(now) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            if self.tty:
                self.stream.write("\n")
            self.stream.flush()


class StepTally:
    """Steps done by each unit in flight, as its worker last said (the body of a Ray actor).
    A key is (the sweep run's token, the unit's number)."""

    def __init__(self):
        self.steps: dict = {}

    def report(self, key: tuple, steps: int) -> None:
        self.steps[key] = steps

    def take(self, token: str, keys: list) -> dict:
        """The reports of ``keys`` (the run ``token``'s units still in flight); the run's others
        are forgotten."""
        wanted = {(token, k) for k in keys}
        self.steps = {k: v for k, v in self.steps.items() if k[0] != token or k in wanted}
        return {k[1]: v for k, v in self.steps.items() if k in wanted}


class StepPoller:
    """The driver's side of the tally: starts the actor, asks it at most every ``every_s`` seconds
    and never waits for the answer. Any Ray error turns it off (the line then counts the steps of
    returned units only); the sweep goes on."""

    def __init__(self, every_s: float = 0.25):
        import uuid

        import ray

        self.every_s, self.ref, self.asked, self.reports = every_s, None, 0.0, {}
        self.token = uuid.uuid4().hex[:12]
        try:
            self.tally = ray.remote(StepTally).options(num_cpus=0, max_restarts=0).remote()
        except Exception:  # noqa: BLE001 (no live progress, the sweep goes on)
            self.tally = None

    def handle(self, key) -> tuple | None:
        """What a unit's task is given to report its steps (cluster.worker.units.execute_unit)."""
        return None if self.tally is None else (self.tally, (self.token, key))

    def poll(self, keys) -> dict:
        """The latest reports of the units in flight ``keys`` (those not heard from are absent)."""
        import ray

        if self.tally is None:
            return {}
        try:
            if self.ref is not None and ray.wait([self.ref], timeout=0)[0]:
                self.reports, self.ref = ray.get(self.ref), None
            now = time.monotonic()
            if self.ref is None and now - self.asked >= self.every_s:
                self.ref, self.asked = self.tally.take.remote(self.token, list(keys)), now
        except Exception:  # noqa: BLE001 (see the class docstring)
            self.tally, self.reports = None, {}
        wanted = set(keys)
        return {k: v for k, v in self.reports.items() if k in wanted}

    def close(self) -> None:
        """Stop this run's tally. It is one actor per sweep run, never a named one shared by a
        job's sweeps: Ray collects a named actor once its creator's handle is gone, and a later
        get_if_exists could then return the dying actor, whose reports are lost."""
        if self.tally is not None:
            import ray

            try:
                ray.kill(self.tally, no_restart=True)
            except Exception:  # noqa: BLE001 (Ray is shutting down anyway)
                pass
            self.tally = None
