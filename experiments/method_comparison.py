"""MoW against exact-gradient n-batch training (minibatch, gradient caching): the honest
comparison, with the theory's prediction (docs/theory.md, "Reduction matters").

Rows (every row: Adam, lr 1e-3, ``sqrt_mean`` reduction of the per-example summed squared
errors, lambda = 1 unless stated, n = 64):

- ``minibatch n=64``: standard training (``--method minibatch``);
- ``gradcache n=64 (c=1)``: the same step and gradient, one example's activations at a time;
- ``MoW k=1``: MoW_1(64) with the paper's (the authors' code) settings: refresh ``pre``,
  the window drawn from N(0, I) at the start of every epoch (``init="prior"``);
- ``MoW k=1 balanced``: the same with the F-term scaled by n/k = 64;
- ``minibatch n=64, lambda/64``: standard training with the regulariser weight lambda·k/n,
  what the theorem says MoW_1(64) with a mean-type reduction behaves like.

Budgets. **Equal examples read** (the same epochs for every row: MoW k=1 then makes 64 times
more optimizer steps than the n-batch rows); on the datasets marked ``equal_steps`` also
**equal optimizer steps**: ``minibatch n=64`` and ``minibatch n=64, lambda/64`` trained for
(at least) as many steps as MoW k=1 made (64 times the examples). The prediction
lambda·k/n is judged on the equal-steps rows: by the theorem MoW_1(64)'s step has the drift
of a standard step with lambda/64, step for step.

Metrics (test split, :mod:`mowtheory.train.metrics`): reconstruction error, WAE-MMD and CW
distances of the test latents to N(0, I), FD-small-classifier (Fréchet distance in the
features of a small classifier trained on the same data; not FID), training wall time, and
the tensor peak of one training step (:class:`mowtheory.memory.TensorPeak`, steady
state: parameters, gradients, Adam state, window, activations). Mean ± 95 % CI (Student t)
over the seeds.

Usage::

    python experiments/method_comparison.py            # default: ~30 min on 2 free cores
    python experiments/method_comparison.py --quick    # a few minutes (digits, 3 seeds)
    python experiments/method_comparison.py --datasets digits   # a reduced configuration

Writes ``experiments/results/method_comparison.{md,json,png}`` (``--quick``:
``runs/method_comparison_quick.*``); every run's directory goes under ``runs/`` (git-ignored).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

MODELS = ("wae", "cwae")
N = 64
LR = 1e-3


def make_rows(n: int) -> dict:
    """label -> TrainConfig overrides of the rows, for batch size ``n``."""
    return {
        f"minibatch n={n}": dict(method="minibatch"),
        f"gradcache n={n} (c=1)": dict(method="gradcache", chunk=1),
        "MoW k=1": dict(method="mow", k=1, refresh="pre", init="prior"),
        "MoW k=1 balanced": dict(method="mow", k=1, refresh="pre", init="prior", balanced=True),
        f"minibatch n={n}, λ/{n}": dict(method="minibatch", lam_scale=1 / n),
    }


#: label -> TrainConfig overrides (rebuilt by ``--n``)
ROWS = make_rows(N)
#: the rows trained again with MoW k=1's number of optimizer steps
STEP_ROWS = (f"minibatch n={N}", f"minibatch n={N}, λ/{N}")
METRICS = ("recon_error", "wae_distance", "cw_distance", "FD-small-classifier")

DEFAULT = {
    "digits": {"epochs": 2, "limit": None, "eval_limit": 360, "equal_steps": True},
    "mnist5k": {"epochs": 1, "limit": 2000, "eval_limit": 500, "equal_steps": False},
}
QUICK = {"digits": {"epochs": 1, "limit": 640, "eval_limit": 200, "equal_steps": True}}


# ------------------------------------------------------------------------------ statistics
def t_quantile(df: int) -> float:
    """0.975 quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t
    return float(t.ppf(0.975, df))


def mean_ci(xs) -> tuple:
    """(mean, half-width of the 95 % CI) over finite values; half-width None with < 2."""
    xs = [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    if not xs:
        return None, None
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, None
    return m, t_quantile(len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))


def diff_ci(a, b) -> tuple:
    """Mean of ``a - b`` and its 95 % CI half-width (Welch), over finite values."""
    a = [x for x in a if isinstance(x, (int, float)) and math.isfinite(x)]
    b = [x for x in b if isinstance(x, (int, float)) and math.isfinite(x)]
    if len(a) < 2 or len(b) < 2:
        return None, None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return statistics.fmean(a) - statistics.fmean(b), 0.0
    df = (va + vb) ** 2 / ((va ** 2 / (len(a) - 1) if va else 0) +
                           (vb ** 2 / (len(b) - 1) if vb else 0))
    return statistics.fmean(a) - statistics.fmean(b), t_quantile(max(1, int(df))) * se


def verdict(a, b) -> str:
    """``"lower"``/``"higher"`` when the CI of mean(a) - mean(b) excludes 0, else
    ``"unresolved"``; ``"INCONCLUSIVE"`` when it cannot be computed."""
    d, h = diff_ci(a, b)
    if d is None or h is None:
        return "INCONCLUSIVE"
    if d + h < 0:
        return "lower"
    if d - h > 0:
        return "higher"
    return "unresolved"


# ------------------------------------------------------------------------------ runs
def _config(ds: str, spec: dict, model: str, label: str, seed: int, *, runs: Path,
            epochs: int, budget: str, fd: bool):
    from mowtheory.train import TrainConfig
    kw = dict(ROWS[label])
    lam = kw.pop("lam_scale", 1.0)
    tag = f"{model}-{label}-{budget}-s{seed}".replace(" ", "_").replace("/", "_")
    return TrainConfig(
        model=model, dataset=ds, n=N, lr=LR, optimizer="adam", epochs=epochs,
        limit=spec["limit"], eval_limit=spec["eval_limit"], lam=lam, reduction="sqrt_mean",
        seed=seed, out=str(runs / ds / tag), cache_dir=str(runs / "cache"), fd=fd,
        images=False, overwrite=True, progress=False, **kw)


def step_peak_mb(cfg, steps: int = 2) -> float | None:
    """Tensor peak (MB) of ``steps`` training steps of ``cfg``'s method and model in the
    steady state (after one step; parameters, gradients and optimizer state counted)."""
    import torch
    from mowtheory.train import methods
    from mowtheory.train.data import load_dataset
    from mowtheory.memory import TensorPeak
    from mowtheory.train.models import build_autoencoder
    from mowtheory.train.trainer import build_cost

    x = load_dataset(cfg.dataset, split="train", seed=cfg.seed, limit=cfg.limit)
    torch.manual_seed(cfg.seed)
    with TensorPeak() as tp:
        model = _model(cfg, x, build_autoencoder)
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        cost = build_cost(cfg.model, generator=gen)
        step = methods.build(cfg.method, model.encode, cost, n=cfg.n, k=cfg.k, chunk=cfg.chunk,
                             latent_dim=model.latent_dim, per_example=_recon(model),
                             reduction=cfg.reduction, balanced=cfg.balanced,
                             refresh=cfg.refresh, generator=gen, device="cpu", lam=cfg.lam)
        step.init_window("prior")                  # MoW: window from N(0, I); others: none
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        per = step.examples_per_step
        for i in range(steps + 1):
            step.step(x[torch.arange(i * per, (i + 1) * per) % len(x)], opt)
    return None if tp.peak_bytes is None else tp.peak_bytes / 2 ** 20


def _model(cfg, x, build_autoencoder):
    from mowtheory.train.data import DATASETS
    return build_autoencoder(DATASETS[cfg.dataset]["default_arch"], channels=x.shape[1])


def _recon(model):
    def G(x, z):
        return (model.decode(z) - x).pow(2).flatten(1).sum(1)
    return G


def late_change(out) -> float | None:
    """Plateau indicator: relative drop of the test reconstruction error over the last
    quarter of the run's evaluations (one a epoch; at least the last two), from
    ``metrics.jsonl``; None with fewer than two evaluations."""
    try:
        lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
        rec = [json.loads(s).get("recon_error") for s in lines if s.strip()]
    except (OSError, ValueError):
        return None
    rec = [r for r in rec if isinstance(r, (int, float)) and math.isfinite(r)]
    if len(rec) < 2:
        return None
    j = max(1, len(rec) // 4)
    return (rec[-1 - j] - rec[-1]) / abs(rec[-1])


def run_all(datasets: dict, seeds, models=MODELS, *, runs: Path, fd: bool,
            log=print) -> list[dict]:
    from mowtheory.train import train

    jobs = []
    for ds, spec in datasets.items():
        for model in models:
            for seed in seeds:
                for label in ROWS:
                    jobs.append((ds, model, seed, label, "examples", spec["epochs"]))
    results, mow_steps = [], {}
    t_all = time.perf_counter()

    def one(ds, model, seed, label, budget, epochs):
        spec = datasets[ds]
        cfg = _config(ds, spec, model, label, seed, runs=runs, epochs=epochs, budget=budget,
                      fd=fd)
        t0 = time.perf_counter()
        try:
            rep = train(cfg)
            fm, status, steps = rep["final_metrics"], rep["status"], rep["step"]
            secs, examples = rep["train_seconds"], rep["examples_seen"]
        except Exception as exc:  # noqa: BLE001 - a diverged run is a result too
            fm, status, steps, secs, examples = {}, f"failed: {exc}", None, None, None
        row = {"dataset": ds, "model": model, "row": label, "budget": budget, "seed": seed,
               "epochs": epochs, "status": status, "steps": steps, "examples": examples,
               "train_seconds": secs, "lam": cfg.lam, "late_change": late_change(cfg.out),
               **{m: fm.get(m) for m in METRICS}, "latent_norm_mean": fm.get("latent_norm_mean")}
        results.append(row)
        log(f"[{len(results)}] {ds} {model} {label} ({budget}) seed {seed}: "
            f"rec={_f(row['recon_error'])} wae={_f(row['wae_distance'])} "
            f"cw={_f(row['cw_distance'])} steps={steps} ({time.perf_counter() - t0:.1f} s, "
            f"{(time.perf_counter() - t_all) / 60:.1f} min so far)")
        return row

    for job in jobs:
        row = one(*job)
        if row["row"] == "MoW k=1" and row["steps"]:
            mow_steps[(row["dataset"], row["model"], row["seed"])] = row["steps"]
    for ds, spec in datasets.items():
        if not spec["equal_steps"]:
            continue
        from mowtheory.train.data import load_dataset
        n_train = len(load_dataset(ds, split="train", seed=0, limit=spec["limit"]))
        per_epoch = n_train // N
        for model in models:
            for seed in seeds:
                target = mow_steps.get((ds, model, seed))
                if not target:
                    continue
                for label in STEP_ROWS:
                    one(ds, model, seed, label, "steps", math.ceil(target / per_epoch))
    return results


def measure_memory(datasets: dict, models=MODELS, *, runs: Path, log=print) -> dict:
    """Tensor peak of a training step per (dataset, model, row)."""
    out = {}
    for ds, spec in datasets.items():
        for model in models:
            for label in ROWS:
                cfg = _config(ds, spec, model, label, 0, runs=runs, epochs=1,
                              budget="memory", fd=False)
                out[f"{ds}/{model}/{label}"] = step_peak_mb(cfg)
        log(f"step tensor peaks ({ds}): " + ", ".join(
            f"{k.split('/', 2)[2]} {_f(v)} MB" for k, v in out.items() if k.startswith(ds)))
    return out


# ------------------------------------------------------------------------------ summary
def _f(v, digits=4):
    if isinstance(v, float):
        return f"{v:.{digits}g}" if math.isfinite(v) else str(v)
    return "—" if v is None else str(v)


def _pm(xs, digits=3) -> str:
    m, h = mean_ci(xs)
    if m is None:
        return "—"
    return f"{m:.{digits}g}" + ("" if h is None else f" ± {h:.{digits - 1 if digits > 2 else 1}g}")


def _pct(xs) -> str:
    xs = [100 * x for x in xs if x is not None]
    return (_pm(xs, 2) + " %") if xs else "—"


def group(results, ds, model, label, budget="examples", key="recon_error"):
    return [r.get(key) for r in results if r["dataset"] == ds and r["model"] == model
            and r["row"] == label and r["budget"] == budget]


def findings(results: list[dict], memory: dict) -> dict:
    """The verdicts the note states, computed from the results."""
    pairs = sorted({(r["dataset"], r["model"]) for r in results})
    out = {"table1": [], "prediction": [], "gradcache": [], "balanced": []}
    for ds, model in pairs:
        def g(label, key, budget="examples"):
            return group(results, ds, model, label, budget, key)
        rec = verdict(g("MoW k=1", "recon_error"), g(f"minibatch n={N}", "recon_error"))
        wae = verdict(g("MoW k=1", "wae_distance"), g(f"minibatch n={N}", "wae_distance"))
        cw = verdict(g("MoW k=1", "cw_distance"), g(f"minibatch n={N}", "cw_distance"))
        out["table1"].append({"dataset": ds, "model": model, "budget": "examples",
                              "recon": rec, "wae": wae, "cw": cw,
                              "trend": rec == "lower" and wae == "higher" and cw == "higher"})
        if g(f"minibatch n={N}", "recon_error", "steps"):
            rec_s = verdict(g("MoW k=1", "recon_error"), g(f"minibatch n={N}", "recon_error", "steps"))
            wae_s = verdict(g("MoW k=1", "wae_distance"),
                            g(f"minibatch n={N}", "wae_distance", "steps"))
            cw_s = verdict(g("MoW k=1", "cw_distance"), g(f"minibatch n={N}", "cw_distance", "steps"))
            out["table1"].append({"dataset": ds, "model": model, "budget": "steps",
                                  "recon": rec_s, "wae": wae_s, "cw": cw_s,
                                  "trend": rec_s == "lower" and wae_s == "higher"
                                  and cw_s == "higher"})
            pred = {}
            for key in ("recon_error", "wae_distance", "cw_distance"):
                mow = mean_ci(g("MoW k=1", key))[0]
                small = mean_ci(g(f"minibatch n={N}, λ/{N}", key, "steps"))[0]
                full = mean_ci(g(f"minibatch n={N}", key, "steps"))[0]
                if None in (mow, small, full):
                    pred[key] = "INCONCLUSIVE"
                    continue
                pred[key] = {"mow": mow, "lam_k_over_n": small, "lam": full,
                             "closer_to_lam_k_over_n": abs(mow - small) < abs(mow - full),
                             "vs_lam_k_over_n": verdict(g("MoW k=1", key),
                                                       g(f"minibatch n={N}, λ/{N}", key, "steps"))}
            out["prediction"].append({"dataset": ds, "model": model, **pred})
        gcr = {key: verdict(g(f"gradcache n={N} (c=1)", key), g(f"minibatch n={N}", key))
               for key in ("recon_error", "cw_distance")}
        t_gc, t_mb = mean_ci(g(f"gradcache n={N} (c=1)", "train_seconds"))[0], \
            mean_ci(g(f"minibatch n={N}", "train_seconds"))[0]
        t_mow = mean_ci(g("MoW k=1", "train_seconds"))[0]
        mem = {label: memory.get(f"{ds}/{model}/{label}") for label in ROWS}
        out["gradcache"].append({"dataset": ds, "model": model, "metrics_vs_minibatch": gcr,
                                 "time_ratio_vs_minibatch": (t_gc / t_mb if t_gc and t_mb
                                                             else None),
                                 "time_ratio_vs_mow": t_gc / t_mow if t_gc and t_mow else None,
                                 "memory_mb": mem})
        norm_b = mean_ci(g("MoW k=1 balanced", "latent_norm_mean"))[0]
        norm_m = mean_ci(g(f"minibatch n={N}", "latent_norm_mean"))[0]
        out["balanced"].append({"dataset": ds, "model": model,
                                "cw_vs_minibatch": verdict(g("MoW k=1 balanced", "cw_distance"),
                                                           g(f"minibatch n={N}", "cw_distance")),
                                "latent_norm": norm_b, "latent_norm_minibatch": norm_m})
    return out


def _yes(n_true: int, n_all: int) -> str:
    return f"{n_true} of {n_all}"


def summary_lines(fnd: dict) -> list[str]:
    """Plain statements of the findings (each from the numbers, never assumed)."""
    out = []
    ex = [t for t in fnd["table1"] if t["budget"] == "examples"]
    st = [t for t in fnd["table1"] if t["budget"] == "steps"]
    out.append(
        f"- **Paper's Table 1 trend** (MoW k=1 against minibatch n={N}: lower reconstruction error "
        f"*and* larger WAE and CW distances, each difference with its 95 % CI excluding 0): "
        f"at equal examples it appears in {_yes(sum(t['trend'] for t in ex), len(ex))} "
        f"(dataset, model) pairs; lower reconstruction error in "
        f"{_yes(sum(t['recon'] == 'lower' for t in ex), len(ex))}, larger CW distance in "
        f"{_yes(sum(t['cw'] == 'higher' for t in ex), len(ex))}, larger WAE distance in "
        f"{_yes(sum(t['wae'] == 'higher' for t in ex), len(ex))}." + (
            f" At equal optimizer steps it appears in {_yes(sum(t['trend'] for t in st), len(st))} "
            f"(lower reconstruction error in {_yes(sum(t['recon'] == 'lower' for t in st), len(st))}"
            f", larger CW distance in {_yes(sum(t['cw'] == 'higher' for t in st), len(st))})."
            if st else ""))
    for t in fnd["table1"]:
        out.append(f"  - {t['dataset']}/{t['model'].upper()} ({t['budget']}): MoW k=1 vs "
                   f"minibatch: reconstruction {t['recon']}, WAE distance {t['wae']}, CW "
                   f"distance {t['cw']}.")
    preds = [p for p in fnd["prediction"]]
    if preds:
        n_closer = sum(isinstance(p.get(k), dict) and p[k]["closer_to_lam_k_over_n"]
                       for p in preds for k in ("recon_error", "wae_distance", "cw_distance"))
        n_all = sum(isinstance(p.get(k), dict) for p in preds
                    for k in ("recon_error", "wae_distance", "cw_distance"))
        n_same = sum(isinstance(p.get(k), dict) and p[k]["vs_lam_k_over_n"] == "unresolved"
                     for p in preds for k in ("recon_error", "wae_distance", "cw_distance"))
        out.append(
            f"- **λ·k/n prediction** (MoW_1({N}) ≈ minibatch with λ/{N}, step for step; judged "
            f"at equal optimizer steps): MoW k=1 is closer to minibatch λ/{N} than to minibatch λ in "
            f"{_yes(n_closer, n_all)} (metric, dataset, model) cases, and statistically "
            f"indistinguishable from λ/{N} (95 % CI of the difference contains 0) in "
            f"{_yes(n_same, n_all)}.")
        for p in preds:
            parts = []
            for k in ("recon_error", "wae_distance", "cw_distance"):
                v = p.get(k)
                if isinstance(v, dict):
                    parts.append(f"{k} MoW {_f(v['mow'])} / λ/{N} {_f(v['lam_k_over_n'])} / λ "
                                 f"{_f(v['lam'])} ({v['vs_lam_k_over_n']} vs λ/{N})")
                else:
                    parts.append(f"{k} {v}")
            out.append(f"  - {p['dataset']}/{p['model'].upper()}: " + "; ".join(parts) + ".")
    for gcr in fnd["gradcache"]:
        mem = gcr["memory_mb"]
        mb, gcm, mow = (mem.get(f"minibatch n={N}"), mem.get(f"gradcache n={N} (c=1)"),
                        mem.get("MoW k=1"))
        out.append(
            f"- **gradcache** {gcr['dataset']}/{gcr['model'].upper()}: metrics vs minibatch: "
            f"reconstruction {gcr['metrics_vs_minibatch']['recon_error']}, CW distance "
            f"{gcr['metrics_vs_minibatch']['cw_distance']} (same gradient: expected "
            f"'unresolved'); wall time {_f(gcr['time_ratio_vs_minibatch'], 3)}× minibatch's, "
            f"{_f(gcr['time_ratio_vs_mow'], 3)}× MoW k=1's; step tensor peak {_f(gcm, 3)} MB "
            f"vs minibatch {_f(mb, 3)} MB and MoW k=1 {_f(mow, 3)} MB.")
    for b in fnd["balanced"]:
        out.append(
            f"- **balanced MoW** {b['dataset']}/{b['model'].upper()}: CW distance vs minibatch "
            f"{b['cw_vs_minibatch']}; mean test latent norm {_f(b['latent_norm'], 3)} (minibatch "
            f"{_f(b['latent_norm_minibatch'], 3)}).")
    return out


def write_markdown(path: Path, results, memory, fnd, *, datasets, seeds, seconds, quick,
                   command, pending=()) -> None:
    from mowtheory._io import atomic_write_text
    lines = [
        "# Which method? MoW against minibatch and gradient-cached n-batch training",
        "",
        f"Generated by `{command}` in {seconds / 60:.1f} min (torch {_torch()}, "
        f"{os.cpu_count()} CPU cores, 1 torch thread, shared machine)"
        + (" — **quick smoke configuration, not the study**." if quick else "."),
        "",
        f"Protocol: Adam, lr {LR:g}, n = {N}, reduction `sqrt_mean` (the paper's), λ = 1 unless "
        "stated; seeds " + ", ".join(map(str, seeds)) + f" ({len(seeds)} seeds; mean ± 95 % CI, "
        "Student t); metrics on the test split; FD-small-classifier is a Fréchet distance in the "
        "features of a small classifier trained on the same data (**not FID**). MoW k=1 uses "
        "the authors' settings: refresh `pre`, window drawn from N(0, I) each epoch.",
        "",
        "*Late drop of rec. error*: relative decrease of the test reconstruction error over "
        "the last quarter of the run's per-epoch evaluations (at least the last epoch): near "
        "0 % = plateau, large = still improving when the budget ended.",
        "",
        "Budgets: **examples** = every row reads the same training examples (same epochs; MoW "
        f"k=1 then makes {N}× the optimizer steps of an n-batch row). **steps** = minibatch rows "
        f"trained for at least as many optimizer steps as MoW k=1 made ({N}× the examples).",
        "",
        "Data: " + "; ".join(
            f"`{ds}`: {s['epochs']} epoch(s), {'all' if s['limit'] is None else s['limit']} "
            f"training examples, {s['eval_limit']} test examples"
            + (", equal-steps rows too" if s["equal_steps"] else "")
            for ds, s in datasets.items()) + "."
        + (f" **Not finished** (the run was stopped before them): {', '.join(pending)}."
           if pending else ""),
        "",
        "## Findings (computed from the table below)",
        "",
        *summary_lines(fnd),
        "",
        "## When to choose which (from these measurements)",
        "",
        *advice(fnd),
        "",
    ]
    for ds in datasets:
        lines += [f"## {ds}", "",
                  "| model | row | budget | steps | reconstruction error | WAE distance | "
                  "CW distance | FD-small-classifier | train time (s) | step tensor peak (MB) | "
                  "late drop of rec. error |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for model in sorted({r["model"] for r in results if r["dataset"] == ds}):
            for budget in ("examples", "steps"):
                for label in ROWS:
                    rs = [r for r in results if r["dataset"] == ds and r["model"] == model
                          and r["row"] == label and r["budget"] == budget]
                    if not rs:
                        continue
                    steps = sorted({r["steps"] for r in rs if r["steps"]})
                    failed = [r for r in rs if r["status"] != "completed"]
                    mem = memory.get(f"{ds}/{model}/{label}") if budget == "examples" else None
                    lines.append(
                        f"| {model.upper()} | {label} | {budget} | "
                        f"{'/'.join(map(str, steps)) or '—'} | "
                        + " | ".join(_pm(group(results, ds, model, label, budget, m))
                                     for m in METRICS)
                        + f" | {_pm(group(results, ds, model, label, budget, 'train_seconds'))}"
                        + f" | {_f(mem, 3)} | "
                        + _pct(group(results, ds, model, label, budget, "late_change"))
                        + " |"
                        + (f" ({len(failed)} failed)" if failed else ""))
        lines.append("")
    lines += ["## Every run", "", "| dataset | model | row | budget | seed | status | steps | "
              "reconstruction | WAE | CW | FD | mean latent norm | seconds |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['row']} | {r['budget']} | {r['seed']} | "
            f"{r['status'][:60]} | {r['steps']} | {_f(r['recon_error'])} | "
            f"{_f(r['wae_distance'])} | {_f(r['cw_distance'])} | "
            f"{_f(r['FD-small-classifier'])} | {_f(r['latent_norm_mean'], 3)} | "
            f"{_f(r['train_seconds'], 3)} |")
    atomic_write_text(path, "\n".join(lines) + "\n")


def advice(fnd: dict) -> list[str]:
    """Guidance that follows from the measured verdicts (each sentence states its evidence)."""
    out = []
    same = [g for g in fnd["gradcache"]
            if all(v == "unresolved" for v in g["metrics_vs_minibatch"].values())]
    tr = [g["time_ratio_vs_minibatch"] for g in fnd["gradcache"] if g["time_ratio_vs_minibatch"]]
    out.append(
        f"- **minibatch** when n examples' activations fit in memory: it is the exact n-batch "
        f"step at the lowest wall time (gradcache took {min(tr):.1f}–{max(tr):.1f}× its time "
        f"here)." if tr else "- **minibatch**: no timing available.")
    out.append(
        f"- **gradcache** when they do not fit: the same training (metrics indistinguishable from "
        f"minibatch in {len(same)} of {len(fnd['gradcache'])} pairs) with a step tensor peak of "
        f"one chunk, at about one extra encoder forward per example (on these tiny models the "
        f"per-example passes are dispatch-bound, hence the large time ratio; on a large conv "
        f"model see `experiments/results/benchmarks.md`, section gradcache).")
    ex = [t for t in fnd["table1"] if t["budget"] == "examples"]
    st = [t for t in fnd["table1"] if t["budget"] == "steps"]
    closer = [p for p in fnd["prediction"]
              if all(isinstance(p.get(k), dict) and p[k]["closer_to_lam_k_over_n"]
                     for k in ("recon_error", "cw_distance"))]
    out.append(
        f"- **MoW k=1** trains a *different* objective balance: lower reconstruction error "
        f"than minibatch at equal examples in {sum(t['recon'] == 'lower' for t in ex)} of "
        f"{len(ex)} pairs"
        + (f" (at equal steps in {sum(t['recon'] == 'lower' for t in st)} of {len(st)})"
           if st else "")
        + f", and its metrics sit closer to minibatch with λ/{N} than with λ (reconstruction "
        f"and CW distance) in {len(closer)} of {len(fnd['prediction'])} pairs where that was "
        f"measured."
        + (f" Given as many optimizer steps, minibatch had the lower reconstruction error in "
           f"{sum(t['recon'] == 'higher' for t in st)} of {len(st)} pairs and the smaller CW "
           f"distance in {sum(t['cw'] == 'higher' for t in st)} of {len(st)}: MoW's advantage "
           f"at equal examples is its {N}× more optimizer steps, not a better step."
           if st else "")
        + " Choose MoW for its memory and its per-example cost (k examples' activations, no "
        "n inputs held, one pass per example) when n examples a step do not fit and the n "
        "examples cannot be revisited (a stream), or when the budget is examples rather "
        "than steps; otherwise minibatch (or gradcache) trains the standard objective, and "
        + ("λ·k/n is a fair translation of MoW into it in these runs (above)."
           if fnd["prediction"] and 2 * len(closer) > len(fnd["prediction"]) else
           "λ·k/n was not a reliable translation of MoW into it in these runs (above)."))
    bal = [b for b in fnd["balanced"] if b["cw_vs_minibatch"] == "higher"]
    out.append(
        f"- **balanced MoW** (F scaled by n/k) is not a substitute for n-batch training at these "
        f"learning rates: its CW distance is larger than minibatch's in {len(bal)} of "
        f"{len(fnd['balanced'])} pairs (see the mean latent norms above; "
        f"`experiments/results/balanced_stability.md` for the delay instability).")
    return out


def plot(path: Path, results, datasets) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mowtheory._io import atomic_open

    labels = list(ROWS)
    combos = [(ds, m) for ds in datasets for m in MODELS
              if any(r["dataset"] == ds and r["model"] == m for r in results)]
    fig, axes = plt.subplots(2, len(combos), figsize=(4.2 * len(combos), 6.5), squeeze=False)
    for j, (ds, model) in enumerate(combos):
        for i, key in enumerate(("recon_error", "cw_distance")):
            ax = axes[i][j]
            xs, ms, hs, cols = [], [], [], []
            for budget, col in (("examples", "C0"), ("steps", "C1")):
                for li, label in enumerate(labels):
                    m, h = mean_ci(group(results, ds, model, label, budget, key))
                    if m is None:
                        continue
                    xs.append(li + (0.2 if budget == "steps" else -0.2))
                    ms.append(m)
                    hs.append(h or 0.0)
                    cols.append(col)
            ax.bar(xs, ms, width=0.38, yerr=hs, color=cols, capsize=3)
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels([s.replace(f" n={N}", "").replace(" (c=1)", "") for s in labels],
                               rotation=35, ha="right", fontsize=8)
            ax.set_title(f"{ds} {model.upper()}: {key}", fontsize=9)
    axes[0][0].legend(handles=[plt.Rectangle((0, 0), 1, 1, color="C0"),
                               plt.Rectangle((0, 0), 1, 1, color="C1")],
                      labels=["equal examples", "equal steps"], fontsize=8)
    fig.suptitle("mean ± 95 % CI over seeds", fontsize=9)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def write_outputs(out: Path, *, command, seconds, datasets, seeds, results, memory, fnd,
                  quick, pending) -> None:
    """The markdown, JSON and PNG of the datasets finished so far."""
    from mowtheory._io import atomic_write_json
    atomic_write_json(out.with_suffix(".json"), {
        "command": command, "seconds": seconds, "datasets": datasets, "seeds": seeds,
        "n": N, "pending_datasets": pending, "rows": ROWS, "results": results,
        "step_tensor_peak_mb": memory, "findings": fnd})
    write_markdown(out, results, memory, fnd, datasets=datasets, seeds=seeds, seconds=seconds,
                   quick=quick, command=command, pending=pending)
    plot(out.with_suffix(".png"), results, datasets)


def _merged(out: Path, names: list, seeds: list, command: str) -> tuple:
    """The results of the datasets not in ``names`` from the JSON beside ``out`` (``--merge``)."""
    path = out.with_suffix(".json")
    if not path.exists():
        raise SystemExit(f"--merge: no earlier results at {path}; run without --merge first")
    doc = json.loads(path.read_text())
    if doc.get("seeds") != seeds or int(doc.get("n", 64)) != N:     # older files: n = 64
        raise SystemExit(f"--merge: {path} has seeds {doc.get('seeds')} and n {doc.get('n')}; "
                         f"this run has seeds {seeds} and n {N}: pass the same --seeds/--n")
    keep = [d for d in doc["datasets"] if d not in names]
    results = [r for r in doc["results"] if r["dataset"] in keep]
    memory = {key: v for key, v in doc["step_tensor_peak_mb"].items()
              if key.split("/", 1)[0] in keep}
    done = {d: doc["datasets"][d] for d in keep}
    return results, memory, done, float(doc["seconds"] or 0.0), f"{doc['command']}; {command}"


def _torch() -> str:
    import torch
    return torch.__version__


def main(argv=None) -> int:
    global N, ROWS, STEP_ROWS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke version (digits, small)")
    p.add_argument("--datasets", nargs="+", default=None, choices=tuple(DEFAULT),
                   help="datasets (default: digits mnist5k; --quick: digits)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (>= 2 for a CI)")
    p.add_argument("--n", type=int, default=N, help="batch size n (the paper's: 64)")
    p.add_argument("--limit", type=int, default=None, help="override the training examples")
    p.add_argument("--epochs", type=int, default=None, help="override the epochs")
    p.add_argument("--eval-limit", type=int, default=None, help="override the test examples")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS,
                   help="models (default: wae cwae)")
    p.add_argument("--no-fd", dest="fd", action="store_false", help="skip the FD metric")
    p.add_argument("--runs", default=str(ROOT / "runs" / "method_comparison"),
                   help="where the runs' directories go")
    p.add_argument("--out", default=None, help="markdown file (the .json and .png beside it)")
    p.add_argument("--merge", action="store_true",
                   help="keep the other datasets' results found in the JSON beside --out (a "
                        "sweep finished one dataset at a time); --seeds and --n must match")
    p.add_argument("--from-json", default=None, metavar="PATH",
                   help="rewrite the markdown and the plot from the JSON of an earlier run "
                        "(no training)")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1; got {args.seeds}")
    for name in ("limit", "epochs", "eval_limit"):
        v = getattr(args, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1; got {v}")

    if args.n < 2:
        p.error(f"--n must be >= 2; got {args.n}")
    N, ROWS = args.n, make_rows(args.n)
    STEP_ROWS = (f"minibatch n={N}", f"minibatch n={N}, λ/{N}")

    import torch
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    spec = QUICK if args.quick else DEFAULT
    names = args.datasets or list(spec)
    datasets = {ds: dict(spec.get(ds, DEFAULT[ds])) for ds in names}
    for v in datasets.values():
        if args.limit:
            v["limit"] = args.limit
        if args.epochs:
            v["epochs"] = args.epochs
        if args.eval_limit:
            v["eval_limit"] = args.eval_limit
    models = tuple(args.models)
    out = Path(args.out) if args.out else (
        ROOT / "runs" / "method_comparison_quick.md" if args.quick
        else HERE / "results" / "method_comparison.md")
    runs = Path(args.runs) / ("quick" if args.quick else "full")
    seeds = list(range(args.seeds))
    command = "python experiments/method_comparison.py" + (
        " " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    if args.from_json:
        doc = json.loads(Path(args.from_json).read_text())
        N, ROWS = int(doc.get("n", 64)), make_rows(int(doc.get("n", 64)))
        STEP_ROWS = (f"minibatch n={N}", f"minibatch n={N}, λ/{N}")
        fnd = findings(doc["results"], doc["step_tensor_peak_mb"])
        write_markdown(out, doc["results"], doc["step_tensor_peak_mb"], fnd,
                       datasets=doc["datasets"], seeds=doc["seeds"], seconds=doc["seconds"],
                       quick=args.quick, command=doc["command"],
                       pending=doc.get("pending_datasets", []))
        plot(out.with_suffix(".png"), doc["results"], doc["datasets"])
        print(f"wrote {out} and {out.with_suffix('.png').name} from {args.from_json}")
        return 0
    t0 = time.perf_counter()
    results, memory, done, seconds0 = [], {}, {}, 0.0
    if args.merge:
        results, memory, done, seconds0, command = _merged(out, names, seeds, command)
    for ds, spec in datasets.items():        # one dataset at a time; files written after each
        results += run_all({ds: spec}, seeds, models, runs=runs, fd=args.fd,
                           log=lambda s: print(s, flush=True))
        memory.update(measure_memory({ds: spec}, models, runs=runs,
                                     log=lambda s: print(s, flush=True)))
        done[ds] = spec
        fnd = findings(results, memory)
        secs = seconds0 + time.perf_counter() - t0
        write_outputs(out, command=command, seconds=secs, datasets=done, seeds=seeds,
                      results=results, memory=memory, fnd=fnd, quick=args.quick,
                      pending=[d for d in datasets if d not in done])
    print("\n".join(summary_lines(fnd)))
    print(f"wrote {out}, {out.with_suffix('.json').name}, {out.with_suffix('.png').name} "
          f"({secs / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
