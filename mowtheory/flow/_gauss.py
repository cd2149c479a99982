"""Closed-form Gaussian expectations used by the toy problems (torch, float64, autograd-ready).

All functions broadcast over leading batch dimensions ``...``.

- :func:`gaussian_kernel_mean`: ``E exp(-|u|^2 / (2 s2))`` for ``u ~ N(mu, S)``
  ``= det(I + S/s2)^(-1/2) exp(-mu^T (S + s2 I)^(-1) mu / 2)``.
- :func:`mmd2_to_standard_normal`: population MMD^2 between ``N(b, S)`` and ``N(0, I)`` for the
  Gaussian kernel ``k(a, c) = exp(-|a - c|^2 / (2 s2))``:
  ``E k(X, X') + E k(Y, Y') - 2 E k(X, Y)`` with ``X - X' ~ N(0, 2S)``, ``Y - Y' ~ N(0, 2I)``,
  ``X - Y ~ N(b, S + I)``.
- :func:`expected_reduced_quadratic`: ``E red_k(|y_1|^2, ..., |y_k|^2)`` for i.i.d.
  ``y_j ~ N(m, A)`` and the reductions of :mod:`mowtheory.mow` (``"sum"``, ``"mean"``,
  ``"sqrt_mean"``). The square root uses the exact identity
  ``sqrt(Q) = (1 / (2 sqrt(pi))) * int_0^inf (1 - exp(-s Q)) s^(-3/2) ds`` with the Laplace
  transform of ``Q = (1/k) sum_j |y_j|^2``,
  ``E exp(-s Q) = [det(I + 2 s A / k)^(-1/2) exp(-(s/k) m^T (I + 2 s A / k)^(-1) m)]^k``,
  integrated by the trapezoidal rule in ``u = log s`` (an analytic integrand decaying like
  ``exp(-|u|/2)`` at both ends: the rule converges geometrically, to ~1e-13 here; for small s
  the log-determinant is taken from its power series, as ``log(1 + tiny)`` would round to 0).
"""
from __future__ import annotations

import math

import torch

# trapezoidal nodes in u = log s for the sqrt_mean integral
_U = torch.arange(-70.0, 70.0 + 1e-9, 0.2, dtype=torch.float64)


def _eye(d: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(d, dtype=like.dtype, device=like.device)


def gaussian_kernel_mean(mu: torch.Tensor, S: torch.Tensor, s2: float) -> torch.Tensor:
    """``E exp(-|u|^2/(2 s2))`` for ``u ~ N(mu, S)``; ``mu`` (..., D), ``S`` (..., D, D) -> (...)."""
    d = S.shape[-1]
    M = S + s2 * _eye(d, S)
    logdet = torch.linalg.slogdet(M / s2)[1]
    quad = (mu.unsqueeze(-2) @ torch.linalg.solve(M, mu.unsqueeze(-1))).squeeze(-1).squeeze(-1)
    return torch.exp(-0.5 * logdet - 0.5 * quad)


def mmd2_to_standard_normal(b: torch.Tensor, S: torch.Tensor, s2: float) -> torch.Tensor:
    """Population Gaussian-kernel MMD^2 between ``N(b, S)`` and ``N(0, I)``; ``b`` (..., D),
    ``S`` (..., D, D) -> (...)."""
    d = S.shape[-1]
    eye = _eye(d, S)
    zero = torch.zeros_like(b)
    kxx = gaussian_kernel_mean(zero, 2.0 * S, s2)
    kyy = (1.0 + 2.0 / s2) ** (-d / 2.0)
    kxy = gaussian_kernel_mean(b, S + eye, s2)
    return kxx + kyy - 2.0 * kxy


def expected_reduced_quadratic(m: torch.Tensor, A: torch.Tensor, k: int,
                               reduction: str) -> torch.Tensor:
    """``E red(|y_1|^2, ..., |y_k|^2)`` for i.i.d. ``y_j ~ N(m, A)``; ``m`` (..., d),
    ``A`` (..., d, d) -> (...). ``reduction`` in ``("sum", "mean", "sqrt_mean")``."""
    mean_q = torch.diagonal(A, dim1=-2, dim2=-1).sum(-1) + (m * m).sum(-1)
    if reduction == "sum":
        return k * mean_q
    if reduction == "mean":
        return mean_q
    if reduction != "sqrt_mean":
        raise ValueError(f"reduction must be one of 'sum', 'mean', 'sqrt_mean'; got {reduction!r}")
    d = A.shape[-1]
    s = torch.exp(_U.to(A.device))                                   # (U,)
    sk = (s / k).reshape(-1, 1, 1)                                   # (U, 1, 1)
    M = _eye(d, A) + 2.0 * sk * A.unsqueeze(-3)                      # (..., U, d, d)
    logdet = torch.linalg.slogdet(M)[1]                              # (..., U)
    # small s: log det(I + cA) = sum_r (-1)^(r+1) c^r tr(A^r) / r (slogdet loses log(1 + tiny))
    c = 2.0 * s / k                                                  # (U,)
    trA = torch.diagonal(A, dim1=-2, dim2=-1).sum(-1).unsqueeze(-1)  # (..., 1)
    small = c * trA.abs() < 1e-3
    cs = torch.where(small, c, torch.zeros_like(c))                  # no overflow off the mask
    series = torch.zeros_like(logdet)
    Ar = A
    for r in range(1, 6):
        tr_r = torch.diagonal(Ar, dim1=-2, dim2=-1).sum(-1).unsqueeze(-1)
        series = series + (-1) ** (r + 1) * cs ** r * tr_r / r
        Ar = Ar @ A
    logdet = torch.where(small, series, logdet)
    mm = m.unsqueeze(-2).expand(*M.shape[:-1])                       # (..., U, d)
    quad = (mm.unsqueeze(-2) @ torch.linalg.solve(M, mm.unsqueeze(-1))).squeeze(-1).squeeze(-1)
    log_lt = k * (-0.5 * logdet - (s / k) * quad)                    # log E exp(-s Q)
    integrand = -torch.expm1(log_lt) * torch.exp(-0.5 * _U.to(A.device))
    h = float(_U[1] - _U[0])
    return integrand.sum(-1) * h / (2.0 * math.sqrt(math.pi))


def expected_sqrt_mean_chi2(k: int) -> float:
    """``E sqrt((1/k) chi^2_k) = sqrt(2/k) Gamma((k+1)/2) / Gamma(k/2)``."""
    return math.sqrt(2.0 / k) * math.exp(math.lgamma((k + 1) / 2.0) - math.lgamma(k / 2.0))
