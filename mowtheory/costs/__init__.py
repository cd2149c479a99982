"""Permutation-invariant batch costs F for MoW, as plain functions and as a registry.

Functions (tensors in, 0-dim tensor out; float32/float64, CPU/CUDA, differentiable):
:func:`cramer_wold`, :func:`log_cramer_wold`, :func:`mmd`, :func:`sliced_wasserstein`,
:func:`energy_distance`, :func:`gmmn_mmd`, :func:`pullaway`, and :func:`symmetrize` for a
non-invariant F.

Registry: :func:`get` (``"cwae"``, ``"cw"``, ``"wae"``, ``"swae"``, ``"energy"``,
``"gmmn"``, ``"pullaway"``) returns a :class:`BatchCost` with bound parameters, metadata
and split evaluation against a frozen window (:class:`SplitCache`).
"""
from .cw import cramer_wold, log_cramer_wold, silverman_gamma
from .energy import energy_distance
from .gmmn import gmmn_mmd
from .wae import mmd
from .pairwise import SplitCache
from .pulling_away import pullaway
from .registry import BatchCost, get, names
from .swae import random_directions, sliced_wasserstein
from .symmetry import symmetrize

__all__ = [
    "BatchCost",
    "SplitCache",
    "cramer_wold",
    "energy_distance",
    "get",
    "gmmn_mmd",
    "log_cramer_wold",
    "mmd",
    "names",
    "pullaway",
    "random_directions",
    "silverman_gamma",
    "sliced_wasserstein",
    "symmetrize",
]
