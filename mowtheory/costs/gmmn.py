"""GMMN: biased MMD^2 with a sum of Gaussian kernels (Li, Swersky, Zemel 2015)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from .._validate import check_latents, check_pair
from .pairwise import Kernel, Weights, check_positive_seq, full_value, scale_sum, sqdist

__all__ = ["gmmn_mmd", "DEFAULT_BANDWIDTHS"]

#: Kernel standard deviations sigma. Doubling from 1 to 16 covers the pairwise distances of
#: latents near N(0, I) (typical |a - b| ~ sqrt(2 D): 2 at D = 2, 16 at D = 128) from local
#: structure to the scale of the whole sample.
DEFAULT_BANDWIDTHS = (1.0, 2.0, 4.0, 8.0, 16.0)


def _check_params(bandwidths=DEFAULT_BANDWIDTHS, sqrt=False) -> dict:
    if not isinstance(sqrt, bool):
        raise TypeError(f"sqrt must be a bool (True or False); got sqrt={sqrt!r}")
    return {"bandwidths": check_positive_seq("bandwidths", bandwidths), "sqrt": sqrt}


def _gauss(d2, inv_2s2):
    return torch.exp(-d2 * inv_2s2)


def _kernel(n: Optional[int] = None, *, bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS,
            sqrt: bool = False) -> Kernel:
    """kappa(a, b) = sum_sigma exp(-|a - b|^2 / (2 sigma^2))."""
    inv = tuple(1.0 / (2.0 * s * s) for s in bandwidths)

    def pair(a: Tensor, b: Tensor) -> Tensor:
        return scale_sum(_gauss, sqdist(a, b), inv)

    return Kernel(pair, None, ("gmmn", tuple(bandwidths)))


def _weights(n: int, n_y: Optional[int] = None, *,
             bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS, sqrt: bool = False) -> Weights:
    outer = "sqrt" if sqrt else "identity"
    if n_y is None:
        return Weights(zz=1.0 / n**2, const=len(bandwidths) / n, outer=outer)
    # diagonals: kappa(a, a) = len(bandwidths), n of them in each of the z-z and y-y blocks
    return Weights(zz=1.0 / n**2, zy=-2.0 / (n * n_y), yy=1.0 / n_y**2,
                   const=len(bandwidths) * (1.0 / n + 1.0 / n_y), outer=outer)


def gmmn_mmd(z: Tensor, y: Tensor, *, bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS,
             sqrt: bool = False) -> Tensor:
    """Biased (V-statistic) MMD^2 between ``z`` and ``y`` with a sum of Gaussian kernels.

    Args:
        z: ``(n_z, D)``; y: ``(n_y, D)`` (``n >= 1``; sizes may differ).
        bandwidths: kernel standard deviations ``sigma > 0`` (default 1, 2, 4, 8, 16).
        sqrt: return ``sqrt(MMD^2)`` (safe square root: a value ``<= 0``, which only rounding
            can produce, gives 0 with zero gradient; the gradient is finite at ``z == y``).

    Returns:
        0-dim tensor (dtype of z), with ``k(a, b) = sum_sigma exp(-|a - b|^2 / (2 sigma^2))``::

            (1/n_z^2) sum_{i,j} k(z_i, z_j) + (1/n_y^2) sum_{i,j} k(y_i, y_j)
            - (2 / (n_z n_y)) sum_{i,j} k(z_i, y_j)   >= 0   (0 when z == y).
    """
    check_latents("z", z, min_n=1)
    check_latents("y", y, min_n=1)
    check_pair("z", z, "y", y)
    p = _check_params(bandwidths, sqrt)
    return full_value(_kernel(**p), _weights(z.shape[0], y.shape[0], **p), z, y)
