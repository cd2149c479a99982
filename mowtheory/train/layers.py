"""Building blocks of the autoencoders of :mod:`mowtheory.train.models`: the
:class:`Autoencoder` module (an encoder/decoder pair with its input shape and latent
dimension), fully connected stacks, TensorFlow-style "same" convolutions, GroupNorm in place
of BatchNorm (a batch of one example, MoW's k = 1, has no batch statistics), and the
validation of an architecture's resolution. :mod:`mowtheory.train.models` re-exports
:class:`Autoencoder`.
"""
from __future__ import annotations

import math
from typing import Callable

from torch import Tensor, nn

from mowtheory._validate import check_int

__all__ = ["Autoencoder"]


class Autoencoder(nn.Module):
    """An encoder/decoder pair with known input shape and latent dimension.

    Parameters
    ----------
    encoder : nn.Module
        Maps images ``(b, C, H, W)`` to latents ``(b, D)``.
    decoder : nn.Module
        Maps latents ``(b, D)`` to images ``(b, C, H, W)`` with values in ``[0, 1]``.
    latent_dim : int
        ``D``.
    input_shape : tuple[int, int, int]
        ``(C, H, W)`` of one example.
    arch : str, optional
        Name of the architecture, for ``repr`` and checkpoints.

    ``encode``, ``decode`` and ``forward`` check the shapes of their input and say what they
    expected; the reconstruction ``forward(x) = decode(encode(x))`` has the shape of ``x``.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, *, latent_dim: int,
                 input_shape: tuple[int, int, int], arch: str = "custom"):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = check_int("latent_dim", latent_dim, low=1)
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W); got input_shape={input_shape!r}")
        self.input_shape = tuple(check_int("input_shape entry", s, low=1) for s in input_shape)
        self.arch = arch

    def _require(self, name: str, t, ok: bool, shape: str) -> None:
        if not ok:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must have shape {shape} for the {self.arch!r} "
                             f"autoencoder; got {got}")

    def encode(self, x: Tensor) -> Tensor:
        """``(b, C, H, W) -> (b, D)``."""
        self._require("x", x, isinstance(x, Tensor) and x.dim() == 4
                      and tuple(x.shape[1:]) == self.input_shape,
                      f"(b, {', '.join(map(str, self.input_shape))})")
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """``(b, D) -> (b, C, H, W)``, values in ``[0, 1]``."""
        self._require("z", z, isinstance(z, Tensor) and z.dim() == 2
                      and z.shape[1] == self.latent_dim, f"(b, {self.latent_dim})")
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction ``decode(encode(x))``, same shape as ``x``."""
        return self.decode(self.encode(x))

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, input_shape={self.input_shape}, latent_dim={self.latent_dim}"


# --------------------------------------------------------------------------------------------
# Building blocks


class _Unflatten(nn.Module):
    """``(b, C·H·W) -> (b, C, H, W)``."""

    def __init__(self, *shape: int):
        super().__init__()
        self.shape = shape

    def forward(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


def _mlp(sizes: list[int], *, last: nn.Module | None) -> list[nn.Module]:
    """Linear layers ``sizes[0] -> ... -> sizes[-1]``, ReLU between, ``last`` after the end."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    if last is not None:
        layers.append(last)
    return layers


def _group_norm(channels: int) -> nn.GroupNorm:
    """Per-example normalisation standing in for BatchNorm: 32 groups (fewer if needed)."""
    groups = math.gcd(32, channels)
    return nn.GroupNorm(groups, channels)


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow ``padding="SAME"``: output ``ceil(size/stride)``; ``(before, after, out)``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


def _same_conv(cin: int, cout: int, kernel: int, stride: int,
               size: int) -> tuple[list[nn.Module], int]:
    """A convolution with TF "SAME" padding (asymmetric when it must be) on a ``size``² input."""
    lo, hi, out = _same_pad(size, kernel, stride)
    layers: list[nn.Module] = []
    if lo or hi:
        layers.append(nn.ZeroPad2d((lo, hi, lo, hi)))
    layers.append(nn.Conv2d(cin, cout, kernel, stride))
    return layers, out


def _resolution(arch: str, resolution, default: int, *, ok: Callable[[int], bool],
                allowed: str) -> int:
    if resolution is None:
        return default
    r = check_int("resolution", resolution, low=1)
    if not ok(r):
        raise ValueError(
            f"resolution for arch {arch!r} must be {allowed}; got resolution={r}"
        )
    return r


# --------------------------------------------------------------------------------------------
