from __future__ import annotations

from analysis.fit.forms.base import Form
from analysis.fit.forms.bnsl import BNSL
from analysis.fit.forms.families import M1, M2, M3, M4

FORMS: dict[str, Form] = {f.name: f for f in (M1(), M2(), M3(), M4(), BNSL())}


AUTO = ("M1", "M2", "M3", "M4", "BNSL")
