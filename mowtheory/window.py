"""The latent window of MoW_k(n): the ``n - k`` most recent latents, frozen.

A step of MoW_k(n) encodes ``k`` fresh examples with gradient and lets the batch cost F see
them together with the window, the ``m = n - k`` latents computed at earlier parameters.
After the step the ``k`` new latents enter the window and the ``k`` oldest leave it.

:class:`LatentWindow` is a ring buffer of fixed memory ``(*batch_shape, m, D)``:

- rows are stored **detached** (no autograd graph is ever retained, whatever is pushed);
- ``push`` overwrites the ``k`` oldest slots in place (oldest leaves first) and returns the
  slot indices it overwrote, so a cost cache of the frozen block can follow the slide;
- ``buffer`` is the storage in slot order (what a permutation-invariant F needs, no copy);
  ``ordered()`` is the same rows from oldest to newest (for position-dependent F and tests);
- ``batch_shape`` lets one window hold independent replicas, e.g. ``(R,)`` for R simulated
  MoW runs advanced together;
- init policies: ``fill`` (the paper: encode ``n - k`` examples at ``theta_0``) and
  ``fill_prior`` (the authors' code: N(0, I) draws from an explicit ``torch.Generator``);
- ``state_dict``/``load_state_dict`` for checkpoints.
"""
from __future__ import annotations

import torch

from ._validate import check_generator, check_int, check_latents

INIT_POLICIES = ("encode", "prior")


class LatentWindow:
    """Ring buffer of the ``m = n - k`` frozen latents of MoW_k(n).

    Args:
        n: batch size seen by F (``n >= 1``).
        k: fresh examples per step (``1 <= k <= n``); ``k == n`` gives an empty window.
        dim: latent dimension D.
        batch_shape: leading shape of independent windows (default ``()``).
        device, dtype: of the storage (default CPU, float32).

    Shapes: ``buffer`` is ``(*batch_shape, m, D)``; ``push`` takes ``(*batch_shape, k, D)``.
    """

    def __init__(self, n: int, k: int, dim: int, *, batch_shape=(), device=None,
                 dtype=torch.float32):
        self.n = check_int("n", n, low=1)
        self.k = check_int("k", k, low=1, high=self.n, high_name="n")
        self.dim = check_int("dim", dim, low=1)
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64 (the window stores "
                            f"latents); got dtype={dtype}")
        if isinstance(batch_shape, (str, bytes)) or not hasattr(batch_shape, "__iter__"):
            raise TypeError(f"batch_shape must be a sequence of integers >= 0 (e.g. (R,)); "
                            f"got batch_shape={batch_shape!r}")
        self.batch_shape = torch.Size(check_int("batch_shape", b, low=0) for b in batch_shape)
        self.size = self.n - self.k
        self._buf = torch.zeros(*self.batch_shape, self.size, self.dim, device=device, dtype=dtype)
        self._head = 0          # slot of the oldest row
        self._count = 0         # rows filled so far (== size once initialised)

    # ------------------------------------------------------------------ contents
    @property
    def buffer(self) -> torch.Tensor:
        """The stored latents in slot order, shape ``(*batch_shape, m, D)``, detached."""
        return self._buf

    @property
    def is_full(self) -> bool:
        return self._count == self.size

    def ordered(self) -> torch.Tensor:
        """The stored latents from oldest to newest, shape ``(*batch_shape, m, D)`` (a copy)."""
        return torch.roll(self._buf, shifts=-self._head, dims=-2)

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return (f"LatentWindow(n={self.n}, k={self.k}, dim={self.dim}, "
                f"batch_shape={tuple(self.batch_shape)}, filled={self._count}/{self.size})")

    # ------------------------------------------------------------------ init
    def _check_rows(self, name: str, rows: torch.Tensor, count: int, what: str,
                    finite: bool = True) -> torch.Tensor:
        # finite=False on the hot path: a finiteness test would force a host sync every step
        check_latents(name, rows, min_n=0, dim=self.dim, batch_dims=True, finite=finite)
        want = (*self.batch_shape, count, self.dim)
        if tuple(rows.shape) != want:
            raise ValueError(f"{name} must have shape {want} ({what}); got {tuple(rows.shape)}")
        return rows.detach().to(device=self._buf.device, dtype=self._buf.dtype)

    def fill(self, latents: torch.Tensor) -> None:
        """Init policy ``encode``: set the window to ``latents`` (``(*batch_shape, m, D)``),
        e.g. the encodings of ``n - k`` examples at ``theta_0``; row 0 is the oldest."""
        self._buf.copy_(self._check_rows("latents", latents, self.size, "n - k rows"))
        self._head = 0
        self._count = self.size

    def fill_prior(self, generator: torch.Generator) -> None:
        """Init policy ``prior``: fill the window with N(0, I) draws from ``generator``."""
        check_generator(generator)
        draw = torch.randn(self._buf.shape, generator=generator, dtype=self._buf.dtype,
                           device=generator.device)
        self._buf.copy_(draw)
        self._head = 0
        self._count = self.size

    # ------------------------------------------------------------------ slide
    def next_slots(self) -> torch.Tensor:
        """Slot indices the next ``push`` will overwrite (the ``min(k, m)`` oldest), a LongTensor."""
        r = min(self.k, self.size)
        return (self._head + torch.arange(r, device=self._buf.device)) % max(self.size, 1)

    def push(self, latents: torch.Tensor) -> torch.Tensor:
        """Let ``k`` new latents (``(*batch_shape, k, D)``, newest last) enter the window; the
        ``k`` oldest leave. Stored detached. Returns the overwritten slot indices (LongTensor).

        When ``k > m`` only the ``m`` newest rows are kept. With ``m == 0`` this is a no-op.
        """
        rows = self._check_rows("latents", latents, self.k, "k fresh latents", finite=False)
        if not self.is_full:
            raise RuntimeError(
                f"the window is not initialised ({self._count}/{self.size} rows); call fill() "
                "(init policy 'encode') or fill_prior() (init policy 'prior') first")
        if self.size == 0:
            return torch.zeros(0, dtype=torch.long, device=self._buf.device)
        slots = self.next_slots()
        self._buf.index_copy_(-2, slots, rows[..., self.k - slots.numel():, :])
        self._head = (self._head + slots.numel()) % self.size
        return slots

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        return {"n": self.n, "k": self.k, "dim": self.dim,
                "batch_shape": tuple(self.batch_shape), "buffer": self._buf.clone(),
                "head": self._head, "count": self._count}

    def load_state_dict(self, state: dict) -> None:
        mine = (self.n, self.k, self.dim, tuple(self.batch_shape))
        theirs = (state.get("n"), state.get("k"), state.get("dim"), tuple(state.get("batch_shape", ())))
        if mine != theirs:
            raise ValueError(
                "state_dict is of another window: (n, k, dim, batch_shape) = "
                f"{theirs} received, this window has {mine}")
        self._buf.copy_(state["buffer"].to(device=self._buf.device, dtype=self._buf.dtype))
        self._head = int(state["head"])
        self._count = int(state["count"])
