"""``mowtheory bench memory``: peak training memory of MoW_k(n) with k=1 against standard
batch training k=n, on the FFHQ-style autoencoder (``build_autoencoder("ffhq",
resolution=r)``), one fresh subprocess per (resolution, k).

The measurement is :func:`mowtheory.bench.memory_child.measure` (also behind
``experiments/memory_scaling.py``, the memory curve of the training experiments): a child process builds
the model, a CWAE cost, Adam and a window initialised from the prior, runs ``--steps`` MoW
steps on random images and reports two peaks: the whole process's RSS (``ru_maxrss``, with
the RSS after setup) and the bytes of live tensors (``torch.cuda.max_memory_allocated`` on
CUDA; on CPU the same count from PyTorch's CPU allocator,
:class:`mowtheory.memory.TensorPeak`).

The figure that matters to users: peak memory of k=1 against k=n=64 at 256x256 on CPU
(target: at least 10x lower). It is reported for both peaks: the tensor memory is what
training needs (parameters, gradients, optimizer state, window, activations: the quantity
compared on a GPU); the process peak adds what every process pays whatever k is (the
interpreter, torch's code, what the C allocator keeps), which caps that ratio.

``--chunks 1,8`` adds **gradcache rows**: the exact n-batch step
(:class:`mowtheory.gradcache.GradCache`, n examples a step, c encoded at a time) in the same
child, with its two peaks, its time per optimizer step and per example, and its ratios to
MoW k=1 and to k=n (:func:`gradcache_ratios`).
"""
from __future__ import annotations

import sys
from typing import Sequence

from .memory_child import measure as _measure
from . import _common as U

TARGET_RATIO = 10.0


def measure(resolution: int, k: int, *, n: int = 64, steps: int = 2, device: str = "cpu",
            threads: int = 1, timeout: float = 1800.0, method: str = "mow",
            chunk: int = 1) -> dict:
    """Peak memory of one (resolution, k) — or, ``method="gradcache"``, one (resolution,
    chunk) — in fresh subprocesses (see the module docstring); ``peak_mb`` is the device's
    headline peak: process RSS on CPU, tensor bytes on CUDA."""
    row = _measure(resolution, k, n=n, steps=steps, device=device, threads=threads,
                   timeout=timeout, method=method, chunk=chunk)
    if "error" not in row:
        row["peak_mb"] = (row["cuda_max_allocated_mb"] if device == "cuda"
                          else row["peak_rss_mb"])
    return row


def ratios(rows: Sequence[dict], n: int) -> list:
    """Per resolution: peak(k=n) / peak(k=min k): ``peak_ratio`` (whole-process RSS),
    ``tensor_ratio`` (tensor bytes) and ``increase_ratio`` (RSS increase over setup)."""
    out = []
    for res in sorted({r["resolution"] for r in rows}):
        at = {r["k"]: r for r in rows if r["resolution"] == res and "error" not in r
              and r.get("method", "mow") == "mow"}
        if n in at and len(at) >= 2:
            k0 = min(at)
            if k0 == n:
                continue
            big, small = at[n], at[k0]
            row = {"resolution": res, "k_small": k0, "k_big": n,
                   "peak_ratio": big["peak_rss_mb"] / small["peak_rss_mb"]}
            if big.get("tensor_peak_mb") and small.get("tensor_peak_mb"):
                row["tensor_ratio"] = big["tensor_peak_mb"] / small["tensor_peak_mb"]
            if "train_increase_mb" in big and small.get("train_increase_mb", 0) > 0:
                row["increase_ratio"] = big["train_increase_mb"] / small["train_increase_mb"]
            out.append(row)
    return out


def _what(r: dict) -> str:
    return (f"gradcache c={r.get('chunk')}" if r.get("method") == "gradcache"
            else f"MoW k={r['k']}")


def format_results(rows: Sequence[dict]) -> str:
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["resolution"], _what(r), r.get("n", ""), r["error"], "—", "—", "—",
                         "—", "—"])
            continue
        tensors = r.get("tensor_peak_mb")
        per = r.get("examples_per_step") or r["k"]
        body.append([r["resolution"], _what(r), r["n"], f"{r['peak_rss_mb']:.0f}",
                     f"{r.get('setup_rss_mb', float('nan')):.0f}",
                     f"{r.get('train_increase_mb', float('nan')):.0f}",
                     "—" if tensors is None else f"{tensors:.0f}", U.fmt_s(r.get("step_s")),
                     U.fmt_s(r["step_s"] / per if r.get("step_s") else None)])
    return U.table(["resolution", "step", "n", "process peak (MB)", "after setup (MB)",
                    "increase (MB)", "tensor peak (MB)", "time per step",
                    "time per example"], body)


def gradcache_ratios(rows: Sequence[dict], n: int) -> list:
    """Per resolution and chunk c: gradcache's tensor and process peaks against MoW k=1 and
    k=n (standard training), and its time per example against theirs (``None`` where a row
    is missing)."""
    out = []
    for g in rows:
        if g.get("method") != "gradcache" or "error" in g:
            continue
        mow = {r["k"]: r for r in rows if r["resolution"] == g["resolution"]
               and r.get("method", "mow") == "mow" and "error" not in r}
        row = {"resolution": g["resolution"], "chunk": g["chunk"]}
        for k, name in ((1, "k1"), (n, "kn")):
            m = mow.get(k)
            if m is None:
                continue
            if g.get("tensor_peak_mb") and m.get("tensor_peak_mb"):
                row[f"tensor_vs_{name}"] = g["tensor_peak_mb"] / m["tensor_peak_mb"]
            row[f"process_vs_{name}"] = g["peak_rss_mb"] / m["peak_rss_mb"]
            row[f"time_per_example_vs_{name}"] = g["example_s"] / (m["step_s"] / k)
        out.append(row)
    return out


def _mb(x) -> str:
    return "—" if x is None else f"{x:.0f} MB"


def targets(rat: Sequence[dict], n: int, device: str) -> dict:
    """The 10x target at 256x256, k=1 against k=n, for each peak that was measured:
    ``tensor_peak_ratio_256`` (tensor bytes) and, on CPU, ``process_peak_ratio_256``."""
    head = [r for r in rat if r["resolution"] == 256 and r["k_small"] == 1]
    if not head:
        return {}
    h, tg = head[0], {}
    what = {"tensor_peak_ratio_256": ("tensor_ratio", "tensor memory"),
            "process_peak_ratio_256": ("peak_ratio", "whole-process RSS")}
    for name, (key, label) in what.items():
        if key not in h or (device == "cuda" and key == "peak_ratio"):
            continue
        tg[name] = {"target": f">= {TARGET_RATIO:g}x lower peak {label} for k=1 than k=n={n} "
                              f"at 256x256 ({device})",
                    "ratio": h[key], "pass": h[key] >= TARGET_RATIO}
    return tg


# --------------------------------------------------------------------------- CLI
def add_arguments(p) -> None:
    p.add_argument("--resolutions", default="256",
                   help="comma-separated resolutions (powers of two >= 16); e.g. "
                        "32,64,128,256 for the curve")
    p.add_argument("--ks", default="1,64", help="comma-separated k (include n for standard)")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--steps", type=int, default=2, help="training steps per child")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--child-threads", type=int, default=None,
                   help="torch threads of each child (default: this process's)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per child")
    p.add_argument("--chunks", default="",
                   help="comma-separated chunk sizes c of gradcache rows (exact n-batch steps "
                        "over n examples, c encoded at a time), e.g. 1,8; empty: none")


def run(args) -> int:
    import torch
    from .costs import _ints
    from .._validate import check_int, check_positive
    resolutions, ks = _ints(args.resolutions, "--resolutions"), _ints(args.ks, "--ks")
    n = check_int("n", args.n, low=2)
    for k in ks:
        check_int("k (in --ks)", k, low=1, high=n, high_name="n")
    for r in resolutions:
        if r < 16 or r & (r - 1):
            raise ValueError(f"resolutions must be powers of two >= 16; got resolution={r}")
    check_int("steps", args.steps, low=1)
    check_positive("timeout", args.timeout)
    if args.child_threads is not None:
        check_int("child_threads", args.child_threads, low=1)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device must be 'cpu' on this machine (no CUDA); got 'cuda'")
    threads = args.child_threads or torch.get_num_threads()
    print(f"bench memory: ffhq at {resolutions}, k={ks}, n={args.n}, {args.steps} steps, "
          f"{args.device}, {threads} thread(s) per child", flush=True)
    chunks = _ints(args.chunks, "--chunks") if args.chunks.strip() else []
    for c in chunks:
        check_int("chunk (in --chunks)", c, low=1, high=n, high_name="n")
    points = [("mow", k, 1) for k in ks] + [("gradcache", 1, c) for c in chunks]
    rows = []
    for res in resolutions:
        for method, k, c in points:
            r = measure(res, k, n=args.n, steps=args.steps, device=args.device,
                        threads=threads, timeout=args.timeout, method=method, chunk=c)
            rows.append(r)
            msg = r["error"] if "error" in r else (
                f"process peak {r['peak_rss_mb']:.0f} MB (setup {r['setup_rss_mb']:.0f} MB, "
                f"increase {r['train_increase_mb']:.0f} MB), tensor peak "
                f"{_mb(r.get('tensor_peak_mb'))}, step {U.fmt_s(r['step_s'])}")
            print(f"  {res}x{res} {_what(r)}: {msg}", flush=True)
    rat = ratios(rows, args.n)
    print()
    print(format_results(rows))
    for r in rat:
        line = (f"{r['resolution']}x{r['resolution']}: k={r['k_big']} / k={r['k_small']}: "
                f"process peak {r['peak_ratio']:.1f}x")
        if "tensor_ratio" in r:
            line += f", tensor peak {r['tensor_ratio']:.1f}x"
        if "increase_ratio" in r:
            line += f", RSS increase over setup {r['increase_ratio']:.1f}x"
        print(line)
    grat = gradcache_ratios(rows, args.n)
    for r in grat:
        print(f"{r['resolution']}x{r['resolution']}: gradcache c={r['chunk']}: " + ", ".join(
            f"{label} {r[key]:.2f}x" for key, label in (
                ("tensor_vs_k1", "tensor peak / MoW k=1"),
                ("tensor_vs_kn", f"tensor peak / k={args.n}"),
                ("process_vs_k1", "process peak / MoW k=1"),
                ("time_per_example_vs_k1", "time per example / MoW k=1"),
                ("time_per_example_vs_kn", f"time per example / k={args.n}")) if key in r))
    tg = targets(rat, args.n, args.device)
    for name, t in tg.items():
        print(f"target {name}: {t['target']}: {t['ratio']:.1f}x -> "
              f"{'PASS' if t['pass'] else 'FAIL'}")
    config = {"resolutions": resolutions, "ks": ks, "chunks": chunks, "n": args.n,
              "steps": args.steps, "device": args.device, "child_threads": threads}
    rc = U.finish(args, "memory", config, rows=rows, ratios=rat, targets=tg,
                  gradcache_ratios=grat)
    errors = [r for r in rows if "error" in r]
    if errors:
        print(f"bench memory: {len(errors)} of {len(rows)} measurements failed", file=sys.stderr)
        return 1
    return rc
