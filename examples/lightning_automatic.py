"""MoW in a PyTorch Lightning module with automatic optimisation.

Lightning runs the backward and the optimizer step itself; MoW fits in with its two phases:

- ``training_step`` returns ``parts.total`` of ``parts, ctx = self.mow.loss(x)`` (no side
  effect on the window) and keeps ``ctx``;
- Lightning zeroes the gradients, runs ``backward`` and ``optimizer.step()``
  (with ``accumulate_grad_batches=A`` only every A batches: see the accumulation semantics
  in ``mowtheory.accumulate``);
- ``on_train_batch_end`` (after the update) calls ``self.mow.commit(ctx)``: the window slides
  (refresh ``"post"`` re-encodes the k examples at the updated parameters);
- ``on_save_checkpoint`` / ``on_load_checkpoint`` store and restore ``self.mow.state_dict()``
  (window, step count, prior generator): a resumed run continues the same window.

Under ``precision="bf16-mixed"`` the encoder and G run in bf16 while the cost, the window and
the loss stay in float32 (``MoW.objective`` evaluates them with autocast off).

    pip install "mowtheory[lightning]"
    python examples/lightning_automatic.py            # 300 steps
    python examples/lightning_automatic.py --quick    # 12 steps (a smoke run)
"""
from __future__ import annotations

import argparse

import lightning as L
import torch
from torch import nn

from mowtheory import MoW, costs


class MoWAutoencoder(L.LightningModule):
    """An MLP autoencoder ``(b, x_dim) -> (b, latent_dim)`` trained by MoW_k(n) with the CWAE
    cost and the squared reconstruction error as G; ``window_init``: ``(n - k, x_dim)``
    examples encoded into the first window."""

    def __init__(self, window_init: torch.Tensor, *, x_dim: int = 5, latent_dim: int = 3,
                 n: int = 16, k: int = 2, lr: float = 0.01, momentum: float = 0.0,
                 refresh: str = "post", seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.enc = nn.Sequential(nn.Linear(x_dim, 16), nn.Tanh(), nn.Linear(16, latent_dim))
        self.dec = nn.Linear(latent_dim, x_dim)
        self.window_init, self.lr, self.momentum = window_init, lr, momentum
        self.mow = MoW(self.enc, costs.get("cwae"), n=n, k=k, latent_dim=latent_dim,
                       per_example=self.reconstruction, refresh=refresh,
                       generator=torch.Generator().manual_seed(seed + 1),
                       dtype=window_init.dtype)
        self._ctx = None

    def reconstruction(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """G: ``(k, x_dim), (k, D) -> (k,)``, squared error of the decoded latents."""
        return (self.dec(z) - x).square().sum(-1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)

    def on_train_start(self) -> None:
        if not self.mow.window.is_full:           # a resumed run has its window already
            self.mow.init_window("encode", self.window_init.to(self.device))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        parts, self._ctx = self.mow.loss(batch)
        return parts.total

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.mow.commit(self._ctx)               # after Lightning's optimizer step
        self._ctx = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["mow"] = self.mow.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.mow.load_state_dict(checkpoint["mow"])


def data(N: int, x_dim: int = 5, seed: int = 3, dtype=torch.float32) -> torch.Tensor:
    """``(N, x_dim)`` points near a random 2-D plane."""
    g = torch.Generator().manual_seed(seed)
    plane = torch.randn(2, x_dim, generator=g, dtype=dtype)
    return (torch.randn(N, 2, generator=g, dtype=dtype) @ plane
            + 0.05 * torch.randn(N, x_dim, generator=g, dtype=dtype))


def trainer(max_steps: int, **kwargs) -> L.Trainer:
    """A quiet CPU trainer (no logger, no progress bar) unless ``kwargs`` say otherwise."""
    opts = dict(accelerator="cpu", devices=1, max_steps=max_steps, logger=False,
                enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False)
    opts.update(kwargs)
    return L.Trainer(**opts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="12 steps (a smoke run)")
    p.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed")
    args = p.parse_args(argv)
    steps, n, k = (12, 16, 2) if args.quick else (300, 32, 2)
    x = data(n - k + steps * k)
    module = MoWAutoencoder(x[:n - k], n=n, k=k)
    loader = torch.utils.data.DataLoader(x[n - k:], batch_size=k, shuffle=False)
    trainer(steps, precision=args.precision).fit(module, loader)
    with torch.no_grad():
        err = (module.dec(module.enc(x)) - x).square().sum(-1).mean()
    print(f"lightning automatic optimisation: {module.mow.steps} MoW steps "
          f"(window {module.mow.window.size} x {module.mow.window.dim}), "
          f"mean reconstruction error {float(err):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
