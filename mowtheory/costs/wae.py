"""WAE-MMD with inverse multiquadratic (or Gaussian) kernels (Tolstikhin et al., WAE)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from .._validate import check_choice, check_latents, check_pair, check_positive
from .pairwise import Kernel, Weights, check_positive_seq, full_value, scale_sum, sqdist

__all__ = ["mmd", "DEFAULT_SCALES"]

DEFAULT_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def _check_params(kernel="imq", scales=DEFAULT_SCALES, sigma2=1.0) -> dict:
    return {"kernel": check_choice("kernel", kernel, ("imq", "rbf")),
            "scales": check_positive_seq("scales", scales),
            "sigma2": check_positive("sigma2", sigma2)}


def _imq(d2, c):
    return c / (c + d2)


def _rbf(d2, inv_c):
    return torch.exp(-d2 * inv_c)


def _kernel(n: Optional[int] = None, *, kernel: str = "imq",
            scales: Sequence[float] = DEFAULT_SCALES, sigma2: float = 1.0) -> Kernel:
    """kappa(a, b) = sum_s k_C(a, b), C = 2 D sigma2 s; IMQ C / (C + d^2), RBF exp(-d^2 / C)."""
    def pair(a: Tensor, b: Tensor) -> Tensor:
        d2 = sqdist(a, b)
        base = 2.0 * a.shape[-1] * sigma2
        cs = tuple(base * s for s in scales)
        if kernel == "imq":
            return scale_sum(_imq, d2, cs)
        return scale_sum(_rbf, d2, tuple(1.0 / c for c in cs))

    return Kernel(pair, None, ("wae", kernel, tuple(scales), sigma2))


def _weights(n: int, n_y: Optional[int] = None, **_) -> Weights:
    if n_y is None:
        return Weights(zz=1.0 / (n * (n - 1)))
    return Weights(zz=1.0 / (n * (n - 1)), zy=-2.0 / (n * n_y), yy=1.0 / (n_y * (n_y - 1)))


def mmd(z: Tensor, y: Tensor, *, kernel: str = "imq",
        scales: Sequence[float] = DEFAULT_SCALES, sigma2: float = 1.0) -> Tensor:
    """WAE-MMD between the latents ``z`` and a prior sample ``y``.

    Args:
        z: ``(n_z, D)``, ``n_z >= 2``; y: ``(n_y, D)``, ``n_y >= 2`` (sizes may differ).
        kernel: ``"imq"``: ``k_C(a, b) = C / (C + |a - b|^2)``; ``"rbf"``: ``exp(-|a-b|^2 / C)``.
        scales: positive scales ``s``, ``C = 2 D sigma2 s`` (default 0.1, 0.2, 0.5, 1, 2, 5, 10).
        sigma2: prior variance ``> 0``.

    Returns:
        0-dim tensor (dtype of z): U-statistics on the z-z and y-y blocks, V on z-y::

            sum_s [ sum_{i != j} k_C(z_i, z_j) / (n_z (n_z - 1))
                    + sum_{i != j} k_C(y_i, y_j) / (n_y (n_y - 1))
                    - 2 sum_{i, j} k_C(z_i, y_j) / (n_z n_y) ].
    """
    check_latents("z", z, min_n=2)
    check_latents("y", y, min_n=2)
    check_pair("z", z, "y", y)
    p = _check_params(kernel, scales, sigma2)
    return full_value(_kernel(**p), _weights(z.shape[0], y.shape[0]), z, y)
