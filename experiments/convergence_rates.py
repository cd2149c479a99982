"""Convergence rates of MoW_k(n) against its gradient-flow ODE (Theorem 1) on the toy problems.

Regenerates ``experiments/results/convergence.md`` and its PNGs::

    python experiments/convergence_rates.py            # full sweep (~5-10 min on 2 cores)
    python experiments/convergence_rates.py --quick    # smaller sweep (~1-2 min)

Sweeps (n, k) in {(8,1), (8,4), (64,1), (64,32)} on linear-gaussian, mmd-gaussian and scalar;
the init and refresh policies; the three reductions with and without ``balanced``; the planted
faults (wrong ODE, position-weighted F and its symmetrisation, the time-fixed window); and the
stochastic-modified-equation check of the fluctuations. Step sizes for k > 1 are the k = 1
ones divided by k, and so is the horizon (the flow S' = -(k/n) grad C runs k times faster),
so every configuration takes the same numbers of steps. Studies run in ``--jobs`` processes
(one torch thread each).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

BASE = {  # problem -> (k=1 step sizes, horizon at k=1, replicas for n=8, replicas for n=64)
    "linear-gaussian": ((0.01, 0.005, 0.0025, 0.00125, 0.000625), 1.0, 4096, 1024),
    "mmd-gaussian": ((0.04, 0.02, 0.01, 0.005, 0.0025), 1.0, 1024, 256),
    "scalar": ((0.05, 0.025, 0.0125, 0.00625, 0.003125), 1.0, 8192, 4096),
}
NK = [(8, 1), (8, 4), (64, 1), (64, 32)]


def spec(group, problem, n, k, *, quick, params=None, etas=None, horizon=None, replicas=None,
         eta_scale=1.0, n_etas=4, sme=False, plot=None, compare_theorem=False, **kw):
    base_etas, T, r8, r64 = BASE.get(problem, BASE["linear-gaussian"])
    etas = list(etas or [e * eta_scale / k for e in base_etas][:n_etas])
    horizon = horizon if horizon is not None else T / k
    replicas = replicas or (r8 if n <= 8 else r64)
    if quick:
        etas = etas[:3]
        replicas = max(256, replicas // 4)
    return dict(group=group, problem=problem, params=params or {}, n=n, k=k, etas=etas,
                horizon=horizon, replicas=replicas, sme=sme, plot=plot,
                compare_theorem=compare_theorem, kw=kw)


def build_specs(quick: bool) -> list:
    S = []
    for problem in ("linear-gaussian", "mmd-gaussian", "scalar"):
        for n, k in NK:
            if problem == "mmd-gaussian" and n == 64:
                continue            # n = 64 Gaussian-kernel grams: ~60 ms a step here; skipped
            extra = {}
            if (n, k) == (64, 1) and problem == "scalar":
                # the window spans (n-k)/k * eta = 63 eta of time: smaller steps to be asymptotic
                base = BASE[problem][0]
                extra = dict(etas=[e / 4 for e in base[:4]])
            if (problem, n, k) == ("linear-gaussian", 64, 32):
                extra["replicas"] = 2048
            if (problem, n, k) == ("linear-gaussian", 8, 1):      # the headline: 5 step sizes
                extra.update(n_etas=5, replicas=2048)
            plot = "convergence_headline.png" if (problem, n, k) == ("linear-gaussian", 8, 1) else None
            sme = (problem, n, k) in {("linear-gaussian", 8, 1), ("linear-gaussian", 64, 1),
                                      ("mmd-gaussian", 8, 1), ("scalar", 8, 1), ("scalar", 64, 1)}
            S.append(spec("nk", problem, n, k, quick=quick, plot=plot, sme=sme, **extra))
    for n, k in ((8, 1), (64, 1)):
        # n = 64: a prior-initialised window is far from the encodings for the first n - k
        # steps; the eta ladder of n = 8 is pre-asymptotic there (weak order 0.66, a resolved
        # bias floor), a 4x smaller one is not
        scale = 0.25 if n == 64 else 1.0
        for init, refresh in (("encode", "pre"), ("prior", "post"), ("prior", "pre")):
            S.append(spec("policy", "linear-gaussian", n, k, quick=quick, init=init,
                          refresh=refresh, replicas=2048 if n == 8 else 1024, eta_scale=scale))
    for reduction, balanced in (("mean", False), ("sqrt_mean", False), ("sum", True),
                                ("mean", True), ("sqrt_mean", True)):
        S.append(spec("reduction", "linear-gaussian", 8, 4, quick=quick, reduction=reduction,
                      balanced=balanced, compare_theorem=True))
    S.append(spec("reduction", "linear-gaussian", 64, 1, quick=quick, reduction="sqrt_mean",
                  compare_theorem=True))
    # balanced n = 64: the F drift is n/k times larger and the window 63 steps long, so the
    # expansion needs eta (n/k)(n-k)/k << 1; at eta = 0.0025 ... 0.0003125 (10 ... 1.3) the
    # Richardson bias verdict still sees a floor, 4x smaller steps are asymptotic
    S.append(spec("reduction", "linear-gaussian", 64, 1, quick=quick, balanced=True,
                  etas=(0.000625, 0.0003125, 0.00015625, 0.000078125), horizon=0.25,
                  replicas=512, compare_theorem=True))
    pw_etas = (0.1, 0.05, 0.025, 0.0125, 0.00625)
    S.append(spec("fault", "position-weighted", 4, 1, quick=quick, replicas=4096, etas=pw_etas))
    S.append(spec("fault", "position-weighted", 4, 1, quick=quick, params={"symmetrize": True},
                  replicas=4096, etas=pw_etas))
    S.append(spec("fault", "linear-gaussian", 8, 1, quick=quick, window="time", replicas=512))
    S.append(spec("fault", "linear-gaussian", 64, 1, quick=quick, window="time", replicas=512,
                  n_etas=5))
    S.append(spec("fault", "scalar", 8, 1, quick=quick, window="time", replicas=2048))
    S.append(spec("fault", "mmd-gaussian", 8, 1, quick=quick, window="time", replicas=256))
    return S


def run_spec(s: dict) -> dict:
    """Run one study in a worker; return a small JSON-ready summary."""
    import torch
    torch.set_num_threads(1)
    from mowtheory.flow import errors, fitted_order, run_study, solve_reference
    from mowtheory.flow.plot import plot_study
    t0 = time.perf_counter()
    st = run_study(s["problem"], params=s["params"], n=s["n"], k=s["k"], etas=s["etas"],
                   horizon=s["horizon"], replicas=s["replicas"], bootstrap=200, **s["kw"])
    from mowtheory.flow.faults import rejected
    out = {"spec": dict(s), "json": st.to_json(), "table": st.table(),
           "rejected": rejected(st.rows, st.verdicts)[0]}
    if s["compare_theorem"]:
        c = st.config
        thm = solve_reference(st.problem, torch.tensor(c["theta0"], dtype=torch.float64),
                              c["horizon"], n=c["n"], k=c["k"])     # (2): sum, unbalanced
        rows = [errors(sim, thm, bootstrap=100) for sim in st.sims]
        out["vs_theorem"] = {"weak": [r.weak for r in rows], "floor": [r.noise_floor for r in rows],
                             "weak_order": fitted_order(rows, "weak").to_json()}
    if s["sme"]:
        from mowtheory.flow.sme import check_sme, predict_covariance
        c = st.config
        pred = predict_covariance(st.problem, st.ref, n=c["n"], k=c["k"],
                                  reduction=c["reduction"], balanced=c["balanced"],
                                  chains=2048 if s["n"] > 8 else 4096)
        out["sme"] = check_sme(st, prediction=pred)
        out["sme_curves"] = _sme_curves(st, pred)
    if s["plot"]:
        plot_study(st, os.path.join(s["results"], s["plot"]))
    out["wall"] = time.perf_counter() - t0
    return out


def _sme_curves(st, pred):
    """tr P(t), tr P0(t) and tr Cov(S_eta(t))/eta for the smallest stable eta (for a figure)."""
    c = st.config
    sim = min((s for s in st.sims if s.stable), key=lambda s: s.eta)
    X = sim.thetas.numpy()
    emp = ((X - X.mean(0)) ** 2).sum(-1).sum(0) / (X.shape[0] - 1) / sim.eta
    return {"t": pred["t"][::8].tolist(),
            "trP": np.trace(pred["P"], axis1=1, axis2=2)[::8].tolist(),
            "trP0": np.trace(pred["P_naive"], axis1=1, axis2=2)[::8].tolist(),
            "t_emp": sim.times.tolist(), "tr_emp": emp.tolist(), "eta": sim.eta,
            "label": f"{c['problem']} n={c['n']} k={c['k']}"}


# ---------------------------------------------------------------------- report
def _o(o):
    if o["estimate"] is None:
        return "n/a"
    return f"{o['estimate']:.2f} [{o['ci'][0]:.2f}, {o['ci'][1]:.2f}]"


def _ok(js, vid):
    from mowtheory.flow.rates import id_of
    v = next((v for v in js["verdicts"] if id_of(v) == vid), None)
    return "—" if v is None else ("pass" if v["passed"] else "**FAIL**")


def _last(js, key):
    vals = [(e, v) for e, v in zip(js["etas"], js[key]) if v is not None]
    return min(vals)[1] if vals else None


def _wrong_ratio(js):
    w, e = _last(js, "wrong_ode_weak_error"), _last(js, "weak_error")
    return f"{w / e:.0f}x" if w and e else "—"


def _unstable(js):
    bad = [f"{e:g}" for e, s in zip(js["etas"], js["stable"]) if not s]
    return ", ".join(bad) if bad else "none"


def _local_slopes(js):
    """Slopes of the weak error between consecutive resolved step sizes (large to small)."""
    out = _slopes(js)
    return ", ".join(f"{v:.2f}" for v in out) if out else "—"


def _row_main(r):
    js = r["json"]
    return (f"| {js['problem']} | {js['n']} | {js['k']} | {js['replicas']} | "
            f"{min(js['etas']):g}–{max(js['etas']):g} | {_o(js['orders']['strong'])} | "
            f"{_ok(js, 'strong_order')} | {_o(js['orders']['weak'])} | {_ok(js, 'weak_order')} | "
            f"{_local_slopes(js)} | {_wrong_ratio(js)} | {_unstable(js)} |")


HEAD_MAIN = ("| problem | n | k | replicas | eta range | strong order [95% CI] | 0.5±0.3 | "
             "weak order [95% CI] | 1±0.3 | weak local slopes | wrong-ODE / weak error at "
             "smallest eta | unstable eta |\n"
             "|---|---|---|---|---|---|---|---|---|---|---|---|")


def write_report(results, path, quick, wall):
    from mowtheory.flow.faults import follows_ode
    from mowtheory.flow.rates import id_of
    by = {}
    for r in results:
        by.setdefault(r["spec"]["group"], []).append(r)
    L = ["# Convergence rates of MoW_k(n) against its gradient flow", "",
         f"Generated by `python experiments/convergence_rates.py{' --quick' if quick else ''}` "
         f"({len(results)} studies, {wall / 60:.1f} min). Every number below is recomputed by "
         "that command (seeded).", "",
         "Method (see `mowtheory/flow/`): R independent MoW replicas (float64, plain gradient "
         "descent) per step size eta; reference S = solution of S' = -(k/n) grad C "
         "(scipy DOP853, rtol 1e-11) with C the closed-form expected cost; strong error "
         "mean_r sup_t |S_eta - S|, weak error sup_t |mean_r S_eta - S| on 33 recorded times; "
         "orders = log-log slopes over eta with 95% bootstrap intervals over replicas; a weak "
         "error below its 95% Monte Carlo noise floor is left out of the weak fit. Step sizes "
         "and horizon for k > 1 are the k = 1 ones divided by k.", ""]
    hl = next((r for r in by.get("nk", []) if (r["spec"]["problem"], r["spec"]["n"], r["spec"]["k"])
               == ("linear-gaussian", 8, 1)), None)
    if hl:
        L += ["## Headline: linear-gaussian, n = 8, k = 1", "", "```", hl["table"], "```", "",
              "![headline](convergence_headline.png)", ""]
    # summary of verdicts (all computed from the results)
    thm = [r for g in ("nk", "policy") for r in by.get(g, [])]
    n_follow = sum(follows_ode(r["json"]["verdicts"]) for r in thm)
    bad = [f"{r['json']['problem']} ({r['json']['n']},{r['json']['k']}) "
           f"{r['json']['init']}/{r['json']['refresh']}" for r in thm
           if not follows_ode(r["json"]["verdicts"])]
    wrong = [v["passed"] for g in ("nk", "policy", "reduction") for r in by.get(g, [])
             for v in r["json"]["verdicts"] if id_of(v) == "wrong_ode_rejected"]
    faults = by.get("fault", [])
    f_ok = sum((("symmetrized" in r["json"]["problem"]) == follows_ode(r["json"]["verdicts"]))
               and (("symmetrized" in r["json"]["problem"]) or r["rejected"]) for r in faults)
    red = by.get("reduction", [])
    red_ok = sum(follows_ode(r["json"]["verdicts"]) for r in red)
    sme = [r for r in results if "sme" in r]
    sme_ok = sum(r["sme"]["verdict"]["passed"] for r in sme)
    L += ["## Summary", "",
          f"- Theorem 1 (sum reduction; every (n, k), problem, init and refresh policy run): "
          f"**{n_follow} of {len(thm)}** studies have both orders in band (strong 0.5 ± 0.3, "
          f"weak 1 ± 0.3) and no bias floor (Richardson extrapolation of the weak error to "
          f"eta -> 0 within its Bonferroni noise band)" + (f"; not in band or inconclusive: {'; '.join(bad)} (see below)."
                              if bad else "."),
          f"- Wrong ODE S' = -grad C rejected in **{sum(wrong)} of {len(wrong)}** studies "
          "(its error does not fall with eta and is >= 10x the right one at the smallest eta).",
          f"- Reductions / balancing against their own limits: **{red_ok} of {len(red)}** in band; "
          "against the theorem's ODE (2) the `mean`, `sqrt_mean` and balanced runs do not "
          "converge (last columns).",
          f"- Planted faults: **{f_ok} of {len(faults)}** rows give the expected answer "
          "(position-weighted F and time-fixed windows rejected, symmetrised F follows (2)).",
          f"- Fluctuations (beyond the paper): the stochastic-modified-equation prediction with "
          f"the long-run noise covariance holds (<= 0.15 relative error at the smallest eta) in "
          f"**{sme_ok} of {len(sme)}** studies; the naive per-step covariance does not "
          "(see the table).", ""]
    L += ["## (n, k) sweep (init encode, refresh post, reduction sum)", "", HEAD_MAIN]
    L += [_row_main(r) for r in by.get("nk", [])]
    L += ["", "![orders](convergence_orders.png)", ""]
    L += ["## Init and refresh policies (linear-gaussian)", "",
          "The paper encodes the initial window at theta_0 and re-encodes after the update "
          "(`encode`/`post`); the authors' code fills it with N(0, I) draws (redrawn at the "
          "start of every epoch of their training loop) and stores latents from before the "
          "update (`prior`/`pre`). A flow study is one stream of fresh examples with no "
          "epochs, so here `prior` is a single N(0, I) draw before the first step: the "
          "authors' first epoch. Both only perturb O(eta) (a prior window is flushed after "
          "(n-k)/k steps; a `pre` latent is one step staler).", "",
          "| n | k | init | refresh | replicas | strong order | weak order | weak local slopes | "
          "weak error at smallest eta | verdicts |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in by.get("policy", []):
        js = r["json"]
        L.append(f"| {js['n']} | {js['k']} | {js['init']} | {js['refresh']} | {js['replicas']} | "
                 f"{_o(js['orders']['strong'])} | {_o(js['orders']['weak'])} | {_local_slopes(js)} | "
                 f"{_last(js, 'weak_error'):.2e} | "
                 f"{'pass' if follows_ode(js['verdicts']) else '**FAIL**'} |")
    L += ["", "## Reductions and balancing (linear-gaussian)", "",
          "Each run is compared with its own limit S' = -(w_F grad E[F_n] + grad E[red_k G]) "
          "(w_F = k/n, or 1 when balanced; `mean`: E G, `sqrt_mean`: E sqrt(mean_k G), exact) "
          "and, in the last columns, with the theorem's ODE (2) (sum, unbalanced). With k = 1 "
          "`mean` equals `sum`.", "",
          "| n | k | reduction | balanced | replicas | strong order | weak order (own limit) | "
          "verdicts | weak error vs (2) at smallest eta | order vs (2) |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in by.get("reduction", []):
        js, vt = r["json"], r.get("vs_theorem", {})
        last_vt = vt.get("weak", [None])[-1] if vt else None
        L.append(f"| {js['n']} | {js['k']} | {js['reduction']} | {js['balanced']} | "
                 f"{js['replicas']} | {_o(js['orders']['strong'])} | {_o(js['orders']['weak'])} | "
                 f"{'pass' if follows_ode(js['verdicts']) else '**FAIL**'} | "
                 f"{'—' if last_vt is None else f'{last_vt:.3e}'} | "
                 f"{_o(vt['weak_order']) if vt else '—'} |")
    L += ["", "## Planted faults (the instrument must reject them)", "",
          "| fault | n | k | replicas | weak error at smallest eta (noise floor) | strong order | "
          "weak order | weak local slopes | follows (2)? | rejected? | expected |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in by.get("fault", []):
        js = r["json"]
        name = js["problem"] + (f", window=time (tau={js['tau']:g})" if js["window"] == "time" else "")
        sym = "symmetrized" in js["problem"]
        last_i = int(np.argmin(js["etas"]))
        L.append(f"| {name} | {js['n']} | {js['k']} | {js['replicas']} | "
                 f"{js['weak_error'][last_i]:.3e} ({js['weak_noise_floor'][last_i]:.1e}) | "
                 f"{_o(js['orders']['strong'])} | {_o(js['orders']['weak'])} | {_local_slopes(js)} | "
                 f"{'yes' if follows_ode(js['verdicts']) else 'no'} | "
                 f"{'yes' if r['rejected'] else 'no'} | {'follows (2)' if sym else 'rejected'} |")
    L += ["", "The wrong ODE is a planted fault too: its column in the sweep shows that it is "
          "rejected everywhere.", ""]
    L += _notes(results)
    sme = [r for r in results if "sme" in r]
    if sme:
        L += ["## Beyond the paper: fluctuations and the stochastic modified equation", "",
              "Linearising one step theta_{l+1} = theta_l + eta (b(theta_l) + xi_l) around the ODE "
              "path gives Cov(S_eta(t) - S(t)) = eta P(t) + o(eta) with "
              "dP/dt = J P + P J^T + Sigma_inf(S(t)), J = Jacobian of the drift. The noise "
              "covariance must be the **long-run** one, Sigma_inf = C_0 + sum_{m=1..M} (C_m + C_m^T), "
              "M = ceil((n-k)/k): an example stays in F's window for M more steps, so consecutive "
              "MoW gradients are correlated. Sigma_0 = C_0 alone (the plain-SGD modified "
              "equation) is the naive prediction. Both are Monte Carlo estimates at 17 points of "
              "the path (`mowtheory/flow/sme.py`). Relative error = max over t >= T/4 of "
              "||Cov/eta - P||_F / ||P||_F.", "",
              "| problem | n | k | replicas | eta | rel. error (long-run) | trace ratio at T | "
              "rel. error (naive C_0) | trace ratio (naive) | holds (<= 0.15)? |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sme:
            js = r["json"]
            for row in r["sme"]["rows"]:
                L.append(f"| {js['problem']} | {js['n']} | {js['k']} | {js['replicas']} | "
                         f"{row['eta']:g} | {row['rel_error']:.3f} | {row['trace_ratio_T']:.3f} | "
                         f"{row['rel_error_naive']:.3f} | {row['trace_ratio_T_naive']:.3f} | "
                         f"{'yes' if row['rel_error'] <= 0.15 else 'no'} |")
        L += ["", "![sme](convergence_sme.png)", ""]
    L += ["## Per-study tables", ""]
    for r in results:
        L += ["```", r["table"], "```", ""]
        for v in r["json"]["verdicts"]:
            L.append(f"- {'PASS' if v['passed'] else 'FAIL'} {v['claim']}: {v['detail']}")
        L.append("")
    with open(path, "w") as fh:
        fh.write("\n".join(L) + "\n")


def _slopes(js):
    pts = [(e, w) for e, w, ok in zip(js["etas"], js["weak_error"], js["weak_resolved"])
           if ok and w is not None]
    return [np.log(w0 / w1) / np.log(e0 / e1) for (e0, w0), (e1, w1) in zip(pts, pts[1:])]


def _notes(results) -> list:
    """Evidence for every study whose answer is not the expected one (generated)."""
    from mowtheory.flow.faults import follows_ode
    out = []
    for r in results:
        js, g = r["json"], r["spec"]["group"]
        sym = "symmetrized" in js["problem"]
        expected_follow = g != "fault" or sym
        got_follow = follows_ode(js["verdicts"])
        if g == "fault" and not sym:
            if r["rejected"]:
                continue
        elif got_follow == expected_follow:
            continue
        sl = _slopes(js)
        i = int(np.argmin(js["etas"]))
        span = (js["n"] - js["k"]) / js["k"] * max(js["etas"])
        what = (f"{js['problem']} (n={js['n']}, k={js['k']}, init={js['init']}, "
                f"refresh={js['refresh']}, reduction={js['reduction']}, "
                f"balanced={js['balanced']}, window={js['window']})")
        trend = ("Inconclusive: the weak errors are at the Monte Carlo noise floor "
                 "(more replicas needed)") if js["orders"]["weak"]["estimate"] is None else ""
        if len(sl) >= 2:
            if sl[-1] > sl[0]:
                trend = ("The local weak slopes rise toward 1 as eta falls: a pre-asymptotic "
                         "regime (O(eta^2) terms still visible), not a different limit")
            else:
                trend = ("The local weak slopes fall as eta falls: the weak error is starting "
                         "to level off, but over this eta range the plateau is not yet resolved "
                         "above the O(eta) errors (the falsifier's power depends on how much F's "
                         "fresh-slot gradient depends on the frozen latents)")
        out.append(f"- **{what}**: expected {'to follow (2)' if expected_follow else 'rejection'}; "
                   f"weak order {_o(js['orders']['weak'])}, local slopes "
                   f"{', '.join(f'{v:.2f}' for v in sl) or '—'}; weak error at eta = "
                   f"{js['etas'][i]:g}: {js['weak_error'][i]:.3e} (noise floor "
                   f"{js['weak_noise_floor'][i]:.1e}); " +
                   (f"the frozen latents are stale by up to tau = {js['tau']:g}. "
                    if js["window"] == "time" else
                    f"the window spans (n-k)/k * eta = {span:.3g} of time at the largest eta. ")
                   + (trend + "." if trend else ""))
    if out:
        out = ["## Notes: studies whose answer is not the expected one", ""] + out + [""]
    return out


def plot_orders(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in results if r["spec"]["group"] in ("nk", "policy", "reduction", "fault")]
    fig, ax = plt.subplots(figsize=(11, 4.2))
    labels = []
    for i, r in enumerate(rows):
        js = r["json"]
        for kind, color, dx in (("strong", "C0", -0.15), ("weak", "C1", 0.15)):
            o = js["orders"][kind]
            if o["estimate"] is None:
                continue
            lo, hi = o["ci"]
            ax.errorbar(i + dx, o["estimate"], yerr=[[o["estimate"] - lo], [hi - o["estimate"]]],
                        fmt="o", color=color, ms=4, capsize=2,
                        label=kind if i == 0 else None)
        tag = js["problem"].replace("position-weighted", "pw").replace(" (symmetrized)", "-sym")
        extra = [js["init"] + "/" + js["refresh"]] if r["spec"]["group"] == "policy" else []
        if r["spec"]["group"] == "reduction":
            extra = [js["reduction"] + ("+bal" if js["balanced"] else "")]
        if js["window"] == "time":
            extra = ["time-window"]
        labels.append(f"{tag} ({js['n']},{js['k']}) " + " ".join(extra))
    for y, c in ((0.5, "C0"), (1.0, "C1")):
        ax.axhspan(y - 0.3, y + 0.3, color=c, alpha=0.08)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, rotation=75, fontsize=6.5)
    ax.set_ylabel("fitted order")
    ax.set_title("strong (band 0.5±0.3) and weak (band 1±0.3) orders with 95% bootstrap CIs")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sme(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    curves = [r["sme_curves"] for r in results if "sme_curves" in r]
    if not curves:
        return
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.6))
    for ax, c in zip(np.atleast_1d(axes), curves):
        ax.plot(c["t"], c["trP"], "k-", label="tr P (long-run noise)")
        ax.plot(c["t"], c["trP0"], "--", color="gray", label="tr P0 (per-step noise)")
        ax.plot(c["t_emp"], c["tr_emp"], "o", ms=3, color="C2",
                label=f"tr Cov(S_eta)/eta, eta={c['eta']:g}")
        ax.set_title(c["label"], fontsize=9)
        ax.set_xlabel("t")
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sweep (~1-2 min)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes")
    ap.add_argument("--out", default=RESULTS, help="results folder")
    ap.add_argument("--cache", default=None, metavar="JSON",
                    help="also save the study summaries to this JSON file")
    ap.add_argument("--from-cache", default=None, metavar="JSON",
                    help="only rewrite the report and summary figures from a --cache file "
                         "(the headline figure is left as it is)")
    args = ap.parse_args(argv)
    if args.from_cache:
        import json
        with open(args.from_cache) as fh:
            cached = json.load(fh)
        md = os.path.join(args.out, "convergence.md")
        write_report(cached["results"], md, cached["quick"], cached["wall"])
        plot_orders(cached["results"], os.path.join(args.out, "convergence_orders.png"))
        plot_sme(cached["results"], os.path.join(args.out, "convergence_sme.png"))
        print(f"wrote {md} from {args.from_cache}")
        return 0
    os.makedirs(args.out, exist_ok=True)
    specs = build_specs(args.quick)
    for s in specs:
        s["results"] = args.out
    # longest first, so that the two workers finish together
    order = sorted(range(len(specs)), key=lambda i: -specs[i]["n"] * specs[i]["replicas"])
    t0 = time.perf_counter()
    results = [None] * len(specs)
    from tqdm import tqdm
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futs = {pool.submit(run_spec, specs[i]): i for i in order}
        bar = tqdm(total=len(specs), desc="studies", unit="study")
        from concurrent.futures import as_completed
        for f in as_completed(futs):
            results[futs[f]] = f.result()
            bar.update(1)
        bar.close()
    wall = time.perf_counter() - t0
    if args.cache:
        import json
        with open(args.cache, "w") as fh:
            json.dump({"results": results, "quick": args.quick, "wall": wall}, fh,
                      default=lambda o: o.tolist() if hasattr(o, "tolist") else float(o))
    md = os.path.join(args.out, "convergence.md")
    write_report(results, md, args.quick, wall)
    plot_orders(results, os.path.join(args.out, "convergence_orders.png"))
    plot_sme(results, os.path.join(args.out, "convergence_sme.png"))
    print(f"wrote {md} ({len(results)} studies, {wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
