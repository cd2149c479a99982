"""``mowtheory bench flow``: the replica-vectorised simulator
(:func:`mowtheory.flow.simulate.simulate`) against the straightforward per-replica loop
(:func:`mowtheory.flow.simulate.simulate_loop`) on the same problem and the same random
numbers (one seeded :class:`~mowtheory.flow.simulate.Draws` stream each).

Before timing, the two must give the same recorded parameters (to rounding). Runs are
interleaved (vectorised, loop, vectorised, loop, ...); medians and their ratio are reported.
Optionally (``--study``, on by default) the default ``mowtheory flow`` command is timed in a
subprocess (target: under a minute on 2 CPU cores).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from typing import Sequence

import torch

from . import _common as U

TARGET_RATIO = 20.0
TARGET_STUDY_S = 60.0


class SimulatorMismatch(AssertionError):
    """The vectorised and per-replica simulators disagree on the same random numbers."""


def measure(problem: str, *, replicas: int = 1024, steps: int = 10, eta: float = 0.01,
            n=None, k=None, reps: int = 3, loop_reps: int = 2, seed: int = 0,
            rtol: float = 1e-9) -> dict:
    """Time ``simulate`` against ``simulate_loop`` on ``problem`` for ``steps`` steps."""
    from ..flow.problems import get_problem
    from ..flow.simulate import simulate, simulate_loop
    prob = get_problem(problem)
    n = prob.defaults.get("n", 8) if n is None else n
    k = prob.defaults.get("k", 1) if k is None else k
    theta0 = prob.theta0(torch.Generator().manual_seed(seed))
    kw = dict(n=n, k=k, eta=eta, horizon=steps * eta, replicas=replicas,
              record=min(steps, 8))

    def vec():
        return simulate(prob, theta0, generator=torch.Generator().manual_seed(seed + 1),
                        **kw).thetas

    def loop():
        return simulate_loop(prob, theta0, generator=torch.Generator().manual_seed(seed + 1),
                             **kw)

    a = vec()
    t0 = time.perf_counter()
    b = loop()
    t_loop = [time.perf_counter() - t0]
    err = float((a - b).abs().max())
    scale = float(b.abs().max())
    if not (err <= rtol * max(scale, 1.0)):
        raise SimulatorMismatch(f"{problem}: simulate and simulate_loop disagree on the same "
                                f"random numbers: max |difference| = {err:.3e} (scale "
                                f"{scale:.3e}, rtol {rtol:g})")
    t_vec = []
    for r in range(max(reps, loop_reps)):
        if r < reps:
            t0 = time.perf_counter()
            vec()
            t_vec.append(time.perf_counter() - t0)
        if 0 < r < loop_reps:       # the agreement run above was the first loop repetition
            t0 = time.perf_counter()
            loop()
            t_loop.append(time.perf_counter() - t0)
    tv, tl = U.median(t_vec), U.median(t_loop)
    return {"problem": prob.name, "n": n, "k": k, "replicas": replicas, "steps": steps,
            "eta": eta, "vectorised_s": tv, "loop_s": tl, "ratio": tl / tv,
            "vectorised_per_step_s": tv / steps, "loop_per_replica_step_s": tl / (steps * replicas),
            "max_abs_diff": err, "reps": reps, "loop_reps": loop_reps}


def time_default_study(timeout: float = 600.0) -> dict:
    """Wall time of the default ``mowtheory flow`` command (no plot) in a subprocess."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "flow.json")
        cmd = [sys.executable, "-m", "mowtheory", "flow", "--no-plot", "--quiet", "--json", out]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            return {"command": "mowtheory flow --no-plot --quiet", "error": f"timeout {timeout} s"}
        wall = time.perf_counter() - t0
    res = {"command": "mowtheory flow --no-plot --quiet", "wall_s": wall,
           "returncode": proc.returncode, "pass": proc.returncode == 0 and wall < TARGET_STUDY_S}
    if proc.returncode != 0:
        res["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
    return res


def format_results(rows: Sequence[dict]) -> str:
    return U.table(["problem", "n", "k", "replicas", "steps", "vectorised", "per-replica loop",
                    "ratio", "max |diff|"],
                   [[r["problem"], r["n"], r["k"], r["replicas"], r["steps"],
                     U.fmt_s(r["vectorised_s"]), U.fmt_s(r["loop_s"]), f"{r['ratio']:.0f}x",
                     f"{r['max_abs_diff']:.1e}"] for r in rows])


# --------------------------------------------------------------------------- CLI
def add_arguments(p) -> None:
    p.add_argument("--problems", default="linear-gaussian,mmd-gaussian",
                   help="comma-separated flow problems")
    p.add_argument("--replicas", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10, help="MoW steps per run")
    p.add_argument("--eta", type=float, default=0.01)
    p.add_argument("--reps", type=int, default=3, help="runs of the vectorised simulator")
    p.add_argument("--loop-reps", type=int, default=2, help="runs of the per-replica loop")
    p.add_argument("--study", action="store_true", default=False,
                   help="also time the default `mowtheory flow` command (a subprocess)")


def run(args) -> int:
    from ..flow.problems import names
    probs = [p.strip() for p in args.problems.split(",") if p.strip()]
    for p in probs:
        if p not in names():
            raise ValueError(f"--problems: problem must be one of {', '.join(names())}; "
                             f"got {p!r}")
    print(f"bench flow: R={args.replicas}, {args.steps} steps, problems {probs} "
          f"(torch threads {torch.get_num_threads()})", flush=True)
    rows = []
    try:
        for p in probs:
            r = measure(p, replicas=args.replicas, steps=args.steps, eta=args.eta,
                        reps=args.reps, loop_reps=args.loop_reps)
            rows.append(r)
            print(f"  {p}: vectorised {U.fmt_s(r['vectorised_s'])}, loop "
                  f"{U.fmt_s(r['loop_s'])} -> {r['ratio']:.0f}x", flush=True)
    except SimulatorMismatch as exc:
        print(f"mowtheory bench flow: {exc}", file=sys.stderr)
        return 1
    print()
    print(format_results(rows))
    worst = min(rows, key=lambda r: r["ratio"])
    tg = {"ratio": {"target": f">= {TARGET_RATIO:g}x at R={args.replicas}",
                    "min_ratio": worst["ratio"], "worst": worst["problem"],
                    "pass": worst["ratio"] >= TARGET_RATIO}}
    print(f"target ratio: {tg['ratio']['target']}: {worst['ratio']:.0f}x -> "
          f"{'PASS' if tg['ratio']['pass'] else 'FAIL'}")
    study = None
    if args.study:
        print("timing the default `mowtheory flow` study ...", flush=True)
        study = time_default_study()
        tg["default_study"] = {"target": f"< {TARGET_STUDY_S:g} s", **study}
        wall = study.get("wall_s")
        print(f"target default_study: {study['command']}: "
              f"{'—' if wall is None else f'{wall:.1f} s'} -> "
              f"{'PASS' if study.get('pass') else 'FAIL'}"
              + (f" ({study['error']})" if "error" in study else ""))
    config = {"problems": probs, "replicas": args.replicas, "steps": args.steps,
              "eta": args.eta, "reps": args.reps, "loop_reps": args.loop_reps}
    return U.finish(args, "flow", config, rows=rows, targets=tg)
