"""Peak training memory of MoW_k(n) on the FFHQ-style autoencoder, one subprocess a point.

A child process (``python -m mowtheory.bench.memory_child --resolution R --k K ...``; with
``--method gradcache --chunk C`` a :class:`~mowtheory.gradcache.GradCache` step over n
examples, C at a time, instead of the MoW step) builds
``build_autoencoder("ffhq", resolution=R)``, a CWAE cost, Adam and a window initialised from
the prior (the steady state of the step is measured, not the one-off encoding of n - k
examples), runs a few MoW steps on random images and prints one JSON line with two measures
of its peak memory:

- ``peak_rss_mb``: the peak resident set size of the whole process (``ru_maxrss``): what the
  operating system must provide, including the interpreter, torch's code and what the C
  allocator keeps after frees (``setup_rss_mb`` is the RSS after setup: imports, model,
  optimizer, window, data);
- ``tensor_peak_mb``: the peak of the bytes held by live tensors, from setup to the last step:
  on CUDA ``torch.cuda.max_memory_allocated``, on CPU :class:`mowtheory.memory.TensorPeak` (the same quantity,
  counted from PyTorch's CPU allocator through the profiler). It is the memory the training
  itself needs: parameters, gradients, optimizer state, the window and the activations kept
  for the backward pass.

:func:`measure` runs one child; ``experiments/memory_scaling.py`` and ``mowtheory bench
memory`` are built on it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

from ..memory import TensorPeak, maxrss_kb, rss_now_kb


def child(args) -> dict:
    """Run in the subprocess: build the model, cost, optimizer and window, run the steps."""
    import torch

    torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    tensors = TensorPeak() if device.type == "cpu" and args.tensor_peak else None
    with tensors if tensors is not None else contextlib.nullcontext():
        out = _run(torch, args, device)
    if device.type == "cuda":
        out["tensor_peak_mb"] = out["cuda_max_allocated_mb"]
    elif tensors is not None and tensors.peak_bytes is not None:
        out["tensor_peak_mb"] = tensors.peak_bytes / 2**20
    return out


def _run(torch, args, device) -> dict:
    from mowtheory import costs
    from mowtheory.mow import MoW
    from mowtheory.train.models import build_autoencoder

    torch.manual_seed(0)
    model = build_autoencoder("ffhq", resolution=args.resolution).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator(device=device).manual_seed(1)

    def per_example(x, z):
        return (model.decode(z) - x).pow(2).flatten(1).sum(1)

    if args.method == "gradcache":      # n examples a step, activations of `chunk` at a time
        from mowtheory.gradcache import GradCache
        mow = GradCache(model.encode, costs.get("cwae"), n=args.n, chunk=args.chunk,
                        per_example=per_example, reduction="sqrt_mean", generator=gen,
                        device=device)
    else:
        mow = MoW(model.encode, costs.get("cwae"), n=args.n, k=args.k,
                  latent_dim=model.latent_dim, per_example=per_example, reduction="sqrt_mean",
                  generator=gen, device=device)
        mow.init_window("prior")
    per_step = args.n if args.method == "gradcache" else args.k
    g = torch.Generator().manual_seed(2)
    x = torch.rand(per_step, 3, args.resolution, args.resolution, generator=g).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    setup_kb = rss_now_kb()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        parts = mow.step(x, opt)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    out = {"resolution": args.resolution, "n": args.n, "steps": args.steps,
           "k": args.k if args.method == "mow" else None,
           "method": args.method, "chunk": args.chunk if args.method == "gradcache" else None,
           "examples_per_step": per_step,
           "device": str(device), "params": sum(p.numel() for p in model.parameters()),
           "peak_rss_mb": maxrss_kb() / 1024, "setup_rss_mb": setup_kb / 1024,
           "step_s": min(times), "example_s": min(times) / per_step,
           "loss": float(parts.total)}
    out["train_increase_mb"] = out["peak_rss_mb"] - out["setup_rss_mb"]
    if device.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def measure(resolution: int, k: int, *, n: int = 64, steps: int = 2, device: str = "cpu",
            threads: int = 1, timeout: float = 1800.0, tensors: bool = True,
            method: str = "mow", chunk: int = 1) -> dict:
    """Peak memory of a few MoW_k(n) training steps at ``resolution`` in a fresh subprocess
    (``python -m mowtheory.bench.memory_child``).

    Returns a dict with ``peak_rss_mb``, ``setup_rss_mb``, ``train_increase_mb``, ``step_s``,
    ``tensor_peak_mb`` (and on CUDA ``cuda_max_allocated_mb``), or with ``error``. On CPU the
    tensor count needs the profiler, which costs RSS and time of its own, so it runs in a
    second child (``tensors=False`` skips it): the RSS and the step time come from a child
    without the profiler. ``method="gradcache"``: a :class:`mowtheory.gradcache.GradCache`
    step over n examples with ``chunk`` at a time instead of MoW_k(n) (``k`` unused).
    """
    cmd = [sys.executable, "-m", "mowtheory.bench.memory_child", "--resolution", str(resolution),
           "--k", str(k), "--n", str(n), "--steps", str(steps), "--device", device,
           "--threads", str(threads), "--method", method, "--chunk", str(chunk)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    where = {"resolution": resolution, "k": k if method == "mow" else None, "n": n,
             "method": method,
             "chunk": chunk if method == "gradcache" else None}

    def run(extra):
        try:
            proc = subprocess.run(cmd + extra, capture_output=True, text=True, timeout=timeout,
                                  env=env)
        except subprocess.TimeoutExpired:
            return {**where, "error": f"timeout after {timeout:.0f} s"}
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            killed = proc.returncode in (-9, 137)
            return {**where, "error": "killed (out of memory?)" if killed else tail[0][:200]}
        return json.loads(proc.stdout.strip().splitlines()[-1])

    if device != "cpu":
        return run([])
    row = run(["--no-tensor-peak"])
    if tensors and "error" not in row:
        counted = run([])
        if "tensor_peak_mb" in counted:
            row["tensor_peak_mb"] = counted["tensor_peak_mb"]
    return row


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
    p.add_argument("--method", choices=("mow", "gradcache"), default="mow")
    p.add_argument("--chunk", type=int, default=1, help="gradcache: examples at a time")
    p.add_argument("--no-tensor-peak", dest="tensor_peak", action="store_false",
                   help="CPU: do not count tensor bytes (no profiler)")
    print(json.dumps(child(p.parse_args(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
