"""The interface of a gradient-flow problem, :class:`Problem`: the maps (encoder, F, G), the
samplers of its data and prior from an explicit ``torch.Generator``, and its exact expected
cost C(theta). The toy problems are in :mod:`mowtheory.flow.problems`; a real network is
:class:`mowtheory.flow.network.NetworkProblem`. Everything compared with theory is float64
(:data:`DTYPE`).
"""
from __future__ import annotations

from typing import Optional

import torch

from .._names import REDUCTIONS
from .._validate import check_choice, check_generator, check_int
from ._gauss import expected_reduced_quadratic

__all__ = ["DTYPE", "Problem"]


DTYPE = torch.float64


def _check_theta(theta, P: int, name: str) -> torch.Tensor:
    if not isinstance(theta, torch.Tensor):
        theta = torch.as_tensor(theta, dtype=DTYPE)
    if theta.dim() == 0 or theta.shape[-1] != P:
        raise ValueError(f"theta must have shape (..., {P}) for problem {name!r} "
                         f"(P = {P} parameters); got shape {tuple(theta.shape)}")
    if not theta.is_floating_point():
        theta = theta.to(DTYPE)
    return theta


class Problem:
    """Base class of the toy problems; subclasses define the maps and the closed forms.

    Attributes: ``name``, ``n_params`` (P), ``data_dim`` (d), ``latent_dim`` (D),
    ``needs_prior`` (F takes a prior sample), ``permutation_invariant`` (F is invariant to
    the order of its n rows), ``defaults`` (suggested ``n, k, horizon, etas`` of a study).
    """

    name = "?"
    needs_prior = False
    permutation_invariant = True
    defaults: dict = {}

    n_params: int
    data_dim: int
    latent_dim: int

    # ------------------------------------------------------------------ to override
    def theta0(self, generator: torch.Generator) -> torch.Tensor:
        """The initial parameters theta_0, shape ``(P,)`` float64, from ``generator``."""
        raise NotImplementedError

    def encode(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Latents ``z = E_theta(x)``: theta ``(..., P)``, x ``(..., b, d)`` -> ``(..., b, D)``."""
        raise NotImplementedError

    def batch_cost(self, z: torch.Tensor, prior: Optional[torch.Tensor] = None) -> torch.Tensor:
        """F on ``z`` of shape ``(..., n, D)`` (and ``prior`` ``(..., n, D)``) -> ``(...)``."""
        raise NotImplementedError

    def residual_gaussian(self, theta: torch.Tensor):
        """``(m, A)`` with ``G = |y|^2``, ``y ~ N(m, A)``: ``(..., d)``, ``(..., d, d)``."""
        raise NotImplementedError

    def residual(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``y`` with ``G = |y|^2``: theta ``(..., P)``, x ``(..., b, d)`` -> ``(..., b, d)``."""
        raise NotImplementedError

    def expected_batch_cost(self, theta: torch.Tensor, n: int) -> torch.Tensor:
        """``E F(z_1..z_n)`` over an i.i.d. batch at theta, closed form: ``(..., P)`` -> ``(...)``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    def sample_data(self, shape, generator: torch.Generator) -> torch.Tensor:
        """Data of shape ``(*shape, d)`` from ``generator`` (float64)."""
        g = check_generator(generator)
        eps = torch.randn(*shape, self.data_dim, generator=g, dtype=DTYPE, device=g.device)
        return eps * self._data_scale.to(eps.device)

    def sample_prior(self, shape, generator: torch.Generator) -> torch.Tensor:
        """Prior draws N(0, I_D) of shape ``(*shape, D)`` from ``generator`` (float64)."""
        g = check_generator(generator)
        return torch.randn(*shape, self.latent_dim, generator=g, dtype=DTYPE, device=g.device)

    def per_example(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """G for each example: theta ``(..., P)``, x ``(..., b, d)`` -> ``(..., b)``."""
        return self.residual(theta, x).pow(2).sum(-1)

    def expected_per_example(self, theta: torch.Tensor, k: int = 1,
                             reduction: str = "sum") -> torch.Tensor:
        """``E red(G(x_1), ..., G(x_k))`` for i.i.d. examples, exact: ``(..., P)`` -> ``(...)``.
        ``"sum"`` gives ``k E G``, ``"mean"`` ``E G``, ``"sqrt_mean"`` ``E sqrt(mean_k G)``."""
        theta = _check_theta(theta, self.n_params, self.name)
        k = check_int("k", k, low=1)
        check_choice("reduction", reduction, REDUCTIONS)
        m, A = self.residual_gaussian(theta)
        return expected_reduced_quadratic(m, A, k, reduction)

    def expected_cost(self, theta: torch.Tensor, n: int) -> torch.Tensor:
        """The theorem's ``C(theta) = E[F_n] + n E[G]`` for a batch of n, exact:
        theta ``(..., P)`` float64 -> ``(...)``; differentiable by autograd."""
        theta = _check_theta(theta, self.n_params, self.name)
        n = check_int("n", n, low=2)
        return self.expected_batch_cost(theta, n) + self.expected_per_example(theta, n, "sum")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, P={self.n_params}, d={self.data_dim}, D={self.latent_dim})"
