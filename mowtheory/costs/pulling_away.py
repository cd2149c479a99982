"""EBGAN pulling-away term (Zhao, Mathieu, LeCun 2017)."""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from .._validate import check_latents, check_positive
from .pairwise import Kernel, Weights, full_value

__all__ = ["pullaway", "DEFAULT_EPS"]

DEFAULT_EPS = 1e-12


def _check_params(eps=DEFAULT_EPS) -> dict:
    return {"eps": check_positive("eps", eps)}


def _kernel(n: Optional[int] = None, *, eps: float = DEFAULT_EPS) -> Kernel:
    """kappa(a, b) = (a . b)^2 / ((|a|^2 + eps) (|b|^2 + eps)) = cos^2(a, b)."""
    def pair(a: Tensor, b: Tensor) -> Tensor:
        na = a.square().sum(-1) + eps
        nb = b.square().sum(-1) + eps
        return (a @ b.transpose(-1, -2)).square() / (na.unsqueeze(-1) * nb.unsqueeze(-2))

    return Kernel(pair, None, ("pullaway", eps))


def _weights(n: int, n_y: Optional[int] = None, **_) -> Weights:
    return Weights(zz=1.0 / (n * (n - 1)))


def pullaway(z: Tensor, *, eps: float = DEFAULT_EPS) -> Tensor:
    """Pulling-away term ``(1 / (n (n - 1))) sum_{i != j} cos^2(z_i, z_j)``.

    Args:
        z: ``(n, D)``, ``n >= 2``.
        eps: ``> 0``, added to the squared norms: ``cos(a, b) = a.b / (sqrt(|a|^2 + eps)
            sqrt(|b|^2 + eps))``, so a zero vector has cos = 0 and a finite gradient
            (relative change ``eps / |a|^2`` otherwise; negligible at the default 1e-12).

    Returns:
        0-dim tensor (dtype of z), in ``[0, 1]``.
    """
    check_latents("z", z, min_n=2)
    p = _check_params(eps)
    return full_value(_kernel(**p), _weights(z.shape[0]), z)
