"""MoW in a PyTorch Lightning module with manual optimisation.

With ``automatic_optimization = False`` the whole MoW step is written out in
``training_step``, in the order of :meth:`mowtheory.MoW.step`::

    parts, ctx = self.mow.loss(x)         # the loss of the k fresh examples vs the window
    opt.zero_grad()
    self.manual_backward(parts.total)     # Lightning's backward (precision plugins, scaling)
    self.clip_gradients(opt, gradient_clip_val=..., gradient_clip_algorithm="norm")  # optional
    opt.step()
    self.mow.commit(ctx)                  # after the update: the window slides

The window is saved in and restored from Lightning checkpoints by the two checkpoint hooks.

    pip install "mowtheory[lightning]"
    python examples/lightning_manual.py            # 300 steps
    python examples/lightning_manual.py --quick    # 12 steps (a smoke run)
"""
from __future__ import annotations

import argparse
from typing import Optional

import lightning as L
import torch
from torch import nn

from mowtheory import MoW, costs


class ManualMoWAutoencoder(L.LightningModule):
    """The MLP autoencoder of ``lightning_automatic.py``, stepped by hand; ``clip``: the
    gradient-norm bound (None: no clipping)."""

    def __init__(self, window_init: torch.Tensor, *, x_dim: int = 5, latent_dim: int = 3,
                 n: int = 16, k: int = 2, lr: float = 0.01, momentum: float = 0.0,
                 clip: Optional[float] = None, seed: int = 0):
        super().__init__()
        self.automatic_optimization = False
        torch.manual_seed(seed)
        self.enc = nn.Sequential(nn.Linear(x_dim, 16), nn.Tanh(), nn.Linear(16, latent_dim))
        self.dec = nn.Linear(latent_dim, x_dim)
        self.window_init, self.lr, self.momentum, self.clip = window_init, lr, momentum, clip
        self.mow = MoW(self.enc, costs.get("cwae"), n=n, k=k, latent_dim=latent_dim,
                       per_example=lambda x, z: (self.dec(z) - x).square().sum(-1),
                       generator=torch.Generator().manual_seed(seed + 1),
                       dtype=window_init.dtype)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)

    def on_train_start(self) -> None:
        if not self.mow.window.is_full:
            self.mow.init_window("encode", self.window_init.to(self.device))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        opt = self.optimizers()
        parts, ctx = self.mow.loss(batch)
        opt.zero_grad()
        self.manual_backward(parts.total)
        if self.clip is not None:
            self.clip_gradients(opt, gradient_clip_val=self.clip, gradient_clip_algorithm="norm")
        opt.step()
        self.mow.commit(ctx)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["mow"] = self.mow.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.mow.load_state_dict(checkpoint["mow"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="12 steps (a smoke run)")
    args = p.parse_args(argv)
    steps, n, k = (12, 16, 2) if args.quick else (300, 32, 2)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n - k + steps * k, 2, generator=g) @ torch.randn(2, 5, generator=g)
    module = ManualMoWAutoencoder(x[:n - k], n=n, k=k, clip=10.0)
    loader = torch.utils.data.DataLoader(x[n - k:], batch_size=k, shuffle=False)
    L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False,
              enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(module, loader)
    with torch.no_grad():
        err = (module.dec(module.enc(x)) - x).square().sum(-1).mean()
    print(f"lightning manual optimisation: {module.mow.steps} MoW steps, "
          f"mean reconstruction error {float(err):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
