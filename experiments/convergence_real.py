"""Theorem 1 on a real autoencoder (the MLP of ``mowtheory.flow.network`` on the bundled digits).

Regenerates ``experiments/results/convergence_real.md``, its JSON and PNGs::

    python experiments/convergence_real.py             # the full sweep (see the .md for its wall time)
    python experiments/convergence_real.py --quick     # 2 costs, (8, 1) only, fewer replicas

For each exact cost (``cw``, ``wae``, ``energy``) and (n, k) in {(8, 1), (16, 4), (64, 1)}: R
replicas of the network at four step sizes against the exact reference ODE
``S' = -(k/n) grad C`` (C from the whole dataset), the strong/weak orders, the bias verdict,
the wrong ODE, and the observables (reconstruction error, F, C). Step sizes for k > 1 are the
k = 1 ones divided by k, and so is the horizon (the flow runs k times faster): the same
numbers of steps. (64, 1) uses 4x smaller steps: its window spans (n - k) eta of time, and
the regime is asymptotic only when that is small; ``cw`` and ``wae`` are run there once more
with the ladder one step further down (8x), to see whether a bias verdict at its threshold
shrinks with eta as a pre-asymptotic term must. The planted faults run at (8, 1) for every
cost. The coupled, reference-free check covers what has no exact reference: ``cwae`` (log)
and the ``sqrt_mean`` reduction. Studies run in ``--jobs`` processes (one torch thread each).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))      # the checkout's package, installed or not
from mowtheory.flow import rates  # noqa: E402
from mowtheory.flow.rates import id_of  # noqa: E402
RESULTS = os.path.join(HERE, "results")
BASE_ETAS = (0.04, 0.02, 0.01, 0.005)
NK = [(8, 1), (16, 4), (64, 1)]


def tiny_specs() -> list:
    """The same code paths at toy sizes (48 rows, 3 hidden units): for the test suite."""
    common = dict(n=8, k=1, etas=[0.04, 0.02, 0.01], horizon=0.4, replicas=32, limit=48,
                  hidden=3)
    out = [dict(kind="study", cost="cw", controls=False, id="00-study-cw-8-1-sum", **common),
           dict(kind="coupled", cost="cwae", reduction="sum", id="01-coupled-cwae-8-1-sum",
                **common)]
    return out


def specs(quick: bool) -> list:
    """The runs, most informative first (the headline study with its faults, the coupled
    check, then the other costs and (n, k)): each is saved as soon as it finishes."""
    out = []
    costs = ("cw", "wae") if quick else ("cw", "wae", "energy")
    for i, cost in enumerate(costs):
        for n, k in (NK[:1] if quick else NK):
            scale = (1 / k) * (0.25 if n == 64 else 1.0)
            out.append(dict(kind="study", cost=cost, n=n, k=k,
                            etas=[e * scale for e in BASE_ETAS], horizon=1.0 / k,
                            replicas=128 if quick else 256, controls=(n, k) == (8, 1),
                            rank=(0 if (n, k) == (8, 1) else 2) + i))
    if not quick:       # wae at (8, 1) is pre-asymptotic at eta = 0.04: the ladder one step down
        out.append(dict(kind="study", cost="wae", n=8, k=1, etas=[e / 2 for e in BASE_ETAS],
                        horizon=1.0, replicas=256, controls=False, rank=5, tag="smaller-eta"))
    for cost, reduction in (("cwae", "sum"), ("cw", "sqrt_mean")):
        out.append(dict(kind="coupled", cost=cost, n=8, k=1, etas=list(BASE_ETAS),
                        horizon=1.0, replicas=256 if quick else 512, reduction=reduction,
                        rank=1))
    if not quick:       # cwae's coupled distance is pre-asymptotic at eta = 0.04 as well
        out.append(dict(kind="coupled", cost="cwae", n=8, k=1, etas=[e / 2 for e in BASE_ETAS],
                        horizon=1.0, replicas=512, reduction="sum", rank=5, tag="smaller-eta"))
    if not quick:       # (64, 1): the bias verdict sits at its threshold; one step further down
        for cost in ("cw", "wae"):
            out.append(dict(kind="study", cost=cost, n=64, k=1,
                            etas=[e / 8 for e in BASE_ETAS], horizon=1.0, replicas=256,
                            controls=False, rank=6, tag="smaller-eta"))
    out.sort(key=lambda s: s["rank"])
    for i, s in enumerate(out):
        s["id"] = (f"{i:02d}-{s['kind']}-{s['cost']}-{s['n']}-{s['k']}-{s.get('reduction', 'sum')}"
                   + (f"-{s['tag']}" if "tag" in s else ""))
    return out


def run_saved(spec: dict, parts: str) -> dict:
    """:func:`run_one`, its result saved under ``parts`` as soon as it is done."""
    from mowtheory._io import atomic_write_json
    out = run_one(spec)
    atomic_write_json(os.path.join(parts, spec["id"] + ".json"), out)
    return out


def run_one(spec: dict) -> dict:
    import torch
    torch.set_num_threads(1)
    from mowtheory.flow.coupled import run_coupled
    from mowtheory.flow.network import network_problem
    from mowtheory.flow.network_study import run_network_study
    t0 = time.perf_counter()
    problem = network_problem("mlp", "digits", spec["cost"], limit=spec.get("limit"),
                              hidden=spec.get("hidden", 16))
    kw = dict(n=spec["n"], k=spec["k"], etas=spec["etas"], horizon=spec["horizon"],
              replicas=spec["replicas"])
    if "limit" in spec:
        kw.update(record=4, bootstrap=20)
    if spec["kind"] == "coupled":
        st = run_coupled(problem, reduction=spec["reduction"], **kw)
        return dict(spec=spec, result=st.to_json(), table=st.table(),
                    wall=time.perf_counter() - t0)
    st = run_network_study(problem, controls=spec["controls"], **kw)
    out = dict(spec=spec, result=st.to_json(), table=st.table(), wall=time.perf_counter() - t0)
    if (spec["n"], spec["k"]) == (8, 1) and "tag" not in spec:
        from mowtheory.flow.plot import plot_network
        out["plot"] = str(plot_network(st, os.path.join(
            spec.get("plots", RESULTS), f"convergence_real_{spec['cost']}.png")))
    return out


def _status(result: dict, vid: str) -> str:
    got = [v for v in result["verdicts"] if id_of(v) == vid]
    return got[0]["status"] if got else "-"


def _is_control(v: dict) -> bool:
    return (id_of(v) or "").startswith("fault.") or id_of(v) == rates.SYMMETRIZED_FOLLOWS


def _order(o: dict) -> str:
    if o.get("estimate") is None:
        return "n/a"
    ci = o.get("ci") or [None, None]
    if ci[0] is None:
        return f"{o['estimate']:.2f}"
    return f"{o['estimate']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def _cost(spec: dict) -> str:
    return spec["cost"] + (f" ({spec['tag']})" if "tag" in spec else "")


def _table(title: str, columns: list) -> list:
    return [f"## {title}", "", "| " + " | ".join(columns) + " |",
            "|" + "---|" * len(columns)]


def _runs(results: list, kind: str) -> list:
    return [r for r in results if r["spec"]["kind"] == kind]


def write_md(results: list, wall: float, quick: bool, missing=()) -> str:
    cfg = next((r["result"]["config"] for r in results if r["spec"]["kind"] == "study"), {})
    lines = ["# Theorem 1 on a real autoencoder", "",
             "Generated by `python experiments/convergence_real.py" + (" --quick" if quick else "")
             + "` (resumable: runs already saved are kept; "
             + (f"this invocation took {wall / 60:.1f} min, " if wall is not None else
                "this file was written by `--report-only`, ")
             + f"the runs' own wall times add up to {sum(r['wall'] for r in results) / 60:.1f} min)"
             + " (processes of one torch thread; the machine and its load are in the note of "
             "the commit that regenerated it).", "",
             "Model: `mlp_autoencoder` (tanh MLP, d -> 16 -> 2 -> 16 -> d, P = "
             f"{cfg.get('n_params')} parameters; d = 48 pixels of the 8x8 digits once the "
             f"rarely-lit ones are dropped), N = {cfg.get('data_rows')} digits, "
             "G = per-pixel squared error, F = the cost (lam = 1), prior: 1,024 fixed N(0, I) "
             "draws. Batches are drawn with replacement, so C(theta) = E[F_n] + n E[G] is exact "
             "(`BatchCost.expected_over_dataset`) and the reference ODE S' = -(k/n) grad C is "
             "solved by DOP853 at rtol 1e-11.", ""]
    if missing:
        lines += ["**Not run** (the sweep was stopped before them; rerun the command to "
                  "complete it): " + ", ".join(f"`{m}`" for m in missing), ""]
    lines += _table("Convergence studies", [
        "cost", "n", "k", "replicas", "etas", "strong order [95% CI]", "weak order [95% CI]",
        "bias floor", "wrong ODE rejected", "observables weak order (recon / F / C)",
        "verdicts passed", "wall"])
    for r in _runs(results, "study"):
        s = r["spec"]
        res, main = r["result"], r["result"]["main"]
        obs = " / ".join(_order(res["observables"][k]["orders"]["weak"])
                         for k in ("recon", "F", "C")) if res["observables"] else "-"
        main_v = [v for v in res["verdicts"] if not _is_control(v)]
        passed = sum(v["status"] == "PASS" for v in main_v)
        bias = main.get("bias_at_zero") or {}
        bias_s = (f"{_status(main, rates.NO_BIAS_FLOOR)} (max z {bias.get('z_max') or 0:.1f}, "
                  f"threshold {bias.get('z_crit') or 0:.1f})" if bias
                  else _status(main, rates.NO_BIAS_FLOOR))
        lines.append(
            f"| {_cost(s)} | {s['n']} | {s['k']} | {s['replicas']} | "
            f"{', '.join(f'{e:g}' for e in s['etas'])} | {_order(main['orders']['strong'])} | "
            f"{_order(main['orders']['weak'])} | {bias_s} | {_status(main, rates.WRONG_ODE)} | "
            f"{obs} | {passed}/{len(main_v)} | {r['wall']:.0f} s |")
    lines += [""] + _table("Planted faults on the network (n = 8, k = 1): each must be rejected",
                           ["cost", "fault", "verdict", "evidence"])
    for r in _runs(results, "study"):
        if not r["spec"]["controls"]:
            continue
        for v in r["result"]["verdicts"]:
            if _is_control(v):
                ev = v["detail"].replace("|", "/")
                lines.append(f"| {r['spec']['cost']} | {v['claim']} | {v['status']} | {ev} |")
    lines += [""] + _table(
        "Coupled, reference-free check (no exact C): MoW against n-batch SGD at eta k/n",
        ["cost", "reduction", "replicas", "distance at each eta", "weak order [95% CI]",
         "partner verdict", "contrast (SGD at eta) rejected", "wall"])
    for r in _runs(results, "coupled"):
        s = r["spec"]
        res = r["result"]
        dist = ", ".join("unstable" if d is None else f"{d:.2e}" for d in res["weak_distance"])
        lines.append(f"| {_cost(s)} | {s['reduction']} | {s['replicas']} | {dist} | "
                     f"{_order(res['order'])} | {res['verdicts'][0]['status']} | "
                     f"{res['verdicts'][1]['status']} | {r['wall']:.0f} s |")
    lines += ["", "## Tables as printed", ""]
    for r in results:
        s = r["spec"]
        lines += [f"### {s['kind']} {_cost(s)} n={s['n']} k={s['k']}"
                  + (f" {s.get('reduction')}" if s["kind"] == "coupled" else ""), "", "```",
                  r["table"], "```", ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="toy sizes, for the test suite")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=RESULTS, help="folder of the .md/.json")
    ap.add_argument("--fresh", action="store_true",
                    help="rerun every run, also those already saved under --out")
    ap.add_argument("--report-only", action="store_true",
                    help="write the .md from the runs already saved (an interrupted sweep)")
    args = ap.parse_args(argv)
    from mowtheory._io import atomic_write_json, atomic_write_text
    t0 = time.perf_counter()
    name = "convergence_real" + ("_tiny" if args.tiny else "_quick" if args.quick else "")
    parts = os.path.join(args.out, name + "_runs")
    os.makedirs(parts, exist_ok=True)
    todo = tiny_specs() if args.tiny else specs(args.quick)
    for spec in todo:
        spec["plots"] = args.out
    if not args.report_only:        # runs already saved are kept (an interrupted sweep resumes)
        run = [s for s in todo if args.fresh
               or not os.path.exists(os.path.join(parts, s["id"] + ".json"))]
        with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(run_saved, run, [parts] * len(run)))
    results, missing = [], []
    for spec in todo:
        path = os.path.join(parts, spec["id"] + ".json")
        if os.path.exists(path):
            with open(path) as fh:
                results.append(json.load(fh))
        else:
            missing.append(spec["id"])
    wall = time.perf_counter() - t0 if not args.report_only else None
    atomic_write_json(os.path.join(args.out, name + ".json"),
                      {"wall_seconds": wall, "results": results, "missing": missing})
    atomic_write_text(os.path.join(args.out, name + ".md"),
                      write_md(results, wall, args.quick, missing))
    print(f"wrote {os.path.join(args.out, name + '.md')} ({len(results)} runs, "
          f"{len(missing)} missing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
