"""The stored members of a pruning group, for the :class:`scaling.training.prune.Pruner` of a pack.

Here, not in scaling.training (which never reads the store): the worker builds ``peers`` and
hands it to the pack (cluster.worker.units)."""

from __future__ import annotations

import json

from scaling.spec.schema import as_trial, trial_from_dict
from scaling.training.prune import group_key, rule_of


def store_peers(store, sweep: str, trials):
    """``peers`` for a :class:`Pruner` of ``trials`` (None when they carry no rule): the sweep's
    stored trials of the same groups, with their metric at each curve step, read through a store
    view each time it is called."""
    rule = next((r for r in map(rule_of, trials) if r), None)
    if rule is None:
        return None
    metric = rule["metric"]
    n_values = sorted({as_trial(t).n_train for t in trials})
    groups = {group_key(t, rule) for t in trials}
    by_n = rule.get("group_by") is None or "n_train" in rule["group_by"]  # a group holds one n_train

    def read():
        from scaling.store.views import StoreView

        view = StoreView(store, [sweep], warn=False)
        try:
            table = view.sql(
                f'SELECT t.config, c.step, c."{metric}" AS v FROM trials t JOIN curves c '
                "ON c.sweep = t.sweep AND c.trial_id = t.trial_id AND c.run_id = t.run_id "
                "WHERE t.sweep = $1 AND t.status IN ('ok', 'pruned', 'diverged') "
                + (f"AND t.n_train IN ({', '.join(str(int(n)) for n in n_values)})" if by_n else ""), [sweep])
        finally:
            view.close()
        curves: dict = {}
        for config, step, v in zip(*(table.column(i).to_pylist() for i in range(3))):
            if v is not None:
                curves.setdefault(config, {})[step] = v
        out = []
        for config, curve in curves.items():
            trial = trial_from_dict(json.loads(config))
            if group_key(trial, rule) in groups:
                out.append((trial, curve))
        return out

    return read
