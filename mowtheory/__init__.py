"""mowtheory: MoW ("One-element Batch Training by Moving Window") made checkable.

Notation (from the paper, used throughout):

- ``n``: the batch size the batch cost F sees; ``k``: fresh examples read per step;
- ``window``: the ``n - k`` most recent latents, computed at earlier parameters and frozen;
- ``F``: a permutation-invariant batch cost of ``n`` latents (and a prior sample ``V``);
- ``G``: a per-example cost (reconstruction); ``eta``: the step size, time ``t = step * eta``.
"""
__version__ = "0.1.0"

from . import costs
from .mow import REDUCTIONS, REFRESH_POLICIES, LossParts, MoW, mow_loss, reduce_per_example
from .window import INIT_POLICIES, LatentWindow

__all__ = [
    "INIT_POLICIES",
    "LatentWindow",
    "LossParts",
    "MoW",
    "REDUCTIONS",
    "REFRESH_POLICIES",
    "__version__",
    "costs",
    "mow_loss",
    "reduce_per_example",
]
