"""Early stopping against the full grid, side by side in one run (issue 28).

``python -m cluster.bench.adaptive [--config configs/bopt_rule.yaml] [--workdir DIR]`` runs the
config's full grid and the same grid with ``search.prune`` (successive halving inside packs,
:mod:`scaling.training.prune`) through ``scaling sweep``, then prints: training steps used (the
sum of the trial rows' ``steps``; a pruned trial counts the steps it took), wall time, trials by
status, each ``scaling bopt`` group's B_opt under both and whether they lie within one grid step,
and the rule's verdict under both.

The two sweeps run one after the other on the same machine with the same CPUs; on a shared
machine the wall times are indicative only (the steps are exact). Optuna's TPE with its
Hyperband pruner and Ray Tune's ASHA are the peers the issue names: they are not run here (see
docs/pruning.md for why and for the hook).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

PRUNE = {"rungs": [0.1, 0.3], "keep": 0.34, "metric": "val_loss", "group_by": ["n_train", "lr", "momentum"],
         "bowl": 2}
"""The pruning rule measured: rank batch sizes within each group the B_opt rule reads."""


def run_sweep(config: dict, results: Path, cpus: int | None) -> float:
    """Run ``config`` through ``scaling sweep``; its wall time in seconds."""
    path = results / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "scaling", "sweep", str(path), "--results", str(results), "--quiet"]
    if cpus:
        cmd += ["--num-cpus", str(cpus)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def steps_and_statuses(results: Path, sweep: str) -> tuple[int, dict]:
    from scaling.store.views import open_store

    with open_store(str(results), [sweep]) as view:
        rows = view.sql("SELECT status, count(*) AS n, sum(steps) AS s FROM trials GROUP BY status").to_pylist()
    return int(sum(r["s"] or 0 for r in rows)), {r["status"]: r["n"] for r in rows}


def bopt(results: Path, sweep: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "scaling", "bopt", str(results / sweep), "--json"],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def compare_groups(full: dict, pruned: dict, grid: list) -> list[dict]:
    """Per group: B_opt (or the bound of an edge group) under both, and the grid steps apart."""
    def table(res):
        return {g["label"]: g for g in res["groups"]}

    def value(g):
        b = g.get("b_opt")
        if b is None or (isinstance(b, float) and math.isnan(b)):
            b = g.get("b_best")
        return b

    def position(b):  # fractional grid position of a (refined) batch size
        return math.log2(b) - math.log2(grid[0]) if b and b > 0 else math.nan

    rows = []
    a, b = table(full), table(pruned)
    for label in a:
        fa, pb = a[label], b.get(label, {})
        va, vb = value(fa), value(pb) if pb else None
        apart = abs(position(va) - position(vb)) if va and vb else math.inf
        rows.append({"group": label, "full": va, "full_status": fa.get("status"), "pruned": vb,
                     "pruned_status": pb.get("status"), "grid_steps_apart": apart})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/bopt_rule.yaml")
    ap.add_argument("--workdir", default=None, help="where both stores go (default: a temporary folder)")
    ap.add_argument("--num-cpus", type=int, default=None)
    ap.add_argument("--skip-full", action="store_true", help="reuse a full sweep already in --workdir")
    ap.add_argument("--bowl", type=int, default=PRUNE["bowl"], help="grid steps kept around each group's best")
    ap.add_argument("--suffix", default="", help="appended to the pruned sweep's name (several rules, one store)")
    args = ap.parse_args(argv)
    base = yaml.safe_load(Path(args.config).read_text())
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-adaptive-"))
    work.mkdir(parents=True, exist_ok=True)
    full_cfg = {**base, "name": f"{base['name']}_full"}
    rule = {**PRUNE, "bowl": args.bowl}
    pruned_cfg = {**base, "name": f"{base['name']}_pruned{args.suffix}",
                  "search": {**base.get("search", {}), "prune": rule}}
    wall = {}
    if not args.skip_full:
        wall["full"] = run_sweep(full_cfg, work, args.num_cpus)
    wall["pruned"] = run_sweep(pruned_cfg, work, args.num_cpus)
    s_full, st_full = steps_and_statuses(work, full_cfg["name"])
    s_pruned, st_pruned = steps_and_statuses(work, pruned_cfg["name"])
    b_full, b_pruned = bopt(work, full_cfg["name"]), bopt(work, pruned_cfg["name"])
    from scaling.config.sweep import load_config

    grid = list(load_config(args.config).possible("batch_size"))
    rows = compare_groups(b_full, b_pruned, sorted(grid))
    print(f"config {args.config}; pruning {json.dumps(rule)}; stores under {work}")
    print(f"{'':10}{'steps':>12}{'share':>8}{'wall s':>9}  trials")
    for name, steps, st in (("full", s_full, st_full), ("pruned", s_pruned, st_pruned)):
        w = wall.get(name)
        print(f"{name:10}{steps:>12,}{steps / s_full:>8.1%}{(f'{w:.0f}' if w else '-'):>9}  "
              + ", ".join(f"{n} {s}" for s, n in sorted(st.items())))
    print("\nB_opt per group (full | pruned; a bound where the status is edge):")
    within = 0
    for r in rows:
        ok = r["grid_steps_apart"] <= 1
        within += ok
        print(f"  {r['group']:42} {r['full'] or float('nan'):8.3g} ({r['full_status']}) | "
              f"{r['pruned'] or float('nan'):8.3g} ({r['pruned_status']})  {r['grid_steps_apart']:.2f} steps"
              f"{'' if ok else '  <-- more than one grid step'}")
    print(f"{within} of {len(rows)} groups within one grid step")
    vf, vp = (b.get("verdict") or {} for b in (b_full, b_pruned))
    print(f"verdict: full {vf.get('label')!r} | pruned {vp.get('label')!r}")
    for name, res in (("full", b_full), ("pruned", b_pruned)):
        print(f"  {name:7} " + "; ".join(f"{e['name']} {e['value']:.2f} [{e['ci_low']:.2f}, {e['ci_high']:.2f}]"
                                         for e in res.get("exponents") or []))
    statuses = [(r["full_status"], r["pruned_status"]) for r in rows]
    print(f"group status (ok/edge/too_few) agrees in {sum(a == b for a, b in statuses)} of {len(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
