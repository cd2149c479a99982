"""EBGAN pulling-away term (Zhao, Mathieu, LeCun 2017)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._validate import check_latents, check_positive
from .pairwise import Kernel, Weights, full_value

__all__ = ["pullaway", "DEFAULT_EPS"]

DEFAULT_EPS = 1e-12


def _check_params(eps=DEFAULT_EPS) -> dict:
    return {"eps": check_positive("eps", eps)}


def _unit(a: Tensor, eps: float) -> Tensor:
    """Rows of ``a`` (``(p, D)``) scaled to (almost) unit length, scale-invariantly.

    Each row is first divided by its largest absolute entry (so the squared norm of a nonzero
    row becomes a number in ``[1, D]`` whatever the scale of ``a``: no underflow at
    ``|a| ~ 1e-7`` and below), then by ``sqrt(|row|^2 + eps)``. A zero row (and a row of
    subnormal numbers, whose reciprocal overflows) stays zero, with zero gradient. Since
    ``cos^2`` is homogeneous of degree 0, dividing by any positive function of the row changes
    neither the value nor the gradient of ``cos^2``.
    """
    scale = a.abs().amax(-1, keepdim=True)
    # rows below the smallest normal number count as zero: 1 / scale would overflow
    nonzero = scale >= torch.finfo(a.dtype).tiny
    safe = torch.where(nonzero, scale, torch.ones_like(scale))
    b = torch.where(nonzero, a / safe, torch.zeros_like(a))
    return b / (b.square().sum(-1, keepdim=True) + eps).sqrt()


def _kernel(n: Optional[int] = None, *, eps: float = DEFAULT_EPS) -> Kernel:
    """kappa(a, b) = cos^2(a, b), computed from rows scaled to unit length (see ``_unit``)."""
    def pair(a: Tensor, b: Tensor) -> Tensor:
        return (_unit(a, eps) @ _unit(b, eps).transpose(-1, -2)).square()

    return Kernel(pair, None, ("pullaway", eps))


def _weights(n: int, n_y: Optional[int] = None, **_) -> Weights:
    return Weights(zz=1.0 / (n * (n - 1)))


def pullaway(z: Tensor, *, eps: float = DEFAULT_EPS) -> Tensor:
    """Pulling-away term ``(1 / (n (n - 1))) sum_{i != j} cos^2(z_i, z_j)``.

    Args:
        z: ``(n, D)``, ``n >= 2``.
        eps: ``> 0``, a *relative* regulariser: each row ``a`` is first divided by its
            largest absolute entry (``a~ = a / max_i |a_i|``, so ``1 <= |a~|^2 <= D``), then
            ``cos(a, b) = a~.b~ / (sqrt(|a~|^2 + eps) sqrt(|b~|^2 + eps))``. The result is
            scale-invariant (the same cos^2 at ``|z| ~ 1e-7`` as at ``|z| ~ 1``), changes
            cos^2 by a relative ``<= 2 eps`` (negligible at the default 1e-12), and a zero
            vector (or one whose largest entry is subnormal, below ``finfo.tiny``) has
            cos = 0 with a zero gradient.

    Returns:
        0-dim tensor (dtype of z), in ``[0, 1]``.
    """
    check_latents("z", z, min_n=2)
    p = _check_params(eps)
    return full_value(_kernel(**p), _weights(z.shape[0]), z)
