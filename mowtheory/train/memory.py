"""Peak training memory of MoW_k(n) on the FFHQ-style autoencoder, one subprocess a point.

A child process (``python -m mowtheory.train.memory --resolution R --k K ...``) builds
``build_autoencoder("ffhq", resolution=R)``, a CWAE cost, Adam and a window initialised from
the prior (the steady state of the step is measured, not the one-off encoding of n - k
examples), runs a few MoW steps on random images and prints one JSON line: its peak resident
set size (``ru_maxrss``), the RSS after setup (imports, model, optimizer, window, data) and,
on CUDA, ``torch.cuda.max_memory_allocated`` over the steps. :func:`measure` runs one child;
``experiments/memory_scaling.py`` and ``mowtheory bench memory`` are built on it.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _rss_now_kb() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _maxrss_kb() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r     # bytes on macOS, KiB on Linux


def child(args) -> dict:
    """Run in the subprocess: build the model, cost, optimizer and window, run the steps."""
    import torch

    torch.set_num_threads(args.threads)
    from mowtheory import costs
    from mowtheory.mow import MoW
    from mowtheory.train.models import build_autoencoder

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_autoencoder("ffhq", resolution=args.resolution).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator(device=device).manual_seed(1)

    def per_example(x, z):
        return (model.decode(z) - x).pow(2).flatten(1).sum(1)

    mow = MoW(model.encode, costs.get("cwae"), n=args.n, k=args.k, latent_dim=model.latent_dim,
              per_example=per_example, reduction="sqrt_mean", generator=gen, device=device)
    mow.init_window("prior")
    g = torch.Generator().manual_seed(2)
    x = torch.rand(args.k, 3, args.resolution, args.resolution, generator=g).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    setup_kb = _rss_now_kb()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        parts = mow.step(x, opt)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    out = {"resolution": args.resolution, "k": args.k, "n": args.n, "steps": args.steps,
           "device": str(device), "params": sum(p.numel() for p in model.parameters()),
           "peak_rss_mb": _maxrss_kb() / 1024, "setup_rss_mb": setup_kb / 1024,
           "step_s": min(times), "loss": float(parts.total)}
    out["train_increase_mb"] = out["peak_rss_mb"] - out["setup_rss_mb"]
    if device.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def measure(resolution: int, k: int, *, n: int = 64, steps: int = 2, device: str = "cpu",
            threads: int = 1, timeout: float = 1800.0) -> dict:
    """Peak memory of a few MoW_k(n) training steps at ``resolution`` in a fresh subprocess
    (``python -m mowtheory.train.memory``); a dict with ``peak_rss_mb``, ``setup_rss_mb``,
    ``train_increase_mb``, ``step_s`` (and ``cuda_max_allocated_mb``), or ``error``."""
    cmd = [sys.executable, "-m", "mowtheory.train.memory", "--resolution", str(resolution), "--k", str(k),
           "--n", str(n), "--steps", str(steps), "--device", device, "--threads", str(threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"resolution": resolution, "k": k, "n": n, "error": f"timeout after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        killed = proc.returncode in (-9, 137)
        return {"resolution": resolution, "k": k, "n": n,
                "error": "killed (out of memory?)" if killed else tail[0][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_mb(row: dict, device: str) -> float | None:
    if "error" in row:
        return None
    return row["cuda_max_allocated_mb"] if device == "cuda" else row["peak_rss_mb"]


def largest_under_cap(rows, ks, cap_mb: float, device: str) -> dict:
    out = {}
    for k in ks:
        ok = [r["resolution"] for r in rows if r["k"] == k and peak_mb(r, device) is not None
              and peak_mb(r, device) <= cap_mb]
        out[k] = max(ok) if ok else None
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="one memory measurement (child process)")
    p.add_argument("--resolution", type=int, required=True)
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=1)
    print(json.dumps(child(p.parse_args(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
