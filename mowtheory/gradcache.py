"""Exact n-batch training in the memory of one chunk (gradient caching), and plain n-batch steps.

Standard training on a batch of n examples minimises (docs/theory.md, cost (1), with the
reduction of :mod:`mowtheory.mow` taken over the n examples)::

    L(theta) = F(z_1, ..., z_n; V) + red_i G_theta(x_i, z_i),     z_i = E_theta(x_i)

:class:`Minibatch` takes that step directly (all n examples' activations are kept for the
backward pass). :class:`GradCache` takes **the same step with the same gradient** while
keeping the activations of only ``chunk`` = c examples at a time (gradient caching, as in
GradCache for contrastive losses, Gao et al. 2021):

1. pass 1, no gradient: encode the n examples in chunks of c, ``Z = [z_1..z_n]`` (n, D); the
   batch cost's gradient w.r.t. the latents ``g_i = dF/dz_i`` (n, D) on the detached Z, and
   the coefficient of each per-example term, ``a_i = d red / dG_i``:
   ``"sum"``: 1; ``"mean"``: 1/n; ``"sqrt_mean"``: ``1 / (2 n sqrt(mean_j G_j))`` (this one
   needs every G_j first, so pass 1 also evaluates G, without gradient: the chain rule
   couples the chunks);
2. pass 2, per chunk C of c examples: re-encode with gradient and backpropagate the
   surrogate ``sum_{i in C} <z_i, g_i> + a_i G_theta(x_i, z_i)``; the parameter gradients
   accumulate over the chunks to exactly ``dL/dtheta`` (the chain rule through z_i, with
   ``g_i`` and ``a_i`` held constant: they are the partial derivatives of L at this theta).

Cost: one extra encoder forward per example (pass 1) and, for ``"sqrt_mean"``, one extra
per-example forward (the decoder, for a reconstruction G). Memory: parameters, gradients,
optimizer state, the n inputs, Z and g (n x D), and the activations of one chunk.

Requirements: the encoder and G must be deterministic functions of the parameters and of
their inputs, and each example's latent must not depend on the other examples of its chunk
(no dropout, no BatchNorm in training mode): pass 2 must recompute the values of pass 1.
The models of :mod:`mowtheory.train.models` satisfy this (GroupNorm, no dropout).

Both classes have the surface of :meth:`mowtheory.mow.MoW.step`: ``step(x, optimizer)``
returns the detached :class:`~mowtheory.mow.LossParts` ``(total, batch_cost, per_example)``
(tensors on the device; no host synchronisation in the step), for any encoder, any
registered or user F (``F(z)`` or ``F(z, prior)``), any ``torch.optim`` optimizer. A
regulariser weight lambda is a parameter of the objective (``lam=``), as for MoW.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ._validate import check_choice, check_int
from .mow import REDUCTIONS, LossParts, bind_objective, reduce_per_example

__all__ = ["GradCache", "Minibatch", "gradcache_backward", "per_example_coefficient"]


def per_example_coefficient(G: Optional[torch.Tensor], reduction: str, n: int):
    """``a = d red(G) / dG_i`` for the n per-example costs ``G`` (shape ``(n,)``; may be
    None for ``"sum"``/``"mean"``): a Python float for ``"sum"`` (1) and ``"mean"`` (1/n), a
    0-dim tensor ``1 / (2 n sqrt(mean G))`` for ``"sqrt_mean"`` (equal for every i; 0 at a
    mean <= 0, where :func:`~mowtheory.mow.reduce_per_example` has gradient 0)."""
    check_choice("reduction", reduction, REDUCTIONS)
    if reduction == "sum":
        return 1.0
    if reduction == "mean":
        return 1.0 / n
    if G is None:
        raise ValueError("the 'sqrt_mean' coefficient needs the n per-example costs G; got None")
    m = G.mean()
    pos = m > 0                  # as reduce_per_example: 0 with gradient 0 at a mean <= 0
    return torch.where(pos, 0.5 / (n * torch.sqrt(torch.where(pos, m, torch.ones_like(m)))),
                       m * 0)


def batch_cost_gradient(F: Callable, z: torch.Tensor, prior: Optional[torch.Tensor], *,
                        lam: float = 1.0):
    """Value ``lam * F(z[, prior])`` (0-dim, detached) and its gradient w.r.t. the latents
    ``z`` (``(n, D)``, detached input; zeros where F does not depend on z)."""
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        f = lam * (F(z) if prior is None else F(z, prior))
        if f.requires_grad:
            (g,) = torch.autograd.grad(f, z, allow_unused=True)
        else:
            g = None
    return f.detach(), (torch.zeros_like(z) if g is None else g)


def gradcache_backward(encoder: Callable, F: Callable, x: torch.Tensor, *, chunk: int,
                       per_example: Optional[Callable] = None, reduction: str = "sum",
                       prior: Optional[torch.Tensor] = None, lam: float = 1.0) -> LossParts:
    """Accumulate ``dL/dtheta`` of the n-batch loss L (module docstring) into the ``.grad``
    of the parameters, holding the activations of ``chunk`` examples at a time.

    Args:
        encoder: ``E(x) -> (b, D)``; F: the batch cost on ``(n, D)`` (with ``prior``).
        x: ``(n, ...)`` the n examples. chunk: c, ``1 <= c`` (the last chunk may be smaller).
        per_example: ``G(x, z) -> (b,)`` or None. reduction: ``"sum" | "mean" | "sqrt_mean"``.
        prior: ``(n_prior, D)`` prior sample for costs that take one, or a callable
            ``prior(Z)`` that draws it given the latents ``Z`` (``(n, D)``), or None.
        lam: ``lambda >= 0``, the weight of F.

    Returns:
        detached :class:`~mowtheory.mow.LossParts` ``(lam F + red(G), lam F, red(G))``. Gradients
        are added to what ``.grad`` holds (zero them first).
    """
    n = len(x)
    c = check_int("chunk", chunk, low=1)
    check_choice("reduction", reduction, REDUCTIONS)
    bounds = [(i, min(i + c, n)) for i in range(0, n, c)]
    need_G1 = per_example is not None and reduction == "sqrt_mean"
    zs, Gs = [], []
    with torch.no_grad():                                       # pass 1
        for lo, hi in bounds:
            z = encoder(x[lo:hi])
            zs.append(z)
            if need_G1:
                Gs.append(per_example(x[lo:hi], z))
    Z = torch.cat(zs)
    if callable(prior):
        prior = prior(Z)
    f, g = batch_cost_gradient(F, Z, prior, lam=lam)
    a = per_example_coefficient(torch.cat(Gs) if need_G1 else None, reduction, n)
    G2 = []
    for lo, hi in bounds:                                       # pass 2
        z = encoder(x[lo:hi])
        surrogate = (z * g[lo:hi].to(z.dtype)).sum()
        if per_example is not None:
            G = per_example(x[lo:hi], z)
            surrogate = surrogate + (G * a).sum()
            G2.append(G.detach())
        surrogate.backward()
    if per_example is None:
        r = torch.zeros_like(f)
    else:
        r = reduce_per_example(torch.cat(G2), reduction)
    return LossParts(f + r, f, r)


class _NBatch:
    """Shared part of the n-batch steps: configuration, prior sample, checkpoint state."""

    method = ""

    def __init__(self, encoder: Callable, cost: Callable, *, n: int,
                 per_example: Optional[Callable] = None, reduction: str = "sum",
                 prior: Optional[Callable] = None, generator: Optional[torch.Generator] = None,
                 device=None, lam: float = 1.0):
        self.n = check_int("n", n, low=1)
        bind_objective(self, encoder, cost, per_example=per_example, reduction=reduction,
                       prior=prior, generator=generator, device=device, lam=lam)
        self.steps = 0
        #: detached loss parts of the latest step, set before its update (None meanwhile)
        self.last_parts: Optional[LossParts] = None

    def _check_x(self, x: torch.Tensor) -> None:
        if len(x) != self.n:
            raise ValueError(f"x must hold n = {self.n} examples (one batch); got {len(x)}")

    def _prior_sample(self, like: torch.Tensor, dim: int) -> Optional[torch.Tensor]:
        if not self.needs_prior:
            return None
        return self.prior(self.n, dim, generator=self.generator, dtype=like.dtype,
                          device=like.device)

    def _config(self) -> dict:
        return {"method": self.method, "n": self.n, "reduction": self.reduction}

    def state_dict(self) -> dict:
        return {"steps": self.steps, "generator": self.generator.get_state(),
                "config": self._config()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("config") != self._config():
            raise ValueError(f"state_dict is of another configuration: {state.get('config')} "
                             f"received, this one is {self._config()}")
        self.steps = int(state["steps"])
        self.generator.set_state(state["generator"])


class Minibatch(_NBatch):
    """Plain n-batch training: one forward and backward pass over all n examples.

    Args as :class:`GradCache` without ``chunk``. ``step(x, optimizer)`` with ``x`` of shape
    ``(n, ...)`` returns the detached :class:`~mowtheory.mow.LossParts`.
    """

    method = "minibatch"

    def step(self, x: torch.Tensor, optimizer: torch.optim.Optimizer) -> LossParts:
        self._check_x(x)
        self.last_parts = None
        z = self.encoder(x)
        prior = self._prior_sample(z, z.shape[-1])
        f = self.lam * (self.cost(z) if prior is None else self.cost(z, prior))
        if self.per_example is None:
            r = torch.zeros_like(f)
        else:
            r = reduce_per_example(self.per_example(x, z), self.reduction)
        parts = LossParts(f + r, f, r)
        self.last_parts = parts.detach()
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        optimizer.step()
        self.steps += 1
        return self.last_parts


class GradCache(_NBatch):
    """n-batch training with the activation memory of ``chunk`` examples (module docstring).

    Args:
        encoder: module mapping ``x`` of shape ``(b, ...)`` to latents ``(b, D)``.
        cost: the batch cost F: a :class:`~mowtheory.costs.BatchCost` or any callable
            ``F(z)`` / ``F(z, prior)`` on ``(n, D)`` returning a 0-dim tensor.
        n: examples per step (the batch F sees). chunk: c, examples encoded at a time.
        per_example: ``G(x, z) -> (b,)`` per-example costs (e.g. reconstruction), or None.
        reduction: ``"sum" | "mean" | "sqrt_mean"`` of G over the n examples.
        prior: ``prior(n, D, generator=, dtype=, device=) -> (n, D)`` for costs with
            ``needs_prior`` (default N(0, I)); generator: its ``torch.Generator``.
        lam: ``lambda >= 0``, the weight of F in the objective ``lam F + red(G)``.
    """

    method = "gradcache"

    def __init__(self, encoder: Callable, cost: Callable, *, n: int, chunk: int,
                 per_example: Optional[Callable] = None, reduction: str = "sum",
                 prior: Optional[Callable] = None, generator: Optional[torch.Generator] = None,
                 device=None, lam: float = 1.0):
        super().__init__(encoder, cost, n=n, per_example=per_example, reduction=reduction,
                         prior=prior, generator=generator, device=device, lam=lam)
        self.chunk = check_int("chunk", chunk, low=1, high=self.n, high_name="n")

    def _config(self) -> dict:
        return dict(super()._config(), chunk=self.chunk)

    def step(self, x: torch.Tensor, optimizer: torch.optim.Optimizer) -> LossParts:
        self._check_x(x)
        self.last_parts = None
        optimizer.zero_grad(set_to_none=True)
        parts = gradcache_backward(self.encoder, self.cost, x, chunk=self.chunk,
                                   per_example=self.per_example, reduction=self.reduction,
                                   prior=lambda Z: self._prior_sample(Z, Z.shape[-1]),
                                   lam=self.lam)
        self.last_parts = parts
        optimizer.step()
        self.steps += 1
        return parts
