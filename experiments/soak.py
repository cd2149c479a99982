"""Soak test: many MoW steps on a small autoencoder, memory must stay flat.

The window holds detached latents only (it never keeps an autograd graph alive), and the cost
cache of the frozen block is updated in place of the old one; so after a warm-up the resident
memory of a MoW run must not grow with the number of steps. This script runs ``--steps`` MoW
steps (default 20,000) of a small MLP autoencoder (64-32-8 / 8-32-64, Adam, CWAE cost with
split evaluation against the cached window, n=64, k=1) and every ``--every`` steps prints:

- the resident set size (RSS, from ``/proc/self/statm``; ``ru_maxrss`` elsewhere);
- the number of live ``torch.Tensor`` objects seen by ``gc``;
- whether the window (and the cost cache) holds a graph (``grad_fn``/``requires_grad``).

Verdict ``PASS`` when, from the first sample after the warm-up to the last, RSS grew by less
than ``--max-growth-mib`` (default 16 MiB), the live tensor count did not grow, and the window
never held a graph; otherwise ``FAIL`` and exit status 1.

Usage::

    python experiments/soak.py --steps 20000                 # ~1 min of CPU
    python experiments/soak.py --steps 20000 --out experiments/results/soak.json

``--out`` also writes the printed table next to the JSON (``soak.txt``).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import time
import warnings
from pathlib import Path

import torch

from mowtheory import MoW, costs

MiB = 1024 ** 2


def rss_bytes() -> int:
    """Current resident set size in bytes (peak RSS where /proc is absent)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r if sys.platform == "darwin" else r * 1024


def live_tensors() -> int:
    """Number of ``torch.Tensor`` objects tracked by the garbage collector."""
    gc.collect()
    with warnings.catch_warnings():      # isinstance() on deprecated lazy torch attributes
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def holds_graph(mow: MoW) -> bool:
    """True when the window or the cost cache keeps an autograd graph (or requires grad)."""
    tensors = [mow.window.buffer]
    if mow.cache is not None:
        tensors += [v for v in (getattr(mow.cache, f) for f in getattr(mow.cache, "_fields", ()))
                    if isinstance(v, torch.Tensor)]
    return any(t.grad_fn is not None or t.requires_grad for t in tensors)


def soak(steps: int = 20000, every: int = 1000, *, n: int = 64, k: int = 1, cost: str = "cwae",
         warmup: int | None = None, max_growth_mib: float = 16.0, seed: int = 0,
         log=print) -> dict:
    """Run ``steps`` MoW steps and sample memory every ``every`` steps; returns the series and
    the verdict (see the module docstring). ``warmup``: samples before this step are not used
    as the baseline (default: the first sample, ``every``)."""
    if steps < 2 * every:
        raise ValueError(f"steps must be >= 2 * every = {2 * every} (two samples at least); "
                         f"got steps={steps}")
    torch.manual_seed(seed)
    enc = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    dec = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 64),
                              torch.nn.Sigmoid())
    x = torch.rand(4096, 64, generator=torch.Generator().manual_seed(seed))
    F = costs.get(cost)
    mow = MoW(enc, F, n=n, k=k, latent_dim=8,
              per_example=lambda xb, z: (dec(z) - xb).pow(2).sum(1), reduction="sqrt_mean",
              generator=torch.Generator().manual_seed(seed + 1))
    mow.init_window("encode", x[: n - k])
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-3)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + 2))

    series = []
    graph_seen = False
    acc = torch.zeros(())
    t0 = time.perf_counter()
    log(f"{'step':>7} {'rss_MiB':>9} {'tensors':>8} {'window_graph':>12} {'loss':>10} {'s':>7}")
    for s in range(1, steps + 1):
        i = ((s - 1) * k) % (len(x) - k + 1)
        parts = mow.step(x[order[i:i + k]], opt)
        acc += parts.total
        if holds_graph(mow):       # cheap attribute reads, every step
            graph_seen = True
        if s % every == 0:
            row = {"step": s, "rss_mib": round(rss_bytes() / MiB, 2),
                   "tensors": live_tensors(), "window_graph": holds_graph(mow),
                   "loss": float(acc) / every, "seconds": round(time.perf_counter() - t0, 1)}
            acc = torch.zeros(())
            series.append(row)
            log(f"{row['step']:>7} {row['rss_mib']:>9.2f} {row['tensors']:>8} "
                f"{str(row['window_graph']):>12} {row['loss']:>10.4f} {row['seconds']:>7.1f}")

    warmup = every if warmup is None else warmup
    base = next(r for r in series if r["step"] >= warmup) if any(
        r["step"] >= warmup for r in series) else series[0]
    last = series[-1]
    growth = last["rss_mib"] - base["rss_mib"]
    tensor_growth = last["tensors"] - base["tensors"]
    ok = growth < max_growth_mib and tensor_growth <= 0 and not graph_seen
    verdict = {
        "verdict": "PASS" if ok else "FAIL",
        "rss_growth_mib": round(growth, 2), "max_growth_mib": max_growth_mib,
        "baseline_step": base["step"], "tensor_growth": tensor_growth,
        "window_ever_held_graph": graph_seen,
    }
    log(f"verdict: {verdict['verdict']}: RSS {base['rss_mib']:.2f} MiB at step {base['step']} -> "
        f"{last['rss_mib']:.2f} MiB at step {last['step']} (growth {growth:+.2f} MiB, threshold "
        f"{max_growth_mib} MiB); live tensors {base['tensors']} -> {last['tensors']}; window held "
        f"a graph: {graph_seen}")
    return {"config": {"steps": steps, "every": every, "n": n, "k": k, "cost": cost,
                       "seed": seed, "model": "MLP 64-32-8 / 8-32-64, Adam lr 1e-3",
                       "reduction": "sqrt_mean"},
            "series": series, **verdict,
            "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--every", type=int, default=1000, help="sample memory every this many steps")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--cost", default="cwae", help=f"one of {', '.join(costs.names())}")
    ap.add_argument("--max-growth-mib", type=float, default=16.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the result as JSON (and .txt) here")
    args = ap.parse_args(argv)
    lines = []

    def log(msg):
        print(msg, flush=True)
        lines.append(msg)

    try:
        res = soak(args.steps, args.every, n=args.n, k=args.k, cost=args.cost,
                   max_growth_mib=args.max_growth_mib, seed=args.seed, log=log)
    except (ValueError, TypeError) as exc:
        print(f"soak: error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
        out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    return 0 if res["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
