"""The MoW objective as pure functions of tensors: :func:`mow_loss` (one step's cost),
:func:`reduce_per_example` (the reduction of G over the k fresh examples) and
:func:`refreshed_latents` (what enters the window after a step). :class:`mowtheory.mow.MoW`
and :class:`mowtheory.distributed.DistributedMoW` hold the state around them, the flow
simulator calls them for its replicas; :mod:`mowtheory.mow` re-exports every name here.
The formulas are in :mod:`mowtheory.mow`'s docstring.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch

from ._names import REDUCTIONS, REFRESH_POLICIES
from ._validate import check_choice, check_latents, check_pair, check_positive
from .costs import BatchCost

__all__ = ["LossParts", "REDUCTIONS", "REFRESH_POLICIES", "mow_loss", "reduce_per_example",
           "refreshed_latents"]


class LossParts(NamedTuple):
    """Parts of a MoW loss. ``total`` carries the graph; the others are its terms:
    ``batch_cost`` = lam * F (unscaled by ``balanced``), ``per_example`` = the reduced G."""
    total: torch.Tensor
    batch_cost: torch.Tensor
    per_example: torch.Tensor

    def detach(self) -> "LossParts":
        return LossParts(*(t.detach() for t in self))

    def floats(self) -> dict:
        """The parts as Python floats (this synchronises with the device)."""
        return {name: float(t) for name, t in zip(self._fields, self)}


def reduce_per_example(G: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Reduce per-example costs ``G`` of shape ``(..., k)`` over the last axis: ``"sum"``,
    ``"mean"`` or ``"sqrt_mean"`` (sqrt of the mean, 0 with gradient 0 at a mean <= 0);
    returns shape ``(...)``."""
    check_choice("reduction", reduction, REDUCTIONS)
    if reduction == "sum":
        return G.sum(-1)
    if reduction == "mean":
        return G.mean(-1)
    return _sqrt0(G.mean(-1))


def _sqrt0(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(x)`` for ``x > 0``; ``0`` with gradient 0 at ``x <= 0`` (never a square root
    of 0 in the graph); NaN stays NaN (``x * 0``), so a NaN cost is never hidden."""
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), x * 0)


def mow_loss(F: Callable, fresh: torch.Tensor, window: torch.Tensor,
             G: Optional[torch.Tensor] = None, *, prior: Optional[torch.Tensor] = None,
             reduction: str = "sum", balanced: bool = False, cache=None,
             constants: bool = True, lam: float = 1.0) -> LossParts:
    """The MoW_k(n) cost of one step.

    Args:
        F: the batch cost: a :class:`~mowtheory.costs.BatchCost` (then its split evaluation
            is used, O(n·k·D) with ``cache``, for one window or a batch of them) or any callable ``F(z)`` / ``F(z, prior)`` on
            ``z`` of shape ``(..., n, D)`` returning shape ``(...)``; it receives
            ``cat([window, fresh], -2)`` (window rows first, oldest first as given).
        fresh: ``(..., k, D)`` latents of the k fresh examples, with gradient.
        window: ``(..., n - k, D)`` frozen latents; detached here whatever is passed.
        G: ``(..., k)`` per-example costs of the fresh examples, or None (no G-term).
        prior: ``(..., n_prior, D)`` prior sample V for costs that take one.
        reduction: ``"sum" | "mean" | "sqrt_mean"`` over the k values of G.
        balanced: scale the F-term by ``n / k``.
        cache, constants: passed to ``BatchCost.split`` (see :mod:`mowtheory.costs`).
        lam: ``lambda >= 0``, the weight of the batch cost (a parameter of the objective,
            not of F).

    Returns:
        :class:`LossParts` ``(total, batch_cost, per_example)``, each of shape ``(...)``;
        ``batch_cost = lam * F``, ``total = (n/k if balanced else 1) * lam * F + red(G)``.
    """
    check_latents("fresh", fresh, min_n=1, batch_dims=True, finite=False)
    check_latents("window", window, min_n=0, batch_dims=True, finite=False)
    check_pair("fresh", fresh, "window", window)
    check_choice("reduction", reduction, REDUCTIONS)
    lam = check_positive("lam", lam, allow_zero=True)
    k, m = fresh.shape[-2], window.shape[-2]
    n = k + m
    window = window.detach()
    if m > 0 and isinstance(F, BatchCost) and F.supports_split:
        f = F.split(window, fresh, prior, cache=cache, constants=constants)
    else:
        z = fresh if m == 0 else torch.cat([window, fresh], dim=-2)
        f = F(z) if prior is None else F(z, prior)
    f = lam * f
    if G is None:
        g = torch.zeros_like(f)
    else:
        if G.shape[-1] != k:
            raise ValueError(f"G must have shape (..., k) with k={k} fresh examples; got {tuple(G.shape)}")
        g = reduce_per_example(G, reduction)
    total = (f * (n / k) if balanced else f) + g
    return LossParts(total, f, g)


def refreshed_latents(refresh: str, fresh: torch.Tensor,
                      reencode: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The k latents that enter the window after a step, ``(..., k, D)``, detached: refresh
    ``"pre"`` keeps ``fresh`` (the latents of the loss, encoded before the update), ``"post"``
    calls ``reencode()`` under ``no_grad`` (the examples at the parameters after the update).
    The one place where the refresh policy is decided, for :class:`MoW`, the distributed step
    and the flow simulator alike."""
    check_choice("refresh", refresh, REFRESH_POLICIES)
    if refresh == "pre":
        return fresh.detach()
    with torch.no_grad():
        return reencode().detach()
