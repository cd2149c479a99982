"""Symbolic MoW costs and their exact expected gradients.

A :class:`SymProblem` describes cost (1) of docs/theory.md for one batch size n in a
:class:`~mowtheory.proofs._gauss.GaussModel`: n i.i.d. Gaussian examples ``x[i]``, an encoder
``encode(x_i, θ)`` (a list of D ring elements), a batch cost ``F(latents, prior)`` and a
per-example cost ``G(x_i, θ)``.

The MoW_k(n) cost of one step (docs/theory.md, "MoW_k(n)") puts the n−k window latents in the
first slots, encoded with the *frozen* parameters (separate generators: no gradient flows
into them), and the k fresh latents in the last slots, encoded with the live parameters θ::

    cost_MoW(θ) = f_weight · F(E_θf(x_1..x_{n−k}), E_θ(x_{n−k+1}..x_n); V) + g_weight · Σ_fresh G_θ(x_j)

Its expected gradient is E[∂cost/∂θ] over the data (and prior), a polynomial in θ and θf;
"fresh latents at the current θ" means θf := θ afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations
from math import factorial
from typing import Callable, Optional, Sequence

from ._gauss import GaussModel


@dataclass
class SymProblem:
    model: GaussModel
    n: int
    params: list            # live parameter generators θ
    frozen: list            # frozen copies θf (same length as params)
    x: list                 # x[i]: the data vector of example i (list of generators)
    encode: Callable        # encode(x_i, θ) -> list of D ring elements
    F: Callable             # F(latents: list of n latent vectors, prior or None) -> ring element
    G: Optional[Callable] = None   # G(x_i, θ) -> ring element
    v: Optional[list] = None        # prior sample: v[i] a vector, or None

    # ------------------------------------------------------------------ costs
    def mow_cost(self, k: int, *, f_weight=1, g_weight=1, frozen=None):
        """The MoW_k(n) cost of one step (window in slots 0..n−k−1, fresh in the last k).

        ``frozen``: generators for the window's parameters; a list of length ``len(params)``
        (all window slots share it) or a list of ``n−k`` such lists (one per slot).
        """
        n = self.n
        if frozen is None:
            frozen = self.frozen
        per_slot = frozen and isinstance(frozen[0], (list, tuple))
        window = [self.encode(self.x[i], frozen[i] if per_slot else frozen) for i in range(n - k)]
        fresh = [self.encode(self.x[i], self.params) for i in range(n - k, n)]
        cost = f_weight * self.F(window + fresh, self.v)
        if self.G is not None and g_weight:
            cost += g_weight * sum((self.G(self.x[i], self.params) for i in range(n - k, n)),
                                   self.model.R.zero)
        return cost

    def full_cost(self, *, f_weight=1, g_weight=1):
        """cost (1) of a standard batch of n: all latents live."""
        lat = [self.encode(self.x[i], self.params) for i in range(self.n)]
        cost = f_weight * self.F(lat, self.v)
        if self.G is not None and g_weight:
            cost += g_weight * sum((self.G(self.x[i], self.params) for i in range(self.n)),
                                   self.model.R.zero)
        return cost

    # ------------------------------------------------------------------ expectations
    def expected_gradient(self, cost, *, live_window: bool = True):
        """[E ∂cost/∂θ_p]_p; with ``live_window`` the frozen generators are then set to θ."""
        grads = [self.model.E(cost.diff(t)) for t in self.params]
        if live_window:
            grads = [self.unfreeze(g) for g in grads]
        return grads

    def unfreeze(self, f, frozen=None):
        """Substitute θf := θ (a list of frozen generators, or per-slot lists)."""
        frozen = self.frozen if frozen is None else frozen
        pairs = []
        if frozen and isinstance(frozen[0], (list, tuple)):
            for fr in frozen:
                pairs.extend(zip(fr, self.params))
        else:
            pairs.extend(zip(frozen, self.params))
        return f.compose(pairs) if pairs else f

    def expected_cost(self, **kw):
        """C = E[cost (1)]."""
        return self.model.E(self.full_cost(**kw))

    def grad(self, f):
        """[∂f/∂θ_p]_p."""
        return [f.diff(t) for t in self.params]


def symmetrize(F: Callable, n: int) -> Callable:
    """F̃(z_1..z_n) = (1/n!) Σ_σ F(z_σ(1)..z_σ(n)) (exact)."""
    def Ft(lat, prior):
        tot = None
        for perm in permutations(range(n)):
            term = F([lat[i] for i in perm], prior)
            tot = term if tot is None else tot + term
        return tot * (1 / _QQ(factorial(n)))
    return Ft


def _QQ(a):
    from sympy import QQ
    return QQ(a)


def power_sum(lat: Sequence, m: int, coord: int = 0):
    """Σ_i z_i[coord]^m."""
    tot = lat[0][coord] ** m
    for z in lat[1:]:
        tot += z[coord] ** m
    return tot
