"""``mowtheory bench memory``: peak training memory of MoW_k(n) with k=1 against standard
batch training k=n, on the FFHQ-style autoencoder (``build_autoencoder("ffhq",
resolution=r)``), one fresh subprocess per (resolution, k).

The measurement is :func:`mowtheory.train.memory.measure` (also behind
``experiments/memory_scaling.py``, the memory curve of the training experiments): a child process builds
the model, a CWAE cost, Adam and a window initialised from the prior, runs ``--steps`` MoW
steps on random images and reports two peaks: the whole process's RSS (``ru_maxrss``, with
the RSS after setup) and the bytes of live tensors (``torch.cuda.max_memory_allocated`` on
CUDA; on CPU the same count from PyTorch's CPU allocator,
:class:`mowtheory.train.memory.TensorPeak`).

The figure that matters to users: peak memory of k=1 against k=n=64 at 256x256 on CPU
(target: at least 10x lower). It is reported for both peaks: the tensor memory is what
training needs (parameters, gradients, optimizer state, window, activations: the quantity
compared on a GPU); the process peak adds what every process pays whatever k is (the
interpreter, torch's code, what the C allocator keeps), which caps that ratio.
"""
from __future__ import annotations

from typing import Sequence

from ..train.memory import measure as _measure
from . import _common as U

TARGET_RATIO = 10.0


def measure(resolution: int, k: int, *, n: int = 64, steps: int = 2, device: str = "cpu",
            threads: int = 1, timeout: float = 1800.0) -> dict:
    """Peak memory of one (resolution, k) in fresh subprocesses (see the module docstring);
    ``peak_mb`` is the device's headline peak: process RSS on CPU, tensor bytes on CUDA."""
    row = _measure(resolution, k, n=n, steps=steps, device=device, threads=threads,
                   timeout=timeout)
    if "error" not in row:
        row["peak_mb"] = (row["cuda_max_allocated_mb"] if device == "cuda"
                          else row["peak_rss_mb"])
    return row


def ratios(rows: Sequence[dict], n: int) -> list:
    """Per resolution: peak(k=n) / peak(k=min k): ``peak_ratio`` (whole-process RSS),
    ``tensor_ratio`` (tensor bytes) and ``increase_ratio`` (RSS increase over setup)."""
    out = []
    for res in sorted({r["resolution"] for r in rows}):
        at = {r["k"]: r for r in rows if r["resolution"] == res and "error" not in r}
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


def format_results(rows: Sequence[dict]) -> str:
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["resolution"], r["k"], r.get("n", ""), r["error"], "—", "—", "—",
                         "—"])
            continue
        tensors = r.get("tensor_peak_mb")
        body.append([r["resolution"], r["k"], r["n"], f"{r['peak_rss_mb']:.0f}",
                     f"{r.get('setup_rss_mb', float('nan')):.0f}",
                     f"{r.get('train_increase_mb', float('nan')):.0f}",
                     "—" if tensors is None else f"{tensors:.0f}", U.fmt_s(r.get("step_s"))])
    return U.table(["resolution", "k", "n", "process peak (MB)", "after setup (MB)",
                    "increase (MB)", "tensor peak (MB)", "step"], body)


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


def run(args) -> int:
    import torch
    from .costs import _ints
    resolutions, ks = _ints(args.resolutions), _ints(args.ks)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device must be 'cpu' on this machine (no CUDA); got 'cuda'")
    threads = args.child_threads or torch.get_num_threads()
    print(f"bench memory: ffhq at {resolutions}, k={ks}, n={args.n}, {args.steps} steps, "
          f"{args.device}, {threads} thread(s) per child", flush=True)
    rows = []
    for res in resolutions:
        for k in ks:
            r = measure(res, k, n=args.n, steps=args.steps, device=args.device,
                        threads=threads, timeout=args.timeout)
            rows.append(r)
            msg = r["error"] if "error" in r else (
                f"process peak {r['peak_rss_mb']:.0f} MB (setup {r['setup_rss_mb']:.0f} MB, "
                f"increase {r['train_increase_mb']:.0f} MB), tensor peak "
                f"{_mb(r.get('tensor_peak_mb'))}, step {U.fmt_s(r['step_s'])}")
            print(f"  {res}x{res} k={k}: {msg}", flush=True)
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
    tg = targets(rat, args.n, args.device)
    for name, t in tg.items():
        print(f"target {name}: {t['target']}: {t['ratio']:.1f}x -> "
              f"{'PASS' if t['pass'] else 'FAIL'}")
    config = {"resolutions": resolutions, "ks": ks, "n": args.n, "steps": args.steps,
              "device": args.device, "child_threads": threads}
    return U.finish(args, "memory", config, rows=rows, ratios=rat, targets=tg)
