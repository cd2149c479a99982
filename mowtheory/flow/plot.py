"""Figures of a convergence study (matplotlib, Agg backend; nothing is shown on screen).

:func:`plot_study` writes one PNG: (left) strong, weak (+/- se) and wrong-ODE errors against
eta on log-log axes with the fitted slopes and the weak error's noise floor; (middle, right)
the two parameters that move most: a few replica paths at the largest and the smallest eta,
the replicas' mean, the theorem's ODE (2) and the wrong ODE ``S' = -grad C``.
"""
from __future__ import annotations

import math

import numpy as np

from .._io import atomic_savefig


def _mpl():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def plot_errors(ax, study, title=None):
    rows = [r for r in study.rows if r.stable]
    if not rows:
        ax.set_title("all step sizes unstable")
        return
    eta = np.array([r.eta for r in rows])
    strong = np.array([r.strong for r in rows])
    weak = np.array([r.weak for r in rows])
    se = np.array([r.weak_se or 0.0 for r in rows])
    floor = np.array([r.noise_floor for r in rows])
    wrong = np.array([np.nan if r.wrong is None else r.wrong for r in rows])
    ax.loglog(eta, strong, "o-", color="C0", label="strong  E sup|S_eta - S|")
    ax.errorbar(eta, weak, yerr=se, fmt="s-", color="C1", capsize=3,
                label="weak  sup|E S_eta - S|")
    if np.isfinite(wrong).any():      # studies judged without the wrong ODE have none
        ax.loglog(eta, wrong, "x--", color="C3", label="wrong ODE S' = -grad C (weak)")
    ax.loglog(eta, floor, ":", color="C1", alpha=0.6, label="weak noise floor (95%)")
    for kind, color in (("strong", "C0"), ("weak", "C1")):
        o = study.orders[kind]
        if not math.isfinite(o.estimate):
            continue
        e = np.array(o.etas)
        y = np.array([getattr(r, kind) for r in rows if r.eta in o.etas])
        c = np.mean(np.log(y) - o.estimate * np.log(e))
        ax.loglog(e, np.exp(c) * e ** o.estimate, "-", color=color, alpha=0.35, lw=4,
                  label=f"fit {kind}: slope {o.estimate:.2f} [{o.ci[0]:.2f}, {o.ci[1]:.2f}]")
    top = float(np.nanmax(np.concatenate([wrong, strong])))
    ax.set_ylim(top=top * 40)
    ax.set_xlabel("step size eta")
    ax.set_ylabel("error on [0, T]")
    ax.set_title(title or "errors against the ODE (2)")
    ax.legend(fontsize=6.5, loc="upper left", ncol=2)
    ax.grid(True, which="both", alpha=0.3)


def plot_paths(ax, study, coord: int):
    sims = [s for s in study.sims if s.stable]
    T = study.config["horizon"]
    t = np.linspace(0.0, T, 400)
    ax.plot(t, study.ref(t)[:, coord], "k-", lw=2, label="ODE (2): S' = -(k/n) grad C")
    ax.plot(t, study.wrong(t)[:, coord], "--", color="gray", lw=1.5, label="wrong ODE")
    if sims:
        for s, color, lab in ((sims[0], "C0", "largest"), (sims[-1], "C2", "smallest")):
            for i in range(s.paths.shape[0]):
                ax.plot(s.path_times, s.paths[i, :, coord].numpy(), color=color, lw=0.7,
                        alpha=0.7, label=f"replicas, eta={s.eta:g} ({lab})" if i == 0 else None)
            ax.plot(s.times, s.thetas[:, :, coord].mean(0).numpy(), "o", color=color, ms=3,
                    label=f"mean of {s.replicas} replicas, eta={s.eta:g}")
    ax.set_xlabel("time t = step * eta")
    ax.set_ylabel(f"theta[{coord}]")
    ax.set_title(f"parameter {coord}: replicas against the ODEs")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)


def plot_study(study, path: str, *, title: str = None) -> str:
    """Write the study's figure to ``path`` (PNG; parent folders are created)."""
    plt = _mpl()
    T = study.config["horizon"]
    move = np.abs(study.ref(T)[0] - study.ref(0.0)[0])
    coords = list(np.argsort(-move)[:2]) if move.size > 1 else [0]
    fig, axes = plt.subplots(1, 1 + len(coords), figsize=(5.2 * (1 + len(coords)), 4.4))
    axes = np.atleast_1d(axes)
    c = study.config
    plot_errors(axes[0], study)
    for ax, i in zip(axes[1:], coords):
        plot_paths(ax, study, int(i))
    fig.suptitle(title or (f"MoW_k(n) {c['problem']}: n={c['n']}, k={c['k']}, "
                           f"{c['replicas']} replicas, init={c['init']}, refresh={c['refresh']}, "
                           f"reduction={c['reduction']}, balanced={c['balanced']}, "
                           f"window={c['window']}"), fontsize=9)
    fig.tight_layout()
    try:
        atomic_savefig(fig, path, dpi=110)
    finally:
        plt.close(fig)
    return path


def plot_network(study, path: str) -> str:
    """One PNG: the parameters' errors against eta and each observable's."""
    plt = _mpl()
    panels = [("parameters", study.main)] + list(study.observables.items())
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    for ax, (name, st) in zip(list(axes) if len(panels) > 1 else [axes], panels):
        plot_errors(ax, st, title=f"{study.config['problem']}: {name}")
    fig.tight_layout()
    return atomic_savefig(fig, path)
