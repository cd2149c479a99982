"""The MoW objective and step, optimizer-agnostic.

One step of MoW_k(n) (DESIGN.md, with the errata of Algorithm 1 corrected)::

    cost_{l+1}(theta) = F(h_1, ..., h_{n-k}, E_theta(x_1), ..., E_theta(x_k); V) + red_j G_theta(x_j)
    theta_{l+1}       = theta_l - eta * grad cost_{l+1}(theta_l)          (any torch.optim optimizer)

where ``h`` are the ``n - k`` frozen latents of the window (no gradient flows into them) and
``red`` is the reduction of the per-example costs G over the ``k`` fresh examples:

- ``"sum"``: sum (the theorem's cost (1));
- ``"mean"``: mean over the k fresh examples;
- ``"sqrt_mean"``: square root of that mean (the authors' TensorFlow code).

``balanced=True`` scales the F-term (value and gradient) by ``n / k``: with ``"mean"`` the
expected drift is then that of standard n-batch training, up to the time scale.

Two layers:

- :func:`mow_loss` is a pure function of tensors (fresh latents, window, F, G);
- :class:`MoW` holds a :class:`~mowtheory.window.LatentWindow` (and the cost's cache of the
  frozen block) for an encoder, and :meth:`MoW.step` runs one step with any optimizer and
  either refresh policy: ``"post"`` re-encodes the k examples after the update without
  gradient (the paper), ``"pre"`` stores the latents computed before it (the authors' code).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch

from ._validate import check_choice, check_int, check_latents, check_pair
from .costs import BatchCost
from .window import INIT_POLICIES, LatentWindow

REDUCTIONS = ("sum", "mean", "sqrt_mean")
REFRESH_POLICIES = ("post", "pre")


class LossParts(NamedTuple):
    """Parts of a MoW loss. ``total`` carries the graph; the others are its terms:
    ``batch_cost`` = F (unscaled by ``balanced``), ``per_example`` = the reduced G."""
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
    ``"mean"`` or ``"sqrt_mean"`` (sqrt of the mean); returns shape ``(...)``."""
    check_choice("reduction", reduction, REDUCTIONS)
    if reduction == "sum":
        return G.sum(-1)
    if reduction == "mean":
        return G.mean(-1)
    return G.mean(-1).sqrt()


def mow_loss(F: Callable, fresh: torch.Tensor, window: torch.Tensor,
             G: Optional[torch.Tensor] = None, *, prior: Optional[torch.Tensor] = None,
             reduction: str = "sum", balanced: bool = False, cache=None,
             constants: bool = True) -> LossParts:
    """The MoW_k(n) cost of one step.

    Args:
        F: the batch cost: a :class:`~mowtheory.costs.BatchCost` (then its split evaluation
            is used, O(n·k·D) with ``cache``) or any callable ``F(z)`` / ``F(z, prior)`` on
            ``z`` of shape ``(..., n, D)`` returning shape ``(...)``; it receives
            ``cat([window, fresh], -2)`` (window rows first, oldest first as given).
        fresh: ``(..., k, D)`` latents of the k fresh examples, with gradient.
        window: ``(..., n - k, D)`` frozen latents; detached here whatever is passed.
        G: ``(..., k)`` per-example costs of the fresh examples, or None (no G-term).
        prior: ``(..., n_prior, D)`` prior sample V for costs that take one.
        reduction: ``"sum" | "mean" | "sqrt_mean"`` over the k values of G.
        balanced: scale the F-term by ``n / k``.
        cache, constants: passed to ``BatchCost.split`` (see :mod:`mowtheory.costs`).

    Returns:
        :class:`LossParts` ``(total, batch_cost, per_example)``, each of shape ``(...)``;
        ``total = (n/k if balanced else 1) * F + red(G)``.
    """
    check_latents("fresh", fresh, min_n=1, batch_dims=True, finite=False)
    check_latents("window", window, min_n=0, batch_dims=True, finite=False)
    check_pair("fresh", fresh, "window", window)
    check_choice("reduction", reduction, REDUCTIONS)
    k, m = fresh.shape[-2], window.shape[-2]
    n = k + m
    window = window.detach()
    if m > 0 and isinstance(F, BatchCost) and F.supports_split and fresh.dim() == 2:
        f = F.split(window, fresh, prior, cache=cache, constants=constants)
    else:
        z = fresh if m == 0 else torch.cat([window, fresh], dim=-2)
        f = F(z) if prior is None else F(z, prior)
    if G is None:
        g = torch.zeros_like(f)
    else:
        if G.shape[-1] != k:
            raise ValueError(f"G must have shape (..., k) with k={k} fresh examples; got {tuple(G.shape)}")
        g = reduce_per_example(G, reduction)
    total = (f * (n / k) if balanced else f) + g
    return LossParts(total, f, g)


def standard_normal_prior(n: int, dim: int, *, generator: torch.Generator, dtype, device):
    """Prior sample V: ``n`` draws of N(0, I_dim), shape ``(n, dim)``."""
    return torch.randn(n, dim, generator=generator, dtype=dtype, device=device)


class MoW:
    """MoW_k(n) for an encoder: the window, the cost cache and the step.

    Args:
        encoder: module mapping a batch ``x`` of shape ``(b, ...)`` to latents ``(b, D)``.
        cost: a :class:`~mowtheory.costs.BatchCost` (or any callable F, evaluated in full).
        n, k: batch size seen by F and fresh examples per step (``1 <= k <= n``).
        latent_dim: D.
        per_example: ``G(x, z) -> (k,)`` per-example costs (e.g. reconstruction through a
            decoder), or None.
        reduction, balanced: see :func:`mow_loss`.
        refresh: ``"post"`` (the paper) or ``"pre"`` (the authors' code).
        prior: ``prior(n, D, generator=, dtype=, device=) -> (n, D)`` for costs that take a
            prior sample (default :func:`standard_normal_prior` when ``cost.needs_prior``).
        generator: ``torch.Generator`` for prior samples and the ``prior`` init policy.
        exact_value: when False, F's value may omit terms constant in theta (same gradient,
            faster for two-sample costs with a fresh prior sample; see ``BatchCost.split``).
        dtype, device: of the window.
    """

    def __init__(self, encoder: torch.nn.Module, cost, *, n: int, k: int, latent_dim: int,
                 per_example: Optional[Callable] = None, reduction: str = "sum",
                 balanced: bool = False, refresh: str = "post", prior: Optional[Callable] = None,
                 generator: Optional[torch.Generator] = None, exact_value: bool = True,
                 dtype=torch.float32, device=None):
        self.n = check_int("n", n, low=2)
        self.k = check_int("k", k, low=1, high=self.n, high_name="n")
        self.encoder = encoder
        self.cost = cost
        self.per_example = per_example
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.balanced = bool(balanced)
        self.refresh = check_choice("refresh", refresh, REFRESH_POLICIES)
        self.needs_prior = bool(getattr(cost, "needs_prior", False))
        self.prior = prior if prior is not None else standard_normal_prior
        self.generator = generator if generator is not None else torch.Generator(
            device=device or "cpu").manual_seed(0)
        self.exact_value = bool(exact_value)
        self.window = LatentWindow(self.n, self.k, latent_dim, device=device, dtype=dtype)
        self._split = isinstance(cost, BatchCost) and cost.supports_split
        self.cache = None
        self.steps = 0

    # ------------------------------------------------------------------ window
    def init_window(self, policy: str = "encode", x: Optional[torch.Tensor] = None) -> None:
        """Fill the window: ``"encode"`` encodes ``x`` (``n - k`` examples) at the current
        parameters (the paper); ``"prior"`` draws N(0, I) from the generator (the authors' code)."""
        check_choice("policy", policy, INIT_POLICIES)
        if policy == "encode":
            if x is None or len(x) != self.window.size:
                got = None if x is None else len(x)
                raise ValueError(f"x must hold n - k = {self.window.size} examples for init "
                                 f"policy 'encode'; got {got}")
            with torch.no_grad():
                self.window.fill(self.encoder(x))
        else:
            self.window.fill_prior(self.generator)
        self._reset_cache()

    def _reset_cache(self) -> None:
        self.cache = (self.cost.init_cache(self.window.buffer, n=self.n)
                      if self._split and self.window.size > 0 else None)

    def _push(self, latents: torch.Tensor) -> None:
        if self._split and self.window.size > 0:
            new = latents[-min(self.k, self.window.size):]
            self.cache = self.cost.update_cache(self.cache, self.window.buffer,
                                                self.window.next_slots(), new.detach())
        self.window.push(latents)

    # ------------------------------------------------------------------ step
    def encode_fresh(self, x: torch.Tensor, k: Optional[int] = None):
        """Encode ``k`` (default ``self.k``) fresh examples ``x`` (``(k, ...)``) with gradient;
        returns ``(z, G)``: latents ``(k, D)`` and per-example costs ``(k,)`` (or None)."""
        k = self.k if k is None else k
        if len(x) != k:
            raise ValueError(f"x must hold k = {k} fresh examples; got {len(x)}")
        if not self.window.is_full:
            raise RuntimeError("call init_window() before the first step")
        z = self.encoder(x)
        return z, (self.per_example(x, z) if self.per_example is not None else None)

    def objective(self, z: torch.Tensor, G: Optional[torch.Tensor]) -> LossParts:
        """The MoW loss of fresh latents ``z`` (``(k, D)``) and their costs ``G`` against the
        window (draws the prior sample when the cost takes one)."""
        prior = None
        if self.needs_prior:
            prior = self.prior(self.n, z.shape[-1], generator=self.generator, dtype=z.dtype,
                               device=z.device)
        window = self.window.buffer if self._split else self.window.ordered()
        return mow_loss(self.cost, z, window, G, prior=prior, reduction=self.reduction,
                        balanced=self.balanced, cache=self.cache, constants=self.exact_value)

    def loss(self, x: torch.Tensor) -> tuple[LossParts, torch.Tensor]:
        """MoW loss of the k fresh examples ``x`` (``(k, ...)``); returns (parts, fresh latents)."""
        z, G = self.encode_fresh(x)
        return self.objective(z, G), z

    def finish_step(self, parts: LossParts, optimizer: torch.optim.Optimizer,
                    fresh: torch.Tensor, reencode: Callable[[], torch.Tensor],
                    reduce_gradients: Optional[Callable[[], None]] = None) -> LossParts:
        """Backward, optimizer step and window slide of one step.

        ``fresh``: the latents of the loss (stored by refresh ``"pre"``); ``reencode()``: the
        latents re-encoded after the update, called under no_grad (refresh ``"post"``);
        ``reduce_gradients()``: called between backward and the update (e.g. an all-reduce)."""
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        if reduce_gradients is not None:
            reduce_gradients()
        optimizer.step()
        if self.refresh == "pre":
            self._push(fresh.detach())
        else:
            with torch.no_grad():
                self._push(reencode())
        self.steps += 1
        return parts.detach()

    def step(self, x: torch.Tensor, optimizer: torch.optim.Optimizer) -> LossParts:
        """One MoW step on the k fresh examples ``x``; returns the detached loss parts
        (tensors on the device: no host synchronisation; call ``.floats()`` to read them)."""
        parts, z = self.loss(x)
        return self.finish_step(parts, optimizer, z, lambda: self.encoder(x))

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        # the cost cache is derived from the window: recomputed on load, never stored
        return {"window": self.window.state_dict(), "steps": self.steps,
                "generator": self.generator.get_state(),
                "config": {"n": self.n, "k": self.k, "reduction": self.reduction,
                           "balanced": self.balanced, "refresh": self.refresh}}

    def load_state_dict(self, state: dict) -> None:
        mine = {"n": self.n, "k": self.k, "reduction": self.reduction,
                "balanced": self.balanced, "refresh": self.refresh}
        if state.get("config") != mine:
            raise ValueError(f"state_dict is of another MoW configuration: {state.get('config')} "
                             f"received, this one is {mine}")
        self.window.load_state_dict(state["window"])
        self._reset_cache()
        self.steps = int(state["steps"])
        self.generator.set_state(state["generator"])
