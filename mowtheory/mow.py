"""The MoW objective and step, optimizer-agnostic.

One step of MoW_k(n) (docs/theory.md, with the errata of Algorithm 1 corrected)::

    cost_{l+1}(theta) = F(h_1, ..., h_{n-k}, E_theta(x_1), ..., E_theta(x_k); V) + red_j G_theta(x_j)
    theta_{l+1}       = theta_l - eta * grad cost_{l+1}(theta_l)          (any torch.optim optimizer)

where ``h`` are the ``n - k`` frozen latents of the window (no gradient flows into them) and
``red`` is the reduction of the per-example costs G over the ``k`` fresh examples:

- ``"sum"``: sum (the theorem's cost (1));
- ``"mean"``: mean over the k fresh examples;
- ``"sqrt_mean"``: square root of that mean (the authors' TensorFlow code); at a mean of
  exactly 0 the value is 0 with gradient 0 (a finite subgradient, as for ``gmmn``'s square
  root), where a plain square root would give NaN.

``balanced=True`` scales the F-term (value and gradient) by ``n / k``: with ``"mean"`` the
expected drift is then that of standard n-batch training, up to the time scale.

Two layers:

- :func:`~mowtheory.loss.mow_loss` (in :mod:`mowtheory.loss`, re-exported here) is a pure
  function of tensors (fresh latents, window, F, G);
- :class:`MoW` holds a :class:`~mowtheory.frozen.FrozenWindow` (the window and the cost's
  cache of the frozen block) for an encoder. One step is two phases, so that any training
  loop (``torch.autocast``, a ``GradScaler``, clipping, accumulation, Lightning) can run the
  backward and the update itself:

  1. ``parts, ctx = mow.loss(x)``: the graph-carrying loss of the k fresh examples against
     the window; no side effect on the window;
  2. the caller's backward and optimizer step;
  3. ``mow.commit(ctx)``: the window slides. Refresh ``"post"`` (the paper) re-encodes the
     k examples under ``no_grad`` at the parameters in force *now* (after the update);
     ``"pre"`` (the authors' code) stores the latents of the loss.

  :meth:`MoW.step` is the composition with a ``torch.optim`` optimizer. Misuse is an error
  naming it: a second ``loss`` before ``commit`` (or ``discard``), a ``commit`` twice, a
  context of another step or another MoW.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch

from ._names import REDUCTIONS, REFRESH_POLICIES
from ._validate import check_choice, check_generator, check_int, check_positive
from .costs import BatchCost
from .costs import registry as _registry
from .frozen import FrozenWindow
from .loss import LossParts, mow_loss, reduce_per_example, refreshed_latents  # noqa: F401
from .window import INIT_POLICIES


class NonFiniteError(ValueError):
    """A MoW loss (or its per-example costs) is NaN/inf, or negative under ``sqrt_mean``;
    raised before any parameter is updated (see :meth:`MoW.step`). ``step`` is the MoW step
    count at which it happened and ``parts`` the detached loss parts."""

    def __init__(self, message: str, *, step: int, parts: Optional["LossParts"] = None):
        super().__init__(message)
        self.step, self.parts = step, parts


def standard_normal_prior(n: int, dim: int, *, generator: torch.Generator, dtype, device):
    """Prior sample V: ``n`` draws of N(0, I_dim), shape ``(n, dim)``."""
    return torch.randn(n, dim, generator=generator, dtype=dtype, device=device)


def bind_objective(obj, encoder, cost, *, per_example=None, reduction: str = "sum",
                   prior=None, generator=None, device=None, lam: float = 1.0) -> None:
    """Validate and set the attributes every step object shares (:class:`MoW`, and the
    n-batch steps of :mod:`mowtheory.gradcache`): ``encoder``, ``cost``, ``per_example``,
    ``reduction``, ``needs_prior``, ``prior`` (default :func:`standard_normal_prior`),
    ``generator`` (default a CPU/``device`` generator seeded 0) and ``lam`` (the weight
    lambda >= 0 of the batch cost). TypeError/ValueError name the argument."""
    if not callable(encoder):
        raise TypeError(f"encoder must be callable (an nn.Module mapping (b, ...) to (b, D)); "
                        f"got encoder={encoder!r}")
    if not callable(cost):
        raise TypeError(f"cost must be a BatchCost (mowtheory.costs.get(name)) or a callable "
                        f"F(z[, y]); got cost={cost!r}")
    for name, fn in (("per_example", per_example), ("prior", prior)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable or None; got {name}={fn!r}")
    check_generator(generator, optional=True)
    obj.encoder, obj.cost, obj.per_example = encoder, cost, per_example
    obj.reduction = check_choice("reduction", reduction, REDUCTIONS)
    obj.lam = check_positive("lam", lam, allow_zero=True)
    obj.needs_prior = bool(getattr(cost, "needs_prior", False))
    obj.prior = prior if prior is not None else standard_normal_prior
    obj.generator = generator if generator is not None else torch.Generator(
        device=device or "cpu").manual_seed(0)


class StepContext(NamedTuple):
    """What :meth:`MoW.commit` needs of the step whose loss :meth:`MoW.loss` computed.

    ``x``: the k fresh examples ``(k, ...)`` (re-encoded by refresh ``"post"``); ``fresh``:
    their latents at the loss, ``(k, D)``, detached (stored by refresh ``"pre"``; for the
    distributed step, the ``k·P`` latents of all ranks); ``step``: the MoW step count when the
    loss was computed; ``owner``: ``id`` of the MoW that made it."""
    x: torch.Tensor
    fresh: torch.Tensor
    step: int
    owner: int


class MoW:
    """MoW_k(n) for an encoder: the window, the cost cache and the two-phase step.

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
        check_finite: check in :meth:`step`, before the update, that the loss is finite (and,
            with ``sqrt_mean``, that the mean of G is >= 0), raising :class:`NonFiniteError`
            with the parameters untouched. None (default): only for CPU tensors, where
            reading the value synchronises nothing; on an accelerator the check would stall
            every step, and a non-finite value is then visible in the returned parts.
        dtype, device: of the window.

    Usage, with the optimizer handed over (:meth:`step`) or in the caller's own loop::

        parts, ctx = mow.loss(x)            # no side effect on the window
        scaler.scale(parts.total).backward(); scaler.step(opt); scaler.update()
        mow.commit(ctx)                     # the window slides
    """

    def __init__(self, encoder: torch.nn.Module, cost, *, n: int, k: int, latent_dim: int,
                 per_example: Optional[Callable] = None, reduction: str = "sum",
                 balanced: bool = False, refresh: str = "post", prior: Optional[Callable] = None,
                 generator: Optional[torch.Generator] = None, exact_value: bool = True,
                 check_finite: Optional[bool] = None, dtype=torch.float32, device=None,
                 lam: float = 1.0):
        self.n = check_int("n", n, low=2)
        self.k = check_int("k", k, low=1, high=self.n, high_name="n")
        for name, flag in (("balanced", balanced), ("exact_value", exact_value)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool; got {name}={flag!r}")
        if check_finite is not None and not isinstance(check_finite, bool):
            raise TypeError(f"check_finite must be a bool or None; got "
                            f"check_finite={check_finite!r}")
        bind_objective(self, encoder, cost, per_example=per_example, reduction=reduction,
                       prior=prior, generator=generator, device=device, lam=lam)
        self.balanced = balanced
        self.refresh = check_choice("refresh", refresh, REFRESH_POLICIES)
        self.exact_value = exact_value
        self.check_finite = check_finite
        self.frozen = FrozenWindow(cost, self.n, self.k, latent_dim, device=device, dtype=dtype)
        self.steps = 0
        self._pending: Optional[int] = None      # MoW.steps of the loss awaiting commit

    @property
    def window(self):
        """The :class:`~mowtheory.window.LatentWindow` (``(n - k, D)``)."""
        return self.frozen.window

    @property
    def cache(self):
        """The cost's :class:`~mowtheory.costs.SplitCache` of the window (or None)."""
        return self.frozen.cache

    # ------------------------------------------------------------------ window
    def init_window(self, policy: str = "encode", x: Optional[torch.Tensor] = None) -> None:
        """Fill the window: ``"encode"`` encodes ``x`` (``n - k`` examples) at the current
        parameters (the paper); ``"prior"`` draws N(0, I) from the generator (the authors'
        code, where it is redrawn at the start of every epoch: call this again then).
        Drops a pending (uncommitted) loss."""
        check_choice("policy", policy, INIT_POLICIES)
        if policy == "encode":
            if x is None or len(x) != self.window.size:
                got = None if x is None else len(x)
                raise ValueError(f"x must hold n - k = {self.window.size} examples for init "
                                 f"policy 'encode'; got {got}")
            with torch.no_grad():
                self.frozen.fill(self.encoder(x))
        else:
            self.frozen.fill_prior(self.generator)
        self._pending = None

    # ------------------------------------------------------------------ the loss
    def encode_fresh(self, x: torch.Tensor, k: Optional[int] = None):
        """Encode ``k`` (default ``self.k``) fresh examples ``x`` (``(k, ...)``) with gradient;
        returns ``(z, G)``: latents ``(k, D)`` and per-example costs ``(k,)`` (or None)."""
        k = self.k if k is None else k
        if not isinstance(x, torch.Tensor) or x.dim() == 0 or len(x) != k:
            got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else repr(x)
            raise ValueError(f"x must be a tensor holding k = {k} fresh examples, shape "
                             f"(k, ...); got {got}")
        if not self.window.is_full:
            raise RuntimeError("call init_window() before the first step")
        z = self.encoder(x)
        if not isinstance(z, torch.Tensor) or tuple(z.shape) != (k, self.window.dim):
            got = f"shape {tuple(z.shape)}" if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"the encoder must map the k = {k} examples to latents of shape "
                             f"(k, latent_dim) = ({k}, {self.window.dim}); got {got} (check "
                             "latent_dim and the encoder)")
        if self.per_example is None:
            return z, None
        G = self.per_example(x, z)
        if not isinstance(G, torch.Tensor) or tuple(G.shape) != (k,):
            got = f"shape {tuple(G.shape)}" if isinstance(G, torch.Tensor) else type(G).__name__
            raise ValueError(f"per_example must return one cost per fresh example, shape "
                             f"(k,) = ({k},); got {got}")
        return z, G

    def objective(self, z: torch.Tensor, G: Optional[torch.Tensor]) -> LossParts:
        """The MoW loss of fresh latents ``z`` (``(k, D)``) and their costs ``G`` against the
        window (draws the prior sample when the cost takes one).

        Mixed precision: ``z`` and ``G`` are cast to the window's dtype and F, the reduction
        and the total are evaluated with ``torch.autocast`` off, so under autocast only the
        encoder and G run in low precision; the cost, the window and the loss stay in the
        window's dtype (float32 by default)."""
        dtype = self.frozen.window.buffer.dtype
        with torch.autocast(z.device.type, enabled=False):
            z = z.to(dtype)
            G = None if G is None else G.to(dtype)
            prior = None
            if self.needs_prior:
                prior = self.prior(self.n, z.shape[-1], generator=self.generator, dtype=dtype,
                                   device=z.device)
            window = self.frozen.rows(ordered=not self.frozen.split)
            return mow_loss(self.cost, z, window, G, prior=prior, reduction=self.reduction,
                            balanced=self.balanced, cache=self.frozen.cache,
                            constants=self.exact_value, lam=self.lam)

    def _open(self, x: torch.Tensor, fresh: torch.Tensor) -> StepContext:
        """Register the pending step of a loss just computed; returns its context."""
        self._pending = self.steps
        return StepContext(x, fresh.detach(), self.steps, id(self))

    def _check_no_pending(self) -> None:
        if self._pending is not None:
            raise RuntimeError(
                f"loss() was called twice without commit(): the loss of step {self._pending} "
                "is still pending; call commit(ctx) after its update, or discard(ctx) to drop it")

    def loss(self, x: torch.Tensor) -> tuple[LossParts, StepContext]:
        """Phase 1 of a step: the MoW loss of the k fresh examples ``x`` (``(k, ...)``).

        Returns ``(parts, ctx)``: :class:`LossParts` whose ``total`` carries the graph (0-dim),
        and the :class:`StepContext` to hand to :meth:`commit` after the update. The window is
        not touched (the prior sample, if any, is drawn from the generator)."""
        return self._loss(x, self.k)

    def _loss(self, x: torch.Tensor, k: int, gather: Optional[Callable] = None):
        """:meth:`loss` of ``k`` examples; ``gather`` (e.g. the all-gather of the distributed
        step) maps this process's latents and costs to those of every process."""
        self._check_no_pending()
        z, G = self.encode_fresh(x, k)
        if gather is not None:
            z, G = gather(z), (None if G is None else gather(G))
        if G is not None and self.reduction == "sqrt_mean" and self._checks(G) \
                and bool((G.detach() < 0).any()):
            raise NonFiniteError(
                f"step {self.steps}: per_example returned negative costs "
                f"{G.detach().tolist()}; reduction 'sqrt_mean' takes the square root of their "
                "mean and needs costs >= 0", step=self.steps)
        parts = self.objective(z, G)
        return parts, self._open(x, z)

    # ------------------------------------------------------------------ the slide
    def _check_ctx(self, ctx) -> None:
        if not isinstance(ctx, StepContext):
            raise TypeError(f"ctx must be the StepContext returned by loss(); got "
                            f"{type(ctx).__name__}")
        if ctx.owner != id(self):
            raise ValueError("ctx is the context of another MoW object; commit it there")
        if self._pending is None or ctx.step != self._pending:
            state = ("no loss is pending" if self._pending is None
                     else f"the pending loss is of step {self._pending}")
            raise RuntimeError(f"ctx is stale: it is the context of step {ctx.step}, already "
                               f"committed or discarded ({state}; this MoW is at step "
                               f"{self.steps}); call loss() again")

    def commit(self, ctx: StepContext, latents: Optional[torch.Tensor] = None) -> None:
        """Phase 3 of a step, after the caller's update: slide the window.

        Refresh ``"post"`` re-encodes ``ctx.x`` under ``no_grad`` with the encoder as it is
        now; ``"pre"`` stores ``ctx.fresh``. ``latents`` (``(k, D)``) overrides both (the
        distributed step passes the gathered latents of all ranks)."""
        self._check_ctx(ctx)
        if latents is None:
            latents = refreshed_latents(self.refresh, ctx.fresh, lambda: self.encoder(ctx.x))
        self.frozen.push(latents.detach().to(self.window.buffer.dtype))   # bf16 under autocast
        self.steps += 1
        self._pending = None

    def discard(self, ctx: StepContext) -> None:
        """Drop the pending step of ``ctx`` without sliding the window (e.g. a skipped step
        of a ``GradScaler`` is still committed; discard is for a loss that is not a step,
        such as one that failed)."""
        self._check_ctx(ctx)
        self._pending = None

    # ------------------------------------------------------------------ the step
    def _checks(self, t: torch.Tensor) -> bool:
        # one policy with the costs' own value checks: read values only where that
        # synchronises nothing (CPU tensors), unless check_finite says otherwise
        if self.check_finite is not None:
            return self.check_finite
        return _registry._eager_checks(t)

    def _verify(self, parts: LossParts, ctx: StepContext) -> None:
        """Raise :class:`NonFiniteError` (dropping the pending step) for a non-finite loss."""
        if self._checks(parts.total) and not bool(torch.isfinite(parts.total.detach()).all()):
            self._pending = None
            raise NonFiniteError(
                f"step {self.steps}: the loss is not finite (F = "
                f"{float(parts.batch_cost.detach())}, reduced G = "
                f"{float(parts.per_example.detach())}); the parameters were not updated",
                step=self.steps, parts=parts.detach())

    def step(self, x: torch.Tensor, optimizer: torch.optim.Optimizer, *,
             reduce_gradients: Optional[Callable[[], None]] = None) -> LossParts:
        """One MoW step on the k fresh examples ``x``: :meth:`loss`, backward,
        ``reduce_gradients()`` (if given, e.g. an all-reduce), ``optimizer.step()``,
        :meth:`commit`. Returns the detached loss parts (tensors on the device: no host
        synchronisation beyond ``check_finite``; call ``.floats()`` to read them).

        A loss that fails the finiteness check raises :class:`NonFiniteError` before any
        update; any other error drops the pending step (the window is not slid)."""
        return self._run(self.loss, self.commit, x, optimizer, reduce_gradients)

    def _run(self, loss, commit, x, optimizer, reduce_gradients) -> LossParts:
        if not (callable(getattr(optimizer, "zero_grad", None))
                and callable(getattr(optimizer, "step", None))):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer (or any object with "
                            f"zero_grad() and step()); got optimizer={optimizer!r}")
        parts, ctx = loss(x)
        try:
            self._verify(parts, ctx)
            optimizer.zero_grad(set_to_none=True)
            parts.total.backward()
            if reduce_gradients is not None:
                reduce_gradients()
            optimizer.step()
        except NonFiniteError:
            raise
        except BaseException:
            self._pending = None
            raise
        commit(ctx)
        return parts.detach()

    # ------------------------------------------------------------------ checkpoint
    def _config(self) -> dict:
        return {"n": self.n, "k": self.k, "reduction": self.reduction,
                "balanced": self.balanced, "refresh": self.refresh,
                "cost": _cost_identity(self.cost)}

    def state_dict(self) -> dict:
        """Window, step count, generator state and configuration (the cost cache is derived
        from the window: recomputed on load, never stored)."""
        return {"window": self.frozen.state_dict(), "steps": self.steps,
                "generator": self.generator.get_state(), "config": self._config()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` of a MoW of the same configuration (n, k, reduction,
        balanced, refresh, cost); every field is validated before anything is changed."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict from MoW.state_dict(); got "
                            f"{type(state).__name__}")
        missing = [key for key in ("window", "steps", "generator", "config") if key not in state]
        if missing:
            raise ValueError(f"state_dict is missing {missing}; it is not a MoW state")
        mine, theirs = self._config(), dict(state["config"])
        theirs.setdefault("cost", mine["cost"])   # states saved before the cost was recorded
        if theirs != mine:
            raise ValueError(f"state_dict is of another MoW configuration: {state['config']} "
                             f"received, this one is {mine}")
        steps = state["steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"state_dict['steps'] must be an integer >= 0; got {steps!r}")
        self.frozen.load_state_dict(state["window"])
        self.steps = steps
        self.generator.set_state(state["generator"])
        self._pending = None


def _cost_identity(cost) -> str:
    """A string naming the cost and its bound parameters (registered costs), or its type."""
    if isinstance(cost, BatchCost):
        plain = (int, float, str, bool, tuple, type(None))
        params = {key: (v if isinstance(v, plain) else type(v).__name__)
                  for key, v in dict(cost.params).items()}
        return f"{cost.name}{sorted(params.items())!r}"
    return getattr(cost, "__qualname__", type(cost).__qualname__)
