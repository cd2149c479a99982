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
latents. Memory is ``O(p q)`` per kernel matrix (never ``O(p q D)``):

- :func:`sqdist` uses the Gram form ``|a|^2 + |b|^2 - 2 a.b`` (one matrix product) on
  translated inputs, clamped at 0; right for kernels that are smooth at 0 (IMQ, Gaussian,
  Cramér–Wold), whose value and gradient at coincident points do not depend on rounding;
- :func:`dist` is the exact Euclidean distance (difference form inside ``torch.cdist``):
  exactly 0 with the zero subgradient at coincident points, for the energy distance.

Multi-scale kernels evaluate all scales in one broadcast op (:func:`scale_sum`) while the
``(p, q, S)`` tensor is small, and scale by scale otherwise (bounded memory).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor

from .._validate import check_positive_seq

__all__ = [
    "Kernel", "Weights", "SplitCache", "sqdist", "dist", "scale_sum", "safe_sqrt", "offdiag_sum",
    "cross_sum", "unary_sum",
    "full_value", "cache_init", "cache_unresolved", "cache_update", "split_value",
    "fingerprint", "check_cache",
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
    fingerprint: ``(..., D + 1)`` float64, :func:`fingerprint` of the block the sums
        describe (kept up to date by ``update_cache``). ``split`` refuses a cache whose
        fingerprint is not that of its ``H``: a cache built for another window (or not
        updated as the window slid) would silently give another value. ``None`` (a cache
        built by hand) is not checked.
    """
    pair_sum: Tensor
    unary_sum: Tensor
    updates: int
    key: Optional[tuple] = None
    fingerprint: Optional[Tensor] = None


#: relative tolerance of the fingerprint comparison (incremental float64 updates drift by
#: ~1e-16 per update; a different window differs at O(1))
FINGERPRINT_RTOL = 1e-9


def fingerprint(H: Tensor) -> Tensor:
    """``(..., D + 1)`` float64: the column sums of ``H`` (``(..., m, D)``) and the sum of its
    squared entries. Invariant under a permutation of the rows (as are the cached sums), and
    updated in ``O(k D)`` when ``k`` rows are replaced."""
    H = H.detach()
    return torch.cat([H.sum(-2, dtype=_F64), H.to(_F64).square().sum((-2, -1)).unsqueeze(-1)],
                     dim=-1)


_STALE = ("cache does not describe this window H: it was built for another window, or not "
          "updated (update_cache) as this one slid; its fingerprint (column sums, sum of "
          "squares) differs from H's. Use cache=init_cache(H) (or cache=None)")


def check_cache(cache: SplitCache, H: Tensor, *, eager: bool = True) -> None:
    """Raise ValueError when ``cache`` was not built for ``H`` (fingerprint mismatch).
    ``eager=False`` (accelerator tensors): a device-side assert instead, which never
    synchronises with the host (the step fails when the device reaches it)."""
    if cache.fingerprint is None:
        return
    fp = fingerprint(H)
    if cache.fingerprint.shape != fp.shape:
        raise ValueError(f"cache describes a window of another shape (fingerprint "
                         f"{tuple(cache.fingerprint.shape)}, this window's "
                         f"{tuple(fp.shape)}); build it with init_cache(H) for this window")
    scale = torch.cat([H.detach().abs().sum(-2, dtype=_F64), fp[..., -1:]], dim=-1)
    ok = ((cache.fingerprint - fp).abs() <= FINGERPRINT_RTOL * scale + 1e-12).all()
    if not eager:
        torch._assert_async(ok, _STALE)
    elif not bool(ok):
        raise ValueError(_STALE)


#: largest ``p * q * D`` for which :func:`sqdist` uses the difference form (exact, but
#: ``O(p q D)`` memory traffic): the small fresh blocks of a split step take it, larger
#: blocks the Gram form (``O(p q)`` memory; tests force both paths at small sizes)
DIFF_LIMIT = 1 << 16


def sqdist(a: Tensor, b: Tensor) -> Tensor:
    """Squared distances ``|a_i - b_j|^2``, ``(..., p, D), (..., q, D) -> (..., p, q)``.

    Small blocks (``p q D <= DIFF_LIMIT``): difference form ``sum_d (a_id - b_jd)^2``.
    Otherwise the Gram form ``|a|^2 + |b|^2 - 2 a.b`` clamped at 0: one matrix product,
    memory ``O(p q)``. Both inputs are then first translated by a (detached) point of
    ``b``, which leaves the distances and their gradients unchanged and keeps ``|a|^2`` at
    the scale of the distances, so the cancellation error is ``~ eps * (typical squared
    distance)`` whatever the mean of the sample. Coincident points then get ``~ eps``-sized
    values, not an exact 0: use :func:`dist` where that matters (a kernel not smooth at 0).
    """
    p, q, d = a.shape[-2], b.shape[-2], a.shape[-1]
    if p == 0 or q == 0:
        return a.new_zeros(*a.shape[:-2], p, q) + b.new_zeros(*b.shape[:-2], 1, 1)
    if p * q * d * math.prod(a.shape[:-2]) <= DIFF_LIMIT:
        return (a.unsqueeze(-2) - b.unsqueeze(-3)).square().sum(-1)
    c = b[..., :1, :].detach()
    a, b = a - c, b - c
    a2 = a.square().sum(-1, keepdim=True)                      # (..., p, 1)
    b2 = b.square().sum(-1).unsqueeze(-2)                      # (..., 1, q)
    if a.dim() == 2 and b.dim() == 2:
        return torch.addmm(b2, a, b.t(), alpha=-2).add_(a2).clamp_min(0)
    return (a2 + b2 - 2 * torch.matmul(a, b.transpose(-1, -2))).clamp_min(0)


def dist(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distances ``|a_i - b_j|``, ``(..., p, D), (..., q, D) -> (..., p, q)``, exact
    (difference form, ``torch.cdist`` without the matrix-product shortcut, memory ``O(p q)``):
    exactly 0 for coincident points, where the gradient is the zero subgradient. First
    derivatives only (``torch.cdist`` has no double backward)."""
    if a.shape[-2] == 0 or b.shape[-2] == 0:
        return sqdist(a, b)
    return torch.cdist(a, b, p=2.0, compute_mode="donot_use_mm_for_euclid_dist")


_PARAMS: dict = {}

#: largest ``p * q * S`` for which :func:`scale_sum` builds the ``(p, q, S)`` tensor at once
FUSE_LIMIT = 1 << 22


def scale_sum(fn: Callable[[Tensor, Tensor], Tensor], d2: Tensor, params) -> Tensor:
    """``sum_s fn(d2, c_s)`` over the kernel parameters ``params`` (a tuple of floats).

    One broadcast evaluation on ``(..., p, q, S)`` (a handful of ops whatever ``S``: the
    split blocks are small and op-count bound) while ``d2.numel() * S <= FUSE_LIMIT``,
    else scale by scale (memory of a few ``(p, q)`` matrices: the full ``n x n`` blocks).
    ``fn`` must broadcast a tensor ``c`` of shape ``(S,)`` against ``d2.unsqueeze(-1)``.
    """
    if d2.numel() * len(params) <= FUSE_LIMIT:
        key = (params, d2.dtype, d2.device)
        c = _PARAMS.get(key)
        if c is None:   # built once per (params, dtype, device): no host-to-device copy per step
            with torch.inference_mode(False):   # a normal tensor, usable under autograd later
                c = _PARAMS[key] = torch.tensor(params, dtype=d2.dtype, device=d2.device)
        return fn(d2.unsqueeze(-1), c).sum(-1)
    out = None
    for v in params:
        t = fn(d2, v)
        out = t if out is None else out + t
    return out


def safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(x)`` for ``x > 0``, ``0`` otherwise, with gradient 0 where ``x <= 0``: no square
    root of 0 ever enters the autograd graph (double-``where`` trick)."""
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))),
                       torch.zeros_like(x))


def offdiag_sum(pair: Callable, a: Tensor) -> Tensor:
    """``sum_{i != j} kappa(a_i, a_j)`` in float64 (diagonal masked out); ``a``:
    ``(..., p, D)`` -> ``(...)``."""
    mat = pair(a, a)
    eye = torch.eye(a.shape[-2], dtype=torch.bool, device=a.device)
    return mat.masked_fill(eye, 0).sum((-2, -1), dtype=_F64)


def cross_sum(pair: Callable, a: Tensor, b: Tensor) -> Tensor:
    """``sum_{i, j} kappa(a_i, b_j)`` in float64; ``(..., p, D), (..., q, D) -> (...)``."""
    return pair(a, b).sum((-2, -1), dtype=_F64)


def unary_sum(kernel: Kernel, a: Tensor) -> Tensor:
    """``sum_i u(a_i)``, the kernel's unary term summed over the rows of ``a``:
    ``(..., p, D) -> (...)`` float64 (zeros when the kernel has none)."""
    if kernel.unary is None:
        return torch.zeros(a.shape[:-2], dtype=_F64, device=a.device)
    return kernel.unary(a).sum(-1, dtype=_F64)


def _outer(name: str, inner: Tensor) -> Tensor:
    if name == "identity":
        return inner
    if name == "log":
        return torch.log(inner)
    if name == "sqrt":
        return safe_sqrt(inner)
    raise ValueError(f"outer must be one of 'identity', 'log', 'sqrt'; got outer={name!r}")


def full_value(kernel: Kernel, weights: Weights, z: Tensor, y: Optional[Tensor] = None) -> Tensor:
    """Value of the declared cost on the whole sample ``z`` (and ``y``), dtype of z.

    ``z``: ``(..., n, D)``, ``y``: ``(..., n_y, D)`` (leading shapes broadcast) -> ``(...)``:
    one value per batch of independent samples (e.g. R replicas)."""
    inner = weights.const + weights.zz * offdiag_sum(kernel.pair, z)
    if weights.unary:
        inner = inner + weights.unary * unary_sum(kernel, z)
    if y is not None:
        inner = inner + weights.zy * cross_sum(kernel.pair, z, y)
        inner = inner + weights.yy * offdiag_sum(kernel.pair, y)
    return _outer(weights.outer, inner).to(z.dtype)


def cache_init(kernel: Kernel, H: Tensor) -> SplitCache:
    """Exact cache of the frozen block ``H`` (``m x D``, ``m >= 0``), ``O(m^2 D)``."""
    with torch.no_grad():
        H = H.detach()
        return SplitCache(offdiag_sum(kernel.pair, H), unary_sum(kernel, H), 0, kernel.key,
                          fingerprint(H))


def cache_unresolved(H: Tensor) -> SplitCache:
    """Placeholder cache (key None) for a kernel that needs the batch size ``n``."""
    nan = torch.full((), math.nan, dtype=_F64, device=H.device)
    return SplitCache(nan, nan.clone(), 0, None, fingerprint(H))


def cache_update(kernel: Kernel, cache: Optional[SplitCache], H: Tensor, slots: Tensor,
                 new: Tensor) -> SplitCache:
    """Cache of ``H`` after ``H[slots] = new`` (``k`` rows), ``O(m k D)``.

    The removed rows' contributions ``2 sum kappa(old, rest) + sum_{s != t} kappa(old)``
    are subtracted and the new rows' added. Every ``ceil(m / k)`` updates (and whenever the
    cache is None or was computed with another ``key``) the sums are recomputed exactly,
    ``O(m^2 D)``, i.e. amortised ``O(m k D)``.

    One kernel evaluation against ``H`` and no copy of it: ``A = kappa(cat(new, old), H)``
    (``2k x m``) with the ``slots`` columns zeroed holds ``kappa(new, rest)`` and
    ``kappa(old, rest)``; its ``slots`` columns hold the old-old pairs, and for ``k > 1`` a
    ``k x k`` evaluation gives the new-new ones.
    """
    with torch.no_grad():
        H, new = H.detach(), new.detach()
        m, k = H.shape[0], new.shape[0]
        if cache is None or cache.key is None or cache.key != kernel.key \
                or cache.updates + 1 >= math.ceil(m / k):
            Hn = H.clone()
            Hn[slots] = new
            return cache_init(kernel, Hn)
        old = H.index_select(0, slots)
        A = kernel.pair(torch.cat([new, old], dim=0), H)    # (2k, m)
        within = None
        if k > 1:   # pairs inside the slots: old-old are columns of A, new-new one more call
            eye = torch.eye(k, dtype=torch.bool, device=H.device)
            oo = A[k:].index_select(1, slots)
            nn = kernel.pair(new, new)
            within = (nn.masked_fill(eye, 0).sum(dtype=_F64)
                      - oo.masked_fill(eye, 0).sum(dtype=_F64))
        rows = A.index_fill(1, slots, 0).sum(-1, dtype=_F64)   # (2k,) sums against the rest
        delta = 2 * (rows[:k].sum() - rows[k:].sum())
        if within is not None:
            delta = delta + within
        du = unary_sum(kernel, new) - unary_sum(kernel, old)
        fp = None if cache.fingerprint is None else (
            cache.fingerprint + fingerprint(new) - fingerprint(old))
        return SplitCache(cache.pair_sum + delta, cache.unary_sum + du, cache.updates + 1,
                          cache.key, fp)


@functools.lru_cache(maxsize=64)
def _block_weights(k: int, m: int, n_y: int, w_h: float, w_y: float, device) -> Tensor:
    """``(k, m + n_y)`` float64 weights: ``w_h`` on the first ``m`` columns, ``w_y`` on the
    last ``n_y`` (built once per shape and device)."""
    with torch.inference_mode(False):   # a normal tensor, usable under autograd later
        W = torch.empty(k, m + n_y, dtype=_F64, device=device)
        W[:, :m] = w_h
        W[:, m:] = w_y
    return W


def split_value(kernel: Kernel, weights: Weights, H: Tensor, Z: Tensor,
                y: Optional[Tensor] = None, *, cache: Optional[SplitCache] = None,
                constants: bool = True) -> Tensor:
    """Value of the declared cost on ``cat(H, Z)`` (and ``y``), ``H`` detached: ``H``
    ``(..., m, D)``, ``Z`` ``(..., k, D)``, ``y`` ``(..., n_y, D)`` -> ``(...)`` (a cache only
    for one window, ``(m, D)``).

    θ-dependent blocks (fresh-frozen, fresh-fresh, fresh-prior, fresh unary) cost
    ``O(n k D)``. With ``constants=True`` the θ-independent blocks are added: frozen-frozen
    and frozen unary from ``cache`` (a valid cache: ``cache.key == kernel.key``) or from ``H``
    (``O(m^2 D)``), and, with a prior sample, frozen-prior and prior-prior, ``O(n n_y D)``
    (``y`` is fresh each step, so these are never cached). ``constants=False`` is only
    correct for ``outer == "identity"`` (value off by a θ-independent constant).

    The fresh-frozen and fresh-prior blocks come from one kernel evaluation
    ``kappa(Z, cat(H, y))`` (``k x (m + n_y)``, no gradient on its second argument, so the
    backward pass is ``O(n k D)`` in a few ops) reduced against a cached weight matrix; the
    fresh-fresh block (``k > 1``) from ``kappa(Z, Z)``.
    """
    H = H.detach()
    m, k = H.shape[-2], Z.shape[-2]
    with_y = y is not None and weights.zy != 0
    n_y = y.shape[-2] if with_y else 0
    X = torch.cat([H, y.detach()], dim=-2) if with_y else H
    K = kernel.pair(Z, X)                                   # (k, m [+ n_y])
    W = _block_weights(k, m, n_y, 2 * weights.zz, weights.zy, K.device)
    inner = (K.to(_F64) * W).sum((-2, -1))                 # (...): one per window
    if k > 1:
        inner = inner + weights.zz * offdiag_sum(kernel.pair, Z)
    if weights.unary:
        inner = inner + weights.unary * unary_sum(kernel, Z)
    if constants or weights.outer != "identity":
        if cache is not None and cache.key is not None and cache.key == kernel.key:
            pair_h, unary_h = cache.pair_sum, cache.unary_sum   # checked: BatchCost.split
        else:
            with torch.no_grad():
                pair_h, unary_h = offdiag_sum(kernel.pair, H), unary_sum(kernel, H)
        inner = inner + (weights.const + weights.zz * pair_h)
        if weights.unary:
            inner = inner + weights.unary * unary_h
        if y is not None:
            inner = inner + weights.zy * cross_sum(kernel.pair, H, y)
            inner = inner + weights.yy * offdiag_sum(kernel.pair, y)
    return _outer(weights.outer, inner).to(Z.dtype)


