"""The batch cost F a training run optimises (:func:`build_cost`): the registered cost of its
model, evaluated in float32 with autocast off, so that bf16 autocast of the networks never
reaches it. The regulariser weight lambda is not part of F: it is a parameter of the
objective (``lam=`` of :class:`~mowtheory.mow.MoW`, :class:`~mowtheory.gradcache.GradCache`,
:class:`~mowtheory.gradcache.Minibatch` and :func:`~mowtheory.loss.mow_loss`)."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from .. import costs
from .._validate import check_choice
from .config import MODEL_COSTS, MODELS

__all__ = ["build_cost"]


@dataclasses.dataclass(frozen=True)
class _Float32Cost(costs.BatchCost):
    """A :class:`~mowtheory.costs.BatchCost` evaluated in float32 with autocast off. Copies
    and pickles rebuild it from the registry with its parameters (:meth:`__reduce__`)."""

    @classmethod
    def wrap(cls, base: costs.BatchCost) -> "_Float32Cost":
        return cls(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})

    def __reduce__(self):
        return (_rebuild_float32, (self.name, dict(self.params)))

    def __call__(self, z, y=None):
        with torch.autocast(z.device.type, enabled=False):
            return super().__call__(z.float(), None if y is None else y.float())

    def split(self, H, Z, y=None, *, cache=None, constants=True):
        with torch.autocast(Z.device.type, enabled=False):
            return super().split(H, Z.float(), None if y is None else y.float(), cache=cache,
                                 constants=constants)


def _rebuild_float32(name: str, params: dict) -> _Float32Cost:
    return _Float32Cost.wrap(costs.get(name, **params))


def build_cost(model: str, *, swae_directions: int = 50,
               generator: Optional[torch.Generator] = None) -> costs.BatchCost:
    """The batch cost F of ``model`` in float32 (``swae``: fresh directions from
    ``generator`` each call); the weight lambda goes to the step object, not here."""
    check_choice("model", model, MODELS)
    params = {}
    if model == "swae":
        params = {"n_directions": swae_directions, "generator": generator}
    return _Float32Cost.wrap(costs.get(MODEL_COSTS[model], **params))
