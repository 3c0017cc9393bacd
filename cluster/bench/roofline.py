"""The packed MLP against its roofline: ``python -m cluster.bench.roofline [--device cuda]``. No Ray.

For the reference MLP (64→256→10 on digits, SGD over the reference sweep's lr x momentum
grid, or AdamW with ``--optimizer adamw``) packed M trials at a time, at batch sizes
B ∈ {1, 4, 16, 64, 256}, one step of the stacked engine (forward, the loop's divergence check,
backward and update) is timed, eager and fused side by side (timed alternately, best of
each), against the least time any implementation could take on this device (Williams,
Waterman & Patterson 2009):

    bound = max(FLOPs / peak, necessary bytes / bandwidth)

- FLOPs: the matmuls the step must execute, 2 per multiply-add: forward, the weight
  gradients, and the input gradients of every layer but the first;
- necessary bytes: every member's weights and optimizer state read and written once
  (SGD with momentum: 16 bytes per parameter; AdamW: 24), gradients never stored, and
  every activation (the inputs included) touched once, 4 bytes each;
- peak: the best fp32 ``torch.mm`` rate measured here, one thread (one pack per core);
- bandwidth: STREAM's triad (a = b + s·c, 12 bytes per element) measured twice, at the
  pack's working-set size (weights, state and activations: on a CPU it fits in the
  last-level cache) and over 1 GB (main memory). The bound is printed for both.

Everything is measured in the same run, so the ratios hold on a loaded machine even when
the absolute figures do not. ``--explain`` profiles one step of each (torch.profiler) and
prints, per B, the aten ops per step and the time inside them against the step's wall time:
what is left is Python and dispatch between the ops.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass

BATCH_SIZES = (1, 4, 16, 64, 256)
MEMBERS = 32
"""Members per pack: the reference sweep's 64 trials as one pack per core of a 2-core machine."""
DIMS = (64, 256, 10)


@dataclass(frozen=True, kw_only=True)
class RooflineRow:
    batch_size: int
    members: int
    step_s: float
    """Measured seconds per step of the whole pack, eager step (best of a few timings)."""
    fused_s: float
    """The same, fused step (scaling.training.backends.flat), timed alternately with the eager one."""
    flops: float
    """Matmul FLOPs one step of the pack must execute."""
    bytes: float
    """Necessary bytes of one step of the pack (see the module doc)."""
    working_set: int
    """Bytes of weights, optimizer state and one step's activations of the pack."""
    peak_flops: float
    bw_cache: float
    """Triad bytes/s at the working-set size."""
    bw_memory: float
    """Triad bytes/s over 1 GB."""

    def bound(self, bandwidth: float) -> float:
        return max(self.flops / self.peak_flops, self.bytes / bandwidth)

    def share(self, bandwidth: float, fused: bool = False) -> float:
        """bound / measured: 1.0 is the roofline."""
        return self.bound(bandwidth) / (self.fused_s if fused else self.step_s)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device: str = "cpu", seconds: float = 1.0, tf32: bool = False) -> float:
    """Best fp32 (or TF32) FLOP/s of square ``torch.mm`` over a few sizes."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = tf32
    sizes = (2048, 4096, 8192) if device.startswith("cuda") else (256, 512, 1024)
    best = 0.0
    try:
        for n in sizes:
            a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
            c = torch.mm(a, b)
            _sync(device)
            end = time.perf_counter() + seconds / len(sizes)
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                for _ in range(4):
                    torch.mm(a, b, out=c)
                _sync(device)
                best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
    return best


def triad_bandwidth(nbytes: int, device: str = "cpu", seconds: float = 0.5) -> float:
    """Best bytes/s of ``a = b + 3 c`` over three float32 arrays of ``nbytes`` in all."""
    import torch

    n = max(4096, nbytes // 12)
    a, b, c = (torch.rand(n, device=device) for _ in range(3))
    torch.add(b, c, alpha=3.0, out=a)
    _sync(device)
    reps = max(1, int(4e6 // n))  # several per timing when the arrays are small
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.add(b, c, alpha=3.0, out=a)
        _sync(device)
        best = max(best, reps * 12 * n / (time.perf_counter() - t0))
    return best


def step_flops_bytes(batch: int, members: int, optimizer: str = "sgd") -> tuple[float, float, int]:
    """(FLOPs, necessary bytes, working-set bytes) of one step of a pack of the reference MLP."""
    params = sum((a + 1) * b for a, b in zip(DIMS, DIMS[1:]))
    forward = sum(2 * a * b for a, b in zip(DIMS, DIMS[1:]))
    flops = members * batch * (3 * forward - 2 * DIMS[0] * DIMS[1])  # no input gradient for layer 1
    state = 2 if optimizer == "sgd" else 3  # weights and momentum, or weights and two moments
    activations = 4 * batch * sum(DIMS)
    nbytes = members * (2 * 4 * state * params + activations)
    working_set = members * (4 * state * params + 3 * activations)
    return float(flops), float(nbytes), int(working_set)


def pack_stepper(batch: int, members: int, device: str = "cpu", optimizer: str = "sgd", fused: bool = False):
    """A function ``run(k)`` that trains k steps of a pack of the reference MLP on the stacked
    engine (forward, the loop's divergence check, backward and update), eager or fused."""
    import torch

    from scaling.training.backends.stacked import StackedBackend
    from scaling.spec.schema import trial_from_dict

    grid = [(lr, m) for m in (0.0, 0.5, 0.9, 0.95) for lr in (0.01, 0.03, 0.1, 0.3)]  # the reference sweep's
    opt = [{"optimizer": "adamw", "lr": lr / 100} if optimizer == "adamw" else {"lr": lr, "momentum": m}
           for lr, m in grid]
    trials = [trial_from_dict({"task": {"name": "digits"}, "model": {"name": "mlp", "width": DIMS[1], "depth": 1},
                               "n_train": 1000, "batch_size": batch, "seed": i // len(grid), "budget": {"steps": 10**6},
                               **opt[i % len(grid)]})
              for i in range(members)]
    trials.sort(key=lambda t: t.momentum)  # as the planner orders a pack
    backend = StackedBackend(trials, device, fused=fused)
    threshold = torch.full((members,), 1e9, device=device)
    step = 0

    def run(k: int) -> None:
        nonlocal step
        for _ in range(k):
            step += 1
            losses = backend.forward(step)
            bool((losses <= threshold).all())  # the loop's one host sync per step
            backend.update(None)

    return run


def time_steps(batch: int, members: int, device: str = "cpu", optimizer: str = "sgd",
               seconds: float = 1.0, rounds: int = 6) -> tuple[float, float]:
    """Seconds per step of the eager and the fused step on a pack of the reference MLP: each the
    best of several timings of a few steps, the two timed in alternate rounds."""
    import torch

    torch.set_flush_denormal(True)  # as the loop does
    runs = [pack_stepper(batch, members, device, optimizer, fused) for fused in (False, True)]
    for run in runs:
        run(20)
    k = max(5, min(500, int(2e7 // (members * max(batch, 8) * 3 * 2 * 64 * 256) + 5)))
    best = [math.inf, math.inf]
    for _ in range(rounds):
        for i, run in enumerate(runs):
            end = time.perf_counter() + seconds / rounds
            while time.perf_counter() < end or best[i] == math.inf:
                _sync(device)
                t0 = time.perf_counter()
                run(k)
                _sync(device)
                best[i] = min(best[i], (time.perf_counter() - t0) / k)
    return best[0], best[1]


def explain(batch: int, members: int, device: str = "cpu", optimizer: str = "sgd", steps: int = 20) -> dict:
    """Per step of the eager and the fused step: aten ops called from Python, the seconds inside
    them and the wall seconds (torch.profiler; the profiler's own cost inflates both a little)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    out = {}
    for fused in (False, True):
        run = pack_stepper(batch, members, device, optimizer, fused)
        run(10)
        with _stderr_hidden(), profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            run(steps)
            wall = time.perf_counter() - t0
        top = [e for e in prof.events() if e.cpu_parent is None and e.name.startswith("aten::")]
        out["fused" if fused else "eager"] = {"ops": len(top) / steps,
                                              "op_s": sum(e.cpu_time_total for e in top) / 1e6 / steps,
                                              "wall_s": wall / steps}
    torch.set_flush_denormal(True)
    return out


@contextlib.contextmanager
def _stderr_hidden():
    """Standard error (the descriptor) to /dev/null meanwhile: torch's profiler (Kineto) writes a
    line there at each start and stop (``USDT: ... profiler_start``), 20 lines for one ``--explain``
    table. An exception still reaches the terminal: Python prints it after the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def measure(device: str = "cpu", batch_sizes=BATCH_SIZES, members: int = MEMBERS, quick: bool = False,
            log=print, optimizer: str = "sgd") -> list[RooflineRow]:
    """Peak, both bandwidths and the step time at each batch size, in one process."""
    import torch

    if not device.startswith("cuda"):
        torch.set_num_threads(1)
    seconds = 0.1 if quick else 1.0  # quick: a smoke run (every row measured, the timings rough)
    peak = matmul_peak(device, seconds)
    memory = triad_bandwidth(1 << 30 if not quick else 256 << 20, device, seconds)
    log(f"roofline: fp32 matmul peak {peak / 1e9:.1f} GFLOP/s, triad over "
        f"{'1 GB' if not quick else '256 MB'} {memory / 1e9:.1f} GB/s ({device}, "
        f"{'1 thread' if not device.startswith('cuda') else 'one GPU'})")
    rows = []
    for batch in batch_sizes:
        flops, nbytes, working_set = step_flops_bytes(batch, members, optimizer)
        cache = triad_bandwidth(working_set, device, seconds / 2)
        eager, fused = time_steps(batch, members, device, optimizer, seconds=2 * seconds)
        rows.append(RooflineRow(batch_size=batch, members=members, step_s=eager, fused_s=fused, flops=flops,
                                bytes=nbytes, working_set=working_set, peak_flops=peak, bw_cache=cache,
                                bw_memory=memory))
    return rows


def format_rows(rows: list[RooflineRow], load: float | None = None, optimizer: str = "sgd") -> str:
    r0 = rows[0]
    what = "SGD + momentum" if optimizer == "sgd" else "AdamW"
    lines = [f"roofline of the packed MLP ({'-'.join(map(str, DIMS))}, {what}, {r0.members} members "
             "per pack): bound = max(FLOPs/peak, necessary bytes/bandwidth); eager and fused steps side by side",
             f"{'B':>4} {'eager us':>9} {'fused us':>9} {'speedup':>7} {'GFLOP/s':>8} {'set MB':>7} "
             f"{'cache GB/s':>10} {'flop us':>8} {'bytes us':>9} {'bound us':>9} {'eager %':>7} {'fused %':>7} "
             f"{'bytes us':>9} {'bound us':>9} {'eager %':>7} {'fused %':>7}",
             f"{'':>4} {'':>9} {'':>9} {'':>7} {'fused':>8} {'':>7} {'':>10} {'':>8} "
             f"{'---- at the working-set bandwidth ----':>42} {'---- at the 1 GB bandwidth ----':>35}"]
    for r in rows:
        lines.append(
            f"{r.batch_size:4d} {r.step_s * 1e6:9.1f} {r.fused_s * 1e6:9.1f} {r.step_s / r.fused_s:6.2f}x "
            f"{r.flops / r.fused_s / 1e9:8.1f} {r.working_set / 2**20:7.1f} {r.bw_cache / 1e9:10.1f} "
            f"{r.flops / r.peak_flops * 1e6:8.1f} {r.bytes / r.bw_cache * 1e6:9.1f} {r.bound(r.bw_cache) * 1e6:9.1f} "
            f"{100 * r.share(r.bw_cache):6.0f}% {100 * r.share(r.bw_cache, True):6.0f}% "
            f"{r.bytes / r.bw_memory * 1e6:9.1f} {r.bound(r.bw_memory) * 1e6:9.1f} "
            f"{100 * r.share(r.bw_memory):6.0f}% {100 * r.share(r.bw_memory, True):6.0f}%")
    if optimizer == "sgd":
        lines.append("fused: the compiled update forced on; by default SGD keeps its eager fast path (gradients "
                     "added straight into the momentum buffers), which moves fewer bytes")
    short = [r.batch_size for r in rows if r.share(r.bw_cache, True) < 0.7]
    lines.append(f"fused below 70% of the bound at the working-set bandwidth: B = {short}" if short else
                 "the fused step reaches 70% of its bound at the working-set bandwidth at every B")
    if load is not None and load > 0.5:
        lines.append(f"warning: load average was {load:.2f} at the start; other work skews these figures")
    return "\n".join(lines)


def time_updates(members: int = MEMBERS, device: str = "cpu", rounds: int = 10,
                 seconds: float = 0.1) -> dict[str, tuple[float, float]]:
    """Seconds of one optimizer update alone, eager and fused (scaling.training.optim), on the
    reference MLP's stacked tensors, per optimizer (SGD with Nesterov: the update the stacked
    backend's fast path does not cover); best of ``rounds`` alternated timings. What
    scaling.training.optim.SAVED_S_PER_PARAM_STEP records."""
    import torch

    from scaling.training import optim

    gen = torch.Generator(device=device).manual_seed(0)
    shapes = [(DIMS[0], DIMS[1]), (DIMS[2], DIMS[1]), (1, DIMS[1]), (DIMS[2], 1)]
    out = {}
    for name in ("sgd", "adamw", "lion"):
        params = [torch.randn(members, *s, generator=gen, device=device) * 0.1 for s in shapes]
        grads = [torch.randn(members, *s, generator=gen, device=device) * 0.01 for s in shapes]
        hyper = {k: torch.full((members, 1, 1), v, device=device) for k, v in
                 {"momentum": 0.9, "nesterov": 1.0, "weight_decay": 1e-4, "beta1": 0.9, "beta2": 0.99,
                  "eps": 1e-8}.items()}
        lr = torch.full((members, 1, 1), 1e-3, device=device)
        states = [tuple(torch.zeros_like(p) for _ in range(optim.get(name).state)) for p in params]
        t = [0]

        def eager():
            t[0] += 1
            optim.get(name).update(params, [g.clone() for g in grads], states, optim.Step(
                hyper, lr, t[0], optim.same, nesterov="all", own_grads=True))

        def fused():
            t[0] += 1
            optim.fused_update(name, params, [g.clone() for g in grads], states, optim.Step(
                hyper, lr, t[0], optim.same, nesterov="all", own_grads=True))

        fused()  # compiles
        best = [math.inf, math.inf]
        for _ in range(rounds):
            for i, f in enumerate((eager, fused)):
                end = time.perf_counter() + seconds
                while time.perf_counter() < end or best[i] == math.inf:
                    _sync(device)
                    t0 = time.perf_counter()
                    f()
                    _sync(device)
                    best[i] = min(best[i], time.perf_counter() - t0)
        out[name] = (best[0], best[1])
    return out


def format_updates(found: dict[str, tuple[float, float]], members: int = MEMBERS) -> str:
    params = members * sum((a + 1) * b for a, b in zip(DIMS, DIMS[1:]))
    lines = [f"the optimizer update alone ({params:,} parameters: {members} members of {'-'.join(map(str, DIMS))}; "
             "the gradient clone in both)",
             f"{'optimizer':>9} {'eager us':>9} {'fused us':>9} {'speedup':>7} {'ns saved per param-step':>24}"]
    for name, (eager, fused) in found.items():
        lines.append(f"{name:>9} {eager * 1e6:9.1f} {fused * 1e6:9.1f} {eager / fused:6.2f}x "
                     f"{(eager - fused) / params * 1e9:24.2f}")
    return "\n".join(lines)


def format_explain(found: dict[int, dict]) -> str:
    lines = ["where a step's time goes (torch.profiler, per step): aten ops called, us inside them, wall us",
             f"{'B':>4} {'eager ops':>9} {'in ops us':>9} {'wall us':>9} {'fused ops':>9} {'in ops us':>9} "
             f"{'wall us':>9}"]
    for batch, e in found.items():
        a, b = e["eager"], e["fused"]
        lines.append(f"{batch:4d} {a['ops']:9.1f} {a['op_s'] * 1e6:9.1f} {a['wall_s'] * 1e6:9.1f} "
                     f"{b['ops']:9.1f} {b['op_s'] * 1e6:9.1f} {b['wall_s'] * 1e6:9.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.bench.roofline", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--members", type=int, default=MEMBERS, help=f"trials per pack (default {MEMBERS})")
    parser.add_argument("--quick", action="store_true", help="shorter timings and a 256 MB triad (a smoke run)")
    parser.add_argument("--optimizer", default="sgd", help="sgd (default, the reference sweep's) or adamw")
    parser.add_argument("--explain", action="store_true",
                        help="also profile a step of each kind: ops per step and the time inside them")
    parser.add_argument("--updates", action="store_true",
                        help="also time each optimizer's update alone, eager and fused")
    args = parser.parse_args(argv)
    if args.device not in ("cpu", "cuda") or args.members < 1 or args.optimizer not in ("sgd", "adamw"):
        print(f"error: --device {args.device!r} --members {args.members} --optimizer {args.optimizer!r}: use cpu "
              "or cuda, at least 1 member and sgd or adamw", file=sys.stderr)
        return 2
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda needs a CUDA GPU, and torch.cuda.is_available() is False here",
                  file=sys.stderr)
            return 2
    load = os.getloadavg()[0]
    rows = measure(args.device, members=args.members, quick=args.quick,
                   log=lambda s: print(s, file=sys.stderr, flush=True), optimizer=args.optimizer)
    print(format_rows(rows, load, args.optimizer), flush=True)
    if args.explain:
        print(format_explain({b: explain(b, args.members, args.device, args.optimizer) for b in BATCH_SIZES}),
              flush=True)
    if args.updates:
        print(format_updates(time_updates(args.members, args.device), args.members), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
