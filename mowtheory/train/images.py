"""Figures of a trained autoencoder, as in the paper's figures (matplotlib, Agg backend).

- :func:`save_samples`: a grid of decoded prior samples ``decode(z), z ~ N(0, I)``;
- :func:`save_reconstructions`: alternating rows of test inputs and their reconstructions;
- :func:`save_interpolations`: each row walks linearly in latent space between the codes of
  two test examples (the two ends are the inputs themselves, framed by the decoded path).

Images are ``(B, C, H, W)`` tensors in [0, 1]; C = 1 is drawn in grey, C = 3 in colour.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .._io import atomic_savefig
from .metrics import decode_all, encode_decode


def _pyplot():
    import matplotlib
    if matplotlib.get_backend().lower() != "agg":
        try:
            matplotlib.use("Agg", force=True)
        except Exception:  # pragma: no cover - a backend already in use elsewhere
            pass
    import matplotlib.pyplot as plt
    return plt


def make_grid(images: torch.Tensor, nrow: int, pad: int = 1) -> np.ndarray:
    """Tile ``images`` (``(B, C, H, W)``) into rows of ``nrow``; returns ``(h, w)`` or
    ``(h, w, 3)`` floats in [0, 1] with ``pad`` white pixels between tiles."""
    if images.dim() != 4:
        raise ValueError(f"images must have shape (B, C, H, W); got {tuple(images.shape)}")
    x = images.detach().float().clamp(0, 1).cpu().numpy()
    b, c, h, w = x.shape
    rows = -(-b // nrow)
    grid = np.ones((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), dtype=np.float32)
    for i in range(b):
        r, col = divmod(i, nrow)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h,
             pad + col * (w + pad): pad + col * (w + pad) + w] = x[i]
    return grid[0] if c == 1 else np.transpose(grid[:3], (1, 2, 0))


def save_grid(images: torch.Tensor, path, *, nrow: int, title: Optional[str] = None,
              dpi: int = 100) -> Path:
    """Save ``images`` as a grid PNG at ``path`` (one figure, closed after saving)."""
    plt = _pyplot()
    grid = make_grid(images, nrow)
    h, w = grid.shape[:2]
    scale = max(1.0, 400.0 / max(h, w))          # small images (8x8 digits) drawn larger
    fig = plt.figure(figsize=(w * scale / dpi, h * scale / dpi + (0.3 if title else 0)), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, h * scale / dpi / fig.get_figheight()])
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=8, y=0.995)
    path = Path(path)
    try:
        atomic_savefig(fig, path, dpi=dpi)
    finally:
        plt.close(fig)
    return path


def save_samples(model, path, *, n: int = 64, nrow: int = 8, generator: torch.Generator,
                 device=None, title: Optional[str] = None, autocast: bool = False) -> Path:
    """Decode ``n`` draws of N(0, I_D) (from ``generator``) and save them as a grid."""
    z = torch.randn(n, model.latent_dim, generator=generator)
    return save_grid(decode_all(model, z, device=device, autocast=autocast), path, nrow=nrow,
                     title=title)


def save_reconstructions(model, x: torch.Tensor, path, *, nrow: int = 8, rows: int = 4,
                         device=None, title: Optional[str] = None, autocast: bool = False) -> Path:
    """Alternating rows: ``nrow`` test inputs, then their reconstructions (``rows`` pairs)."""
    m = min(len(x), nrow * rows)
    x = x[:m]
    _, y = encode_decode(model, x, device=device, autocast=autocast)
    return save_grid(reconstruction_tiles(x, y, nrow), path, nrow=nrow, title=title)


def reconstruction_tiles(x: torch.Tensor, y: torch.Tensor, nrow: int) -> torch.Tensor:
    """Tiles for rows of ``nrow``: ``x[0:nrow]``, ``y[0:nrow]``, ``x[nrow:2nrow]``, ... (a short
    last pair of rows is padded with white tiles). ``x``, ``y``: ``(m, C, H, W)``."""
    tiles = []
    for r in range(0, len(x), nrow):
        xs, ys = x[r:r + nrow].float().cpu(), y[r:r + nrow].float().cpu()
        fill = torch.ones(nrow - len(xs), *x.shape[1:])
        tiles += [xs, fill, ys, fill]
    return torch.cat(tiles)


def save_interpolations(model, x: torch.Tensor, path, *, rows: int = 6, steps: int = 10,
                        device=None, title: Optional[str] = None, autocast: bool = False) -> Path:
    """Each row: test example ``a``, the decodings of ``(1 - t) E(a) + t E(b)`` for ``steps``
    values of t in [0, 1], then test example ``b``; ``a``, ``b`` are consecutive pairs of ``x``."""
    pairs = min(rows, len(x) // 2)
    if pairs < 1:
        raise ValueError(f"x must hold at least 2 examples for interpolations; got {len(x)}")
    a, b = x[0:2 * pairs:2], x[1:2 * pairs:2]
    za, _ = encode_decode(model, a, device=device, autocast=autocast)
    zb, _ = encode_decode(model, b, device=device, autocast=autocast)
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    path_z = (1 - t) * za[:, None, :] + t * zb[:, None, :]            # (pairs, steps, D)
    dec = decode_all(model, path_z.reshape(pairs * steps, -1), device=device, autocast=autocast)
    dec = dec.view(pairs, steps, *dec.shape[1:])
    tiles = torch.cat([a.float()[:, None], dec, b.float()[:, None]], dim=1)
    return save_grid(tiles.reshape(-1, *tiles.shape[2:]), path, nrow=steps + 2, title=title)
