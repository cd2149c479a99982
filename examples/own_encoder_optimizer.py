"""MoW_k(n) with your own encoder, decoder and optimizer.

:class:`mowtheory.MoW` needs only an encoder (any callable ``(k, ...) -> (k, D)`` whose
parameters the optimizer updates), a batch cost F, and optionally a per-example cost G. Any
``torch.optim`` optimizer works: ``MoW.step`` builds the objective

    F(window, E(x_1..x_k); V) + red_j G(x_j)          (window frozen: docs/theory.md)

calls ``backward`` and ``optimizer.step()``, and slides the window. Here: a small MLP
autoencoder on 2-D points of a noisy circle lifted to 10-D, the CWAE cost (log Cramér–Wold
distance to N(0, I)), k = 2 fresh examples per step out of n = 32, and RMSprop.

    python examples/own_encoder_optimizer.py            # 3000 steps
    python examples/own_encoder_optimizer.py --quick    # 60 steps (a smoke run)
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

from mowtheory import MoW, costs


def data(N: int, generator: torch.Generator) -> torch.Tensor:
    """N points of a noisy circle, embedded linearly in 10-D: ``(N, 10)``."""
    t = torch.rand(N, generator=generator) * 2 * torch.pi
    circle = torch.stack([t.cos(), t.sin()], 1) + 0.05 * torch.randn(N, 2, generator=generator)
    lift = torch.randn(2, 10, generator=torch.Generator().manual_seed(1))
    return circle @ lift


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few steps (a smoke run)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    steps = 60 if args.quick else 3000
    n, k, D = 32, 2, 4
    g = torch.Generator().manual_seed(0)
    x_all = data(2048, g)

    enc = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, D))
    dec = nn.Sequential(nn.Linear(D, 64), nn.ReLU(), nn.Linear(64, 10))
    mow = MoW(enc, costs.get("cwae"), n=n, k=k, latent_dim=D,
              per_example=lambda x, z: (dec(z) - x).pow(2).sum(-1),   # G: (k,) errors
              reduction="mean", refresh="post",
              generator=torch.Generator().manual_seed(2))
    mow.init_window("encode", x_all[: n - k])        # the paper's init: encode n-k examples
    opt = torch.optim.RMSprop([*enc.parameters(), *dec.parameters()], lr=1e-3)

    def recon() -> float:
        with torch.no_grad():
            return float((dec(enc(x_all)) - x_all).pow(2).sum(-1).mean())

    first = recon()
    order = torch.randperm(len(x_all), generator=g)
    for s in range(steps):
        idx = order[(s * k) % len(x_all):(s * k) % len(x_all) + k]
        parts = mow.step(x_all[idx], opt)            # LossParts of tensors, no host sync
        if (s + 1) % max(steps // 5, 1) == 0:
            p = parts.floats()
            print(f"step {s + 1:5d}: total {p['total']:.4f}  log CW {p['batch_cost']:.4f}  "
                  f"G {p['per_example']:.4f}")
    last = recon()
    print(f"mean reconstruction error over the data: {first:.4f} -> {last:.4f}")
    return 0 if last < first else 1


if __name__ == "__main__":
    raise SystemExit(main())
