"""Peak training memory against image resolution for MoW_k(64), k in {1, 8, 64}, on the
FFHQ-style architecture (``build_autoencoder("ffhq", resolution=r)``).

k = 64 = n is standard batch training; k = 1 is the paper's one-element MoW. Each
(resolution, k) is measured in its own subprocess (a fresh process, so the peaks do not mix):

- CPU: the child's peak resident set size, ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
  (reported in full and as the increase over the RSS after setup: imports, model, optimizer,
  window, data);
- GPU (``--device cuda``): ``torch.cuda.max_memory_allocated`` over the training steps.

A child builds the model, a CWAE cost, an Adam optimizer and a MoW window initialised with
N(0, I) draws (the ``prior`` policy: the steady state of the step is measured, not the
one-off encoding of n - k examples), then runs ``--steps`` MoW steps on random images.

Usage::

    python experiments/memory_scaling.py                       # CPU: 32..256, 2 steps each
    python experiments/memory_scaling.py --cap-gb 2            # largest resolution under 2 GB
    # the full curve on one GPU (not run here: this machine has none):
    python experiments/memory_scaling.py --device cuda --resolutions 64 128 256 512 1024 \\
        --steps 3 --cap-gb 16

Writes ``experiments/results/memory.md``, ``memory.png`` and ``memory.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


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


def measure(resolution: int, k: int, *, n: int, steps: int, device: str, threads: int,
            timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", "--resolution", str(resolution), "--k", str(k),
           "--n", str(n), "--steps", str(steps), "--device", device, "--threads", str(threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=ROOT)
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


def write_outputs(rows, *, ks, resolutions, n, cap_gb, device, steps, seconds, results: Path):
    results.mkdir(parents=True, exist_ok=True)
    (results / "memory.json").write_text(json.dumps(
        {"rows": rows, "ks": ks, "resolutions": resolutions, "n": n, "cap_gb": cap_gb,
         "device": device, "steps": steps, "seconds": seconds}, indent=1))
    cap_mb = cap_gb * 1024
    best = largest_under_cap(rows, ks, cap_mb, device)
    what = ("torch.cuda.max_memory_allocated" if device == "cuda"
            else "peak RSS of the child process (ru_maxrss)")
    lines = [
        "# Peak training memory against resolution (FFHQ-style autoencoder)",
        "",
        f"Generated by `python experiments/memory_scaling.py"
        f"{' --device cuda' if device == 'cuda' else ''} --resolutions "
        f"{' '.join(map(str, resolutions))} --ks {' '.join(map(str, ks))} --steps {steps} "
        f"--cap-gb {cap_gb:g}` in {seconds:.0f} s.",
        "",
        f"MoW_k(n={n}) steps (CWAE cost, Adam, reduction sqrt_mean, window initialised from the "
        f"prior) on random images; `build_autoencoder('ffhq', resolution=r)`; device "
        f"`{device}`; one subprocess per (resolution, k). Memory: {what}. k = n = {n} is "
        "standard batch training.",
        "",
        "| resolution | k | parameters | peak (MB) | increase over setup (MB) | "
        "time per step (s) |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['resolution']} | {r['k']} | — | {r['error']} | — | — |")
            continue
        inc = r.get("train_increase_mb")
        lines.append(f"| {r['resolution']} | {r['k']} | {r['params']:,} | "
                     f"{peak_mb(r, device):.0f} | {inc:.0f} | {r['step_s']:.3f} |")
    lines += ["", f"Largest resolution that trains under {cap_gb:g} GB (of those measured): " +
              ", ".join(f"k={k}: {best[k] if best[k] else 'none'}" for k in ks) + ".", ""]
    by_k = {k: {r["resolution"]: peak_mb(r, device) for r in rows if r["k"] == k} for k in ks}
    inc_k = {k: {r["resolution"]: r.get("train_increase_mb") for r in rows
                 if r["k"] == k and "error" not in r} for k in ks}
    common = [res for res in resolutions if all(by_k[k].get(res) for k in ks)]
    if common:
        big = max(common)
        lo, hi = min(ks), max(ks)
        ratio = by_k[hi][big] / by_k[lo][big]
        text = (f"At {big}x{big} (the largest resolution measured for every k): k={hi} needs "
                f"{ratio:.1f}x the peak memory of k={lo}")
        if device != "cuda" and inc_k[hi].get(big) and inc_k[lo].get(big):
            text += (f", {inc_k[hi][big] / inc_k[lo][big]:.1f}x the memory added by the training "
                     f"steps")
        lines += [text + ".", ""]
    lines += [
        "The full curve to 1024x1024 needs a GPU (not available on the machine that produced "
        "this file):",
        "",
        "    python experiments/memory_scaling.py --device cuda --resolutions 64 128 256 512 "
        "1024 --steps 3 --cap-gb 16",
        "",
        "CPU numbers include the Python/torch baseline of the process (a few hundred MB); the "
        "increase over setup is the memory the steps themselves add (activations kept for "
        "the backward pass, gradients, optimizer state on the first step).",
        ""]
    (results / "memory.md").write_text("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
        for k in ks:
            pts = sorted((res, mb) for res, mb in by_k[k].items() if mb is not None)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"k={k}" + (" (standard)" if k == n else ""))
        ax.axhline(cap_mb, color="grey", ls="--", lw=1, label=f"cap {cap_gb:g} GB")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("resolution (pixels per side)")
        ax.set_ylabel("peak memory (MB)")
        ax.set_title(f"MoW_k({n}) training memory, FFHQ-style AE, {device}", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(results / "memory.png")
        plt.close(fig)
    except Exception as exc:  # pragma: no cover - plotting is optional
        print(f"no plot: {exc}", file=sys.stderr)
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--resolution", type=int, help=argparse.SUPPRESS)
    p.add_argument("--k", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--ks", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each child")
    p.add_argument("--cap-gb", type=float, default=2.0, help="memory cap in GB")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per child")
    p.add_argument("--max-batch-pixels", type=int, default=None,
                   help="skip (r, k) with k*r^2 above this (default on CPU 64*128^2, i.e. "
                        "k=64 stops at 128x128; 0 = no limit; default on cuda: no limit)")
    p.add_argument("--results", default=str(HERE / "results"), help="output folder")
    p.add_argument("--from-json", default=None,
                   help="rewrite memory.md/.png from a memory.json of an earlier sweep")
    args = p.parse_args(argv)
    if args.from_json:
        data = json.loads(Path(args.from_json).read_text())
        write_outputs(data["rows"], ks=data["ks"], resolutions=data["resolutions"], n=data["n"],
                      cap_gb=args.cap_gb, device=data["device"], steps=data["steps"],
                      seconds=data["seconds"], results=Path(args.results))
        return 0
    if args.child:
        print(json.dumps(child(args)))
        return 0
    t0 = time.perf_counter()
    rows = []
    limit = args.max_batch_pixels
    if limit is None:
        limit = 64 * 128 * 128 if args.device == "cpu" else 0
    for res in args.resolutions:
        for k in args.ks:
            if limit and k * res * res > limit:
                row = {"resolution": res, "k": k, "n": args.n,
                       "error": f"skipped: k*r^2 = {k * res * res} > --max-batch-pixels {limit} "
                                f"(CPU time)"}
                rows.append(row)
                print(json.dumps(row), flush=True)
                continue
            row = measure(res, k, n=args.n, steps=args.steps, device=args.device,
                          threads=args.threads, timeout=args.timeout)
            rows.append(row)
            print(json.dumps(row), flush=True)
    best = write_outputs(rows, ks=args.ks, resolutions=args.resolutions, n=args.n,
                         cap_gb=args.cap_gb, device=args.device, steps=args.steps,
                         seconds=time.perf_counter() - t0, results=Path(args.results))
    print(f"largest resolution under {args.cap_gb:g} GB: {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
