"""A config that extends a stored sweep: values that nearly repeat a stored one.

A sweep whose axes gain values runs only the new trials, matched by trial id, which hashes
the exact values. A value typed from a rounded printout (``0.00316228`` for the stored
``0.0031622776601683794``) is a different value: its trials would all run again beside the
stored ones, and the analysis would see two groups with the same printed label.
:func:`near_stored` finds such values (within 1e-6 relative of a different stored value of the
same axis); ``scaling sweep`` warns about each, and with ``--snap`` :func:`snap` uses the stored
value instead, so those trials are the stored ones.
"""

from __future__ import annotations

import dataclasses
import math

from scaling.spec.axes import GridAxis

REL_TOL = 1e-6
"""Relative distance under which two different values of an axis count as the same one typed twice."""


@dataclasses.dataclass(frozen=True)
class Near:
    axis: str
    value: float
    """The config's value."""
    stored: float
    """The stored value it nearly repeats."""

    def warning(self) -> str:
        return (f"warning: {self.axis} {self.value!r} is within {REL_TOL:g} (relative) of the stored "
                f"{self.stored!r} but not equal: its trials run anew beside the stored ones; "
                "--snap uses the stored value")


def near_stored(cfg, stored: dict[str, list]) -> list[Near]:
    """Each grid-axis value of ``cfg`` that differs from, yet lies within :data:`REL_TOL` of, a
    stored value of the same axis (``stored``: {axis: distinct stored values})."""
    out = []
    for name, axis in cfg.axes.items():
        if not isinstance(axis, GridAxis) or name not in stored:
            continue
        have = [v for v in stored[name] if _real(v)]
        for v in axis.values:
            if not _real(v) or v in have:
                continue
            close = [s for s in have if math.isclose(v, s, rel_tol=REL_TOL, abs_tol=0.0)]
            if close:
                out.append(Near(name, v, min(close, key=lambda s: abs(s - v))))
    return out


def snap(cfg, near: list[Near]):
    """``cfg`` with each value of ``near`` replaced by the stored value it nearly repeats."""
    if not near:
        return cfg
    swap = {(n.axis, n.value): n.stored for n in near}
    axes = dict(cfg.axes)
    for name, axis in cfg.axes.items():
        if any(k[0] == name for k in swap):
            values = tuple(dict.fromkeys(swap.get((name, v), v) for v in axis.values))
            axes[name] = dataclasses.replace(axis, values=values)
    return dataclasses.replace(cfg, axes=axes)


def _real(v) -> bool:
    return isinstance(v, float) and math.isfinite(v)
