"""The one table of curve families: :data:`FORMS` (name -> :class:`~analysis.fit.forms.base.Form`),
:data:`AUTO` (the families ``auto`` chooses among) and :func:`form` (a lookup that lists what
exists). ``fit --form`` offers ``auto`` and these names; the extrapolation benchmark scores them.

Adding a family is its module and one line in :data:`_TABLE` (whose last column says whether
``auto`` considers it). The table names the classes as ``"module:Class"`` and :data:`FORMS`
builds each instance on first use, so reading the names (``--form`` choices, built with every
``scaling`` command's parser) loads neither numpy nor scipy.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from analysis.errors import AnalysisError

_TABLE: tuple[tuple[str, str, bool], ...] = (
    # name, module:Class, in AUTO
    ("M1", "analysis.fit.forms.families:M1", True),
    ("M2", "analysis.fit.forms.families:M2", True),
    ("M3", "analysis.fit.forms.families:M3", True),
    ("M4", "analysis.fit.forms.families:M4", True),
    ("BNSL", "analysis.fit.forms.bnsl:BNSL", True),
)
"""(name, ``module:Class``, whether ``--form auto`` considers it) of every family, in the order
they are listed and tried."""


class _Forms(Mapping):
    """Name -> the family's one instance, built on first lookup."""

    def __init__(self, table) -> None:
        self._where = {name: where for name, where, _ in table}
        self._made: dict = {}

    def __getitem__(self, name: str):
        if name not in self._made:
            module, _, cls = self._where[name].partition(":")  # KeyError for an unknown name
            made = getattr(importlib.import_module(module), cls)()
            if made.name != name:
                raise RuntimeError(f"registry: {self._where[name]} is named {made.name!r}, "
                                   f"listed as {name!r}")
            self._made[name] = made
        return self._made[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, name) -> bool:
        return name in self._where

    def __repr__(self) -> str:
        return f"FORMS({', '.join(self._where)})"


FORMS: Mapping = _Forms(_TABLE)
"""Every family by name (a read-only mapping; iterating it loads nothing)."""

AUTO: tuple[str, ...] = tuple(name for name, _, in_auto in _TABLE if in_auto)
"""The families ``auto`` (:func:`analysis.fit.forms.selection.select_form`) chooses among."""


def form(name: str):
    """The family called ``name``; :class:`AnalysisError` naming the known ones otherwise."""
    if name not in FORMS:
        raise AnalysisError(f"unknown form {name!r}; choose one of: {', '.join(FORMS)}")
    return FORMS[name]
