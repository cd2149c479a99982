"""The string registry of batch costs and the :class:`BatchCost` object (bound parameters,
metadata, full and split evaluation)."""
from __future__ import annotations

import inspect
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple, Optional

import torch
from torch import Tensor

from .._validate import check_choice, check_int, check_latents, check_pair
from . import cw as _cw, energy as _energy, gmmn as _gmmn, pulling_away as _pa
from . import swae as _sw, wae as _mmd
from .expectation import expected_value
from .pairwise import (SplitCache, cache_init, cache_unresolved, cache_update, check_cache,
                       full_value, split_value)

__all__ = ["BatchCost", "SplitCache", "get", "names"]


class _Impl(NamedTuple):
    fn: Callable[..., Tensor]            # full evaluation fn(z[, y], **params)
    check: Callable[..., dict]           # validates and normalises params
    kernel: Optional[Callable]           # kernel(n, **params) -> Kernel | None; None: no split
    weights: Optional[Callable]          # weights(n, n_y, **params) -> Weights
    meta: Callable[[dict], dict]         # params -> metadata fields


def _eager_checks(t: Tensor) -> bool:
    """Whether the per-step, data-dependent argument checks of ``split``/``update_cache``
    (finite fresh rows, slot ranges and distinctness) read ``t`` on the host: only for CPU
    tensors, where that synchronises nothing. On an accelerator reading values would stall
    the step on the device every time, so slots are checked by device-side asserts
    (``torch._assert_async``) and values are not scanned (a non-finite latent gives a
    non-finite cost, which the caller sees). Under ``torch.compile`` tracing neither (a read
    would break the graph)."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def _with(fn, **fixed):
    return lambda *a, **kw: fn(*a, **fixed, **kw)


_REGISTRY: dict[str, _Impl] = {
    "cwae": _Impl(_cw.log_cramer_wold, _cw._check_params, _cw._kernel,
                  _with(_cw._weights, log=True),
                  lambda p: dict(needs_prior=False, estimator="closed form vs N(0,I)", min_n=2,
                                 min_d=2, supports_split=True, linear_in_constants=False)),
    "cw": _Impl(_cw.cramer_wold, _cw._check_params, _cw._kernel, _cw._weights,
                lambda p: dict(needs_prior=False, estimator="closed form vs N(0,I)", min_n=2,
                               min_d=2, supports_split=True, linear_in_constants=True)),
    "wae": _Impl(_mmd.mmd, _mmd._check_params, _mmd._kernel, _mmd._weights,
                 lambda p: dict(needs_prior=True, estimator="U-statistic", min_n=2, min_d=1,
                                supports_split=True, linear_in_constants=True)),
    "swae": _Impl(_sw.sliced_wasserstein, _sw._check_params, None, None,
                  lambda p: dict(needs_prior=True, estimator="sorted projections", min_n=1,
                                 min_d=1, supports_split=False, linear_in_constants=False)),
    "energy": _Impl(_energy.energy_distance, _energy._check_params, _energy._kernel,
                    _energy._weights,
                    lambda p: dict(needs_prior=True, estimator="V-statistic", min_n=1, min_d=1,
                                   supports_split=True, linear_in_constants=True)),
    "gmmn": _Impl(_gmmn.gmmn_mmd, _gmmn._check_params, _gmmn._kernel, _gmmn._weights,
                  lambda p: dict(needs_prior=True, estimator="V-statistic", min_n=1, min_d=1,
                                 supports_split=True, linear_in_constants=not p["sqrt"])),
    "pullaway": _Impl(_pa.pullaway, _pa._check_params, _pa._kernel, _pa._weights,
                      lambda p: dict(needs_prior=False, estimator="U-statistic", min_n=2,
                                     min_d=1, supports_split=True, linear_in_constants=True)),
}


def names() -> tuple[str, ...]:
    """Registry names of the batch costs."""
    return tuple(_REGISTRY)


def get(name: str, **params) -> "BatchCost":
    """The registered batch cost ``name`` with ``params`` bound (validated now).

    Names and parameters::

        "cwae"     log_cramer_wold      gamma
        "cw"       cramer_wold          gamma
        "wae"      mmd                  kernel, scales, sigma2
        "swae"     sliced_wasserstein   directions, n_directions, generator
        "energy"   energy_distance      (none)
        "gmmn"     gmmn_mmd             bandwidths, sqrt
        "pullaway" pullaway             eps

    Raises ValueError for an unknown name (listing the valid ones) or an unknown parameter
    (naming it and the allowed ones).
    """
    check_choice("name", name, names())
    impl = _REGISTRY[name]
    allowed = tuple(inspect.signature(impl.check).parameters)
    for key in params:
        if key not in allowed:
            raise ValueError(
                f"unknown parameter {key!r} for cost {name!r}; allowed parameters: "
                f"{', '.join(allowed) if allowed else '(none)'}")
    bound = impl.check(**params)
    return BatchCost(name=name, **impl.meta(bound), params=types.MappingProxyType(bound),
                     _impl=impl)


def _exact(name: str) -> bool:
    """Whether cost ``name`` (default parameters) has an exact expectation over a dataset."""
    cost = get(name)
    return cost.supports_split and cost.linear_in_constants


def _rebuild(name: str, params: dict) -> "BatchCost":
    return get(name, **params)


@dataclass(frozen=True)
class BatchCost:
    """A registered batch cost F with bound parameters (build it with :func:`get`).

    Metadata: ``name``, ``needs_prior`` (F takes a prior sample y), ``estimator``, ``min_n``,
    ``min_d``, ``supports_split`` (False: ``split`` falls back to full evaluation),
    ``linear_in_constants`` (False when an outer log/sqrt makes the exact value necessary for
    the gradient: ``constants=False`` is then ignored; also False for ``swae``, whose split
    is a full evaluation), ``params`` (the bound parameters, read-only).
    """
    name: str
    needs_prior: bool
    estimator: str
    min_n: int
    min_d: int
    supports_split: bool
    linear_in_constants: bool
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    _impl: _Impl = field(default=None, repr=False, compare=False)

    def __reduce__(self):  # picklable (multiprocessing, deepcopy): rebuilt from the registry
        return (_rebuild, (self.name, dict(self.params)))

    # ----------------------------------------------------------------------- checks
    def _check_y_presence(self, y) -> None:
        if not self.needs_prior and y is not None:
            raise ValueError(f"y must be None for cost {self.name!r} (needs_prior=False); "
                             f"got a {type(y).__name__}")
        if self.needs_prior and y is None:
            raise ValueError(f"y (a prior sample of shape (n_y, D)) is required for cost "
                             f"{self.name!r} (needs_prior=True); got y=None")

    def _check_y(self, y, ref_name: str, ref: Tensor) -> None:
        self._check_y_presence(y)
        if y is not None:   # a fresh prior sample each step: shape checks only (O(n_y D) scan)
            check_latents("y", y, min_n=self.min_n, finite=False)
            check_pair(ref_name, ref, "y", y)

    def _check_window(self, H: Tensor, new_name: str, new: Tensor) -> None:
        # hot path (every MoW step): the window H (O(m D)) is not scanned for NaN/inf, and
        # the k fresh rows only where reading them synchronises nothing (_eager_checks)
        check_latents("H", H, min_n=0, min_d=self.min_d, finite=False)
        check_latents(new_name, new, min_n=1, dim=H.shape[-1], finite=_eager_checks(new))
        check_pair("H", H, new_name, new)

    def _kernel(self, n: Optional[int]):
        return self._impl.kernel(n, **self.params)

    # ----------------------------------------------------------------------- evaluation
    def __call__(self, z: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """Full value ``F(z[, y])``, 0-dim; ``z``: ``(n, D)``, ``y``: ``(n_y, D)`` or None.

        On CPU the cost function checks shapes and values. On an accelerator the pairwise
        costs check shapes only (no NaN/inf scan, which would synchronise with the device:
        a non-finite input gives a non-finite value) and evaluate the same declaration;
        ``swae`` always runs its function with all checks.
        """
        self._check_y_presence(y)  # shapes and values are checked by the cost function
        if isinstance(z, Tensor) and z.dim() > 2 and self.supports_split:
            return self._batched(z, y)
        if isinstance(z, Tensor) and not _eager_checks(z) and self.supports_split:
            check_latents("z", z, min_n=self.min_n, min_d=self.min_d, finite=False)
            if y is not None:
                check_latents("y", y, min_n=self.min_n, finite=False)
                check_pair("z", z, "y", y)
            n = z.shape[0]
            weights = self._impl.weights(n, None if y is None else y.shape[0], **self.params)
            return full_value(self._kernel(n), weights, z, y)
        args = (z, y) if self.needs_prior else (z,)
        return self._impl.fn(*args, **self.params)

    def _batched(self, z: Tensor, y: Optional[Tensor]) -> Tensor:
        """``F`` of independent samples ``z`` ``(..., n, D)`` (and ``y`` ``(..., n_y, D)``,
        leading shapes broadcast) -> ``(...)``; shapes checked, values not scanned."""
        check_latents("z", z, min_n=self.min_n, min_d=self.min_d, batch_dims=True, finite=False)
        if y is not None:
            check_latents("y", y, min_n=self.min_n, batch_dims=True, finite=False)
            check_pair("z", z, "y", y)
        n = z.shape[-2]
        weights = self._impl.weights(n, None if y is None else y.shape[-2], **self.params)
        return full_value(self._kernel(n), weights, z, y)

    def _check_batch(self, H: Tensor, Z: Tensor, y: Optional[Tensor], cache) -> None:
        """Shapes of batches of windows for :meth:`split`: ``(..., m, D)``, ``(..., k, D)``
        (and ``(..., n_y, D)``), one leading shape for all, values not scanned; no cache, and
        a pairwise cost (``swae`` evaluates one sample at a time)."""
        self._check_y_presence(y)
        check_latents("H", H, min_n=0, min_d=self.min_d, batch_dims=True, finite=False)
        check_latents("Z", Z, min_n=1, dim=H.shape[-1], batch_dims=True, finite=False)
        check_pair("H", H, "Z", Z)
        lead = {"H": tuple(H.shape[:-2]), "Z": tuple(Z.shape[:-2])}
        if y is not None:
            check_latents("y", y, min_n=self.min_n, batch_dims=True, finite=False)
            check_pair("Z", Z, "y", y)
            lead["y"] = tuple(y.shape[:-2])
        if len(set(lead.values())) != 1:
            raise ValueError("H, Z (and y) must share their leading (batch) shape; got "
                             + ", ".join(f"{k} {v}" for k, v in lead.items()))
        if cache is not None:
            raise ValueError("cache must be None for batches of windows (a SplitCache holds "
                             f"the frozen block of one window); got a cache with H of shape "
                             f"{tuple(H.shape)}")
        if not self.supports_split:
            raise ValueError(f"cost {self.name!r} evaluates one sample (n, D) at a time; got "
                             f"batches of windows H {tuple(H.shape)}, Z {tuple(Z.shape)}")

    def declaration(self, n: int, n_y: Optional[int] = None):
        """The pairwise declaration ``(Kernel, Weights)`` of this cost for a batch of ``n``
        (and a prior sample of ``n_y``), see :mod:`mowtheory.costs.pairwise`; ValueError for
        a cost that is not pairwise (``swae``)."""
        if not self.supports_split:
            raise ValueError(f"cost {self.name!r} is not a pairwise statistic: it has no "
                             "declaration")
        n = check_int("n", n, low=max(1, self.min_n))
        return self._kernel(n), self._impl.weights(n, n_y, **self.params)

    def expected_over_dataset(self, z_all: Tensor, n: int, prior_all: Optional[Tensor] = None,
                              *, n_prior: Optional[int] = None) -> Tensor:
        """``E[F_n]``: the exact expectation of this cost for a batch of ``n`` i.i.d. draws
        (with replacement) from the rows of ``z_all`` (``(..., N, D)``), with a prior sample
        of ``n_prior`` (default ``n``) i.i.d. draws from the rows of ``prior_all``
        (``(..., M, D)``; an empirical prior) for costs that take one. Returns ``(...)`` in
        float64, differentiable in ``z_all``; ``O(N^2 + N M + M^2)`` kernel evaluations.

        Exact for the costs linear in their pair sums (``cw``, ``wae``, ``energy``,
        ``pullaway``, ``gmmn`` without ``sqrt``): see
        :func:`mowtheory.costs.expectation.expected_value`. ``cwae`` (log), ``gmmn(sqrt=True)``
        and ``swae`` (sorting) have no finite form: ValueError naming the cost."""
        if not self.supports_split or not self.linear_in_constants:
            raise ValueError(
                f"cost {self.name!r} has no exact expectation over a dataset (its value is not "
                "linear in pair sums: a log, a square root or sorting); the costs with one are "
                f"{', '.join(c for c in names() if _exact(c))}. Use the coupled, reference-free "
                "check for this cost")
        n = check_int("n", n, low=max(2, self.min_n))
        check_latents("z_all", z_all, min_n=1, min_d=self.min_d, batch_dims=True)
        self._check_y_presence(prior_all)
        n_y = None
        if prior_all is not None:
            check_latents("prior_all", prior_all, min_n=1, batch_dims=True)
            check_pair("z_all", z_all, "prior_all", prior_all)
            n_y = check_int("n_prior", n if n_prior is None else n_prior, low=max(2, self.min_n))
        kernel, weights = self.declaration(n, n_y)
        return expected_value(kernel, weights, n, z_all, n_y, prior_all)

    def init_cache(self, H: Tensor, *, n: Optional[int] = None) -> Optional[SplitCache]:
        """Cache of the frozen block ``H`` (``(m, D)``, ``m >= 0``), ``O(m^2 D)``; None when
        the cost does not support split evaluation.

        ``n``: the batch size ``m + k`` the cache will serve. Needed only when the kernel
        depends on it (``cw``/``cwae`` with Silverman gamma); without it such a cache is
        *unresolved* (``key=None``): ``split`` then computes the frozen block from ``H`` and
        the first ``update_cache`` recomputes it exactly.
        """
        check_latents("H", H, min_n=0, min_d=self.min_d)
        if n is not None:
            n = check_int("n", n, low=max(H.shape[0] + 1, self.min_n))
        if not self.supports_split:
            return None
        kernel = self._kernel(n)
        return cache_unresolved(H) if kernel is None else cache_init(kernel, H)

    def update_cache(self, cache: Optional[SplitCache], H: Tensor, slots: Tensor,
                     new: Tensor) -> Optional[SplitCache]:
        """Cache of the window after ``H[slots] = new``, ``O(m k D)`` amortised.

        Args:
            cache: the cache of ``H`` (None or another key: exact recompute).
            H: ``(m, D)`` window *before* the replacement.
            slots: LongTensor of ``k`` distinct indices in ``[0, m)``.
            new: ``(k, D)`` rows entering the window (detached).

        Per-step checks never synchronise with an accelerator: ``H`` is not scanned for
        NaN/inf; ``slots`` and the finiteness of ``new`` are checked on the host for CPU
        tensors, by device-side asserts (slots only) otherwise.
        """
        self._check_window(H, "new", new)
        m, k = H.shape[0], new.shape[0]
        if not isinstance(slots, Tensor) or slots.dtype not in (torch.int64, torch.int32) \
                or slots.dim() != 1:
            raise TypeError(f"slots must be a 1-D LongTensor of indices into H; got {slots!r}")
        if slots.shape[0] != k:
            raise ValueError(f"slots must have one index per row of new (k={k}); "
                             f"got {slots.shape[0]} indices")
        if _eager_checks(slots):
            idx = slots.tolist()
            if any(i < 0 or i >= m for i in idx):
                raise ValueError(f"slots must be indices in [0, m) = [0, {m}); got {idx}")
            if len(set(idx)) != k:
                raise ValueError(f"slots must be distinct indices; got {idx}")
        elif k > 0:   # on an accelerator: device-side asserts, no host synchronisation
            s_sorted = torch.sort(slots).values
            torch._assert_async(((s_sorted[0] >= 0) & (s_sorted[-1] < m)),
                                f"slots must be indices in [0, m) = [0, {m})")
            if k > 1:
                torch._assert_async((s_sorted[1:] != s_sorted[:-1]).all(),
                                    "slots must be distinct indices")
        if cache is not None and not isinstance(cache, SplitCache):
            raise TypeError(f"cache must be a SplitCache or None; got {type(cache).__name__}")
        if not self.supports_split:
            return None
        return cache_update(self._kernel(m + k), cache, H, slots.to(torch.int64), new)

    def split(self, H: Tensor, Z: Tensor, y: Optional[Tensor] = None, *,
              cache: Optional[SplitCache] = None, constants: bool = True) -> Tensor:
        """Value of ``F(cat(H, Z), y)`` with ``H`` detached: the gradient reaches ``Z`` only.

        Args:
            H: ``(m, D)`` frozen window, ``m >= 0``; Z: ``(k, D)`` fresh latents, ``k >= 1``.
                Batches of independent windows: ``H`` ``(..., m, D)``, ``Z`` ``(..., k, D)``
                and ``y`` ``(..., n_y, D)`` with one leading shape (e.g. ``(R,)`` replicas),
                without a cache; the value is then ``(...)``, one per window.
            y: ``(n_y, D)`` prior sample (costs with ``needs_prior``) or None.
            cache: ``init_cache``/``update_cache`` of ``H``; None: the frozen-frozen block is
                computed from ``H``, ``O(m^2 D)`` (only when it is needed).
            constants: False omits the θ-independent blocks (frozen-frozen, frozen-prior,
                prior-prior, constants) when ``linear_in_constants``: same gradient w.r.t.
                ``Z``, value off by a constant, ``O(n k D)``. Ignored otherwise (log/sqrt
                outer: the exact value is computed; with a prior sample the frozen-prior and
                prior-prior blocks then cost ``O(n n_y D)``).

        Only shapes, dtypes and devices are checked, plus the finiteness of ``Z`` on CPU:
        ``H`` and ``y`` are not scanned for NaN/inf (``O(n D)`` per step, and a host
        synchronisation on an accelerator); a non-finite input gives a non-finite value.

        Returns:
            0-dim tensor (``(...)`` for batches). Costs without split support (``swae``)
            evaluate ``F(cat(H.detach(), Z), y)`` in full (one sample only).
        """
        if Z.dim() > 2 or H.dim() > 2 or (y is not None and y.dim() > 2):
            self._check_batch(H, Z, y, cache)
        else:
            self._check_window(H, "Z", Z)
            self._check_y(y, "Z", Z)
        if cache is not None and not isinstance(cache, SplitCache):
            raise TypeError(f"cache must be a SplitCache or None; got {type(cache).__name__}")
        if not isinstance(constants, bool):
            raise TypeError(f"constants must be a bool; got constants={constants!r}")
        m, k = H.shape[-2], Z.shape[-2]
        n = m + k
        if n < self.min_n:
            raise ValueError(f"H and Z together must have n = m + k >= {self.min_n} rows for "
                             f"cost {self.name!r}; got m={m}, k={k}")
        if not self.supports_split:
            return self(torch.cat([H.detach(), Z], dim=0), y)
        n_y = None if y is None else y.shape[-2]
        weights = self._impl.weights(n, n_y, **self.params)
        kernel, constants = self._kernel(n), constants or not self.linear_in_constants
        if cache is not None and cache.key is not None and cache.key == kernel.key \
                and (constants or weights.outer != "identity"):
            check_cache(cache, H, eager=_eager_checks(H))   # a stale cache is refused
        return split_value(kernel, weights, H, Z, y, cache=cache, constants=constants)
