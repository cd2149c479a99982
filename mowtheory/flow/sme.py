"""Fluctuations of the MoW iterates around the ODE: the stochastic-modified-equation check.

Write one MoW step as ``theta_{l+1} = theta_l + eta (b(theta_l) + xi_l)`` with ``b`` the
drift of the limit ODE (:func:`~.reference.drift`) and ``xi_l`` the gradient noise (minus the
step's stochastic gradient minus its mean). Linearising around the ODE path ``S(t)``, the
deviation ``delta_l = theta_l - S(l eta)`` obeys ``delta_{l+1} = (I + eta J) delta_l + eta xi_l``
with ``J = d b / d theta`` at ``S``. Over a time ``dt`` there are ``dt/eta`` steps, so

    Cov(delta(t)) = eta P(t) + o(eta),   dP/dt = J P + P J^T + Sigma_inf(S(t)),   P(0) = 0,

where ``Sigma_inf`` is the **long-run** covariance of the noise, not the per-step one: the
window makes consecutive gradients correlated (an example stays in F's window for
``M = ceil((n-k)/k)`` more steps, so ``g_l`` and ``g_{l+m}`` share data for ``m <= M`` and are
independent beyond). Hence, at fixed theta (a stationary chain),

    Sigma_inf = C_0 + sum_{m=1..M} (C_m + C_m^T),   C_m = Cov(g_l, g_{l+m}).

(The per-step covariance ``C_0`` alone -- what the plain SGD modified equation uses -- is
also reported, as "naive".) Both are estimated by Monte Carlo with the simulator's own
gradient (:func:`~.simulate.mow_gradient`) at points along the ODE path; the Lyapunov ODE is
integrated by RK4 with ``J`` (autograd Hessian of the closed form) and the covariances
interpolated linearly in time. :func:`check_sme` compares ``eta P(t)`` with the empirical
covariance of the replicas of a :class:`~.study.Study`.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..window import LatentWindow
from .problem import DTYPE
from .reference import drift_jacobian
from .rates import verdict
from .simulate import Draws, mow_gradient

#: the id of the SME verdict (see :func:`mowtheory.flow.rates.verdict`)
SME = "sme_covariance"
CLAIM = ("fluctuations follow the stochastic modified equation Cov(S_eta - S) ~ eta P(t) "
         "(long-run noise)")


def min_replicas(tolerance: float) -> int:
    """Replicas the SME verdict needs: the Monte Carlo error of a covariance from R replicas,
    about ``sqrt(2/R)``, must be at most half the ``tolerance`` (``R >= 8 / tolerance^2``)."""
    return math.ceil(8.0 / tolerance ** 2)


def _lerp(grid: np.ndarray, A: np.ndarray, t: float) -> np.ndarray:
    """Linear interpolation in time of ``A`` ``(G, ...)`` given on ``grid`` ``(G,)``."""
    i = int(np.clip(np.searchsorted(grid, t) - 1, 0, len(grid) - 2))
    w = (t - grid[i]) / (grid[i + 1] - grid[i])
    return (1 - w) * A[i] + w * A[i + 1]


def noise_covariances(problem, theta, *, n: int, k: int, reduction: str = "sum",
                      balanced: bool = False, chains: int = 4096,
                      generator: torch.Generator) -> tuple:
    """``(Sigma_0, Sigma_inf)`` ``(P, P)`` of the MoW gradient at a fixed ``theta`` ``(P,)``,
    from ``chains`` stationary chains (window encoded at theta) of ``2 (M + 1)`` steps."""
    theta = torch.as_tensor(theta, dtype=DTYPE)
    P = theta.shape[-1]
    M = math.ceil((n - k) / k) if n > k else 0
    L = 2 * (M + 1)
    draws = Draws(problem, n=n, k=k, replicas=chains, generator=generator)
    th = theta.expand(chains, P).clone()
    win = LatentWindow(n, k, problem.latent_dim, batch_shape=(chains,), dtype=DTYPE)
    win.fill(problem.encode(th, draws.initial("encode")))
    ordered = not problem.permutation_invariant
    grads = []
    for _ in range(L):
        x, prior = draws.step()
        g, fresh = mow_gradient(problem, th, win.ordered() if ordered else win.buffer, x,
                                prior, reduction, balanced)
        grads.append(g)
        win.push(fresh)        # theta is fixed: "post" and "pre" coincide
    g = torch.stack(grads, 1)                                   # (chains, L, P)
    g = g - g.mean((0, 1))
    C0 = torch.einsum("rlp,rlq->pq", g, g) / (chains * L - 1)
    S_inf = C0.clone()
    for m in range(1, M + 1):
        Cm = torch.einsum("rlp,rlq->pq", g[:, :-m], g[:, m:]) / (chains * (L - m))
        S_inf += Cm + Cm.T
    return C0, 0.5 * (S_inf + S_inf.T)


def predict_covariance(problem, ref, *, n: int, k: int, reduction: str = "sum",
                       balanced: bool = False, grid: int = 17, chains: int = 4096,
                       seed: int = 0, substeps: int = 400) -> dict:
    """``P(t)`` (long-run noise) and ``P0(t)`` (per-step noise only) on a dense grid ``t``
    (``substeps + 1`` times): arrays ``(substeps + 1, P, P)``; ``Cov(S_eta(t) - S(t)) ~ eta P(t)``.
    ``grid`` points along the ODE path get a Monte Carlo noise estimate from ``chains`` chains."""
    T = ref.horizon
    tg = T * np.linspace(0.0, 1.0, grid) ** 2      # denser early, where the path is fast
    kw = dict(n=n, k=k, reduction=reduction, balanced=balanced)
    gen = torch.Generator().manual_seed(seed)
    S = ref(tg)
    Js, Sig0, SigI = [], [], []
    for s in S:
        th = torch.from_numpy(s.copy())
        Js.append(drift_jacobian(problem, th, **kw).numpy())
        c0, ci = noise_covariances(problem, th, chains=chains, generator=gen, **kw)
        Sig0.append(c0.numpy())
        SigI.append(ci.numpy())
    Js, Sig0, SigI = map(np.stack, (Js, Sig0, SigI))

    def solve(Sig):
        h = T / substeps
        Pm = np.zeros_like(Sig[0])
        out_t, out_P = [0.0], [Pm.copy()]

        def f(t, Pm):
            J = _lerp(tg, Js, t)
            return J @ Pm + Pm @ J.T + _lerp(tg, Sig, t)
        for i in range(substeps):
            t = i * h
            k1 = f(t, Pm)
            k2 = f(t + h / 2, Pm + h / 2 * k1)
            k3 = f(t + h / 2, Pm + h / 2 * k2)
            k4 = f(t + h, Pm + h * k3)
            Pm = Pm + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            out_t.append(t + h)
            out_P.append(Pm.copy())
        return np.array(out_t), np.stack(out_P)

    (t_dense, P), (_, P0) = solve(SigI), solve(Sig0)
    return {"t": t_dense, "P": P, "P_naive": P0, "grid": tg, "sigma_inf": SigI,
            "sigma_0": Sig0}


def check_sme(study, *, grid: int = 17, chains: int = 4096, seed: int = 0,
              tolerance: float = 0.15, prediction: dict = None) -> dict:
    """Compare ``Cov(S_eta(t))/eta`` over the replicas of ``study`` with ``P(t)``.

    For each stable eta: ``rel_error`` = max over recorded ``t >= horizon/4`` of
    ``||Cov/eta - P||_F / ||P||_F`` (and the same for the naive ``P0``), and the trace ratio
    at the horizon. The verdict holds when the relative error at the smallest eta is
    ``<= tolerance`` (the Monte Carlo error of a covariance from R replicas is about
    ``sqrt(2/R)``). ``prediction``: a result of :func:`predict_covariance` to reuse.
    Returns a dict (JSON-ready) with a ``verdict``: INCONCLUSIVE with fewer than
    :func:`min_replicas` replicas (the Monte Carlo error would be as large as the tolerance),
    no stable run, or a non-finite statistic."""
    from .._validate import check_positive
    tolerance = check_positive("tolerance", tolerance)
    c = study.config
    sims = [s for s in study.sims if s.stable]
    if not sims:
        return {"verdict": verdict(SME, CLAIM, False, "", inconclusive="no stable run (or the "
                                   "study kept no replicas: keep_sims=False)")}
    R, need = min(s.replicas for s in sims), min_replicas(tolerance)
    if R < need:
        return {"verdict": verdict(SME, CLAIM, False, "", inconclusive=(
            f"{R} replicas; the SME verdict at tolerance {tolerance:g} needs replicas >= {need} "
            f"(Monte Carlo error sqrt(2/R) = {math.sqrt(2 / R):.3f} must be <= tolerance/2)"))}
    pred = prediction if prediction is not None else predict_covariance(
        study.problem, study.ref, n=c["n"], k=c["k"], reduction=c["reduction"],
        balanced=c["balanced"], grid=grid, chains=chains, seed=seed)
    rows = []
    for s in sims:
        use = s.times >= c["horizon"] / 4 - 1e-12
        X = s.thetas.numpy()[:, use]                                # (R, J', P)
        Xc = X - X.mean(0)
        emp = np.einsum("rjp,rjq->jpq", Xc, Xc) / (X.shape[0] - 1) / s.eta
        at = {key: np.stack([_lerp(pred["t"], pred[key], t) for t in s.times[use]])
              for key in ("P", "P_naive")}

        def rel(Pp):
            num = np.linalg.norm(emp - Pp, axis=(1, 2))
            return float((num / np.linalg.norm(Pp, axis=(1, 2))).max())
        rows.append({"eta": s.eta, "rel_error": rel(at["P"]),
                     "rel_error_naive": rel(at["P_naive"]),
                     "trace_ratio_T": float(np.trace(emp[-1]) / np.trace(at["P"][-1])),
                     "trace_ratio_T_naive": float(np.trace(emp[-1]) / np.trace(at["P_naive"][-1]))})
    last = min(rows, key=lambda r: r["eta"])
    ok = last["rel_error"] <= tolerance
    detail = (f"at eta = {last['eta']:g}: ||Cov/eta - P||/||P|| = {last['rel_error']:.3f} "
              f"(tolerance {tolerance}, MC error ~ {math.sqrt(2 / R):.3f}), trace ratio "
              f"{last['trace_ratio_T']:.3f}; naive per-step noise: rel. error "
              f"{last['rel_error_naive']:.3f}, trace ratio {last['trace_ratio_T_naive']:.3f}")
    bad = [k for k in ("rel_error", "trace_ratio_T") if not math.isfinite(last[k])]
    why = f"degenerate statistic: {', '.join(f'{k}={last[k]}' for k in bad)}" if bad else None
    return {"rows": rows, "verdict": verdict(SME, CLAIM, ok, detail, inconclusive=why),
            "tolerance": tolerance,
            "trace_P_T": float(np.trace(pred["P"][-1])),
            "trace_P_naive_T": float(np.trace(pred["P_naive"][-1]))}
