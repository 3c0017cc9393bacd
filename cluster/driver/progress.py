"""A one-line progress bar for the sweep driver: done, failed, running, total, ETA."""

from __future__ import annotations

import sys
import time


def _fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """Redraws in place on a terminal; on a pipe or log prints a line every ``every_s`` seconds."""

    def __init__(self, total: int, *, stream=None, enabled: bool = True, every_s: float = 10.0):
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every_s = every_s
        self.counts = {"ok": 0, "diverged": 0, "failed": 0}
        self.running = 0
        self.t0 = time.monotonic()
        self._last = 0.0

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def update(self, status: str | None = None, running: int | None = None) -> None:
        if status is not None:
            self.counts[status] = self.counts.get(status, 0) + 1
        if running is not None:
            self.running = running
        now = time.monotonic()
        if self.enabled and (self.tty and now - self._last > 0.2 or now - self._last > self.every_s):
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed = now - self.t0
        done, total = self.done, self.total
        width = 24
        filled = int(width * done / total) if total else width
        eta = _fmt_duration(elapsed / done * (total - done)) if done else "?"
        return (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} done "
                f"({self.counts['ok']} ok, {self.counts['diverged']} diverged, "
                f"{self.counts['failed']} failed) | {self.running} running | "
                f"{_fmt_duration(elapsed)} elapsed, ETA {eta}")

    def _draw(self, now: float) -> None:
        self._last = now
        if self.tty:
            self.stream.write("\r\033[K" + self.line(now))
        else:
            self.stream.write(self.line(now) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            if self.tty:
                self.stream.write("\n")
            self.stream.flush()
