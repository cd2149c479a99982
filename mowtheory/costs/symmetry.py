"""Symmetrisation of a batch cost over permutations of its rows."""
from __future__ import annotations

import functools
import itertools
import math
from typing import Callable, Optional

import torch
from torch import Tensor

from .._validate import check_int, check_latents

__all__ = ["symmetrize", "MAX_EXACT_N"]

#: largest n for the exact average over all n! permutations (8! = 40320 calls of F)
MAX_EXACT_N = 8


def symmetrize(F: Callable[..., Tensor], *, n_permutations: Optional[int] = None,
               generator: Optional[torch.Generator] = None) -> Callable[..., Tensor]:
    """Return the symmetrisation ``F~(z, *rest, **kw) = mean_sigma F(z[..., sigma, :], *rest, **kw)``.

    Args:
        F: a batch cost taking latents ``z`` of shape ``(..., n, D)`` first; it may return a
            0-dim tensor or a batch of values (averaged elementwise).
        n_permutations: None: exact average over all ``n!`` permutations of axis -2
            (``n <= 8``); an integer ``P >= 1``: Monte Carlo average over ``P`` uniform random
            permutations, drawn afresh from ``generator`` at every call (unbiased for the
            exact symmetrisation).
        generator: ``torch.Generator``, required when ``n_permutations`` is given.

    Returns:
        The symmetrised cost, a function with the signature of ``F``; permutation invariant
        (exact mode) and equal to ``F`` when ``F`` is already invariant (both modes).
    """
    if not callable(F):
        raise TypeError(f"F must be callable (a batch cost F(z, ...)); got F={F!r}")
    if n_permutations is not None:
        n_permutations = check_int("n_permutations", n_permutations, low=1)
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator when n_permutations is given "
                             f"(no global RNG is used); got generator={generator!r}")
    elif generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None; got generator={generator!r}")

    @functools.wraps(F)
    def symmetrized(z: Tensor, *rest, **kwargs) -> Tensor:
        check_latents("z", z, min_n=1, batch_dims=True)
        n = z.shape[-2]
        if n_permutations is None:
            if n > MAX_EXACT_N:
                raise ValueError(
                    f"z must have n <= {MAX_EXACT_N} rows for the exact symmetrisation over all "
                    f"n! permutations; got n={n} (pass n_permutations=P and a generator for a "
                    f"Monte Carlo average)")
            perms = (torch.tensor(p, device=z.device) for p in itertools.permutations(range(n)))
            count = math.factorial(n)
        else:
            perms = (torch.randperm(n, generator=generator, device=generator.device).to(z.device)
                     for _ in range(n_permutations))
            count = n_permutations
        total = None
        for perm in perms:
            value = F(z.index_select(-2, perm), *rest, **kwargs)
            total = value if total is None else total + value
        return total / count

    return symmetrized
