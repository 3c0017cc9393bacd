"""Trials of a sweep's axis points, built from one prototype per shape of point.

:func:`scaling.spec.schema.make_trial` resolves every field of a trial (defaults, canonical
values, fields that do not apply reset) in about 10 µs. A sweep driver builds every pending
trial (ten thousand in the 10,000-tiny-trial bench, a million in a large sweep), and the
trials of one sweep differ only in their varying axes. Points of one *shape*
(:func:`~scaling.spec.schema.point_shape`: alike in every text and boolean value, and in whether
each number is positive and equal to its default) resolve alike: the same fields take defaults,
the same are reset, and each other varying value goes in as given, in canonical form. So each
shape's first point is built by ``make`` and becomes a prototype; the next ones copy it and put
in their own values (2-3 µs). The prototype is checked against ``make`` for its first few
points and then for one point in 256, and a mismatch raises rather than give a wrong trial.

The trials of one shape share the prototype's ``task``, ``eval`` and ``metrics`` dicts (a
Trial is frozen; nothing writes into them), which also lets a unit's trials pickle those once.

No torch and no ray here.
"""

from __future__ import annotations

from scaling.spec.schema import ByShape, Trial, canon

_HIDDEN = ("_id",)
"""Cached values a trial may carry besides its fields (its id): never copied to another trial."""


class PointTrials(ByShape):
    """``build(point)`` equals ``make(point)`` (``SweepConfig.make``: a Trial of the point's
    values), for points whose varying keys are ``varying`` (module docstring)."""

    def _fast(self, entry, point: dict) -> Trial:
        return _build(entry, point)

    def _checked(self, point: dict, shape: tuple, entry) -> Trial:
        trial = self.make(point)
        if entry is None:
            entry = self._shapes[shape] = [*self._prototype(trial, point), self.CHECKS]
        got = _build(entry, point)
        if _fields(got) != _fields(trial):
            raise RuntimeError(f"the trial built from the prototype of shape {shape} differs from the point's own "
                               f"({_fields(got)} != {_fields(trial)}): a field's rules changed and PointTrials "
                               "needs them (scaling.spec.points)")
        entry[2] -= 1
        return got

    def _prototype(self, trial, point: dict) -> tuple:
        """(the trial's fields, (name, converter) of each varying value it holds as given)."""
        proto = {k: v for k, v in trial.__dict__.items() if k not in _HIDDEN}
        taken = []
        for name, kind, _, _, _ in self.fields:
            convert = _CONVERT.get(kind, _same)
            value = convert(point[name])
            if name in proto and type(proto[name]) is type(value) and proto[name] == value:
                taken.append((name, convert))
        return proto, tuple(taken)


def _build(entry, point: dict) -> Trial:
    fields = entry[0].copy()
    for name, convert in entry[1]:
        fields[name] = convert(point[name])
    trial = _new(Trial)
    object.__setattr__(trial, "__dict__", fields)
    return trial


def _same(value):
    return value


def _fields(trial) -> list:
    """A trial's fields with their types (1, 1.0 and True are equal values, not equal fields)."""
    return [(k, type(v), v) for k, v in trial.__dict__.items() if k not in _HIDDEN]


_CONVERT = {float: canon, int: int}
"""What make_trial does to a given value of each kind (text and booleans go in as they are)."""
_new = object.__new__


class Shipped:
    """Trials as a Ray task's argument: each layout of fields (names in order) once, and each trial
    as a tuple of plain values. It pickles in half the time of the Trials themselves (Ray's
    cloudpickle calls back into Python for every object of a class of ours, never for a tuple
    of numbers and texts) and a third smaller; ``trials()`` on the worker gives them back equal,
    cached ids included."""

    __slots__ = ("layouts", "rows")

    def __init__(self, trials):
        index: dict = {}
        rows = []
        for trial in trials:
            fields = trial.__dict__
            rows.append((index.setdefault(tuple(fields), len(index)), tuple(fields.values())))
        self.layouts, self.rows = tuple(index), rows

    def __getstate__(self):
        return self.layouts, self.rows

    def __setstate__(self, state):
        self.layouts, self.rows = state

    def trials(self) -> tuple:
        out = []
        for layout, values in self.rows:
            trial = _new(Trial)
            object.__setattr__(trial, "__dict__", dict(zip(self.layouts[layout], values)))
            out.append(trial)
        return tuple(out)


def unship(trials) -> tuple:
    """The Trials of a task's argument: a :class:`Shipped`, or the Trials themselves."""
    return trials.trials() if isinstance(trials, Shipped) else tuple(trials)
