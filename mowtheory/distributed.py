"""Data-parallel MoW over several processes (``torch.distributed``): one window, P ranks.

Each of the P ranks reads its own k fresh examples a step. The step of P ranks with k each is
the step of **one process with k·P** fresh examples under the same data order (rank r holds
rows ``r*k .. r*k+k-1`` of the global k·P batch) and the same reduction:

1. every rank encodes its k examples with gradient, ``z_r = E(x_r)`` (k, D), and computes its
   per-example costs ``G_r`` (k,);
2. the fresh latents and the per-example costs of all ranks are gathered in rank order with
   :func:`gather_rows` (k·P rows), an all-gather whose **backward returns only the local
   slice** of the incoming gradient (see below);
3. every rank evaluates the same objective of one process with k·P,
   ``(n/(kP) if balanced else 1) * F(window, z_0..z_{P-1}; V) + red(G_0..G_{P-1})``, on the
   same global window and the same prior sample V (drawn from a generator seeded identically
   on every rank, exactly what one process would draw), and backpropagates;
4. the parameter gradients are summed over ranks (:func:`allreduce_gradients`, one all-reduce
   per bucket) and the optimizer steps, identically on every rank;
5. the k·P new latents (re-encoded after the update for ``refresh="post"``, the pre-update
   ones for ``"pre"``) enter the window in rank order: the window stays identical on every
   rank.

Why the backward of the gather returns the local slice. Every rank evaluates the *same*
scalar L of the gathered tensor, so on every rank ``dL/dz_all`` is the full, identical
gradient; the part that belongs to rank r's parameters' graph is the slice of rank r. Handing
each rank its own slice and then summing the parameter gradients over ranks gives the
gradient of the one global L. (``torch.distributed.nn.all_gather`` instead all-reduces the
incoming gradients in its backward, which is right when each rank computes a *different* loss
whose sum is the objective; here it would count every slice P times.)

Reductions. Because the per-example costs are gathered too, every reduction is the one of a
single process over k·P values: ``"sum"``, ``"mean"`` and ``"sqrt_mean"`` (the square root of
the global mean, which is not a sum of per-rank terms) all match one process with k·P.

Timeouts. Every collective runs in the default process group (or ``group``), created by
:func:`init_distributed` with ``timeout=`` (default :data:`DEFAULT_TIMEOUT_S`): a rank that
dies or hangs makes the others fail with an error after that time instead of waiting forever.
(With NCCL the timeout is enforced by the watchdog, on by default in torch >= 2.2:
``TORCH_NCCL_ASYNC_ERROR_HANDLING``.)

Backends. gloo on CPU is tested (2 processes, float64: same parameters as one process with
k·P after 20 steps to 1e-10). NCCL on CUDA runs the same code with tensors on the rank's
device (``cuda:LOCAL_RANK``); it is not covered by the test suite of this package (no GPU in
its CI).

Example (under ``torchrun --nproc_per_node=P script.py``)::

    ctx = init_distributed()                         # env:// from torchrun; gloo or nccl
    model = build(...).to(ctx.device)
    broadcast_parameters(model)                      # identical start on every rank
    dmow = DistributedMoW(model.encode, costs.get("cwae"), n=64, k=1, latent_dim=8,
                          per_example=G, generator=torch.Generator(ctx.device).manual_seed(1),
                          device=ctx.device)
    dmow.init_window("encode", x_init)               # the same n - k·P examples on every rank
    for s in range(steps):
        xs = x_global_batch(s)[ctx.rank * k:(ctx.rank + 1) * k]
        parts = dmow.step(xs, opt)
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
import torch.distributed as dist

from ._validate import check_int
from .mow import LossParts, MoW, StepContext, refreshed_latents
from .process_group import DEFAULT_TIMEOUT_S, DistContext, init_distributed, is_distributed

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DistContext",
    "DistributedMoW",
    "allreduce_gradients",
    "broadcast_parameters",
    "gather_rows",
    "gather_rows_nograd",
    "init_distributed",
    "is_distributed",
]


# ----------------------------------------------------------------------------- collectives
def _group_info(group) -> tuple[int, int]:
    return dist.get_rank(group), dist.get_world_size(group)


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0 in rank order; backward: the local slice of the gradient."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, group):
        rank, world = _group_info(group)
        t = t.contiguous()
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t, group=group)
        ctx.rank, ctx.rows = rank, t.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad):
        lo = ctx.rank * ctx.rows
        return grad[lo:lo + ctx.rows].contiguous(), None


def gather_rows(t: torch.Tensor, group=None) -> torch.Tensor:
    """Concatenate ``t`` (``(k, ...)``, the same shape on every rank) of all ranks along dim 0,
    in rank order: ``(P*k, ...)``. Differentiable: the backward returns to each rank **only the
    slice of its own rows** of the incoming gradient (correct when every rank evaluates the
    same function of the gathered tensor; sum the parameter gradients over ranks afterwards,
    :func:`allreduce_gradients`). With one process (or none initialised) returns ``t``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return t
    return _GatherRows.apply(t, group)


@torch.no_grad()
def gather_rows_nograd(t: torch.Tensor, group=None) -> torch.Tensor:
    """:func:`gather_rows` without autograd (for latents entering the window)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return t.detach()
    t = t.detach().contiguous()
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, t, group=group)
    return torch.cat(parts, dim=0)


def allreduce_gradients(params: Iterable[torch.nn.Parameter], group=None, *,
                        bucket_bytes: int = 25 * 1024 ** 2) -> None:
    """Sum ``p.grad`` over ranks, in place, for every parameter with a gradient.

    Gradients are flattened into buckets of at most ``bucket_bytes`` (one all-reduce each,
    per dtype and device). Parameters whose ``grad`` is None are skipped: every rank must run
    the same graph (as :class:`DistributedMoW` does), so the set is the same on every rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    buckets: list[list[torch.Tensor]] = []
    open_: dict = {}                      # (dtype, device) -> (bucket, bytes)
    for g in grads:
        key, nbytes = (g.dtype, g.device), g.numel() * g.element_size()
        cur = open_.get(key)
        if cur is None or (cur[1] + nbytes > bucket_bytes and cur[0]):
            cur = ([], 0)
            buckets.append(cur[0])
        cur[0].append(g)
        open_[key] = (cur[0], cur[1] + nbytes)
    for chunk in buckets:
        flat = torch.cat([c.reshape(-1) for c in chunk])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        off = 0
        for c in chunk:
            c.copy_(flat[off:off + c.numel()].view_as(c))
            off += c.numel()


@torch.no_grad()
def broadcast_parameters(module: torch.nn.Module, src: int = 0, group=None) -> None:
    """Copy the parameters and buffers of rank ``src`` to every rank (identical start)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=src, group=group)


@torch.no_grad()
def _checksum(tensors: Iterable[torch.Tensor], device) -> torch.Tensor:
    vals = [torch.zeros((), dtype=torch.float64, device=device)] * 2
    for t in tensors:
        t = t.detach().to(device=device, dtype=torch.float64)
        w = torch.arange(1, t.numel() + 1, dtype=torch.float64, device=device)
        vals = [vals[0] + t.reshape(-1).sum(), vals[1] + (t.reshape(-1) * w.sin()).sum()]
    return torch.stack(vals)


# ----------------------------------------------------------------------------- MoW
class DistributedMoW:
    """MoW_{k·P}(n) run by P ranks with k fresh examples each; one window on every rank.

    Wraps a :class:`~mowtheory.mow.MoW` with ``k = k·P`` (``self.mow``), which holds the
    window, the cost cache, the prior generator and the configuration; this class only
    replaces the step (gather, identical objective, gradient all-reduce, push in rank order).
    Every argument is that of :class:`~mowtheory.mow.MoW`, except:

    Args:
        k: fresh examples **per rank** (``1 <= k`` and ``k * world_size <= n``).
        generator: must be seeded identically on every rank (prior samples V, the ``prior``
            window init): V is then the sample one process with k·P would draw.
        group: process group (default: the default group, see :func:`init_distributed`).
        local: run as one process (world size 1, no collectives) even when a process group
            is initialised.

    The encoder (and whatever ``per_example`` uses) must start identical on every rank
    (:func:`broadcast_parameters`), and ``init_window("encode", x)`` must receive the same
    ``x`` (``n - k·P`` examples) on every rank. :meth:`check_synchronized` verifies both.
    Without an initialised process group (or with one rank, or ``local=True``) it is plain
    MoW with k, step for step (the trainer uses it for every run).

    ``last_parts``: the detached loss parts of the latest step, set as soon as the loss is
    computed (before the update), so they are known even when the step then fails (e.g. the
    cost refuses non-finite latents re-encoded after an update that overflowed); None while
    the loss of the current step has not been computed.
    """

    def __init__(self, encoder: Callable, cost, *, n: int, k: int, latent_dim: int,
                 per_example: Optional[Callable] = None, reduction: str = "sum",
                 balanced: bool = False, refresh: str = "post", prior: Optional[Callable] = None,
                 generator: Optional[torch.Generator] = None, exact_value: bool = True,
                 dtype=torch.float32, device=None, group=None, local: bool = False,
                 lam: float = 1.0):
        self.group = group
        initialised = dist.is_available() and dist.is_initialized() and not local
        self.world_size = dist.get_world_size(group) if initialised else 1
        self.rank = dist.get_rank(group) if initialised else 0
        n = check_int("n", n, low=2)
        self.k = check_int("k", k, low=1)
        if self.k * self.world_size > n:
            raise ValueError(
                f"k * world_size must be <= n (the k·P fresh latents of all ranks enter one "
                f"batch of n); got k={self.k}, world_size={self.world_size}, "
                f"k * world_size={self.k * self.world_size} > n={n}")
        self._active = self.world_size > 1           # collectives needed
        self.last_parts: Optional[LossParts] = None
        self.mow = MoW(encoder, cost, n=n, k=self.k * self.world_size, latent_dim=latent_dim,
                       per_example=per_example, reduction=reduction, balanced=balanced,
                       refresh=refresh, prior=prior, generator=generator,
                       exact_value=exact_value, dtype=dtype, device=device, lam=lam)

    # ---------------------------------------------------------------- delegated state
    @property
    def n(self) -> int:
        return self.mow.n

    @property
    def k_global(self) -> int:
        return self.mow.k

    @property
    def window(self):
        return self.mow.window

    @property
    def encoder(self):
        return self.mow.encoder

    @property
    def steps(self) -> int:
        return self.mow.steps

    def init_window(self, policy: str = "encode", x: Optional[torch.Tensor] = None) -> None:
        """As :meth:`MoW.init_window`; ``x`` (``n - k·P`` examples) the same on every rank."""
        self.mow.init_window(policy, x)

    # ---------------------------------------------------------------- step
    def loss(self, x: torch.Tensor) -> tuple[LossParts, StepContext]:
        """Phase 1: the objective of one process with k·P on the gathered fresh latents;
        ``x``: this rank's ``(k, ...)`` examples. Returns ``(parts, ctx)`` as
        :meth:`MoW.loss`, ``ctx.fresh`` holding the gathered ``(k·P, D)`` latents. Sets
        :attr:`last_parts`. Collective: every rank must call it."""
        self.last_parts = None
        gather = (lambda t: gather_rows(t, self.group)) if self._active else None
        parts, ctx = self.mow._loss(x, self.k, gather)
        self.last_parts = parts.detach()
        return parts, ctx

    def commit(self, ctx: StepContext) -> None:
        """Phase 3, after the update (and the gradient all-reduce): the k·P new latents enter
        the window in rank order (re-encoded and gathered for refresh ``"post"``, the
        gathered latents of the loss for ``"pre"``). Collective for ``"post"``."""
        mow = self.mow
        mow._check_ctx(ctx)

        def reencode():
            new = mow.encoder(ctx.x)
            return gather_rows_nograd(new, self.group) if self._active else new
        mow.commit(ctx, refreshed_latents(mow.refresh, ctx.fresh, reencode))

    def step(self, x: torch.Tensor, optimizer: torch.optim.Optimizer) -> LossParts:
        """One data-parallel MoW step on this rank's k examples ``x``; every parameter in
        ``optimizer`` has its gradient summed over ranks before ``optimizer.step()``. Returns
        the detached loss parts (identical on every rank). Errors as :meth:`MoW.step`."""
        def reduce_gradients():
            if self._active:
                allreduce_gradients([p for g in optimizer.param_groups for p in g["params"]],
                                    self.group)
        return self.mow._run(self.loss, self.commit, x, optimizer, reduce_gradients)

    # ---------------------------------------------------------------- checks, checkpoints
    def check_synchronized(self, module: Optional[torch.nn.Module] = None, *,
                           rtol: float = 0.0) -> None:
        """Raise RuntimeError when the window (and ``module``'s parameters and buffers, if
        given) differ between ranks; compares two checksums per rank (one all-gather).
        ``rtol``: relative tolerance (0: bitwise equal checksums)."""
        if not self._active:
            return
        dev = self.mow.window.buffer.device
        tensors = [self.mow.window.buffer]
        if module is not None:
            tensors += list(module.parameters()) + list(module.buffers())
        mine = _checksum(tensors, dev)
        every = gather_rows_nograd(mine[None], self.group).cpu()
        ref = every[0]
        for r in range(1, len(every)):
            if not torch.allclose(every[r], ref, rtol=rtol, atol=0.0):
                raise RuntimeError(
                    f"ranks are out of sync: rank {r} has window/parameter checksums "
                    f"{every[r].tolist()}, rank 0 has {ref.tolist()} (different initial "
                    "parameters, window init data, generator seeds or data)")

    def state_dict(self) -> dict:
        """The wrapped MoW's state (identical on every rank: save it from rank 0) plus the
        layout ``{"world_size", "k_per_rank"}``."""
        return {"mow": self.mow.state_dict(),
                "distributed": {"world_size": self.world_size, "k_per_rank": self.k}}

    def load_state_dict(self, state: dict) -> None:
        mine = {"world_size": self.world_size, "k_per_rank": self.k}
        if state.get("distributed") != mine:
            raise ValueError(f"state_dict is of another distributed layout: "
                             f"{state.get('distributed')} received, this one is {mine}")
        self.mow.load_state_dict(state["mow"])
