"""Argument checks shared by the whole package.

Every check raises ``ValueError`` (or ``TypeError`` for a wrong type) with a message that
names the argument, the value received and what is allowed, e.g.::

    ValueError: k must be an integer with 1 <= k <= n = 8; got k=9
"""
from __future__ import annotations

import math
from typing import Iterable

import torch


class NonFiniteInputError(ValueError):
    """An input tensor holds NaN or infinite entries (raised by :func:`check_latents` with
    ``finite=True``, hence by every batch cost given such latents). A ``ValueError``: callers
    that need to tell it from other bad input (the trainer) catch this type, never the text."""


def check_int(name: str, value, *, low: int | None = None, high: int | None = None,
              high_name: str | None = None) -> int:
    """Return ``value`` as int, requiring ``low <= value <= high``."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        isinstance(value, float) and value.is_integer()
    ):
        raise TypeError(f"{name} must be an integer; got {name}={value!r} ({type(value).__name__})")
    value = int(value)
    lo = "" if low is None else f"{low} <= "
    hi = "" if high is None else f" <= {high_name + ' = ' if high_name else ''}{high}"
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer with {lo}{name}{hi}; got {name}={value}")
    return value


def check_positive(name: str, value, *, allow_zero: bool = False) -> float:
    """Return ``value`` as float, requiring a finite positive (or non-negative) number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number; got {name}={value!r}") from None
    ok = math.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        allowed = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"{name} must be {allowed}; got {name}={value!r}")
    return v


def check_choice(name: str, value, choices: Iterable[str]) -> str:
    """Require ``value`` to be one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(
            f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {name}={value!r}"
        )
    return value


def check_latents(name: str, z, *, min_n: int = 1, min_d: int = 1, dim: int | None = None,
                  batch_dims: bool = False, finite: bool = True) -> torch.Tensor:
    """Check a batch of latent vectors of shape ``(n, D)`` (or ``(..., n, D)`` with
    ``batch_dims=True``): a floating tensor, at least ``min_n`` rows and ``min_d`` columns,
    ``D == dim`` when given, and (``finite=True``) no NaN or infinity."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (n, D); got {type(z).__name__}")
    if z.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be a floating tensor of dtype float32 or float64; got "
                        f"dtype {z.dtype}"
                        + (" (half precision is refused: the costs' sums lose too much; cast "
                           "with .float())" if z.is_floating_point() else ""))
    if (z.dim() != 2 and not batch_dims) or z.dim() < 2:
        shape = "(..., n, D)" if batch_dims else "(n, D)"
        raise ValueError(f"{name} must have shape {shape}; got shape {tuple(z.shape)}")
    n, d = z.shape[-2], z.shape[-1]
    if n < min_n:
        raise ValueError(f"{name} must have n >= {min_n} rows; got n={n} (shape {tuple(z.shape)})")
    if d < min_d:
        raise ValueError(
            f"{name} must have latent dimension D >= {min_d}; got D={d} (shape {tuple(z.shape)})"
        )
    if dim is not None and d != dim:
        raise ValueError(
            f"{name} must have latent dimension D={dim} to match; got D={d} (shape {tuple(z.shape)})"
        )
    if finite and not bool(torch.isfinite(z).all()):
        bad = int((~torch.isfinite(z)).sum())
        raise NonFiniteInputError(f"{name} must be finite; got {bad} NaN or infinite entries")
    return z


def check_pair(zname: str, z: torch.Tensor, yname: str, y: torch.Tensor) -> None:
    """Require two latent batches to share latent dimension, dtype and device."""
    if z.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"{yname} must have the same latent dimension as {zname}: "
            f"{zname} has D={z.shape[-1]}, {yname} has D={y.shape[-1]}"
        )
    if z.dtype != y.dtype:
        raise TypeError(f"{yname} must have the dtype of {zname} ({z.dtype}); got {y.dtype}")
    if z.device != y.device:
        raise ValueError(f"{yname} must be on the device of {zname} ({z.device}); got {y.device}")


def check_positive_seq(name: str, value) -> tuple:
    """Return ``value`` as a non-empty tuple of finite floats > 0, else raise naming ``name``."""
    allowed = f"{name} must be a non-empty sequence of finite numbers > 0"
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{allowed}; got {name}={value!r}")
    out = []
    for v in value:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise TypeError(f"{allowed}; got {name}={value!r}") from None
        if not (math.isfinite(f) and f > 0):
            raise ValueError(f"{allowed}; got {name}={value!r}")
        out.append(f)
    if not out:
        raise ValueError(f"{allowed}; got {name}={value!r}")
    return tuple(out)


def check_generator(generator, *, optional: bool = False,
                    required_for: str = "") -> "torch.Generator | None":
    """Return ``generator``, requiring a ``torch.Generator`` (library code never draws from the
    global RNG). ``optional``: None is accepted (returned) unless ``required_for`` says what
    it is needed for (then None is a ValueError saying so)."""
    if generator is None and required_for:
        raise ValueError(f"generator must be a torch.Generator {required_for} (no global RNG is "
                         f"used); got generator=None")
    if generator is None and optional:
        return None
    if not isinstance(generator, torch.Generator):
        allowed = "a torch.Generator or None" if optional else \
            "a torch.Generator (no global RNG is used)"
        raise TypeError(f"generator must be {allowed}; got generator={generator!r} "
                        f"({type(generator).__name__})")
    return generator
