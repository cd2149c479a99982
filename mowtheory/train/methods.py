"""The training methods of ``mowtheory train --method``, behind one interface.

- ``"mow"``: MoW_k(n), k fresh examples a step against a window of n - k frozen latents
  (:class:`mowtheory.distributed.DistributedMoW`: plain :class:`~mowtheory.mow.MoW` in one
  process, data-parallel under torchrun);
- ``"minibatch"``: standard training, n examples a step, one forward and backward pass
  (:class:`mowtheory.gradcache.Minibatch`);
- ``"gradcache"``: the same n-batch step with the exact same gradient, in the activation
  memory of ``chunk`` examples (:class:`mowtheory.gradcache.GradCache`).

:func:`build` returns an object with ``examples_per_step`` (examples read by one step of all
processes), ``step(x, optimizer) -> LossParts`` (detached), ``last_parts``,
``init_window(policy, x=None)`` (fills MoW's window; nothing to do for the n-batch methods,
which have no window), ``state_dict()`` / ``load_state_dict()`` (stored in the checkpoint).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .._validate import check_choice
from ..gradcache import GradCache, Minibatch
from .config import METHODS


class _MoWMethod:
    """MoW_k(n) (:class:`~mowtheory.distributed.DistributedMoW`); its checkpoint state is the
    wrapped MoW's (the window, the step count, the prior generator)."""

    def __init__(self, dmow):
        self.dmow = dmow

    @property
    def examples_per_step(self) -> int:
        return self.dmow.k_global

    @property
    def last_parts(self):
        return self.dmow.last_parts

    def step(self, x: torch.Tensor, optimizer):
        return self.dmow.step(x, optimizer)

    def init_window(self, policy: str, x: Optional[torch.Tensor] = None) -> None:
        self.dmow.init_window(policy, x)

    def state_dict(self) -> dict:
        return self.dmow.mow.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.dmow.mow.load_state_dict(state)


class _NoWindow:
    """The n-batch methods read n examples a step and keep no window."""

    @property
    def examples_per_step(self) -> int:
        return self.n

    def init_window(self, policy: str, x: Optional[torch.Tensor] = None) -> None:
        """Nothing to fill: an n-batch step has no window (accepted so that the trainer's
        init policies apply to every method)."""


class _MinibatchMethod(_NoWindow, Minibatch):
    pass


class _GradCacheMethod(_NoWindow, GradCache):
    pass


def build(method: str, encoder: Callable, cost, *, n: int, k: int, chunk: int,
          latent_dim: int, per_example: Optional[Callable], reduction: str, balanced: bool,
          refresh: str, generator: torch.Generator, device, local: bool = True,
          lam: float = 1.0):
    """The step object of ``method`` (module docstring). ``k``, ``balanced``, ``refresh``
    and ``latent_dim`` are MoW's, ``chunk`` is GradCache's; the others are common: the prior
    sample of costs that take one is drawn from ``generator`` by every method."""
    check_choice("method", method, METHODS)
    if method == "mow":
        from ..distributed import DistributedMoW
        return _MoWMethod(DistributedMoW(
            encoder, cost, n=n, k=k, latent_dim=latent_dim, per_example=per_example,
            reduction=reduction, balanced=balanced, refresh=refresh, generator=generator,
            device=device, local=local, lam=lam))
    if balanced:
        raise ValueError(f"balanced=True (--balanced) scales MoW's F-term by n/k; it does not "
                         f"apply to method={method!r} (n-batch training); got balanced=True")
    common = dict(n=n, per_example=per_example, reduction=reduction, generator=generator,
                  device=device, lam=lam)
    if method == "minibatch":
        return _MinibatchMethod(encoder, cost, **common)
    return _GradCacheMethod(encoder, cost, chunk=chunk, **common)
