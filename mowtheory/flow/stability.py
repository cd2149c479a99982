"""Linear stability of the mean MoW recursion with its window lag.

The mean-field (deterministic) MoW_k(n) recursion replaces every random input by its
expectation but keeps the staleness of the window:

    theta_{l+1} = theta_l - eta * g(theta_l; Phi_l),
    g(theta; Phi) = grad_theta Chat(theta; Phi),      Phi = (phi_1, ..., phi_{n-k}): (n-k, P)

where ``Chat(theta; Phi)`` is the expected MoW cost when the k fresh latents are encoded at
theta (with gradient) and window slot i holds the latent of an independent example encoded at
``phi_i`` (frozen). With refresh ``"post"`` the k latents pushed after step l are encoded at
theta_{l+1}, so at step l the window holds k latents of lag j (encoded at theta_{l-j}) for
j = 0..m-1, m = ceil((n-k)/k) (the oldest group holds the remainder); ``"pre"`` stores the
fresh latents of the step, lags 1..m. :func:`lag_counts` gives the slot counts ``c_j``.

Linearised around a fixed point theta* of the MoW ODE (``grad c(theta*) = 0``, c of
:func:`mowtheory.flow.reference.effective_cost`) the recursion is a linear delay recursion

    d_{l+1} = d_l - eta * sum_{j=0}^{M-1} A_j d_{l-j},
    A_j = [j = 0] H + sum_{slots i of lag j} B_i,
    H = d^2 Chat / d theta^2  (fresh latents and G),   B_i = d^2 Chat / d theta d phi_i,

all at theta = phi_i = theta*. Its companion matrix (``(M P, M P)``, :func:`companion`) has
spectral radius rho(eta); the recursion is stable iff rho < 1, and :func:`critical_eta` finds
the first eta with rho = 1. Folding every A_j into A_0 (``lag=False``: a window re-encoded at
the current theta) gives A_0 = H + sum_i B_i = Hess c(theta*), i.e. plain gradient descent on
c, with threshold 2 / lambda_max(Hess c).

Scalar reading (one direction, k = 1, window slots weighing r/m each at lags 0..m-1, m = n-1):
with ``h = a + r`` the fresh curvature (a: the restoring curvature of c, r: the repulsion of
the pair term, which the window's B's give back), ``d_{l+1} = (1 - eta h) d_l +
eta (r/m) sum_j d_{l-j}``; the flip (z = -1) boundary is ``eta* = 2 / (a + r - r [m odd] / m)``,
which tends to the constant ``2 / (a + r)`` as n grows, below the no-lag ``2 / a``. That is
only the flip boundary: the delay also allows a crossing of rho = 1 by a complex pair (a slow
oscillation with a period of about 2 m steps), which :func:`critical_eta` finds numerically
and which sets the balanced threshold on ``mmd-gaussian`` from n = 16 on, at
``eta* (n - k) / k ~ 2`` (``experiments/balanced_stability.py``).

Closed form: ``mmd-gaussian`` (affine encoder ``z = W x + b``, x ~ N(0, I)): the pair term of
the unbiased MMD^2 between a fresh latent at theta and a window latent at phi has expectation
``P(theta, phi) = E exp(-|z - z'|^2 / (2 s2))``, ``z - z' ~ N(b - b', W W^T + W' W'^T)``
(:func:`~mowtheory.flow._gauss.gaussian_kernel_mean`), so

    Chat = w lam [ (k(k-1) P(theta, theta) + 2k sum_i P(theta, phi_i)) / (n(n-1))
                   - 2 (k/n) P_prior(theta) ] + E red_k G(theta)   (+ terms free of theta),

``P_prior(theta) = E k(z, y)``, ``y ~ N(0, I)``, and ``w = n/k`` if balanced else 1. All
derivatives are autograd of this formula in float64. (For ``data_dim = latent_dim = 1`` the
fixed point is isolated; larger dimensions have rotation symmetries, i.e. neutral modes with
rho = 1 exactly.)
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .._validate import check_choice, check_int, check_positive
from ..mow import REDUCTIONS, REFRESH_POLICIES
from ._gauss import gaussian_kernel_mean
from .problem import DTYPE, Problem
from .problems import MMDGaussian, get_problem


def lag_counts(n: int, k: int, refresh: str = "post") -> list:
    """``c_j``: how many of the n-k window slots hold a latent encoded at theta_{l-j} at step l,
    for j = 0..M-1 (``"post"``: lags 0..m-1; ``"pre"``: lag 0 is empty, lags 1..m)."""
    n = check_int("n", n, low=2)
    k = check_int("k", k, low=1, high=n - 1, high_name="n - 1")
    check_choice("refresh", refresh, REFRESH_POLICIES)
    m = math.ceil((n - k) / k)
    counts = [k] * (m - 1) + [(n - k) - k * (m - 1)]
    return counts if refresh == "post" else [0] + counts


def _problem(problem) -> MMDGaussian:
    problem = get_problem(problem) if isinstance(problem, str) else problem
    if not isinstance(problem, MMDGaussian):
        raise ValueError(f"problem must be an 'mmd-gaussian' problem (the one with a closed-form "
                         f"window cross term); got problem={getattr(problem, 'name', problem)!r}")
    return problem


def expected_window_cost(problem, theta: torch.Tensor, window_thetas: torch.Tensor, *, n: int,
                         k: int, reduction: str = "mean", balanced: bool = False) -> torch.Tensor:
    """``Chat(theta; Phi)`` of the module docstring (up to terms free of theta): theta ``(P,)``,
    window_thetas ``(n-k, P)`` (slot i encoded at ``phi_i``) -> scalar; its gradient in theta
    is the expected MoW gradient, and at ``Phi = theta`` it equals ``grad c(theta)``."""
    p = _problem(problem)
    n = check_int("n", n, low=2)
    k = check_int("k", k, low=1, high=n - 1, high_name="n - 1")
    check_choice("reduction", reduction, REDUCTIONS)
    if window_thetas.shape != (n - k, p.n_params):
        raise ValueError(f"window_thetas must have shape (n - k, P) = ({n - k}, {p.n_params}); "
                         f"got shape {tuple(window_thetas.shape)}")
    W, b, _ = p.unpack(theta)
    Wp, bp, _ = p.unpack(window_thetas)
    S = W @ W.T
    pair_ww = gaussian_kernel_mean(torch.zeros_like(b), 2.0 * S, p.bandwidth2)
    pair_win = gaussian_kernel_mean(b - bp, S + Wp @ Wp.transpose(-1, -2), p.bandwidth2).sum()
    eye = torch.eye(p.latent_dim, dtype=S.dtype, device=S.device)
    to_prior = gaussian_kernel_mean(b, S + eye, p.bandwidth2)
    w = n / k if balanced else 1.0
    f = p.lam * ((k * (k - 1) * pair_ww + 2 * k * pair_win) / (n * (n - 1))
                 - 2.0 * (k / n) * to_prior)
    return w * f + p.expected_per_example(theta, k, reduction)


def lag_blocks(problem, theta_star, *, n: int, k: int, reduction: str = "mean",
               balanced: bool = False, refresh: str = "post", lag: bool = True) -> torch.Tensor:
    """The blocks ``A_j`` ``(M, P, P)`` float64 at theta* ``(P,)`` (see module docstring).
    ``lag=False`` folds them all into ``A_0`` (the planted fault: no staleness), M = 1."""
    p = _problem(problem)
    th = torch.as_tensor(theta_star, dtype=DTYPE).detach()
    counts = lag_counts(n, k, refresh)
    Phi = th.expand(n - k, p.n_params).clone()
    kw = dict(n=n, k=k, reduction=reduction, balanced=balanced)
    H = torch.autograd.functional.hessian(lambda t: expected_window_cost(p, t, Phi, **kw), th)

    def grad_theta(phi):
        t = th.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(expected_window_cost(p, t, phi, **kw), t, create_graph=True)
        return g
    B = torch.autograd.functional.jacobian(grad_theta, Phi)       # (P, n-k, P)
    blocks, start = [], 0
    for c in counts:
        blocks.append(B[:, start:start + c, :].sum(1))
        start += c
    blocks[0] = blocks[0] + H
    A = torch.stack(blocks)
    return A.sum(0, keepdim=True) if not lag else A


def companion(blocks: torch.Tensor, eta: float) -> torch.Tensor:
    """Companion matrix ``(M P, M P)`` of ``d_{l+1} = d_l - eta sum_j A_j d_{l-j}`` acting on
    the state ``(d_l, d_{l-1}, ..., d_{l-M+1})``; blocks ``(M, P, P)``."""
    eta = check_positive("eta", eta)
    M, P, _ = blocks.shape
    T = torch.zeros(M * P, M * P, dtype=blocks.dtype)
    T[:P, :] = -eta * blocks.permute(1, 0, 2).reshape(P, M * P)
    T[:P, :P] += torch.eye(P, dtype=blocks.dtype)
    if M > 1:
        T[P:, :-P] = torch.eye((M - 1) * P, dtype=blocks.dtype)
    return T


def spectral_radius(blocks: torch.Tensor, eta: float) -> float:
    """rho of :func:`companion` (``blocks``, ``eta``): the asymptotic growth factor per step."""
    return float(torch.linalg.eigvals(companion(blocks, eta)).abs().max())


def critical_eta(blocks: torch.Tensor, *, eta_max: float = 10.0, grid: int = 400,
                 rtol: float = 1e-6) -> float:
    """The smallest eta in ``(0, eta_max]`` with rho(eta) = 1 (first crossing on a geometric
    grid of ``grid`` points from ``eta_max * 1e-4``, then bisection to ``rtol``); ``inf`` if
    rho < 1 on the whole grid. Raises ValueError when rho >= 1 already at the grid's start."""
    eta_max = check_positive("eta_max", eta_max)
    grid = check_int("grid", grid, low=2)
    rtol = check_positive("rtol", rtol)
    etas = np.geomspace(eta_max * 1e-4, eta_max, grid)
    if spectral_radius(blocks, float(etas[0])) >= 1.0:
        raise ValueError(f"rho >= 1 already at eta={etas[0]:.3g}: the fixed point is not stable "
                         f"for small steps (is theta_star a minimum of c?)")
    lo = hi = None
    for a, b_ in zip(etas[:-1], etas[1:]):
        if spectral_radius(blocks, float(b_)) >= 1.0:
            lo, hi = float(a), float(b_)
            break
    if hi is None:
        return math.inf
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if spectral_radius(blocks, mid) >= 1.0 else (mid, hi)
    return 0.5 * (lo + hi)


def fixed_point(problem, theta0, *, n: int, k: int, reduction: str = "mean",
                balanced: bool = False, iters: int = 100, tol: float = 1e-12) -> torch.Tensor:
    """theta* ``(P,)``: a minimum of the MoW ODE's potential c (grad c = 0, Hess c positive
    definite), by damped Newton on ``grad_theta Chat(theta; theta)`` from theta0 ``(P,)``."""
    p = _problem(problem)
    th = torch.as_tensor(theta0, dtype=DTYPE).detach().clone()
    kw = dict(n=n, k=k, reduction=reduction, balanced=balanced)

    def grad(t):
        t = t.detach().requires_grad_(True)
        Phi = t.detach().expand(n - k, p.n_params)
        (g,) = torch.autograd.grad(expected_window_cost(p, t, Phi, **kw), t)
        return g
    for _ in range(check_int("iters", iters, low=1)):
        g = grad(th)
        if float(g.norm()) < tol:
            break
        Hc = lag_blocks(p, th, lag=False, **kw, refresh="post")[0]
        mu = max(0.0, -float(torch.linalg.eigvalsh(0.5 * (Hc + Hc.T)).min())) + 1e-9
        th = th - torch.linalg.solve(Hc + mu * torch.eye(len(th), dtype=DTYPE), g)
    Hc = lag_blocks(p, th, lag=False, **kw, refresh="post")[0]
    lam_min = float(torch.linalg.eigvalsh(0.5 * (Hc + Hc.T)).min())
    if float(grad(th).norm()) > 1e-8 or lam_min <= 0:
        raise ValueError(f"theta0 did not lead to a strict minimum of c (|grad c| = "
                         f"{float(grad(th).norm()):.3g}, smallest Hessian eigenvalue "
                         f"{lam_min:.3g}); got theta0={theta0!r}")
    return th


def mean_map(problem, theta_star, d0, eta: float, steps: int, *, n: int, k: int,
             reduction: str = "mean", balanced: bool = False, refresh: str = "post",
             lag: bool = True) -> torch.Tensor:
    """Iterate the (nonlinear) mean recursion from theta* + d0 (history at theta* + d0, as a
    window encoded at theta_0): returns the deviations ``(steps + 1, P)`` from theta*."""
    p = _problem(problem)
    ts = torch.as_tensor(theta_star, dtype=DTYPE)
    counts = lag_counts(n, k, refresh)
    slot_lag = torch.tensor([j for j, c in enumerate(counts) for _ in range(c)])
    hist = [ts + d0] * len(counts)                    # hist[j] = theta_{l-j}
    kw = dict(n=n, k=k, reduction=reduction, balanced=balanced)
    out = [d0.clone()]
    for _ in range(check_int("steps", steps, low=1)):
        t = hist[0].clone().requires_grad_(True)
        Phi = torch.stack(hist)[slot_lag] if lag else hist[0].expand(n - k, -1)
        (g,) = torch.autograd.grad(expected_window_cost(p, t, Phi.detach(), **kw), t)
        hist = [(hist[0] - eta * g).detach()] + hist[:-1]
        out.append(hist[0] - ts)
    return torch.stack(out)


def default_problem() -> Problem:
    """The problem of the study: ``mmd-gaussian`` with ``data_dim = latent_dim = 1`` (isolated
    fixed point theta* = (W, b, V) = (1, 0, 1), where both F and G vanish)."""
    return get_problem("mmd-gaussian", data_dim=1, latent_dim=1)
