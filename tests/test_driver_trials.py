"""The driver's cheap trials (issue 29): trials built from a prototype per shape of point
(scaling.spec.points) are field for field, type for type, the trials ``SweepConfig.make`` builds,
for every rule that shapes a trial; they pickle and come back equal; a prototype that stops
matching raises instead of giving a wrong trial."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings

from scaling.config.expand import pending_trials, scan
from scaling.config.sweep import parse_config
from scaling.spec.points import PointTrials
from test_expand import SHAPES
from test_fuzz import FUZZ, small_config, valid_configs


def fields(trial) -> list:
    return [(k, type(v), v) for k, v in trial.__dict__.items() if k != "_id"]


def test_prototype_trials_equal_the_points_own_for_every_shape():
    cfg = parse_config(SHAPES)
    points = list(cfg.points())
    make = PointTrials(cfg.make, tuple(cfg.axes))
    built = [make(p) for p in points]
    shapes = len(make._shapes)
    assert shapes > 50 and len(points) >= 16 * shapes, "most trials come from a prototype (CHECKS = 4 from make)"
    own = [cfg.make(p) for p in points]
    assert [fields(t) for t in built] == [fields(t) for t in own]
    assert [t.trial_id for t in built[::5]] == [t.trial_id for t in own[::5]]
    # what the driver ships to a worker: the pickled trials come back equal, ids and all
    assert pickle.loads(pickle.dumps(built)) == built


def test_pending_trials_are_built_from_prototypes_and_carry_their_ids():
    cfg = parse_config(SHAPES)
    expansion = scan(cfg)
    trials = list(pending_trials(cfg, expansion))
    assert len(trials) == expansion.total < len(list(cfg.points())), "each trial once"
    sample = trials[::7]
    assert [fields(t) for t in sample] == [fields(cfg.make(t.values())) for t in sample]
    assert [t.trial_id for t in sample] == [cfg.make(t.values()).trial_id for t in sample]


@settings(FUZZ, max_examples=60)
@given(valid_configs())
def test_prototype_trials_equal_make_for_any_valid_config(raw):
    cfg = small_config(raw)
    if cfg is None:
        return
    points = list(cfg.points())
    make = PointTrials(cfg.make, tuple(cfg.axes))
    assert [fields(make(p)) for p in points] == [fields(cfg.make(p)) for p in points]


def test_a_prototype_that_stops_matching_raises():
    """A rule the shape does not capture (here: make resets lr past a threshold) is caught by the
    checks, at the latest on the next sampled point."""
    cfg = parse_config(SHAPES)
    points = [p for p in cfg.points() if p["optimizer"] == "sgd" and p["schedule"] == "constant"]

    def odd_make(point):
        trial = cfg.make(point)
        return trial.replace(lr=1.0) if point["lr"] > 0.05 else trial

    make = PointTrials(odd_make, tuple(cfg.axes))
    with pytest.raises(RuntimeError, match="differs from the point's own"):
        for p in points[: 2 * PointTrials.SAMPLE]:
            make(p)


def test_shipped_trials_come_back_equal_field_for_field():
    """What a unit's Ray task receives (scaling.spec.points.Shipped): the trials, in order, with
    their cached ids, whatever mix of layouts (ids cached or not, several shapes) the unit holds."""
    import ray.cloudpickle as cloudpickle

    from scaling.spec.points import Shipped, unship

    cfg = parse_config(SHAPES)
    points = list(cfg.points())[::20]
    made = [cfg.make(p) for p in points]
    hashed = [t for t in made[::2] if t.trial_id]  # ids cached (_id), as the driver's trials have them
    unit = tuple(made + [made[0].replace(lr=0.5)])
    assert 0 < len(hashed) < len(unit)
    shipped = Shipped(unit)
    assert len(shipped.layouts) >= 2
    back = unship(pickle.loads(cloudpickle.dumps(shipped)))
    assert [fields(t) for t in back] == [fields(t) for t in unit]
    assert [t.__dict__.get("_id") for t in back] == [t.__dict__.get("_id") for t in unit]
    assert len(cloudpickle.dumps(shipped)) < len(cloudpickle.dumps(unit))
    assert unship(unit) == unit and unship(list(unit)) == unit
