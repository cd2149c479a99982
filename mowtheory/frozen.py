"""The frozen block of MoW_k(n): the latent window and the batch cost's cache of it, kept in step.

A step of MoW_k(n) evaluates ``F(h_1, ..., h_{n-k}, z_1, ..., z_k)`` where the ``h`` are the
window's frozen latents. For a pairwise cost (see :mod:`mowtheory.costs`) the frozen-frozen
sums over the ``h`` are a constant of theta; :meth:`~mowtheory.costs.BatchCost.split` reads
them from a :class:`~mowtheory.costs.SplitCache` instead of recomputing them, and the cache
must follow every slide of the window. :class:`FrozenWindow` owns both, so that no caller can
update one without the other:

- ``fill`` / ``fill_prior`` set the window (init policies ``"encode"`` / ``"prior"``) and
  recompute the cache exactly, ``O(m^2 D)``;
- ``push`` updates the cache with the ``min(k, m)`` newest rows (the ones that stay) into
  the slots they will occupy, ``O(m k D)``, then slides the window;
- ``rows()`` is what F is fed: the buffer in slot order (no copy) when F is split-evaluated
  or permutation invariant, the rows from oldest to newest (a copy) otherwise.

The cost is used only when it supports split evaluation (``BatchCost.supports_split``) and
the window is not empty (``k < n``); otherwise ``cache`` stays None. Any leading
``batch_shape`` of independent windows is supported by the window; a cache is kept only for
``batch_shape == ()`` (the cost's split evaluation is per window).

Nothing here knows about training: the refresh policy (which latents are pushed) belongs to
:mod:`mowtheory.mow`.
"""
from __future__ import annotations


import torch

from .costs import BatchCost
from .window import LatentWindow


class FrozenWindow:
    """A :class:`~mowtheory.window.LatentWindow` and the split cache of ``cost`` over it.

    Args:
        cost: the batch cost F (a :class:`~mowtheory.costs.BatchCost`, or any callable, which
            then has no cache).
        n, k, dim, batch_shape, device, dtype: as :class:`~mowtheory.window.LatentWindow`.

    Attributes:
        window: the ring buffer, ``(*batch_shape, n - k, dim)``.
        cache: the cost's :class:`~mowtheory.costs.SplitCache` of ``window.buffer`` (None when
            the cost is not split-evaluated here).
        split: whether F is evaluated by ``cost.split`` against ``window.buffer`` and ``cache``.
    """

    def __init__(self, cost, n: int, k: int, dim: int, *, batch_shape=(), device=None,
                 dtype=torch.float32):
        self.window = LatentWindow(n, k, dim, batch_shape=batch_shape, device=device,
                                   dtype=dtype)
        self.cost = cost
        self.split = (isinstance(cost, BatchCost) and cost.supports_split
                      and self.window.size > 0 and len(self.window.batch_shape) == 0)
        self.cache = None

    # ------------------------------------------------------------------ contents
    @property
    def n(self) -> int:
        return self.window.n

    def rows(self, *, ordered: bool = False) -> torch.Tensor:
        """The frozen latents F is fed: ``(*batch_shape, n - k, D)``, detached. Slot order (the
        buffer itself) unless ``ordered`` (oldest to newest, a copy, for a position-dependent F)."""
        return self.window.ordered() if ordered else self.window.buffer

    # ------------------------------------------------------------------ init
    def _recompute(self) -> None:
        self.cache = self.cost.init_cache(self.window.buffer, n=self.n) if self.split else None

    def fill(self, latents: torch.Tensor) -> None:
        """Init policy ``"encode"``: the window becomes ``latents`` (``(*batch_shape, m, D)``,
        row 0 the oldest); the cache is recomputed exactly."""
        self.window.fill(latents)
        self._recompute()

    def fill_prior(self, generator: torch.Generator) -> None:
        """Init policy ``"prior"``: N(0, I) draws from ``generator``; the cache is recomputed."""
        self.window.fill_prior(generator)
        self._recompute()

    # ------------------------------------------------------------------ slide
    def push(self, latents: torch.Tensor) -> torch.Tensor:
        """Let ``k`` new latents (``(*batch_shape, k, D)``, newest last) enter; the ``k``
        oldest leave. The cache is updated first with the rows that will be stored (the
        ``min(k, m)`` newest). Returns the overwritten slots (as ``LatentWindow.push``)."""
        if self.split and self.window.is_full:
            new = latents[..., latents.shape[-2] - min(self.window.k, self.window.size):, :]
            self.cache = self.cost.update_cache(self.cache, self.window.buffer,
                                                self.window.next_slots(), new.detach())
        return self.window.push(latents)

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        """The window's state; the cache is derived from it and never stored."""
        return self.window.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore the window (validated by ``LatentWindow.load_state_dict``) and recompute
        the cache exactly."""
        self.window.load_state_dict(state)
        self._recompute()
