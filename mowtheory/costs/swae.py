"""Sliced Wasserstein cost (SWAE; Kolouri et al.)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._validate import check_generator, check_int, check_latents, check_pair

__all__ = ["sliced_wasserstein", "random_directions"]


def _check_directions(directions: Tensor, dim: Optional[int] = None) -> Tensor:
    check_latents("directions", directions, min_n=1, dim=dim)
    norms = directions.detach().to(torch.float64).norm(dim=-1)
    tol = 1e-6 if directions.dtype == torch.float64 else max(
        1e-4, 32 * torch.finfo(directions.dtype).eps)
    worst = float((norms - 1).abs().max())
    if worst > tol:
        raise ValueError(f"directions must have rows of unit length (| |theta| - 1 | <= {tol:g}); "
                         f"got row norms off by up to {worst:.3g} (normalise the rows)")
    return directions


def _check_params(directions=None, n_directions=50, generator=None) -> dict:
    if directions is not None:
        _check_directions(directions)
    return {"directions": directions,
            "n_directions": check_int("n_directions", n_directions, low=1),
            "generator": check_generator(generator, optional=True)}


def random_directions(n_directions: int, dim: int, *, generator: torch.Generator,
                      dtype: torch.dtype = torch.float32,
                      device: Optional[torch.device] = None) -> Tensor:
    """``(n_directions, dim)`` normalised Gaussian rows (uniform on the sphere), drawn from
    ``generator`` (on the generator's device, then moved to ``device``)."""
    check_int("n_directions", n_directions, low=1)
    check_int("dim", dim, low=1)
    check_generator(generator, optional=True, required_for="to draw directions")
    g = torch.randn(n_directions, dim, generator=generator, device=generator.device,
                    dtype=torch.float64)
    return (g / g.norm(dim=-1, keepdim=True)).to(dtype=dtype, device=device)


def sliced_wasserstein(z: Tensor, y: Tensor, *, directions: Optional[Tensor] = None,
                       n_directions: int = 50,
                       generator: Optional[torch.Generator] = None) -> Tensor:
    """Sliced Wasserstein cost: mean squared difference of sorted projections (no root).

    Args:
        z: ``(n, D)``; y: ``(n, D)`` (equal sizes required, ``n >= 1``).
        directions: ``(L, D)`` unit rows ``theta_l`` (checked); None: ``n_directions``
            normalised Gaussians drawn from ``generator`` (required then).
        n_directions: ``L`` when directions are drawn (ignored when ``directions`` is given).
        generator: ``torch.Generator`` for the directions.

    Returns:
        0-dim tensor (dtype of z)::

            (1 / (L n)) sum_l sum_i ( sort(z theta_l)_i - sort(y theta_l)_i )^2

        i.e. the mean over directions of the squared 2-Wasserstein distance of the
        projected empirical measures. Not split-able (sorting couples all rows).
    """
    check_latents("z", z, min_n=1)
    check_latents("y", y, min_n=1)
    check_pair("z", z, "y", y)
    if y.shape[0] != z.shape[0]:
        raise ValueError(f"y must have the same number of rows as z (sorted projections pair "
                         f"them); got z with n={z.shape[0]}, y with n={y.shape[0]}")
    n_directions = check_int("n_directions", n_directions, low=1)
    if directions is None:
        check_generator(generator, optional=True, required_for="when directions is None")
        directions = random_directions(n_directions, z.shape[-1], generator=generator,
                                       dtype=z.dtype, device=z.device)
    else:
        _check_directions(directions, dim=z.shape[-1])
        check_pair("z", z, "directions", directions)
    pz = torch.sort(z @ directions.transpose(0, 1), dim=0).values
    py = torch.sort(y @ directions.transpose(0, 1), dim=0).values
    return (pz - py).square().mean()
