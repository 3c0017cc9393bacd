"""The peers of issue 28's bench (cluster.bench.peers): a member stopped on request through
``run_members(..., on_eval=...)``, and Optuna's TPE + Hyperband through the real loop, the real
store and ``scaling bopt``'s code."""

from __future__ import annotations

from scaling.config.sweep import config_from_text
from scaling.training.backends.stacked import StackedBackend
from scaling.training.loop import run_members

SWEEP = """
name: peers
task: {name: digits}
model: {name: mlp, width: 16, depth: 1}
axes: {n_train: [100, 200], batch_size: [4, 8, 16, 32, 64], lr: [0.3], seed: [0, 1]}
budget: {epochs: 4}
eval: {every_steps: 5}
"""


def test_on_eval_returning_a_reason_stops_that_member_as_pruned():
    trials = config_from_text(SWEEP).trials()[:3]  # n_train 100, batch sizes 4, 8, 16, seed 0 / 1
    target = trials[0]
    heard = []

    def on_eval(trial, row):
        heard.append((trial.trial_id, row["step"]))
        return "asked to stop" if trial.trial_id == target.trial_id and row["step"] >= 10 else None

    results = run_members(trials, lambda ts: StackedBackend(ts, "cpu"), engine="packed", on_eval=on_eval)
    rows = {r["trial"]["trial_id"]: r for r in results}
    stopped = rows[target.trial_id]
    assert stopped["trial"]["status"] == "pruned" and stopped["trial"]["error"] == "asked to stop"
    assert stopped["trial"]["steps"] == 10 < target.total_steps
    assert [c["step"] for c in stopped["curves"]] == [0, 5, 10]
    for t in trials[1:]:  # the others run their whole budget, ok
        assert rows[t.trial_id]["trial"]["status"] == "ok"
        assert rows[t.trial_id]["trial"]["steps"] == t.total_steps
    # asked at every eval: stopped at the first after step 0; asked only at the last step: not a prune
    first = run_members(trials[1:2], lambda ts: StackedBackend(ts, "cpu"), engine="packed",
                        on_eval=lambda trial, row: "stop")[0]["trial"]
    assert first["status"] == "pruned" and first["steps"] == 5
    t = trials[2]
    late = run_members([t], lambda ts: StackedBackend(ts, "cpu"), engine="packed",
                       on_eval=lambda trial, row: "stop" if row["step"] == t.total_steps else None)[0]["trial"]
    assert late["status"] == "ok" and late["steps"] == t.total_steps
