"""The batch cost a training run optimises: ``lam * F`` of its model (:func:`build_cost`),
evaluated in float32 with autocast off."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from .. import costs
from .._validate import check_choice
from .config import MODEL_COSTS, MODELS

__all__ = ["build_cost"]


@dataclasses.dataclass(frozen=True)
class _Weighted(costs.BatchCost):
    """A :class:`~mowtheory.costs.BatchCost` times ``weight``, evaluated in float32 with
    autocast off (so bf16 autocast of the networks never reaches the cost). The weight is a
    field: copies and pickles keep it (:meth:`__reduce__`)."""

    weight: float = 1.0

    @classmethod
    def wrap(cls, base: costs.BatchCost, weight: float) -> "_Weighted":
        return cls(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)},
                   weight=float(weight))

    def __reduce__(self):
        return (_rebuild_weighted, (self.name, dict(self.params), self.weight))

    def __call__(self, z, y=None):
        with torch.autocast(z.device.type, enabled=False):
            return self.weight * super().__call__(z.float(), None if y is None else y.float())

    def split(self, H, Z, y=None, *, cache=None, constants=True):
        with torch.autocast(Z.device.type, enabled=False):
            return self.weight * super().split(H, Z.float(), None if y is None else y.float(),
                                               cache=cache, constants=constants)


def _rebuild_weighted(name: str, params: dict, weight: float) -> _Weighted:
    return _Weighted.wrap(costs.get(name, **params), weight)


def build_cost(model: str, *, lam: float, swae_directions: int = 50,
               generator: Optional[torch.Generator] = None) -> costs.BatchCost:
    """The batch cost ``lam * F`` of ``model`` (``swae``: fresh directions from ``generator``
    each call)."""
    check_choice("model", model, MODELS)
    params = {}
    if model == "swae":
        params = {"n_directions": swae_directions, "generator": generator}
    return _Weighted.wrap(costs.get(MODEL_COSTS[model], **params), lam)
