"""The shared pairwise-statistic base: one declaration gives full and split evaluation.

A pairwise batch cost of a sample ``z`` (``n x D``) and an optional prior sample ``y``
(``n_y x D``) is declared by

- a :class:`Kernel`: the summed symmetric kernel ``kappa(a, b)`` used for the z-z, z-y and
  y-y blocks, an optional unary term ``u(a)`` and a ``key`` naming the kernel parameters;
- a :class:`Weights`: the block weights and an outer function,

and its value is::

    inner = const + zz * sum_{i != j} kappa(z_i, z_j) + unary * sum_i u(z_i)
                  + zy * sum_{i, j} kappa(z_i, y_j) + yy * sum_{i != j} kappa(y_i, y_j)
    value = outer(inner),   outer in {identity, log, sqrt (safe)}

(diagonal terms of V-statistics are constants for translation-invariant kernels and go into
``const``). For ``z = cat(H, Z)`` with a frozen block ``H`` (``m`` rows) and fresh rows ``Z``
(``k`` rows)::

    sum_{i != j} kappa(z) = pair_sum(H) + 2 sum kappa(H, Z) + sum_{i != j} kappa(Z, Z)

so a step needs the fresh-frozen and fresh-fresh blocks only, ``O(n k D)``, with
``pair_sum(H)`` kept in a :class:`SplitCache` and updated in ``O(m k D)`` as the window
slides (exact recompute every ``ceil(m / k)`` updates to bound floating-point drift).

All block sums are accumulated in float64 and the result is cast back to the dtype of the
latents. Kernel matrices use the difference form ``|a_i - b_j|^2`` (memory ``O(p q D)``),
which is exactly 0 for coincident points.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor

__all__ = [
    "Kernel", "Weights", "SplitCache", "sqdist", "safe_sqrt", "offdiag_sum", "cross_sum",
    "full_value", "cache_init", "cache_unresolved", "cache_update", "split_value",
    "check_positive_seq",
]

_F64 = torch.float64


class Kernel(NamedTuple):
    """Kernel part of a pairwise declaration.

    pair: ``(p, D), (q, D) -> (p, q)`` matrix of the summed symmetric kernel ``kappa``.
    unary: ``(p, D) -> (p,)`` unary term ``u`` or None.
    key: hashable tuple of the parameters the cached sums depend on (cost name, bandwidth, ...).
    """
    pair: Callable[[Tensor, Tensor], Tensor]
    unary: Optional[Callable[[Tensor], Tensor]]
    key: tuple


class Weights(NamedTuple):
    """Block weights of a pairwise declaration (see the module docstring).

    outer: ``"identity"``, ``"log"`` or ``"sqrt"`` (safe square root: 0 with zero gradient
    for ``inner <= 0``, which only rounding can produce for an MMD^2 V-statistic).
    """
    zz: float
    unary: float = 0.0
    zy: float = 0.0
    yy: float = 0.0
    const: float = 0.0
    outer: str = "identity"


class SplitCache(NamedTuple):
    """Cache of a frozen block ``H`` (``m x D``) for split evaluation.

    pair_sum: 0-dim float64, ``sum_{i != j in H} kappa(h_i, h_j)`` (both orders).
    unary_sum: 0-dim float64, ``sum_{i in H} u(h_i)`` (0 when the cost has no unary term).
    updates: incremental updates since the last exact recompute.
    key: the kernel parameters the sums were computed with (``Kernel.key``); ``None`` marks
        an unresolved cache (kernel depends on the batch size ``n``, not known at
        ``init_cache`` time): it is ignored by ``split`` and recomputed by ``update_cache``.
    """
    pair_sum: Tensor
    unary_sum: Tensor
    updates: int
    key: Optional[tuple] = None


def sqdist(a: Tensor, b: Tensor) -> Tensor:
    """Squared distances ``|a_i - b_j|^2``, ``(p, D), (q, D) -> (p, q)`` (difference form)."""
    return (a.unsqueeze(-2) - b.unsqueeze(-3)).square().sum(-1)


def safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(x)`` for ``x > 0``, ``0`` otherwise, with gradient 0 where ``x <= 0``: no square
    root of 0 ever enters the autograd graph (double-``where`` trick)."""
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))),
                       torch.zeros_like(x))


def offdiag_sum(pair: Callable, a: Tensor) -> Tensor:
    """``sum_{i != j} kappa(a_i, a_j)`` as a 0-dim float64 tensor (diagonal masked out)."""
    mat = pair(a, a)
    eye = torch.eye(a.shape[0], dtype=torch.bool, device=a.device)
    return mat.masked_fill(eye, 0).sum(dtype=_F64)


def cross_sum(pair: Callable, a: Tensor, b: Tensor) -> Tensor:
    """``sum_{i, j} kappa(a_i, b_j)`` as a 0-dim float64 tensor."""
    return pair(a, b).sum(dtype=_F64)


def _unary_sum(kernel: Kernel, a: Tensor) -> Tensor:
    if kernel.unary is None:
        return torch.zeros((), dtype=_F64, device=a.device)
    return kernel.unary(a).sum(dtype=_F64)


def _outer(name: str, inner: Tensor) -> Tensor:
    if name == "identity":
        return inner
    if name == "log":
        return torch.log(inner)
    if name == "sqrt":
        return safe_sqrt(inner)
    raise ValueError(f"outer must be one of 'identity', 'log', 'sqrt'; got outer={name!r}")


def full_value(kernel: Kernel, weights: Weights, z: Tensor, y: Optional[Tensor] = None) -> Tensor:
    """Value of the declared cost on the whole sample ``z`` (and ``y``); 0-dim, dtype of z."""
    inner = weights.const + weights.zz * offdiag_sum(kernel.pair, z)
    if weights.unary:
        inner = inner + weights.unary * _unary_sum(kernel, z)
    if y is not None:
        inner = inner + weights.zy * cross_sum(kernel.pair, z, y)
        inner = inner + weights.yy * offdiag_sum(kernel.pair, y)
    return _outer(weights.outer, inner).to(z.dtype)


def cache_init(kernel: Kernel, H: Tensor) -> SplitCache:
    """Exact cache of the frozen block ``H`` (``m x D``, ``m >= 0``), ``O(m^2 D)``."""
    with torch.no_grad():
        H = H.detach()
        return SplitCache(offdiag_sum(kernel.pair, H), _unary_sum(kernel, H), 0, kernel.key)


def cache_unresolved(H: Tensor) -> SplitCache:
    """Placeholder cache (key None) for a kernel that needs the batch size ``n``."""
    nan = torch.full((), math.nan, dtype=_F64, device=H.device)
    return SplitCache(nan, nan.clone(), 0, None)


def cache_update(kernel: Kernel, cache: Optional[SplitCache], H: Tensor, slots: Tensor,
                 new: Tensor) -> SplitCache:
    """Cache of ``H`` after ``H[slots] = new`` (``k`` rows), ``O(m k D)``.

    The removed rows' contributions ``2 sum kappa(old, rest) + sum_{s != t} kappa(old)``
    are subtracted and the new rows' added. Every ``ceil(m / k)`` updates (and whenever the
    cache is None or was computed with another ``key``) the sums are recomputed exactly,
    ``O(m^2 D)``, i.e. amortised ``O(m k D)``.
    """
    with torch.no_grad():
        H, new = H.detach(), new.detach()
        m, k = H.shape[0], new.shape[0]
        if cache is None or cache.key is None or cache.key != kernel.key \
                or cache.updates + 1 >= math.ceil(m / k):
            Hn = H.clone()
            Hn[slots] = new
            return cache_init(kernel, Hn)
        keep = torch.ones(m, dtype=torch.bool, device=H.device)
        keep[slots] = False
        rest, old = H[keep], H[slots]
        delta = (2 * (cross_sum(kernel.pair, new, rest) - cross_sum(kernel.pair, old, rest))
                 + offdiag_sum(kernel.pair, new) - offdiag_sum(kernel.pair, old))
        du = _unary_sum(kernel, new) - _unary_sum(kernel, old)
        return SplitCache(cache.pair_sum + delta, cache.unary_sum + du, cache.updates + 1,
                          cache.key)


def split_value(kernel: Kernel, weights: Weights, H: Tensor, Z: Tensor,
                y: Optional[Tensor] = None, *, cache: Optional[SplitCache] = None,
                constants: bool = True) -> Tensor:
    """Value of the declared cost on ``cat(H, Z)`` (and ``y``), ``H`` detached.

    θ-dependent blocks (fresh-frozen, fresh-fresh, fresh-prior, fresh unary) cost
    ``O(n k D)``. With ``constants=True`` the θ-independent blocks are added: frozen-frozen
    and frozen unary from ``cache`` (a valid cache: ``cache.key == kernel.key``) or from ``H``
    (``O(m^2 D)``), and, with a prior sample, frozen-prior and prior-prior, ``O(n n_y D)``
    (``y`` is fresh each step, so these are never cached). ``constants=False`` is only
    correct for ``outer == "identity"`` (value off by a θ-independent constant).
    """
    H = H.detach()
    inner = weights.zz * (2 * cross_sum(kernel.pair, H, Z) + offdiag_sum(kernel.pair, Z))
    if weights.unary:
        inner = inner + weights.unary * _unary_sum(kernel, Z)
    if y is not None:
        inner = inner + weights.zy * cross_sum(kernel.pair, Z, y)
    if constants or weights.outer != "identity":
        if cache is not None and cache.key is not None and cache.key == kernel.key:
            pair_h, unary_h = cache.pair_sum, cache.unary_sum
        else:
            with torch.no_grad():
                pair_h, unary_h = offdiag_sum(kernel.pair, H), _unary_sum(kernel, H)
        inner = inner + (weights.const + weights.zz * pair_h)
        if weights.unary:
            inner = inner + weights.unary * unary_h
        if y is not None:
            inner = inner + weights.zy * cross_sum(kernel.pair, H, y)
            inner = inner + weights.yy * offdiag_sum(kernel.pair, y)
    return _outer(weights.outer, inner).to(Z.dtype)


def check_positive_seq(name: str, value) -> tuple:
    """Return ``value`` as a non-empty tuple of finite floats > 0, else raise naming ``name``."""
    allowed = f"{name} must be a non-empty sequence of finite numbers > 0"
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{allowed}; got {name}={value!r}")
    out = []
    for v in value:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise TypeError(f"{allowed}; got {name}={value!r}") from None
        if not (math.isfinite(f) and f > 0):
            raise ValueError(f"{allowed}; got {name}={value!r}")
        out.append(f)
    if not out:
        raise ValueError(f"{allowed}; got {name}={value!r}")
    return tuple(out)
