"""Gradient accumulation with MoW: ``A`` fresh k-blocks per optimizer update.

An accumulated update of MoW_k(n) at parameters theta_l reads A blocks ``x_0 .. x_{A-1}``
(k examples each) and runs, for ``a = 0 .. A-1``::

    parts_a, ctx_a = mow.loss(x_a)          # F(window_a, E_theta_l(x_a)) + red G, with graph
    (parts_a.total * s).backward()          # gradients accumulate in .grad (s = 1/A or 1)
    if a == A - 1: optimizer.step()         # theta_l -> theta_{l+1}, once per A blocks
    mow.commit(ctx_a)                       # the window slides by k

so the gradient of the update is ``s * sum_a grad_theta F(window_a, E_theta(x_a)) + red G``
at ``theta = theta_l``, where the frozen latents ``window_a`` of block ``a`` are:

- ``window_0``: the window before the update (as for one step of :meth:`MoW.step`);
- ``window_{a+1}`` = ``window_a`` slid by the k latents of block ``a``: with refresh
  ``"post"`` they are re-encoded at commit, i.e. at ``theta_l`` for ``a < A - 1`` (the
  parameters are not yet updated, so they equal the latents of the loss for a deterministic
  encoder) and at ``theta_{l+1}`` for the last block (committed after the update); with
  ``"pre"`` they are the latents of the loss, at ``theta_l``.

Block ``a + 1`` thus sees block ``a``'s latents frozen in its window: it is *not* one step
with ``k·A`` fresh examples (there all k·A latents would carry gradient); it is ``A`` MoW
steps whose gradients are summed before one update. ``A = 1`` is exactly :meth:`MoW.step`.
The step count of the MoW advances by one per block (``mow.steps`` counts blocks).

:func:`accumulation_step` runs that pattern, optionally with a ``torch.amp.GradScaler`` and
gradient-norm clipping (after unscaling, before the update).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Optional

import torch

from ._validate import check_positive
from .mow import LossParts, MoW, NonFiniteError


def accumulation_step(mow: MoW, blocks: Sequence[torch.Tensor],
                      optimizer: torch.optim.Optimizer, *, average: bool = True,
                      scaler: Optional["torch.amp.GradScaler"] = None,
                      max_norm: Optional[float] = None,
                      parameters: Optional[Iterable[torch.nn.Parameter]] = None
                      ) -> list[LossParts]:
    """One optimizer update from ``A = len(blocks)`` fresh k-blocks (module docstring).

    Args:
        mow: a :class:`~mowtheory.mow.MoW` with an initialised window and no pending loss.
        blocks: A tensors of shape ``(k, ...)`` (or one tensor ``(A, k, ...)``), in order.
        optimizer: any ``torch.optim`` optimizer over the parameters to train; its gradients
            are zeroed before the first block.
        average: scale each block's loss by ``1/A`` (the accumulated gradient is the mean
            over blocks); False: the sum.
        scaler: a ``torch.amp.GradScaler``: losses are scaled before ``backward``, the update
            is ``scaler.step`` (skipped on inf/NaN gradients; the window still slides, the
            blocks were read) and ``scaler.update()`` follows.
        max_norm: clip the total gradient norm (``torch.nn.utils.clip_grad_norm_``) to this
            value (> 0) before the update, after unscaling.
        parameters: what ``max_norm`` clips; default every parameter of ``optimizer``.

    Returns:
        The A detached :class:`~mowtheory.mow.LossParts` (unscaled, before ``1/A``).

    Raises :class:`~mowtheory.mow.NonFiniteError` (CPU, or ``mow.check_finite=True``) for a
    non-finite block loss *without a scaler*, before the update: the blocks committed before
    it stay committed, the gradients are not applied. Any error drops the pending block.
    """
    if not isinstance(mow, MoW):
        raise TypeError(f"mow must be a mowtheory.MoW; got {type(mow).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer; got optimizer={optimizer!r}")
    if not isinstance(average, bool):
        raise TypeError(f"average must be a bool; got average={average!r}")
    if max_norm is not None:
        max_norm = check_positive("max_norm", max_norm)
    if isinstance(blocks, torch.Tensor) and blocks.dim() < 2:
        raise ValueError(f"blocks must be A tensors of shape (k, ...) or one tensor "
                         f"(A, k, ...); got a tensor of shape {tuple(blocks.shape)}")
    blocks = list(blocks)
    if len(blocks) == 0:
        raise ValueError("blocks must hold at least one k-block (A >= 1); got none")
    A = len(blocks)
    scale = 1.0 / A if average else 1.0
    out = []
    optimizer.zero_grad(set_to_none=True)
    for a, x in enumerate(blocks):
        parts, ctx = mow.loss(x)
        try:
            if scaler is None:
                mow._verify(parts, ctx)
            loss = parts.total * scale if scale != 1.0 else parts.total
            (scaler.scale(loss) if scaler is not None else loss).backward()
            if a == A - 1:
                _update(optimizer, scaler, max_norm, parameters)
        except NonFiniteError:
            raise
        except BaseException:
            mow.discard(ctx)
            raise
        mow.commit(ctx)
        out.append(parts.detach())
    return out


def _update(optimizer, scaler, max_norm, parameters) -> None:
    """Unscale (scaler), clip (max_norm), step, update the scale."""
    if max_norm is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)
        params = list(parameters) if parameters is not None else \
            [p for g in optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
