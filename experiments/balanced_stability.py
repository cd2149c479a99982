"""Is balanced MoW's runaway a delay-feedback instability? Predicted vs simulated thresholds.

Problem: ``mmd-gaussian`` with ``data_dim = latent_dim = 1`` and ``lam = 16`` (the F-term
dominates the curvature, so the window's feedback is visible before G's own batch-1 noise
limit), fixed point theta* = (W, b, V) = (1, 0, 1). For n in {4, 8, 16, 32, 64}, k = 1,
refresh "post", reduction "mean":

- predicted: eta* of the mean MoW recursion with its window lag
  (:func:`mowtheory.flow.stability.critical_eta`), balanced and unbalanced, and without the lag
  (gradient descent on the MoW ODE's potential c);
- simulated: :func:`mowtheory.flow.simulate` (float64, ``--replicas`` replicas, seed 0) from
  theta* + 0.1 (1, 1, -1) for ``12 (n - 1) + 200`` steps at eta = f * eta* for the factors f of
  ``--factors``; a run is "runaway" when simulate marks it unstable (a replica non-finite or
  above 1e6), else "bounded". The bracket is (largest bounded factor below the first runaway
  one, first runaway factor).

Usage::

    python experiments/balanced_stability.py             # ~4 min on 2 CPU cores

Writes ``experiments/results/balanced_stability.md``, ``.png`` and ``.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mowtheory.flow import get_problem, simulate
from mowtheory.flow.stability import critical_eta, lag_blocks, spectral_radius

RESULTS = Path(__file__).resolve().parent / "results"


def predict(problem, theta_star, ns, k):
    rows = []
    for n in ns:
        row = {"n": n}
        for bal in (True, False):
            key = "balanced" if bal else "unbalanced"
            A = lag_blocks(problem, theta_star, n=n, k=k, balanced=bal)
            row[f"eta_{key}"] = critical_eta(A)
            row[f"eta_{key}_nolag"] = critical_eta(
                lag_blocks(problem, theta_star, n=n, k=k, balanced=bal, lag=False))
        rows.append(row)
    return rows


def simulate_bracket(problem, theta_star, n, k, balanced, eta_star, factors, replicas, bar):
    d0 = 0.1 * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    A = lag_blocks(problem, theta_star, n=n, k=k, balanced=balanced)
    steps = 12 * (n - 1) + 200
    runs = []
    for f in factors:
        eta = f * eta_star
        r = simulate(problem, theta_star + d0, n=n, k=k, eta=eta, horizon=steps * eta,
                     replicas=replicas, generator=torch.Generator().manual_seed(0),
                     reduction="mean", balanced=balanced, record=32)
        rms = (r.thetas - theta_star).pow(2).sum(-1).mean(0).sqrt()
        runs.append({"factor": f, "eta": eta, "rho": spectral_radius(A, eta), "steps": steps,
                     "runaway": not r.stable,
                     "runaway_step": None if r.stable else round(r.diverged_at / eta),
                     "final_rms": None if not r.stable else float(rms[-1])})
        bar.update(1)
    first = next((x["factor"] for x in runs if x["runaway"]), None)
    below = [x["factor"] for x in runs if not x["runaway"] and (first is None or x["factor"] < first)]
    return runs, (max(below) if below else None, first)


def verdict(lo, hi):
    if lo is not None and hi is not None and lo < 1.0 <= hi:
        return "eta* in bracket"
    if hi is not None and hi <= 1.0:
        return "runaway below eta*"
    if lo is not None and lo >= 1.0:
        return "bounded above eta*"
    return "no bounded run" if lo is None else "no runaway run"


def fit_slope(ns, etas):
    return float(np.polyfit(np.log(ns), np.log(etas), 1)[0])


def fmt_bracket(lo, hi, eta):
    a = "—" if lo is None else f"{lo * eta:.4g}"
    b = "—" if hi is None else f"{hi * eta:.4g}"
    return f"({a}, {b}]"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ns", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--lam", type=float, default=16.0)
    ap.add_argument("--factors", type=float, nargs="+", default=[0.35, 0.5, 0.7, 1.0, 1.4, 2.0])
    ap.add_argument("--replicas", type=int, default=64)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    problem = get_problem("mmd-gaussian", data_dim=1, latent_dim=1, lam=args.lam)
    theta_star = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    rows = predict(problem, theta_star, args.ns, args.k)
    bar = tqdm(total=2 * len(args.ns) * len(args.factors), desc="simulate")
    for row in rows:
        for bal in (True, False):
            key = "balanced" if bal else "unbalanced"
            runs, (lo, hi) = simulate_bracket(problem, theta_star, row["n"], args.k, bal,
                                              row[f"eta_{key}"], args.factors, args.replicas, bar)
            row[f"runs_{key}"] = runs
            row[f"bracket_{key}"] = [lo, hi]
            row[f"verdict_{key}"] = verdict(lo, hi)
    bar.close()
    ns = np.array(args.ns, dtype=float)
    eb = np.array([r["eta_balanced"] for r in rows])
    tail = ns >= 16
    slopes = {"balanced_all": fit_slope(ns, eb),
              "balanced_n_ge_16": fit_slope(ns[tail], eb[tail]) if tail.sum() >= 2 else None,
              "unbalanced_all": fit_slope(ns, [r["eta_unbalanced"] for r in rows])}
    tau = [r["eta_balanced"] * (r["n"] - args.k) / args.k for r in rows]
    seconds = time.perf_counter() - t0
    cmd = "python experiments/balanced_stability.py" + (
        "" if argv is None or not argv else " " + " ".join(argv))
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}"
    out = {"problem": {"name": "mmd-gaussian", "data_dim": 1, "latent_dim": 1, "lam": args.lam},
           "theta_star": theta_star.tolist(), "k": args.k, "factors": args.factors,
           "replicas": args.replicas, "rows": rows, "slopes": slopes, "tau_star": tau,
           "seconds": seconds, "command": cmd, "machine": machine}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "balanced_stability.json").write_text(json.dumps(out, indent=1))
    plot(rows, args, args.out / "balanced_stability.png")
    (args.out / "balanced_stability.md").write_text(report(out, args))
    print((args.out / "balanced_stability.md").read_text())


def plot(rows, args, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ns = [r["n"] for r in rows]
    for key, color in (("balanced", "C3"), ("unbalanced", "C0")):
        ax.plot(ns, [r[f"eta_{key}"] for r in rows], "-o", color=color,
                label=f"predicted eta*, {key}")
        ax.plot(ns, [r[f"eta_{key}_nolag"] for r in rows], ":", color=color,
                label=f"no lag (GD on c), {key}")
        for i, r in enumerate(rows):
            lo, hi = r[f"bracket_{key}"]
            e = r[f"eta_{key}"]
            x = r["n"] * (1.06 if key == "unbalanced" else 0.94)
            y0 = lo * e if lo is not None else min(args.factors) * e / 2
            y1 = hi * e if hi is not None else max(args.factors) * e * 2
            ax.plot([x, x], [y0, y1], color=color, lw=4, alpha=0.35,
                    label=f"simulated bracket, {key}" if i == 0 else None)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("n (k = 1)")
    ax.set_ylabel("critical step size")
    ax.set_title(f"MoW stability, mmd-gaussian 1-D, lam = {args.lam:g}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(out, args):
    rows, s = out["rows"], out["slopes"]
    lines = [
        "# Balanced MoW: is the runaway a delay-feedback instability?",
        "",
        f"Generated by `{out['command']}` in {out['seconds']:.0f} s ({out['machine']}).",
        "",
        f"Problem `mmd-gaussian`, data_dim = latent_dim = 1, lam = {args.lam:g}, fixed point "
        f"theta* = (W, b, V) = {tuple(out['theta_star'])}; k = {args.k}, refresh post, "
        "reduction mean. Predicted: critical step size eta* (rho = 1) of the linearised mean "
        "MoW recursion with its window lag (`mowtheory.flow.stability`); 'no lag' folds the "
        "window blocks into the current step (plain gradient descent on the MoW ODE's potential). "
        f"Simulated: `simulate` with {args.replicas} float64 replicas (seed 0) from theta* + "
        f"0.1 (1, 1, -1), 12 (n - 1) + 200 steps, at eta = f eta* for f in "
        f"{', '.join(f'{f:g}' for f in args.factors)}; a run is runaway when simulate marks it "
        "unstable. Bracket (last bounded eta, first runaway eta].",
        "",
        "| n | eta* balanced | no lag | simulated bracket | verdict | eta* unbalanced | no lag "
        "| simulated bracket | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [str(r["n"])]
        for key in ("balanced", "unbalanced"):
            e = r[f"eta_{key}"]
            cells += [f"{e:.4g}", f"{r[f'eta_{key}_nolag']:.4g}",
                      fmt_bracket(*r[f"bracket_{key}"], e), r[f"verdict_{key}"]]
        lines.append("| " + " | ".join(cells) + " |")
    tail = "" if s["balanced_n_ge_16"] is None else f", over n >= 16: {s['balanced_n_ge_16']:.2f}"
    lines += [
        "",
        f"Log-log slope of predicted eta* against n: balanced {s['balanced_all']:.2f} over all n"
        f"{tail}; unbalanced {s['unbalanced_all']:.2f}. "
        "The delay-feedback hypothesis eta* ~ k^2 / (n (n - k)) would give -2. "
        "Balanced eta* (n - k)/k (the window's time span at the threshold): "
        + ", ".join(f"n={r['n']}: {t:.3g}" for r, t in zip(rows, out["tau_star"])) + ".",
        "",
        "Per-run detail (factor f, rho at f eta*, runaway step or final RMS distance to theta*):",
        "",
    ]
    for r in rows:
        for key in ("balanced", "unbalanced"):
            desc = "; ".join(
                f"f={x['factor']:g} rho={x['rho']:.4f} "
                + (f"runaway at step {x['runaway_step']}" if x["runaway"]
                   else f"bounded, rms {x['final_rms']:.2g}")
                for x in r[f"runs_{key}"])
            lines.append(f"- n={r['n']} {key}: {desc}")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
