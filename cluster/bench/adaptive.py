"""The full grid, early stopping and an adaptive sweep side by side in one run (issue 28).

``python -m cluster.bench.adaptive [--config configs/bopt_rule.yaml] [--workdir DIR]`` runs the
config's full grid, the same grid with ``search.prune`` (successive halving inside packs,
:mod:`scaling.training.prune`) and as an adaptive sweep (``search: {kind: adaptive}``,
:mod:`analysis.plan.adaptive`) through ``scaling sweep``, then prints: training steps used (the
sum of the trial rows' ``steps``; a pruned trial counts the steps it took), wall time, trials by
status, how many ``scaling bopt`` groups' B_opt lie within one grid step of the full grid's, the
rule's verdict and exponents, and the learning curve's exponent (``scaling fit``) under each.
``--simulate REPS`` instead replays the adaptive plan on simulated sweeps against their full grid.

The peers the issue names run beside them at the same step budget (``--peers``, by default
``optuna,tune``; Ray Tune adds a local Ray and about 10 s a group for its Tuner and first actors;
:mod:`cluster.bench.peers`): Optuna's TPE sampler with its Hyperband pruner and
Ray Tune's ASHA, one study per ``scaling bopt`` group, each group given ``--budget`` of its grid
steps; their rows go to sweeps of their own and are read by the same ``scaling bopt`` / ``scaling
fit`` as the others.

The runs go one after the other on the same machine with the same CPUs; on a shared machine the
wall times are indicative only (the steps are exact).
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


def best_observed(results: Path, sweep: str, by=("n_train", "lr", "momentum"), metric: str = "val_loss") -> dict:
    """Per group (``by``): the batch size whose ``ok`` trials have the lowest mean ``metric`` (what a
    peer's study would call its best trial, read without ``scaling bopt``'s rules)."""
    from scaling.store.views import open_store

    keys = ", ".join(by)
    with open_store(str(results), [sweep]) as view:
        rows = view.sql(f"SELECT {keys}, batch_size, avg({metric}) AS m FROM trials WHERE status = 'ok' "
                        f"AND isfinite({metric}) GROUP BY ALL").to_pylist()
    best: dict = {}
    for r in rows:
        key = tuple(r[k] for k in by)
        if key not in best or r["m"] < best[key][1]:
            best[key] = (r["batch_size"], r["m"])
    return {key: b for key, (b, _) in best.items()}


def best_agreement(full: dict, observed: dict, grid: list, by=("n_train", "lr", "momentum")) -> tuple[int, int]:
    """(groups whose best observed batch size is within one grid step of the full grid's B_opt (or
    its bound), groups): the answer a peer's study gives, against the full grid's."""
    within = 0
    for g in full["groups"]:
        b_full = g.get("b_opt") or g.get("b_best")
        b = observed.get(tuple(g["group"].get(k) for k in by))
        if b_full and b:
            within += abs(math.log2(b) - math.log2(b_full)) <= 1
    return within, len(full["groups"])


def simulated(reps: int, landscape: str = "rule", noise: str = "digits", rounds: int = 3,
              budget: float = 1 / 3, n_boot: int = 1000, log=print, config: str = "configs/bopt_rule.yaml",
              first_seed: int = 1000) -> dict:
    """The adaptive plan against the full grid on ``reps`` simulated bopt_rule sweeps
    (:mod:`analysis.testing.simulate`, seeds ``first_seed + r``): each replication's full table, and
    the subset that an adaptive sweep's rounds plan (:func:`analysis.plan.replay.replay`), fitted by
    ``scaling bopt``'s code with the same bootstrap (``n_boot`` replicates; the learning curve's
    ``n_boot // 5``); the learning curve (``scaling fit``) on both too. Coverage counts a replication
    whose fit has no interval for an exponent as not covering it."""
    import numpy as np

    from analysis.fit.curves import fit_learning_curves
    from analysis.plan.replay import replay
    from analysis.rules.bopt import find_bopt
    from analysis.testing.simulate import LANDSCAPES, design_from_config, simulate

    design = design_from_config(config)
    names = ("lr", "n_train", "1/(1-momentum)")
    width = {k: {n: [] for n in names + ("curve",)} for k in ("full", "adaptive")}
    cover = {k: {n: 0 for n in names + ("curve",)} for k in ("full", "adaptive")}
    shares, same_verdict, pairs, t0 = [], 0, {}, time.perf_counter()
    for r in range(reps):
        sim = simulate(design, landscape=LANDSCAPES[landscape], noise=noise, seed=first_seed + r)
        truth = {"lr": sim.truth.exponents["lr"], "n_train": sim.truth.exponents["n_train"],
                 "1/(1-momentum)": sim.truth.exponents["momentum"], "curve": sim.truth.curve[1]}
        rep = replay(sim.table, rounds=rounds, budget=budget, metric="error")
        shares.append(rep.share)
        verdicts = []
        for kind, table in (("full", sim.table), ("adaptive", rep.table)):
            res = find_bopt(table, metric="error", n_boot=n_boot, seed=r)
            verdicts.append(res.rule.verdict.label)
            for e in res.rule.exponents:
                width[kind][e.name].append(e.ci_high - e.ci_low)
                cover[kind][e.name] += e.ci_low <= truth[e.name] <= e.ci_high
            curve = fit_learning_curves(table, metric="error", n_boot=n_boot // 5, seed=r, holdout=0)[0].fit
            b = curve.to_dict()["params"]["b"] if curve is not None else {}
            if b.get("ci_low") is not None and b.get("ci_high") is not None:  # too few replicates: none
                width[kind]["curve"].append(b["ci_high"] - b["ci_low"])
                cover[kind]["curve"] += b["ci_low"] <= truth["curve"] <= b["ci_high"]
        same_verdict += verdicts[0] == verdicts[1]
        pair = f"{verdicts[0]} -> {verdicts[1]}"
        pairs[pair] = pairs.get(pair, 0) + 1
        if log and (r + 1) % 10 == 0:
            log(f"  {r + 1} of {reps} replications ({time.perf_counter() - t0:.0f} s)")
    out = {"config": config, "reps": reps, "landscape": landscape, "noise": noise, "rounds": rounds, "budget": budget,
           "n_boot": n_boot, "first_seed": first_seed,
           "share_mean": float(np.mean(shares)), "share_max": float(np.max(shares)),
           "same_verdict": same_verdict, "verdicts": dict(sorted(pairs.items(), key=lambda kv: -kv[1])), "axes": {}}
    for n in names + ("curve",):
        wf, wa = np.array(width["full"][n]), np.array(width["adaptive"][n])
        m = min(wf.size, wa.size)
        out["axes"][n] = {"width_full": float(np.median(wf)) if wf.size else None,
                          "width_adaptive": float(np.median(wa)) if wa.size else None,
                          "ratio_of_mean_widths": float(wa.mean() / wf.mean()) if m else None,
                          "ratio_median": float(np.median(wa[:m] / wf[:m])) if m else None,
                          "coverage_full": cover["full"][n] / reps, "coverage_adaptive": cover["adaptive"][n] / reps,
                          "covered_full": cover["full"][n], "covered_adaptive": cover["adaptive"][n]}
    return out


def print_simulated(res: dict) -> None:
    print(f"simulator: {res['reps']} replications of {res['config']}'s grid, landscape "
          f"{res['landscape']!r}, noise {res['noise']!r}; adaptive {res['rounds']} rounds within "
          f"{res['budget']:.3f} of the grid's steps; seeds {res.get('first_seed', 1000)}-"
          f"{res.get('first_seed', 1000) + res['reps'] - 1}, {res.get('n_boot', 1000)} bootstrap replicates")
    print(f"steps used: mean {res['share_mean']:.1%}, max {res['share_max']:.1%} of the full grid's; "
          f"same verdict in {res['same_verdict']} of {res['reps']}")
    if res.get("verdicts"):
        print("verdicts, full grid -> adaptive: " + ", ".join(f"{k} {v}" for k, v in res["verdicts"].items()))
    print(f"{'exponent':16}{'width full':>11}{'adaptive':>10}{'ratio':>7}{'cover full':>18}{'adaptive':>18}")
    for name, a in res["axes"].items():
        if a["width_full"] is None:
            continue
        print(f"{name:16}{a['width_full']:>11.3f}{a['width_adaptive']:>10.3f}{a['ratio_of_mean_widths']:>7.2f}"
              f"{_share(a, 'full', res['reps']):>18}{_share(a, 'adaptive', res['reps']):>18}")
    print("(width: median 95% interval width; ratio: mean adaptive width / mean full width; cover: share of "
          "replications whose interval holds the generating exponent; curve: the learning curve's b in "
          "a*N^b + c, true value the landscape's best-error exponent)")


def _share(axis: dict, kind: str, reps: int) -> str:
    """``93.8% (375/400)``: the coverage and its count."""
    n = axis.get(f"covered_{kind}", round(axis[f"coverage_{kind}"] * reps))
    return f"{axis[f'coverage_{kind}']:.1%} ({n}/{reps})"


def fit_json(results: Path, sweep: str) -> dict:
    """``scaling fit --json`` of one sweep (the learning curve over n_train); {} when it fails."""
    out = subprocess.run([sys.executable, "-m", "scaling", "fit", str(results / sweep), "--json"],
                         capture_output=True, text=True, check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def curve_exponent(fit: dict) -> tuple:
    """(b, ci_low, ci_high) of the first curve's power law, or Nones."""
    curves = fit.get("curves") or [{}]
    b = ((curves[0].get("fit") or {}).get("params") or {}).get("b") or {}
    return b.get("value"), b.get("ci_low"), b.get("ci_high")


SWEEPS = ("full", "pruned", "adaptive")

RUNS = (*SWEEPS, "optuna", "tune")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/bopt_rule.yaml")
    ap.add_argument("--workdir", default=None, help="where the stores go (default: a temporary folder)")
    ap.add_argument("--num-cpus", type=int, default=None)
    ap.add_argument("--skip", default="", metavar="RUNS",
                    help="comma-separated runs of full,pruned,adaptive,optuna,tune to reuse from --workdir, not run")
    ap.add_argument("--peers", default="optuna,tune",
                    help="the peers to run beside them at the same budget: optuna,tune (default), optuna, tune "
                         "or '' (Ray Tune: one Tuner per group, its actors reused; minutes on bopt_rule on 2 cores)")
    ap.add_argument("--skip-full", action="store_true", help="the same as --skip full")
    ap.add_argument("--bowl", type=int, default=PRUNE["bowl"], help="grid steps kept around each group's best")
    ap.add_argument("--suffix", default="", help="appended to the pruned sweep's name (several rules, one store)")
    ap.add_argument("--rounds", type=int, default=3, help="the adaptive sweep's rounds")
    ap.add_argument("--budget", type=float, default=0.33, help="the adaptive sweep's budget (share of the grid's steps)")
    ap.add_argument("--simulate", type=int, default=0, metavar="REPS",
                    help="instead: the adaptive plan against the full grid on REPS simulated sweeps")
    ap.add_argument("--landscape", default="rule", help="the simulator's landscape (with --simulate)")
    ap.add_argument("--noise", default="digits", help="the simulator's noise preset (with --simulate)")
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap replicates of each fit (with --simulate)")
    ap.add_argument("--first-seed", type=int, default=1000, help="the first replication's seed (with --simulate)")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON (with --simulate)")
    args = ap.parse_args(argv)
    if args.simulate:
        res = simulated(args.simulate, args.landscape, args.noise, args.rounds, args.budget, n_boot=args.boot,
                        config=args.config, first_seed=args.first_seed)
        print_simulated(res)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
        return 0
    base = yaml.safe_load(Path(args.config).read_text())
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-adaptive-"))
    work.mkdir(parents=True, exist_ok=True)
    search = {k: v for k, v in (base.get("search") or {}).items() if k not in ("kind", "rounds", "budget")}
    rule = {**PRUNE, "bowl": args.bowl}
    configs = {"full": {**base, "name": f"{base['name']}_full", "search": search},
               "pruned": {**base, "name": f"{base['name']}_pruned{args.suffix}", "search": {**search, "prune": rule}},
               "adaptive": {**base, "name": f"{base['name']}_adaptive",
                            "search": {**search, "kind": "adaptive", "rounds": args.rounds, "budget": args.budget}}}
    skip = set(filter(None, args.skip.split(","))) | ({"full"} if args.skip_full else set())
    peers = [p for p in filter(None, args.peers.split(",")) if p not in skip]
    bad = [r for r in skip | set(peers) if r not in RUNS]
    if bad:
        print(f"cluster.bench.adaptive: unknown run(s) {', '.join(sorted(bad))}; known: {', '.join(RUNS)}",
              file=sys.stderr)
        return 2
    wall = {run: run_sweep(configs[run], work, args.num_cpus) for run in SWEEPS if run not in skip}
    counts = {}
    if peers:
        from cluster.bench.peers import run_peers

        for peer, res in run_peers(base, work, peers, budget=args.budget, num_cpus=args.num_cpus).items():
            wall[peer], counts[peer] = res["wall_s"], res["groups"]
    names = {run: configs[run]["name"] if run in configs else f"{base['name']}_{run}" for run in RUNS}
    runs = [run for run in RUNS if (work / names[run] / "trials").exists()]  # a skipped run may be absent
    steps = {run: steps_and_statuses(work, names[run]) for run in runs}
    bopts = {run: bopt(work, names[run]) for run in runs}
    fits = {run: fit_json(work, names[run]) for run in runs}
    from scaling.config.sweep import load_config

    grid = sorted(load_config(args.config).possible("batch_size"))
    print(f"config {args.config}; pruning {json.dumps(rule)}; adaptive rounds {args.rounds}, budget "
          f"{args.budget}; stores under {work}")
    for peer, groups in counts.items():
        total = {k: sum(g.get(k, 0) for g in groups) for k in groups[0] if k != "budget"} if groups else {}
        print(f"{peer}: {len(groups)} groups, each within {args.budget} of its grid steps; "
              + ", ".join(f"{k} {v:,}" for k, v in total.items()))
    s_full = steps["full"][0]
    print(f"{'':10}{'steps':>12}{'share':>8}{'wall s':>9}  trials")
    for run in runs:
        n, st = steps[run]
        w = wall.get(run)
        print(f"{run:10}{n:>12,}{n / s_full:>8.1%}{(f'{w:.0f}' if w else '-'):>9}  "
              + ", ".join(f"{k} {v}" for k, v in sorted(st.items())))
    for run in [r for r in runs if r != "full"]:
        rows = compare_groups(bopts["full"], bopts[run], grid)
        within = sum(r["grid_steps_apart"] <= 1 for r in rows)
        same = sum(r["full_status"] == r["pruned_status"] for r in rows)
        far = [f"{r['group']} ({r['full'] or float('nan'):.3g} vs {r['pruned'] or float('nan'):.3g})"
               for r in rows if r["grid_steps_apart"] > 1]
        print(f"{run}: B_opt within one grid step of the full grid's in {within} of {len(rows)} groups; group "
              f"status (ok/edge/too_few) the same in {same}" + (f"; apart: {'; '.join(far)}" if far else ""))
    by = tuple(bopts["full"]["groups"][0]["group"]) if bopts["full"].get("groups") else ()
    if by:
        print("best observed batch size per group (lowest mean val_loss of its ok trials, no bowl needed) within "
              "one grid step of the full grid's B_opt: " + "; ".join(
                  "{} {} of {}".format(run, *best_agreement(bopts["full"], best_observed(work, names[run], by), grid, by))
                  for run in runs))
    print("verdict and exponents (scaling bopt, 95% intervals); learning curve b of a*N^b + c (scaling fit):")
    b_full = curve_exponent(fits["full"])
    for run in runs:
        res = bopts[run]
        b = curve_exponent(fits[run])
        inside = ("" if run == "full" or None in (b[0], b_full[1], b_full[2]) else
                  f" ({'within' if b_full[1] <= b[0] <= b_full[2] else 'OUTSIDE'} the full grid's interval)")
        curve = f"b {b[0]:.3f} [{b[1]:.3f}, {b[2]:.3f}]{inside}" if None not in b else "b: no fit"
        print(f"  {run:9} {(res.get('verdict') or {}).get('label')!r:15} "
              + "; ".join(f"{e['name']} {e['value']:.2f} [{e['ci_low']:.2f}, {e['ci_high']:.2f}]"
                          for e in res.get("exponents") or []) + f"; {curve}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
