"""The layout of the MoW paper's Tables 1, 3 and 4 on CPU-sized data: WAE, CWAE, SWAE trained
with standard batches (n = k = 64) and with MoW (n = 64, k = 32 and k = 1), plus balanced MoW
with k = 1 (the F-term scaled by n/k), on the bundled ``digits`` and ``mnist5k``.

Protocol (stated in the results file as well):

- Adam, equal numbers of examples seen (the same number of epochs for every row), one seed;
- reduction of the per-example errors: ``sqrt_mean`` (square root of the batch mean of the
  summed squared errors), the authors' code and therefore the paper's setting (``--reduction``
  changes it); lambda = 1 for every model (``--lam``);
- for each (model, row) the learning rate is chosen from a small grid by the paper's criterion,
  the smallest ``reconstruction error + log(distance)``; the distance used is the CW distance
  of the test latents for every model (the WAE-MMD estimate can be <= 0, where the log is
  undefined);
- metrics on the test split: reconstruction error (mean of summed squared errors), WAE-MMD
  (IMQ) and CW distances of the test latents to N(0, I), and FD-small-classifier (a Fréchet
  distance in the features of a small classifier trained on the same data set; not FID).

Usage::

    python experiments/paper_tables.py            # default grid, ~15 min of CPU
    python experiments/paper_tables.py --quick    # ~1-2 min smoke version (digits only)

Writes ``experiments/results/paper_tables.md`` (``--quick``: ``runs/paper_tables_quick.md``)
and keeps every run's directory under ``runs/paper_tables`` (git-ignored).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

MODELS = ("wae", "cwae", "swae")
#: (label, n, k, balanced)
ROWS = (("n=k=64", 64, 64, False), ("n=64, k=32", 64, 32, False), ("n=64, k=1", 64, 1, False),
        ("n=64, k=1, balanced", 64, 1, True))
QUICK_ROWS = (ROWS[0], ROWS[2], ROWS[3])

DEFAULT = {
    # dataset: epochs, training examples (None: the whole train split), test examples
    "digits": {"epochs": 4, "limit": None, "eval_limit": 360},
    "mnist5k": {"epochs": 1, "limit": 2000, "eval_limit": 1000},
}
QUICK = {"digits": {"epochs": 1, "limit": 500, "eval_limit": 200}}
DEFAULT_LRS = (1e-3, 3e-3, 1e-2)
QUICK_LRS = (2e-3,)

PAPER_TREND = {
    "n=k=64": "reference (standard training)",
    "n=64, k=32": "not stated",
    "n=64, k=1": "lower reconstruction error, much larger WAE/CW distance than n=k=64",
    "n=64, k=1, balanced": "not in the paper",
}


def criterion(m: dict) -> float:
    cw = m.get("cw_distance")
    if not isinstance(cw, float) or not math.isfinite(cw) or cw <= 0:
        return math.inf
    rec = m.get("recon_error")
    return rec + math.log(cw) if isinstance(rec, float) and math.isfinite(rec) else math.inf


def run_grid(datasets: dict, rows, lrs, *, runs: Path, seed: int, reduction: str, lam: float,
             log=print) -> list[dict]:
    from mowtheory.train import TrainConfig, train

    results = []
    total = len(datasets) * len(MODELS) * len(rows) * len(lrs)
    i = 0
    for ds, spec in datasets.items():
        for model in MODELS:
            for label, n, k, balanced in rows:
                for lr in lrs:
                    i += 1
                    tag = f"{model}-n{n}-k{k}{'-bal' if balanced else ''}-lr{lr:g}"
                    cfg = TrainConfig(
                        model=model, dataset=ds, n=n, k=k, balanced=balanced, lr=lr,
                        optimizer="adam", epochs=spec["epochs"], limit=spec["limit"],
                        eval_limit=spec["eval_limit"], lam=lam, reduction=reduction, seed=seed,
                        out=str(runs / ds / tag), cache_dir=str(runs / "cache"), fd=True,
                        images=False, overwrite=True, progress=False)
                    t0 = time.perf_counter()
                    try:
                        rep = train(cfg)
                        fm, status = rep["final_metrics"], rep["status"]
                    except Exception as exc:  # noqa: BLE001 - a diverged run is a result too
                        fm, status = {}, f"failed: {exc}"
                    secs = time.perf_counter() - t0
                    row = {"dataset": ds, "model": model, "row": label, "n": n, "k": k,
                           "balanced": balanced, "lr": lr, "epochs": spec["epochs"],
                           "status": status, "seconds": round(secs, 1), **fm}
                    row["criterion"] = criterion(fm)
                    results.append(row)
                    log(f"[{i}/{total}] {ds} {tag}: rec={fm.get('recon_error', float('nan')):.3f} "
                        f"wae={fm.get('wae_distance', float('nan')):.4f} "
                        f"cw={fm.get('cw_distance', float('nan')):.4f} ({secs:.1f} s)")
    return results


def select(results: list[dict]) -> list[dict]:
    best = {}
    for r in results:
        key = (r["dataset"], r["model"], r["row"])
        if key not in best or r["criterion"] < best[key]["criterion"]:
            best[key] = r
    return list(best.values())


def _f(v, digits=4):
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}"
    return "—" if v is None else str(v)


def trend_sentences(chosen: list[dict]) -> list[str]:
    by = {(r["dataset"], r["model"], r["row"]): r for r in chosen}
    out = []
    pairs = sorted({(r["dataset"], r["model"]) for r in chosen})
    n_trend = n_rec = n_dist = n_bal_smaller = n_bal_removes = n_pairs = 0
    details = []
    for ds, model in pairs:
        ref, one, bal = by.get((ds, model, "n=k=64")), by.get((ds, model, "n=64, k=1")), \
            by.get((ds, model, "n=64, k=1, balanced"))
        if not ref or not one or "cw_distance" not in ref or "cw_distance" not in one:
            continue
        n_pairs += 1
        rec_lower = one["recon_error"] < ref["recon_error"]
        dist_larger = (one["cw_distance"] > ref["cw_distance"]
                       and one["wae_distance"] > ref["wae_distance"])
        n_rec += rec_lower
        n_dist += dist_larger
        n_trend += rec_lower and dist_larger
        txt = (f"{ds}/{model.upper()}: k=1 vs n=k=64: reconstruction "
               f"{_f(one['recon_error'])} vs {_f(ref['recon_error'])}, CW distance "
               f"{_f(one['cw_distance'])} vs {_f(ref['cw_distance'])}, WAE distance "
               f"{_f(one['wae_distance'])} vs {_f(ref['wae_distance'])}")
        if bal and "cw_distance" in bal:
            smaller = bal["cw_distance"] < one["cw_distance"]
            removes = (bal["cw_distance"] <= ref["cw_distance"] * 1.1
                       and bal["wae_distance"] <= max(ref["wae_distance"] * 1.1,
                                                      ref["wae_distance"] + 1e-3))
            n_bal_smaller += smaller
            n_bal_removes += removes
            txt += (f"; balanced k=1: reconstruction {_f(bal['recon_error'])}, CW distance "
                    f"{_f(bal['cw_distance'])}, WAE distance {_f(bal['wae_distance'])}")
        details.append(txt)
    out.append(
        f"The paper's trend (k=1: lower reconstruction error **and** larger WAE and CW distances "
        f"than n=k=64) appears in {n_trend} of {n_pairs} (dataset, model) pairs "
        f"(lower reconstruction error in {n_rec}, larger WAE and CW distances in {n_dist}).")
    out.append(
        f"Balanced MoW (k=1, F scaled by n/k) has a smaller CW distance than plain k=1 in "
        f"{n_bal_smaller} of {n_pairs} pairs, and brings both distances back to the n=k=64 level "
        f"(within 10 %) or below in {n_bal_removes} of {n_pairs}.")
    out += [f"- {d}" for d in details]
    # runaway latents of balanced MoW (see the note in the results file)
    runaway, normal = [], []
    for ds, m in pairs:
        b, r = by.get((ds, m, "n=64, k=1, balanced")), by.get((ds, m, "n=k=64"))
        if not b or not r or not isinstance(b.get("latent_norm_mean"), float) \
                or not isinstance(r.get("latent_norm_mean"), float):
            continue
        item = f"{ds}/{m.upper()} {b['latent_norm_mean']:.3g} vs {r['latent_norm_mean']:.3g}"
        (runaway if b["latent_norm_mean"] > 5 * r["latent_norm_mean"] else normal).append(item)
    if runaway:
        out.append("")
        out.append(
            f"Balanced MoW does not bring the distances back to the n=k=64 level in this grid. "
            f"In {len(runaway)} of {len(runaway) + len(normal)} pairs its test latents run away "
            f"from the prior (mean latent norm, balanced k=1 vs n=k=64: {'; '.join(runaway)}"
            + (f"; without runaway: {'; '.join(normal)}" if normal else "") + "), where the "
            "kernels of the CW and IMQ distances saturate and stop pulling back. Our reading: "
            "at a fixed θ the balanced gradient has the expectation of the standard one (we "
            "checked on a trained digits encoder: cosine 0.99 between the means over 200 "
            "windows), but the n−k frozen latents are up to n−k steps stale, so a common drift "
            "of all latents leaves the fresh latent ahead of the window it is repelled from, and "
            "the pair term pushes it further along the drift. Scaled by n/k = 64 this delayed "
            "feedback beats the pull towards the prior. In side runs outside this grid "
            "(`mowtheory train --model cwae --dataset digits --k 1 --balanced --epochs 2 "
            "--n N`), n = 8 (gain 8, staleness 7) trained normally while n = 16 already ran "
            "away, and a learning rate of 1e-4 did not prevent it within 8 epochs: the "
            "theorem's limit (step size → 0) is not reached at practical learning rates. "
            "This reading is only partly supported: `experiments/balanced_stability.py` "
            "(`experiments/results/balanced_stability.md`) linearises the mean SGD recursion "
            "with its window lag on a 1-D toy problem and finds a delay instability of balanced "
            "MoW from n = 16, but through a delayed *restoring* pull (not a repulsion along the "
            "drift), with a threshold η*·(n−k)/k ≈ 2, i.e. η* ∝ 1/n; Adam, which these runs "
            "use, is not covered by it.")
    return out


def write_markdown(path: Path, results, chosen, *, datasets, lrs, reduction, lam, seed,
                   seconds, quick) -> None:
    fd_name = "FD-small-classifier"
    lines = [
        "# MoW paper tables (1, 3, 4) — layout reproduced on CPU-sized data",
        "",
        f"Generated by `python experiments/paper_tables.py{' --quick' if quick else ''}` "
        f"in {seconds / 60:.1f} min of CPU (torch {_torch_version()}, "
        f"{os.cpu_count()} cores, shared machine).",
        "",
        "Protocol: Adam; the same number of epochs for every row of a dataset (equal numbers of "
        "examples seen); seed "
        f"{seed}; lambda = {lam:g} for every model; reduction of the per-example summed squared "
        f"errors over the k fresh examples: `{reduction}`"
        + (" (square root of the batch mean, the authors' code and so the paper's setting)"
           if reduction == "sqrt_mean" else "")
        + f"; learning rate chosen per (model, row) from {', '.join(f'{v:g}' for v in lrs)} by "
          "the paper's criterion, smallest reconstruction error + log(distance), with the CW "
          "distance of the test latents as the distance for every model (the WAE-MMD estimate "
          "can be <= 0). Metrics on the test split: reconstruction error = mean over examples "
          "of the summed squared error; WAE distance = MMD with IMQ kernels to a prior sample "
          "of the same size; CW distance = Cramér–Wold distance to N(0, I); "
          f"{fd_name} = Fréchet distance in the features of a small classifier trained on the "
          "same dataset (**not FID**, comparable only within a dataset).",
        "",
        "Data: " + "; ".join(
            f"`{ds}`: {spec['epochs']} epoch(s), "
            f"{'all' if spec['limit'] is None else spec['limit']} training examples, "
            f"{spec['eval_limit']} test examples" for ds, spec in datasets.items()) + ".",
        "",
        "The paper column: we do not have the paper's numbers at hand, so it holds the trend "
        "the paper reports (docs/theory.md): k=1 rows have lower reconstruction error and much "
        "larger WAE/CW distance than standard training. No paper numbers are invented here.",
        "",
        "## Summary",
        "",
        *trend_sentences(chosen),
        "",
        "Caveat: at equal epochs a k=1 run makes 64 times more optimizer steps than n=k=64 "
        "(here 31 to 88 steps for n=k=64: those models are far from converged, while the paper "
        "trained to convergence), so much of the lower reconstruction error of k=1 is more "
        "optimisation, and the distances of the n=k=64 rows are those of barely trained "
        "encoders; the larger-distance half of the paper's trend needs longer runs than this "
        "CPU budget. The balanced k=1 row makes exactly as many steps as plain k=1 and "
        "isolates the weighting (docs/theory.md, \"Reduction matters\"). One seed: treat "
        "differences of a few percent as noise.",
        "",
    ]
    for ds in datasets:
        lines += [f"## {ds}", "",
                  f"| model | setting | lr | reconstruction error | WAE distance | CW distance "
                  f"| {fd_name} | mean latent norm | steps | seconds | paper (trend) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for model in MODELS:
            for label, *_ in ROWS:
                r = next((c for c in chosen if c["dataset"] == ds and c["model"] == model
                          and c["row"] == label), None)
                if r is None:
                    continue
                lines.append(
                    f"| {model.upper()} | {label} | {r['lr']:g} | {_f(r.get('recon_error'))} | "
                    f"{_f(r.get('wae_distance'))} | {_f(r.get('cw_distance'))} | "
                    f"{_f(r.get(fd_name))} | {_f(r.get('latent_norm_mean'), 3)} | "
                    f"{r.get('step', '—')} | {r['seconds']} | "
                    f"{PAPER_TREND[label]} |")
        lines.append("")
    lines += ["## Every run of the learning-rate grid", "",
              "| dataset | model | setting | lr | status | reconstruction error | WAE distance | "
              "CW distance | criterion |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['dataset']} | {r['model'].upper()} | {r['row']} | {r['lr']:g} | "
                     f"{r['status'][:40]} | {_f(r.get('recon_error'))} | "
                     f"{_f(r.get('wae_distance'))} | {_f(r.get('cw_distance'))} | "
                     f"{_f(r['criterion'])} |")
    lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def _torch_version() -> str:
    import torch
    return torch.__version__


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="~1-2 min smoke version (digits only)")
    p.add_argument("--datasets", nargs="+", default=None, choices=tuple(DEFAULT),
                   help="datasets (default: digits mnist5k; --quick: digits)")
    p.add_argument("--epochs", type=int, default=None, help="override the epochs of every dataset")
    p.add_argument("--lrs", type=float, nargs="+", default=None, help="learning-rate grid")
    p.add_argument("--reduction", choices=("sum", "mean", "sqrt_mean"), default="sqrt_mean",
                   help="reduction of the per-example errors (sqrt_mean: the paper's setting)")
    p.add_argument("--lam", type=float, default=1.0, help="lambda of every model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default=str(ROOT / "runs" / "paper_tables"),
                   help="where the runs' directories go")
    p.add_argument("--out", default=None, help="markdown file to write")
    p.add_argument("--from-json", default=None,
                   help="rewrite the markdown from a results.json of an earlier run (no training)")
    args = p.parse_args(argv)

    import torch
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    spec = QUICK if args.quick else DEFAULT
    names = args.datasets or list(spec)
    datasets = {ds: dict(spec.get(ds, DEFAULT[ds])) for ds in names}
    if args.epochs:
        for v in datasets.values():
            v["epochs"] = args.epochs
    lrs = tuple(args.lrs or (QUICK_LRS if args.quick else DEFAULT_LRS))
    rows = QUICK_ROWS if args.quick else ROWS
    runs = Path(args.runs) / ("quick" if args.quick else "full")
    out = Path(args.out) if args.out else (ROOT / "runs" / "paper_tables_quick.md" if args.quick
                                           else HERE / "results" / "paper_tables.md")
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        for r in results:
            r["criterion"] = criterion(r)
        secs = sum(r["seconds"] for r in results)
        write_markdown(out, results, select(results), datasets=datasets, lrs=lrs,
                       reduction=args.reduction, lam=args.lam, seed=args.seed, seconds=secs,
                       quick=args.quick)
        print(f"wrote {out} from {args.from_json}")
        return 0
    t0 = time.perf_counter()
    results = run_grid(datasets, rows, lrs, runs=runs, seed=args.seed, reduction=args.reduction,
                       lam=args.lam, log=lambda s: print(s, flush=True))
    chosen = select(results)
    secs = time.perf_counter() - t0
    write_markdown(out, results, chosen, datasets=datasets, lrs=lrs, reduction=args.reduction,
                   lam=args.lam, seed=args.seed, seconds=secs, quick=args.quick)
    (runs / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {out} ({secs / 60:.1f} min)")
    for s in trend_sentences(chosen)[:2]:
        print(s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
