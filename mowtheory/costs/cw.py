"""Cramér–Wold distance of a sample to N(0, I) (CWAE; Tabor, Knop, Spurek et al.)."""
from __future__ import annotations

import math
from typing import Optional

from torch import Tensor

from .._validate import check_latents, check_positive
from .pairwise import Kernel, Weights, full_value, sqdist

__all__ = ["cramer_wold", "log_cramer_wold", "silverman_gamma"]


def silverman_gamma(n: int) -> float:
    """Silverman bandwidth ``gamma = (4 / (3 n))^(2/5)`` for a sample of ``n`` points."""
    return (4.0 / (3.0 * n)) ** 0.4


def _check_params(gamma=None) -> dict:
    return {"gamma": None if gamma is None else check_positive("gamma", gamma)}


def _gamma(n: Optional[int], gamma: Optional[float]) -> Optional[float]:
    if gamma is not None:
        return gamma
    return None if n is None else silverman_gamma(n)


def _kernel(n: Optional[int], *, gamma: Optional[float] = None) -> Optional[Kernel]:
    """kappa(a, b) = (gamma + K |a - b|^2)^(-1/2), u(a) = (gamma + 1/2 + K |a|^2)^(-1/2),
    K = 1 / (2 D - 3). None when gamma is Silverman's and ``n`` is unknown."""
    g = _gamma(n, gamma)
    if g is None:
        return None

    def pair(a: Tensor, b: Tensor) -> Tensor:
        return (sqdist(a, b) * (1.0 / (2 * a.shape[-1] - 3)) + g).rsqrt()

    def unary(a: Tensor) -> Tensor:
        return (g + 0.5 + a.square().sum(-1) / (2 * a.shape[-1] - 3)).rsqrt()

    return Kernel(pair, unary, ("cw", g))


def _weights(n: int, n_y: Optional[int] = None, *, gamma: Optional[float] = None,
             log: bool = False) -> Weights:
    g = _gamma(n, gamma)
    # diagonal i = j of the double sum: n * gamma^(-1/2) / n^2
    const = 1.0 / math.sqrt(1.0 + g) + 1.0 / (n * math.sqrt(g))
    return Weights(zz=1.0 / n**2, unary=-2.0 / n, const=const,
                   outer="log" if log else "identity")


def cramer_wold(z: Tensor, *, gamma: Optional[float] = None) -> Tensor:
    """Cramér–Wold distance of the sample ``z`` to N(0, I).

    Args:
        z: ``(n, D)`` latents, ``n >= 2``, ``D >= 2``, finite, float32/float64.
        gamma: smoothing bandwidth ``> 0``; None: Silverman ``gamma = (4 / (3 n))^(2/5)``.

    Returns:
        0-dim tensor (dtype of z)::

            cw(z) = 1/sqrt(1 + gamma) + (1/n^2) sum_{i,j} (gamma + K |z_i - z_j|^2)^(-1/2)
                    - (2/n) sum_i (gamma + 1/2 + K |z_i|^2)^(-1/2),   K = 1 / (2D - 3).

        The double sum includes the diagonal ``i = j``. Depends on z only through
        ``|z_i - z_j|`` and ``|z_i|``: invariant under orthogonal transforms of z.
    """
    check_latents("z", z, min_n=2, min_d=2)
    p = _check_params(gamma)
    n = z.shape[0]
    return full_value(_kernel(n, **p), _weights(n, **p), z)


def log_cramer_wold(z: Tensor, *, gamma: Optional[float] = None) -> Tensor:
    """``log cramer_wold(z, gamma=gamma)``, the CWAE training cost; ``z``: ``(n, D)``,
    ``n >= 2``, ``D >= 2``; returns a 0-dim tensor. The sums are accumulated in float64
    before the log (a distance that rounds to ``<= 0`` gives ``-inf``/NaN)."""
    check_latents("z", z, min_n=2, min_d=2)
    p = _check_params(gamma)
    n = z.shape[0]
    return full_value(_kernel(n, **p), _weights(n, **p, log=True), z)
