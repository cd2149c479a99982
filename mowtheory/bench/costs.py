"""``mowtheory bench costs``: split (window) evaluation of the pairwise batch costs against a
full recomputation over all n^2 pairs, measured side by side.

One **split step** is what a MoW step does with the batch cost: value and gradient w.r.t. the
k fresh latents Z of ``F(cat(H, Z); y)`` by ``BatchCost.split`` with the cache of the frozen
window H, then the slide, ``BatchCost.update_cache`` and ``LatentWindow.push``. It uses
``constants=False``: with a fresh prior sample y each step, the frozen-prior and prior-prior
blocks are new every step, O(n^2) to evaluate, and constant in theta (same gradient);
costs with an outer log/sqrt (``cwae``) ignore the flag and take the frozen-frozen block from
the cache. One **full step** is value and gradient w.r.t. Z of ``F(cat(H, Z); y)`` over all
pairs. Both run on the same H, Z, y; before timing (and again after it, once the cache has
been updated incrementally many times) the two gradients must agree
(:class:`GradientMismatch` otherwise).

Repetitions are interleaved (one full step, then ``split_steps`` split steps, repeated);
medians and their ratio are reported. The cache is recomputed exactly every ``ceil(m/k)``
slides (drift control), an ``O(n^2)`` no-grad pass: the *amortised* split time adds its
cost divided by ``ceil(m/k)``. The log-log slope of split time against n shows the
``O(n k)`` scaling (slope ~1 or less; 2 would be ``n^2``).
"""
from __future__ import annotations

import math
import sys
from typing import Optional, Sequence

import torch

from .. import costs as C
from ..window import LatentWindow
from . import _common as U

DEFAULT_NS = (64, 256, 1024, 4096)
DEFAULT_KS = (1, 8)
TARGET_RATIO = 100.0      # split at least 100x faster than full at n=4096, k=1
TARGET_N, TARGET_K = 4096, 1
SLOPE_LIMIT = 1.25        # "scales like n k": log-log slope of split time in n well below 2

CONSTANTS_NOTE = (
    "split steps use constants=False: with a fresh prior sample each step the frozen-prior "
    "and prior-prior blocks would cost O(n^2) per step and are constant in theta (same "
    "gradient, value off by a constant); cwae (outer log) needs the exact value and takes "
    "the frozen-frozen block from the cache.")


class GradientMismatch(AssertionError):
    """The split and full gradients of a batch cost disagree beyond the tolerance."""


def default_rtol(dtype: torch.dtype) -> float:
    """Tolerance of :func:`check_agreement`, relative to ``max |g_full|``: 1e-3 in float32
    (sums of up to n^2 kernel values in single precision), 1e-8 in float64."""
    return 1e-8 if dtype == torch.float64 else 1e-3


def check_agreement(g_split: torch.Tensor, g_full: torch.Tensor, *, rtol: float,
                    label: str = "") -> float:
    """Raise :class:`GradientMismatch` unless ``max |g_split - g_full| <= rtol * max |g_full|``
    (both finite); return that relative error."""
    if g_split.shape != g_full.shape:
        raise GradientMismatch(f"{label}: gradient shapes differ: split {tuple(g_split.shape)}, "
                               f"full {tuple(g_full.shape)}")
    gs, gf = g_split.detach().double().cpu(), g_full.detach().double().cpu()
    scale = float(gf.abs().max()) if gf.numel() else 0.0
    err = float((gs - gf).abs().max()) if gf.numel() else 0.0
    rel = err / scale if scale > 0 else err
    if not (math.isfinite(err) and math.isfinite(scale)) or rel > rtol:
        raise GradientMismatch(
            f"{label}: split and full gradients disagree: max |g_split - g_full| = {err:.3e}, "
            f"max |g_full| = {scale:.3e}, relative {rel:.3e} > rtol {rtol:g}")
    return rel


class _Bench:
    """Window, cache and pools of fresh latents/prior samples for one (cost, n, k)."""

    def __init__(self, cost, *, n: int, k: int, dim: int, dtype, device, pool: int, seed: int,
                 constants: bool = False):
        if not 1 <= k < n:
            raise ValueError(f"k must satisfy 1 <= k < n for a split benchmark; got n={n}, k={k}")
        self.cost, self.n, self.k, self.device = cost, n, k, device
        self.constants = constants
        g = torch.Generator().manual_seed(seed)
        m = n - k

        def draw(*shape):
            return torch.randn(*shape, generator=g, dtype=dtype).to(device)

        self.win = LatentWindow(n, k, dim, device=device, dtype=dtype)
        self.win.fill(draw(m, dim))
        self.cache = cost.init_cache(self.win.buffer, n=n)
        self.Zs = draw(pool, k, dim)
        self.Ys = draw(pool, n, dim) if cost.needs_prior else None
        self.i = 0

    def _inputs(self, i):
        j = i % self.Zs.shape[0]
        Z = self.Zs[j].detach().clone().requires_grad_(True)
        return Z, (None if self.Ys is None else self.Ys[j])

    def split_grad(self, i: int) -> torch.Tensor:
        Z, y = self._inputs(i)
        v = self.cost.split(self.win.buffer, Z, y, cache=self.cache, constants=self.constants)
        (g,) = torch.autograd.grad(v, Z)
        return g

    def full_grad(self, i: int) -> torch.Tensor:
        Z, y = self._inputs(i)
        v = self.cost(torch.cat([self.win.buffer, Z], dim=0), y)
        (g,) = torch.autograd.grad(v, Z)
        return g

    def split_step(self) -> None:
        """Value + gradient with the cache, then the slide (update_cache + push)."""
        Z, y = self._inputs(self.i)
        self.i += 1
        v = self.cost.split(self.win.buffer, Z, y, cache=self.cache, constants=self.constants)
        torch.autograd.grad(v, Z)
        new = Z.detach()
        self.cache = self.cost.update_cache(self.cache, self.win.buffer, self.win.next_slots(),
                                            new)
        self.win.push(new)

    def full_step(self) -> None:
        self.full_grad(self.i)

    def recompute(self) -> None:
        self.cost.init_cache(self.win.buffer, n=self.n)


def measure(cost, *, n: int, k: int, dim: int = 64, dtype=torch.float32, device="cpu",
            reps: int = 5, split_steps: int = 20, budget_s: float = 10.0, seed: int = 0,
            rtol: Optional[float] = None) -> dict:
    """Time split against full steps of ``cost`` (a :class:`~mowtheory.costs.BatchCost` or an
    object with its ``split``/``init_cache``/``update_cache``/``__call__``/``needs_prior``)
    for one (n, k). Returns a row of the JSON results (seconds)."""
    rtol = default_rtol(dtype) if rtol is None else rtol
    label = f"{getattr(cost, 'name', cost)} n={n} k={k} {str(dtype).replace('torch.', '')} {device}"
    b = _Bench(cost, n=n, k=k, dim=dim, dtype=dtype, device=device,
               pool=max(split_steps, 8), seed=seed)
    rel0 = check_agreement(b.split_grad(0), b.full_grad(0), rtol=rtol, label=label)
    t_first = U.timed(b.full_step, device)                           # warm-up, sets reps
    reps = max(3, min(reps, int(budget_s / max(t_first, 1e-9))))
    for _ in range(3):
        b.split_step()
    t_full, t_split = [], []
    for _ in range(reps):                                            # interleaved
        t_full.append(U.timed(b.full_step, device))
        for _ in range(split_steps):
            t_split.append(U.timed(b.split_step, device))
    # after many incremental cache updates the gradients must still agree
    rel1 = check_agreement(b.split_grad(b.i), b.full_grad(b.i), rtol=rtol,
                           label=label + " (after the timed slides)")
    t_rec = U.median([U.timed(b.recompute, device) for _ in range(2 if t_first > 1 else 3)])
    period = math.ceil((n - k) / k)
    split_med = U.median(t_split)
    amort = split_med + t_rec / period
    full_med = U.median(t_full)
    return {
        "cost": getattr(cost, "name", str(cost)), "n": n, "k": k, "dim": dim,
        "dtype": str(dtype).replace("torch.", ""), "device": str(device),
        "full_median_s": full_med, "split_median_s": split_med,
        "split_mean_s": sum(t_split) / len(t_split), "recompute_s": t_rec,
        "recompute_period": period, "split_amortised_s": amort,
        "ratio": full_med / split_med, "ratio_amortised": full_med / amort,
        "grad_rel_err": max(rel0, rel1), "rtol": rtol, "reps": reps,
        "split_samples": len(t_split),
    }


def slopes(rows: list) -> list:
    """Log-log slopes of split/full time against n, per (cost, k, device)."""
    out = []
    keys = sorted({(r["cost"], r["k"], r["device"]) for r in rows})
    for cost, k, dev in keys:
        rs = sorted((r for r in rows if (r["cost"], r["k"], r["device"]) == (cost, k, dev)),
                    key=lambda r: r["n"])
        ns = [r["n"] for r in rs]
        top = rs[-2:]
        out.append({
            "cost": cost, "k": k, "device": dev, "ns": ns,
            "split_slope": U.loglog_slope(ns, [r["split_median_s"] for r in rs]),
            "split_amortised_slope": U.loglog_slope(ns, [r["split_amortised_s"] for r in rs]),
            "split_slope_top": U.loglog_slope([r["n"] for r in top],
                                              [r["split_median_s"] for r in top]),
            "full_slope": U.loglog_slope(ns, [r["full_median_s"] for r in rs]),
        })
    return out


def targets(rows: list, slope_rows: list) -> dict:
    out = {}
    hit = [r for r in rows if r["n"] == TARGET_N and r["k"] == TARGET_K]
    if hit:
        worst = min(hit, key=lambda r: r["ratio_amortised"])
        out["ratio_n4096_k1"] = {
            "target": f">= {TARGET_RATIO:g}x (split vs full, amortised split time)",
            "min_ratio_amortised": worst["ratio_amortised"], "worst_cost": worst["cost"],
            "min_ratio_median": min(r["ratio"] for r in hit),
            "pass": worst["ratio_amortised"] >= TARGET_RATIO}
    sl = [s for s in slope_rows if s["split_slope"] is not None and len(s["ns"]) >= 3]
    if sl:
        worst = max(sl, key=lambda s: s["split_slope"])
        out["split_scaling"] = {
            "target": f"log-log slope of split time in n <= {SLOPE_LIMIT} (n k scaling; n^2 "
                      "would be 2)", "max_slope": worst["split_slope"],
            "worst": f"{worst['cost']} k={worst['k']} {worst['device']}",
            "pass": worst["split_slope"] <= SLOPE_LIMIT}
    return out


def run_costs(names: Sequence[str], ns: Sequence[int], ks: Sequence[int], *, dim: int = 64,
              dtype=torch.float32, devices: Sequence[str] = ("cpu",), reps: int = 5,
              split_steps: int = 20, budget_s: float = 10.0, seed: int = 0,
              rtol: Optional[float] = None, log=print) -> dict:
    rows, skipped = [], []
    for dev in devices:
        for name in names:
            cost = C.get(name) if isinstance(name, str) else name
            cname = getattr(cost, "name", str(cost))
            if not getattr(cost, "supports_split", True):
                skipped.append({"cost": cname, "why": "no split evaluation (sorting couples "
                                                      "all rows): a step is a full evaluation"})
                continue
            for k in ks:
                for n in ns:
                    row = measure(cost, n=n, k=k, dim=dim, dtype=dtype, device=dev, reps=reps,
                                  split_steps=split_steps, budget_s=budget_s, seed=seed,
                                  rtol=rtol)
                    rows.append(row)
                    log(f"  {cname:9s} {dev:4s} n={n:5d} k={k}: "
                        f"full {U.fmt_s(row['full_median_s']):>9s}"
                        f"  split {U.fmt_s(row['split_median_s']):>9s}"
                        f"  (amortised {U.fmt_s(row['split_amortised_s'])})"
                        f"  ratio {row['ratio']:.0f}x  grad rel err {row['grad_rel_err']:.1e}")
    sl = slopes(rows)
    return {"rows": rows, "slopes": sl, "skipped": skipped, "targets": targets(rows, sl),
            "note": CONSTANTS_NOTE}


def format_results(res: dict) -> str:
    rows = [[r["cost"], r["device"], r["n"], r["k"], U.fmt_s(r["full_median_s"]),
             U.fmt_s(r["split_median_s"]), U.fmt_s(r["split_amortised_s"]),
             f"{r['ratio']:.0f}x", f"{r['ratio_amortised']:.0f}x", f"{r['grad_rel_err']:.1e}"]
            for r in res["rows"]]
    out = [U.table(["cost", "device", "n", "k", "full (median)", "split (median)",
                    "split (amortised)", "ratio", "ratio (amortised)", "grad rel err"], rows)]
    srows = [[s["cost"], s["device"], s["k"], _f(s["split_slope"]),
              _f(s["split_amortised_slope"]), _f(s["split_slope_top"]), _f(s["full_slope"])]
             for s in res["slopes"]]
    out += ["", "log-log slope of time against n:",
            U.table(["cost", "device", "k", "split", "split (amortised)",
                     "split, two largest n", "full"], srows)]
    for s in res["skipped"]:
        out.append(f"skipped {s['cost']}: {s['why']}")
    out += ["", res["note"]]
    for name, t in res["targets"].items():
        val = t.get("min_ratio_amortised", t.get("max_slope"))
        out.append(f"target {name}: {t['target']}: {val:.3g} -> {'PASS' if t['pass'] else 'FAIL'}")
    return "\n".join(out)


def _f(v):
    return "—" if v is None else f"{v:.2f}"


# --------------------------------------------------------------------------- CLI
def _ints(text: str, name: str = "values") -> list:
    """A comma-separated list of integers >= 1; errors name the option ``name``."""
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name} must be a comma-separated list of integers; got "
                         f"{name} {text!r}") from None
    if not vals or min(vals) < 1:
        raise ValueError(f"{name} must hold integers >= 1; got {name} {text!r}")
    return vals


def add_arguments(p) -> None:
    splittable = [n for n in C.names() if C.get(n, **_params(n)).supports_split]
    p.add_argument("--costs", default=",".join(splittable),
                   help="comma-separated registry names")
    p.add_argument("--n", default=",".join(map(str, DEFAULT_NS)), help="batch sizes n")
    p.add_argument("--k", default=",".join(map(str, DEFAULT_KS)), help="fresh latents k")
    p.add_argument("--dim", type=int, default=64, help="latent dimension D")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CPU, and CUDA when present")
    p.add_argument("--reps", type=int, default=5, help="interleaved repetitions (at most)")
    p.add_argument("--split-steps", type=int, default=20, help="split steps per repetition")
    p.add_argument("--budget", type=float, default=10.0,
                   help="seconds of full evaluation per (cost, n, k): fewer repetitions "
                        "(at least 3) when one full step is slow")
    p.add_argument("--rtol", type=float, default=None,
                   help="gradient agreement tolerance (default 1e-3 float32, 1e-8 float64)")
    p.add_argument("--profile", action="store_true",
                   help="print torch.profiler tables of a split and a full step at the "
                        "largest n and smallest k")


def _params(name: str) -> dict:
    return {"generator": torch.Generator().manual_seed(0)} if name == "swae" else {}


def run(args) -> int:
    names = [c.strip() for c in args.costs.split(",") if c.strip()]
    for nm in names:
        if nm not in C.names():
            raise ValueError(f"--costs: cost must be one of {', '.join(C.names())}; got {nm!r}")
    ns, ks = _ints(args.n, "--n"), _ints(args.k, "--k")
    dtype = getattr(torch, args.dtype)
    devs = U.devices(args.device)
    costs = [C.get(nm, **_params(nm)) for nm in names]
    print(f"bench costs: D={args.dim} {args.dtype} on {', '.join(devs)}; n={ns} k={ks} "
          f"(torch threads {torch.get_num_threads()})", flush=True)
    try:
        res = run_costs(costs, ns, ks, dim=args.dim, dtype=dtype, devices=devs, reps=args.reps,
                        split_steps=args.split_steps, budget_s=args.budget, rtol=args.rtol,
                        log=lambda s: print(s, flush=True))
    except GradientMismatch as exc:
        print(f"mowtheory bench costs: gradient check failed: {exc}", file=sys.stderr)
        return 1
    print()
    print(format_results(res))
    if args.profile:
        for cost in costs:
            if not cost.supports_split:
                continue
            for dev in devs:
                b = _Bench(cost, n=max(ns), k=min(ks), dim=args.dim, dtype=dtype, device=dev,
                           pool=8, seed=0)
                print(f"\nprofile {cost.name} n={max(ns)} k={min(ks)} {dev}: split step")
                print(U.profile_table(b.split_step, steps=20, device=dev))
                print(f"profile {cost.name} n={max(ns)} k={min(ks)} {dev}: full step")
                print(U.profile_table(b.full_step, steps=1, device=dev))
    config = {"costs": names, "n": ns, "k": ks, "dim": args.dim, "dtype": args.dtype,
              "devices": devs, "reps": args.reps, "split_steps": args.split_steps,
              "budget_s": args.budget}
    return U.finish(args, "costs", config, **res)
