"""mowtheory: MoW ("One-element Batch Training by Moving Window") made checkable.

Notation (from the paper, used throughout):

- ``n``: the batch size the batch cost F sees; ``k``: fresh examples read per step;
- ``window``: the ``n - k`` most recent latents, computed at earlier parameters and frozen;
- ``F``: a permutation-invariant batch cost of ``n`` latents (and a prior sample ``V``);
- ``G``: a per-example cost (reconstruction); ``eta``: the step size, time ``t = step * eta``.

The mathematics behind these names is in ``docs/theory.md`` of the repository.

The names below are loaded on first use (PEP 562), so that ``import mowtheory`` and
``mowtheory --version`` do not import torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it (None: the name is that submodule itself)
_LAZY = {
    "costs": None,
    "REDUCTIONS": "mow",
    "REFRESH_POLICIES": "mow",
    "LossParts": "mow",
    "MoW": "mow",
    "mow_loss": "mow",
    "reduce_per_example": "mow",
    "refreshed_latents": "mow",
    "NonFiniteError": "mow",
    "StepContext": "mow",
    "FrozenWindow": "frozen",
    "INIT_POLICIES": "window",
    "LatentWindow": "window",
}

__all__ = sorted([*_LAZY, "__version__"])

if TYPE_CHECKING:  # pragma: no cover - for type checkers and the API reference
    from . import costs
    from .frozen import FrozenWindow
    from .mow import (REDUCTIONS, REFRESH_POLICIES, LossParts, MoW, NonFiniteError,
                      StepContext, mow_loss, reduce_per_example, refreshed_latents)
    from .window import INIT_POLICIES, LatentWindow


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'mowtheory' has no attribute {name!r}")
    module = _LAZY[name]
    value = importlib.import_module(f".{name}" if module is None else f".{module}", __name__)
    if module is not None:
        value = getattr(value, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
