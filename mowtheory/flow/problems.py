"""Analytic toy problems for the MoW gradient-flow studies.

Every problem gives the per-batch cost (1) of docs/theory.md,

    cost(theta; x_1..x_n, V) = F(E_theta(x_1), ..., E_theta(x_n); V) + sum_i G_theta(x_i),

the samplers of its data (and prior) from an explicit ``torch.Generator``, and the **exact**
expected cost of a batch of n i.i.d. examples in closed form,

    C(theta) = E[F_n](theta) + n E[G](theta)            (``expected_cost(theta, n)``),

so that the drift of the reference ODE comes from autograd of a formula, never from sampling.
Shapes: ``theta`` is ``(..., P)`` float64, data ``x`` is ``(..., b, d)``, latents ``z`` are
``(..., b, D)`` (leading dimensions broadcast: ``(R, P)`` with ``(R, b, d)`` for R replicas,
``(P,)`` with ``(b, d)`` for one), ``F`` maps ``(..., n, D)`` to ``(...)`` and ``G`` gives
``(..., b)``.

Problems (``get_problem(name, **params)``):

- ``"linear-gaussian"``: ``x ~ N(0, diag(variances))`` in R^d (default ``(1, 0.5, 2)``),
  ``z = W x`` (W is D x d, default D = 2), ``xhat = V z``, ``theta = [W.flatten(), V.flatten()]``,
  ``F = |zbar|^2 + ||Shat - I||_F^2`` (Shat the unbiased sample covariance),
  ``G = |x - xhat|^2``. With ``Sigma = W Lambda W^T`` and ``R = I - V W``:
  ``C = tr Sigma / n + ||Sigma - I||_F^2 + (||Sigma||_F^2 + (tr Sigma)^2) / (n - 1)
  + n tr(R Lambda R^T)`` (Wishart: ``Var Shat_ij = (Sigma_ij^2 + Sigma_ii Sigma_jj)/(n-1)``,
  and ``zbar`` is independent of ``Shat``).
- ``"mmd-gaussian"``: ``x ~ N(0, I_d)``, ``z = W x + b``, ``xhat = V z``,
  ``theta = [W.flatten(), b, V.flatten()]``, ``F = lam * MMD^2_u`` (the unbiased
  Gaussian-kernel estimator between the n latents and n fresh N(0, I) prior draws, whose
  expectation is the population MMD^2 for every n), ``G = |x - xhat|^2``;
  ``C = lam * MMD^2(N(b, W W^T), N(0, I)) + n (||I - V W||_F^2 + |V b|^2)``.
- ``"scalar"``: ``theta`` in R, ``x ~ N(0, s2)``, ``z = theta x``,
  ``F = ((1/n) sum z_i^2 - 1)^2``, ``G = beta (x - theta x)^2``;
  ``C = 2 theta^4 s2^2 / n + (theta^2 s2 - 1)^2 + n beta (1 - theta)^2 s2``.
- ``"position-weighted"``: the scalar data and encoder with a deliberately
  **non-permutation-invariant** ``F = (sum_i w_i z_i^2 - 1)^2``, ``w_i = 2 i / (n (n + 1))``
  (the last slot, where MoW puts the fresh latent, weighs ``2/(n+1)``, not ``1/n``);
  ``C = 2 theta^4 s2^2 sum_i w_i^2 + (theta^2 s2 - 1)^2 + n beta (1 - theta)^2 s2`` (the same for
  its symmetrisation: the expectation over an i.i.d. batch does not see the slot order).
  ``symmetrize=True`` replaces F by :func:`mowtheory.costs.symmetrize` of it (exact average
  over the n! orders for n <= 8, else ``n_permutations`` random ones from ``generator``).

Every problem's G is a Gaussian quadratic form ``G = |y|^2`` with ``y ~ N(m(theta), A(theta))``,
so the expected reduced per-example cost ``E red_k G`` is exact for all three reductions
(see :mod:`mowtheory.flow._gauss`).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .. import costs
from .._validate import check_generator, check_int, check_positive
from ._gauss import mmd2_to_standard_normal
from .problem import DTYPE, Problem


def _sym(M: torch.Tensor) -> torch.Tensor:
    return 0.5 * (M + M.transpose(-1, -2))


# ---------------------------------------------------------------------- linear-gaussian
class LinearGaussian(Problem):
    """``linear-gaussian``: linear encoder/decoder of Gaussian data, moment-matching F."""

    name = "linear-gaussian"
    defaults = {"n": 8, "k": 1, "horizon": 1.0, "etas": (0.01, 0.005, 0.0025, 0.00125, 0.000625)}

    def __init__(self, variances=(1.0, 0.5, 2.0), latent_dim: int = 2, init_scale: float = 0.5):
        variances = tuple(check_positive("variances", v) for v in variances)
        if len(variances) < 1:
            raise ValueError(f"variances must hold at least one positive number; got {variances!r}")
        self.variances = variances
        self.data_dim = len(variances)
        self.latent_dim = check_int("latent_dim", latent_dim, low=1)
        self.init_scale = check_positive("init_scale", init_scale)
        self.n_params = 2 * self.data_dim * self.latent_dim
        self._lam = torch.tensor(variances, dtype=DTYPE)
        self._data_scale = self._lam.sqrt()

    def unpack(self, theta):
        d, D = self.data_dim, self.latent_dim
        W = theta[..., : D * d].reshape(*theta.shape[:-1], D, d)
        V = theta[..., D * d:].reshape(*theta.shape[:-1], d, D)
        return W, V

    def theta0(self, generator):
        g = check_generator(generator)
        return self.init_scale * torch.randn(self.n_params, generator=g, dtype=DTYPE, device=g.device)

    def encode(self, theta, x):
        W, _ = self.unpack(theta)
        return x @ W.transpose(-1, -2)

    def residual(self, theta, x):
        W, V = self.unpack(theta)
        return x - (x @ W.transpose(-1, -2)) @ V.transpose(-1, -2)

    def batch_cost(self, z, prior=None):
        n = z.shape[-2]
        zbar = z.mean(-2)
        zc = z - zbar.unsqueeze(-2)
        S = zc.transpose(-1, -2) @ zc / (n - 1)
        eye = torch.eye(z.shape[-1], dtype=z.dtype, device=z.device)
        return zbar.pow(2).sum(-1) + (S - eye).pow(2).sum((-1, -2))

    def _sigma(self, theta):
        W, _ = self.unpack(theta)
        return (W * self._lam.to(W.device)) @ W.transpose(-1, -2)

    def expected_batch_cost(self, theta, n):
        S = self._sigma(theta)
        eye = torch.eye(self.latent_dim, dtype=S.dtype, device=S.device)
        tr = torch.diagonal(S, dim1=-2, dim2=-1).sum(-1)
        fro2 = S.pow(2).sum((-1, -2))
        return tr / n + (S - eye).pow(2).sum((-1, -2)) + (fro2 + tr ** 2) / (n - 1)

    def residual_gaussian(self, theta):
        W, V = self.unpack(theta)
        R = torch.eye(self.data_dim, dtype=W.dtype, device=W.device) - V @ W
        A = _sym((R * self._lam.to(R.device)) @ R.transpose(-1, -2))
        return torch.zeros(A.shape[:-1], dtype=A.dtype, device=A.device), A


# ---------------------------------------------------------------------- mmd-gaussian
class MMDGaussian(Problem):
    """``mmd-gaussian``: affine encoder, unbiased Gaussian-kernel MMD^2 to a N(0, I) prior."""

    name = "mmd-gaussian"
    needs_prior = True
    defaults = {"n": 8, "k": 1, "horizon": 1.0, "etas": (0.04, 0.02, 0.01, 0.005, 0.0025)}

    def __init__(self, data_dim: int = 2, latent_dim: int = 2, bandwidth2: float = 1.0,
                 lam: float = 4.0, init_scale: float = 0.5):
        self.data_dim = check_int("data_dim", data_dim, low=1)
        self.latent_dim = check_int("latent_dim", latent_dim, low=1)
        self.bandwidth2 = check_positive("bandwidth2", bandwidth2)
        self.lam = check_positive("lam", lam, allow_zero=True)
        self.init_scale = check_positive("init_scale", init_scale)
        d, D = self.data_dim, self.latent_dim
        self.n_params = D * d + D + d * D
        # the registry's rbf kernel is exp(-|a - b|^2 / C) with C = 2 D sigma2 s: s = bw2 / D
        self._mmd = costs.get("wae", kernel="rbf", scales=(self.bandwidth2 / D,), sigma2=1.0)
        self._data_scale = torch.ones(d, dtype=DTYPE)

    def unpack(self, theta):
        d, D = self.data_dim, self.latent_dim
        W = theta[..., : D * d].reshape(*theta.shape[:-1], D, d)
        b = theta[..., D * d: D * d + D]
        V = theta[..., D * d + D:].reshape(*theta.shape[:-1], d, D)
        return W, b, V

    def theta0(self, generator):
        g = check_generator(generator)
        t = self.init_scale * torch.randn(self.n_params, generator=g, dtype=DTYPE, device=g.device)
        d, D = self.data_dim, self.latent_dim
        t[D * d: D * d + D] *= 2.0            # a visibly shifted latent mean
        return t

    def encode(self, theta, x):
        W, b, _ = self.unpack(theta)
        return x @ W.transpose(-1, -2) + b.unsqueeze(-2)

    def residual(self, theta, x):
        _, _, V = self.unpack(theta)
        return x - self.encode(theta, x) @ V.transpose(-1, -2)

    def batch_cost(self, z, prior=None):
        """``lam`` times the registered Gaussian-kernel MMD^2 (``costs.get("wae",
        kernel="rbf")``, one scale: ``exp(-|a - b|^2 / (2 bandwidth2))``), U-statistics on
        the z-z and prior-prior blocks, V on z-prior; ``z`` ``(..., n, D)``, ``prior``
        ``(..., n, D)`` -> ``(...)``. The cost the trainer and MoW use, not a re-implementation."""
        if prior is None:
            raise ValueError("prior must be given: the mmd-gaussian F compares the n latents "
                             "with n prior draws of shape (..., n, D)")
        return self.lam * self._mmd(z, prior)

    def expected_batch_cost(self, theta, n):
        W, b, _ = self.unpack(theta)
        S = _sym(W @ W.transpose(-1, -2))
        return self.lam * mmd2_to_standard_normal(b, S, self.bandwidth2)

    def residual_gaussian(self, theta):
        W, b, V = self.unpack(theta)
        R = torch.eye(self.data_dim, dtype=W.dtype, device=W.device) - V @ W
        m = -(V @ b.unsqueeze(-1)).squeeze(-1)
        return m, _sym(R @ R.transpose(-1, -2))


# ---------------------------------------------------------------------- scalar
class Scalar(Problem):
    """``scalar``: the one-parameter polynomial problem shared with the sympy proof checks."""

    name = "scalar"
    n_params = 1
    data_dim = 1
    latent_dim = 1
    defaults = {"n": 8, "k": 1, "horizon": 1.0, "etas": (0.05, 0.025, 0.0125, 0.00625, 0.003125)}

    def __init__(self, s2: float = 1.0, beta: float = 0.5, theta_init: float = 1.8):
        self.s2 = check_positive("s2", s2)
        self.beta = check_positive("beta", beta, allow_zero=True)
        self.theta_init = float(theta_init)
        if not math.isfinite(self.theta_init):
            raise ValueError(f"theta_init must be a finite number; got theta_init={theta_init!r}")
        self._data_scale = torch.tensor([math.sqrt(self.s2)], dtype=DTYPE)

    def theta0(self, generator):
        """``[theta_init]`` (deterministic; ``generator`` is accepted for the common interface)."""
        check_generator(generator)
        return torch.tensor([self.theta_init], dtype=DTYPE, device=generator.device)

    def encode(self, theta, x):
        return theta.unsqueeze(-2) * x

    def residual(self, theta, x):
        return math.sqrt(self.beta) * (1.0 - theta.unsqueeze(-2)) * x

    def _weights(self, n, like):
        return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)

    def batch_cost(self, z, prior=None):
        w = self._weights(z.shape[-2], z)
        return ((z.pow(2).sum(-1) * w).sum(-1) - 1.0).pow(2)

    def _sum_w2(self, n):
        return 1.0 / n

    def expected_batch_cost(self, theta, n):
        t2 = theta[..., 0] ** 2
        return 2.0 * t2 ** 2 * self.s2 ** 2 * self._sum_w2(n) + (t2 * self.s2 - 1.0) ** 2

    def residual_gaussian(self, theta):
        A = (self.beta * self.s2 * (1.0 - theta) ** 2).unsqueeze(-1)
        return torch.zeros_like(theta), A


class PositionWeighted(Scalar):
    """``position-weighted``: the scalar problem with a non-invariant F (slot weights
    ``w_i = 2 i / (n (n + 1))``), optionally symmetrised by :func:`mowtheory.costs.symmetrize`."""

    name = "position-weighted"
    defaults = {"n": 4, "k": 1, "horizon": 1.0, "etas": (0.1, 0.05, 0.025, 0.0125, 0.00625)}

    def __init__(self, s2: float = 1.0, beta: float = 0.1, theta_init: float = 0.2,
                 symmetrize: bool = False, n_permutations: Optional[int] = None,
                 generator: Optional[torch.Generator] = None):
        super().__init__(s2=s2, beta=beta, theta_init=theta_init)
        self.symmetrized = bool(symmetrize)
        self.permutation_invariant = self.symmetrized
        self._F = self._weighted_cost
        if self.symmetrized:
            from ..costs import symmetrize as _symmetrize
            self._F = _symmetrize(self._weighted_cost, n_permutations=n_permutations,
                                  generator=generator)
            self.name = "position-weighted (symmetrized)"

    @staticmethod
    def slot_weights(n: int, like: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``w_i = 2 i / (n (n + 1))``, i = 1..n (sum 1; the last slot weighs 2/(n+1))."""
        i = torch.arange(1, n + 1, dtype=DTYPE if like is None else like.dtype,
                         device=None if like is None else like.device)
        return 2.0 * i / (n * (n + 1))

    def _weighted_cost(self, z, prior=None):
        w = self.slot_weights(z.shape[-2], z)
        return ((z.pow(2).sum(-1) * w).sum(-1) - 1.0).pow(2)

    def batch_cost(self, z, prior=None):
        return self._F(z)

    def _sum_w2(self, n):
        return float(self.slot_weights(n).pow(2).sum())


# ---------------------------------------------------------------------- registry
PROBLEMS = {
    "linear-gaussian": LinearGaussian,
    "mmd-gaussian": MMDGaussian,
    "scalar": Scalar,
    "position-weighted": PositionWeighted,
}


def names() -> tuple:
    """The registered problem names."""
    return tuple(PROBLEMS)


def get_problem(name: str, **params) -> Problem:
    """The toy problem ``name`` with keyword ``params`` (e.g. ``variances=(1, 2)``,
    ``beta=0.5``, ``symmetrize=True``). Unknown names raise ValueError listing the valid ones."""
    if isinstance(name, Problem):
        return name
    if name not in PROBLEMS:
        raise ValueError(f"problem must be one of {', '.join(repr(p) for p in PROBLEMS)}; "
                         f"got problem={name!r}")
    import inspect
    valid = [q for q in inspect.signature(PROBLEMS[name]).parameters if q not in ("self",)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"bad parameters for problem {name!r}: unknown parameter(s) "
                         f"{', '.join(map(repr, unknown))}; valid parameters: "
                         f"{', '.join(valid) or '(none)'}")
    try:
        return PROBLEMS[name](**params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for problem {name!r} (valid: {', '.join(valid)}): "
                         f"{exc}") from None
