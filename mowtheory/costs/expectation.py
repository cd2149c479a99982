"""The exact expectation of a declared pairwise cost over i.i.d. draws from finite sets:
what the real-network instrument (:mod:`mowtheory.flow.network`) uses as the expected cost
C(theta) of a dataset, via :meth:`mowtheory.costs.BatchCost.expected_over_dataset`.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from .pairwise import Kernel, Weights, cross_sum, unary_sum

__all__ = ["expected_value"]


def expected_value(kernel: Kernel, weights: Weights, n: int, Z: Tensor,
                   n_y: Optional[int] = None, Y: Optional[Tensor] = None, *,
                   zz_pairs: Optional[float] = None) -> Tensor:
    """Exact expectation of the declared cost over i.i.d. draws from finite sets.

    The batch is ``n`` draws with replacement from the rows of ``Z`` (``(..., N, D)``), the
    prior sample ``n_y`` draws with replacement from the rows of ``Y`` (``(..., M, D)``).
    With ``mean_pairs(A, B) = (1 / (|A| |B|)) sum_{a in A, b in B} kappa(a, b)`` over **all**
    ordered pairs (two independent draws can be the same row, so ``a = b`` terms stay in)::

        E[inner] = const + zz * n (n - 1) * mean_pairs(Z, Z) + unary * n * mean_a u(z_a)
                   + zy * n n_y * mean_pairs(Z, Y) + yy * n_y (n_y - 1) * mean_pairs(Y, Y)

    and ``E[value] = E[inner]`` because the value is linear in the inner sums: only for
    ``weights.outer == "identity"`` (a log or square root of the sums has no such finite form:
    ValueError). Memory ``O(N^2 + N M + M^2)`` per kernel matrix; differentiable in ``Z``.

    ``zz_pairs`` replaces ``n (n - 1)`` (only to plant a wrong formula in tests).
    Returns ``(...)`` float64.
    """
    if weights.outer != "identity":
        raise ValueError(
            f"the expectation over a dataset is exact only for costs linear in their pair sums "
            f"(outer 'identity'); got outer={weights.outer!r} (a log or square root of the sums: "
            "use the coupled, reference-free check instead)")
    N = Z.shape[-2]
    pairs = n * (n - 1) if zz_pairs is None else zz_pairs
    inner = weights.const + weights.zz * pairs * (cross_sum(kernel.pair, Z, Z) / N ** 2)
    if weights.unary:
        inner = inner + weights.unary * n * (unary_sum(kernel, Z) / N)
    if Y is not None and n_y is not None and (weights.zy or weights.yy):
        M = Y.shape[-2]
        inner = inner + weights.zy * n * n_y * (cross_sum(kernel.pair, Z, Y) / (N * M))
        inner = inner + weights.yy * n_y * (n_y - 1) * (cross_sum(kernel.pair, Y, Y) / M ** 2)
    return inner
