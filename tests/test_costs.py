"""Properties of the batch costs: invariances, symmetry, signs, zeros, gradients,
symmetrisation, the registry and a table of bad inputs."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import pytest
import torch
from hypothesis import given, settings, strategies as st

from mowtheory import costs as C

F64 = torch.float64


def randn(seed: int, *shape, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=g, dtype=F64) + shift


def orthogonal(seed: int, d: int) -> torch.Tensor:
    q, r = torch.linalg.qr(randn(seed, d, d))
    return q * torch.sign(torch.diagonal(r))


def sw4(z, y):
    """Sliced Wasserstein with 4 fixed directions (a deterministic function of D)."""
    dirs = C.random_directions(4, z.shape[-1], generator=torch.Generator().manual_seed(7),
                               dtype=z.dtype)
    return C.sliced_wasserstein(z, y, directions=dirs)


@dataclass
class Spec:
    name: str
    fn: Callable  # fn(z, y) (y ignored when not prior)
    prior: bool
    min_n: int = 1
    min_d: int = 1
    orth: Optional[str] = "common"  # "common": of z and y together; "z": of z alone
    symmetric: bool = True
    zero_when_equal: bool = False
    nonneg: bool = False
    same_n: bool = False


SPECS = [
    Spec("cw", lambda z, y: C.cramer_wold(z), False, 2, 2, "z", nonneg=True),
    Spec("cwae", lambda z, y: C.log_cramer_wold(z), False, 2, 2, "z"),
    Spec("wae", C.mmd, True, 2),
    Spec("wae-rbf", lambda z, y: C.mmd(z, y, kernel="rbf", scales=(0.5, 2.0)), True, 2),
    Spec("swae", sw4, True, orth=None, zero_when_equal=True, nonneg=True, same_n=True),
    Spec("energy", C.energy_distance, True, zero_when_equal=True, nonneg=True),
    Spec("gmmn", C.gmmn_mmd, True, zero_when_equal=True, nonneg=True),
    Spec("gmmn-sqrt", lambda z, y: C.gmmn_mmd(z, y, sqrt=True), True, zero_when_equal=True,
         nonneg=True),
    Spec("pullaway", lambda z, y: C.pullaway(z), False, 2, orth="z"),
]
IDS = [s.name for s in SPECS]


@st.composite
def instance(draw, spec: Spec, max_n: int = 12, max_d: int = 6):
    n = draw(st.integers(max(spec.min_n, 2), max_n))
    n_y = n if spec.same_n else draw(st.integers(max(spec.min_n, 2), max_n))
    d = draw(st.integers(max(spec.min_d, 1), max_d))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.floats(0.1, 3.0))
    z = randn(seed, n, d, scale=scale)
    y = randn(seed + 1, n_y, d)
    return z, y, seed


def close(a, b, tol=1e-10):
    return torch.allclose(torch.as_tensor(a, dtype=F64), torch.as_tensor(b, dtype=F64),
                          rtol=tol, atol=tol)


# --------------------------------------------------------------------------- invariances
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@settings(deadline=None, max_examples=30)
@given(data=st.data())
def test_permutation_invariance(spec, data):
    z, y, _ = data.draw(instance(spec))
    pz = torch.tensor(data.draw(st.permutations(range(z.shape[0]))))
    py = torch.tensor(data.draw(st.permutations(range(y.shape[0]))))
    v = spec.fn(z, y)
    assert close(spec.fn(z[pz], y), v)
    assert close(spec.fn(z, y[py]), v)


@pytest.mark.parametrize("spec", [s for s in SPECS if s.orth], ids=[s.name for s in SPECS if s.orth])
@settings(deadline=None, max_examples=30)
@given(data=st.data())
def test_orthogonal_invariance(spec, data):
    z, y, seed = data.draw(instance(spec))
    q = orthogonal(seed + 2, z.shape[1])
    if spec.orth == "common":
        assert close(spec.fn(z @ q, y @ q), spec.fn(z, y))
    else:  # a function of z alone
        assert close(spec.fn(z @ q, None), spec.fn(z, None))


@settings(deadline=None, max_examples=30)
@given(data=st.data())
def test_sliced_wasserstein_rotates_with_its_directions(data):
    z, y, seed = data.draw(instance(SPECS[IDS.index("swae")]))
    q = orthogonal(seed + 2, z.shape[1])
    dirs = C.random_directions(5, z.shape[1], generator=torch.Generator().manual_seed(seed),
                               dtype=F64)
    assert close(C.sliced_wasserstein(z @ q, y @ q, directions=dirs @ q),
                 C.sliced_wasserstein(z, y, directions=dirs))


@pytest.mark.parametrize("spec", [s for s in SPECS if s.prior], ids=[s.name for s in SPECS if s.prior])
@settings(deadline=None, max_examples=30)
@given(data=st.data())
def test_symmetric_in_z_and_y(spec, data):
    z, y, _ = data.draw(instance(spec))
    assert close(spec.fn(z, y), spec.fn(y, z))


@pytest.mark.parametrize("spec", [s for s in SPECS if s.nonneg], ids=[s.name for s in SPECS if s.nonneg])
@settings(deadline=None, max_examples=50)
@given(data=st.data())
def test_nonnegative(spec, data):
    z, y, _ = data.draw(instance(spec))
    assert float(spec.fn(z, y)) >= -1e-12


@pytest.mark.parametrize("spec", [s for s in SPECS if s.zero_when_equal],
                         ids=[s.name for s in SPECS if s.zero_when_equal])
@settings(deadline=None, max_examples=30)
@given(data=st.data())
def test_zero_for_identical_samples(spec, data):
    z, _, seed = data.draw(instance(spec))
    perm = torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(seed))
    assert abs(float(spec.fn(z, z.clone()))) <= 1e-7  # sqrt of a rounding-level MMD^2
    assert abs(float(spec.fn(z, z[perm]))) <= 1e-7


def test_pullaway_range_and_extremes():
    z = randn(0, 9, 4)
    assert 0 <= float(C.pullaway(z)) <= 1
    assert close(C.pullaway(torch.eye(4, dtype=F64)), 0.0)  # orthogonal vectors
    assert close(C.pullaway(torch.ones(5, 3, dtype=F64)), 1.0)  # parallel vectors
    assert close(C.pullaway(3.0 * z), C.pullaway(z))  # scale invariance


def test_mmd_not_zero_for_identical_samples_but_symmetric_for_unequal_sizes():
    z = randn(0, 6, 3)
    # U-statistic within, V-statistic across: z == y gives a small nonzero value
    assert float(C.mmd(z, z)) != 0.0
    assert close(C.mmd(z, randn(1, 9, 3)), C.mmd(randn(1, 9, 3), z))


def test_dtype_preserved_float32():
    z32, y32 = randn(0, 8, 3).float(), randn(1, 8, 3).float()
    for spec in SPECS:
        v = spec.fn(z32, y32)
        assert v.dtype == torch.float32 and v.dim() == 0
        assert abs(float(v) - float(spec.fn(z32.double(), y32.double()))) < 1e-4


# --------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_gradcheck(spec, seed):
    z = randn(seed, 6, 3, scale=0.8).requires_grad_()
    y = randn(seed + 100, 6, 3, shift=0.3).requires_grad_()
    args = (z, y) if spec.prior else (z,)
    fn = (lambda a, b: spec.fn(a, b)) if spec.prior else (lambda a: spec.fn(a, None))
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6, rtol=1e-5)


def _unit(v):
    n = v.norm(dim=-1, keepdim=True)
    return torch.where(n > 0, v / n.clamp_min(1e-300), torch.zeros_like(v))


def test_energy_gradient_finite_with_coincident_points():
    z = randn(0, 5, 3)
    z[3] = z[1]  # coincident latents
    y = randn(1, 4, 3)
    y[0] = z[2]  # latent coincident with a prior point
    z.requires_grad_()
    (g,) = torch.autograd.grad(C.energy_distance(z, y), z)
    assert torch.isfinite(g).all()
    # the zero subgradient at coincident points: d/dz_i = 2/(n m) sum_j u(z_i - y_j)
    # - 2/n^2 sum_j u(z_i - z_j), with u(0) = 0
    zd = z.detach()
    n, m = zd.shape[0], y.shape[0]
    expected = (2 / (n * m)) * _unit(zd[:, None] - y[None]).sum(1) \
        - (2 / n**2) * _unit(zd[:, None] - zd[None]).sum(1)
    assert close(g, expected)
    # identical samples: energy 0 is the minimum; the gradient vanishes
    z2 = y.clone().requires_grad_()
    (g2,) = torch.autograd.grad(C.energy_distance(z2, y), z2)
    assert torch.isfinite(g2).all() and close(g2, torch.zeros_like(g2))


def test_gmmn_sqrt_gradient_finite_at_equality():
    y = randn(0, 6, 3)
    z = y.clone().requires_grad_()
    v = C.gmmn_mmd(z, y, sqrt=True)
    (g,) = torch.autograd.grad(v, z)
    assert float(v.detach()) <= 1e-7 and torch.isfinite(g).all()


def test_pullaway_gradient_finite_with_zero_vector():
    z = randn(0, 5, 3)
    z[2] = 0.0
    z.requires_grad_()
    (g,) = torch.autograd.grad(C.pullaway(z), z)
    assert torch.isfinite(g).all()


# --------------------------------------------------------------------------- symmetrize
W = torch.arange(1.0, 9.0, dtype=F64)


def positional(z):
    """Position-dependent: slot i weighted by i + 1, plus a cross term of slots 0 and 1."""
    n = z.shape[-2]
    return (W[:n, None] * z.square()).sum((-2, -1)) + (z[..., 0, :] * z[..., 1, :]).sum(-1)


def positional_exact(z):
    n = z.shape[-2]
    # E_sigma: weights average to mean(W[:n]); the cross term to the mean over ordered pairs
    s = z.sum(-2)
    cross = ((s * s).sum(-1) - z.square().sum((-2, -1))) / (n * (n - 1))
    return W[:n].mean() * z.square().sum((-2, -1)) + cross


@settings(deadline=None, max_examples=25)
@given(n=st.integers(2, 5), d=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_symmetrize_exact_makes_invariant(n, d, seed):
    z = randn(seed, n, d)
    Ft = C.symmetrize(positional)
    shift = torch.roll(torch.arange(n), 1)
    assert not close(positional(z[shift]), positional(z))  # F depends on positions
    assert close(Ft(z), positional_exact(z))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    assert close(Ft(z[perm]), Ft(z))
    assert close(Ft(z[shift]), Ft(z))


def test_symmetrize_batched_and_extra_args():
    z = randn(0, 3, 4, 2)  # a batch of 3 samples of n = 4
    Ft = C.symmetrize(positional)
    assert Ft(z).shape == (3,)
    assert close(Ft(z), positional_exact(z))
    y = randn(1, 5, 2)
    Fy = C.symmetrize(lambda a, b, scale=1.0: scale * positional(a) + C.energy_distance(a, b))
    assert close(Fy(z[0], y, scale=2.0), 2 * positional_exact(z[0]) + C.energy_distance(z[0], y))


@pytest.mark.parametrize("mode", ["exact", "monte-carlo"])
def test_symmetrize_leaves_invariant_cost_unchanged(mode):
    kw = {} if mode == "exact" else {"n_permutations": 7, "generator": torch.Generator().manual_seed(0)}
    z, y = randn(0, 6, 3), randn(1, 6, 3)
    for spec in SPECS:
        Ft = C.symmetrize(spec.fn, **kw)
        assert close(Ft(z, y), spec.fn(z, y))


def test_symmetrize_monte_carlo_unbiased_and_reproducible():
    z = randn(0, 4, 2)
    make = lambda: C.symmetrize(positional, n_permutations=4000,
                                generator=torch.Generator().manual_seed(1))
    a, b = make()(z), make()(z)
    assert close(a, b, 0)  # same generator state, same permutations
    exact = positional_exact(z)
    assert abs(float(a - exact)) < 0.05 * float(positional(z).abs().max() + exact.abs())
    z.requires_grad_()
    (g,) = torch.autograd.grad(C.symmetrize(positional, n_permutations=3,
                                            generator=torch.Generator().manual_seed(2))(z), z)
    assert torch.isfinite(g).all()


# --------------------------------------------------------------------------- registry
def test_registry_names_and_metadata():
    assert C.names() == ("cwae", "cw", "wae", "swae", "energy", "gmmn", "pullaway")
    meta = {name: C.get(name) for name in C.names()}
    assert [meta[n].needs_prior for n in C.names()] == [False, False, True, True, True, True, False]
    assert not meta["swae"].supports_split
    assert not meta["cwae"].linear_in_constants and meta["cw"].linear_in_constants
    assert C.get("gmmn").linear_in_constants and not C.get("gmmn", sqrt=True).linear_in_constants
    assert meta["cw"].min_d == 2 and meta["wae"].min_n == 2
    cost = C.get("wae", scales=(1,), kernel="rbf")
    assert cost.params["scales"] == (1.0,) and cost.params["kernel"] == "rbf"
    z, y = randn(0, 5, 3), randn(1, 7, 3)
    assert close(cost(z, y), C.mmd(z, y, scales=(1,), kernel="rbf"))
    assert close(C.get("cwae")(z), C.log_cramer_wold(z))
    g = torch.Generator().manual_seed(3)
    sw = C.get("swae", n_directions=9, generator=g)
    v = sw(z, randn(2, 5, 3))
    assert close(v, C.sliced_wasserstein(z, randn(2, 5, 3), n_directions=9,
                                         generator=torch.Generator().manual_seed(3)))
    with pytest.raises(Exception):
        cost.name = "other"  # frozen


# --------------------------------------------------------------------------- bad inputs
z5 = randn(0, 5, 3)
y5 = randn(1, 5, 3)
nan_z = z5.clone()
nan_z[1, 2] = math.nan
inf_y = y5.clone()
inf_y[0, 0] = math.inf
non_unit = torch.ones(2, 3, dtype=F64)
g0 = torch.Generator().manual_seed(0)
cw = C.get("cw")
wae = C.get("wae")

BAD = [
    ("cw-1d", lambda: C.cramer_wold(torch.ones(5, dtype=F64)), ValueError, r"z must have shape \(n, D\)"),
    ("cw-n<2", lambda: C.cramer_wold(z5[:1]), ValueError, r"z must have n >= 2 rows; got n=1"),
    ("cw-D<2", lambda: C.cramer_wold(z5[:, :1]), ValueError, r"z must have latent dimension D >= 2; got D=1"),
    ("cw-gamma", lambda: C.cramer_wold(z5, gamma=-1.0), ValueError, r"gamma must be a finite number > 0; got gamma=-1"),
    ("cwae-nan", lambda: C.log_cramer_wold(nan_z), ValueError, r"z must be finite; got 1 NaN"),
    ("cw-int", lambda: C.cramer_wold(torch.ones(4, 3, dtype=torch.int64)), TypeError, r"z must be a floating tensor"),
    ("cw-list", lambda: C.cramer_wold([[0.0, 1.0]]), TypeError, r"z must be a torch.Tensor"),
    ("mmd-dims", lambda: C.mmd(z5, y5[:, :2]), ValueError, r"y must have the same latent dimension as z: z has D=3, y has D=2"),
    ("mmd-dtype", lambda: C.mmd(z5, y5.float()), TypeError, r"y must have the dtype of z"),
    ("mmd-n<2", lambda: C.mmd(z5, y5[:1]), ValueError, r"y must have n >= 2 rows; got n=1"),
    ("mmd-neg-scale", lambda: C.mmd(z5, y5, scales=(1.0, -2.0)), ValueError, r"scales must be a non-empty sequence of finite numbers > 0; got scales=\(1.0, -2.0\)"),
    ("mmd-empty-scales", lambda: C.mmd(z5, y5, scales=()), ValueError, r"scales must be .*; got scales=\(\)"),
    ("mmd-scalar-scales", lambda: C.mmd(z5, y5, scales=1.0), TypeError, r"scales must be a non-empty sequence"),
    ("mmd-kernel", lambda: C.mmd(z5, y5, kernel="gauss"), ValueError, r"kernel must be one of 'imq', 'rbf'; got kernel='gauss'"),
    ("mmd-sigma2", lambda: C.mmd(z5, y5, sigma2=0.0), ValueError, r"sigma2 must be a finite number > 0; got sigma2=0.0"),
    ("sw-non-unit", lambda: C.sliced_wasserstein(z5, y5, directions=non_unit), ValueError, r"directions must have rows of unit length"),
    ("sw-dir-dims", lambda: C.sliced_wasserstein(z5, y5, directions=torch.eye(2, dtype=F64)), ValueError, r"directions must have latent dimension D=3"),
    ("sw-no-generator", lambda: C.sliced_wasserstein(z5, y5), ValueError, r"generator must be a torch.Generator when directions is None.*got generator=None"),
    ("sw-bad-generator", lambda: C.sliced_wasserstein(z5, y5, generator=0), TypeError, r"generator must be a torch.Generator or None; got generator=0"),
    ("sw-sizes", lambda: C.sliced_wasserstein(z5, y5[:4], generator=g0), ValueError, r"y must have the same number of rows as z.*n=5.*n=4"),
    ("sw-n-directions", lambda: C.sliced_wasserstein(z5, y5, n_directions=0, generator=g0), ValueError, r"n_directions must be an integer with 1 <= n_directions; got n_directions=0"),
    ("energy-inf", lambda: C.energy_distance(z5, inf_y), ValueError, r"y must be finite"),
    ("energy-3d", lambda: C.energy_distance(z5[None], y5), ValueError, r"z must have shape \(n, D\); got shape \(1, 5, 3\)"),
    ("gmmn-bandwidth", lambda: C.gmmn_mmd(z5, y5, bandwidths=(1.0, 0.0)), ValueError, r"bandwidths must be .*> 0; got bandwidths=\(1.0, 0.0\)"),
    ("gmmn-sqrt", lambda: C.gmmn_mmd(z5, y5, sqrt="yes"), TypeError, r"sqrt must be a bool.*got sqrt='yes'"),
    ("pullaway-n<2", lambda: C.pullaway(z5[:1]), ValueError, r"z must have n >= 2 rows; got n=1"),
    ("pullaway-eps", lambda: C.pullaway(z5, eps=-1e-3), ValueError, r"eps must be a finite number > 0; got eps=-0.001"),
    ("get-name", lambda: C.get("vae"), ValueError, r"name must be one of 'cwae', 'cw', 'wae', 'swae', 'energy', 'gmmn', 'pullaway'; got name='vae'"),
    ("get-param", lambda: C.get("wae", gamma=1.0), ValueError, r"unknown parameter 'gamma' for cost 'wae'; allowed parameters: kernel, scales, sigma2"),
    ("get-param-none", lambda: C.get("energy", blur=1.0), ValueError, r"unknown parameter 'blur' for cost 'energy'; allowed parameters: \(none\)"),
    ("get-neg-scales", lambda: C.get("wae", scales=(-1,)), ValueError, r"scales must be .*; got scales=\(-1,\)"),
    ("get-neg-bandwidths", lambda: C.get("gmmn", bandwidths=[2, -1]), ValueError, r"bandwidths must be .*; got bandwidths=\[2, -1\]"),
    ("get-non-unit", lambda: C.get("swae", directions=non_unit), ValueError, r"directions must have rows of unit length"),
    ("get-gamma", lambda: C.get("cwae", gamma=float("nan")), ValueError, r"gamma must be a finite number > 0; got gamma=nan"),
    ("call-missing-y", lambda: wae(z5), ValueError, r"y \(a prior sample of shape \(n_y, D\)\) is required for cost 'wae'"),
    ("call-extra-y", lambda: cw(z5, y5), ValueError, r"y must be None for cost 'cw'"),
    ("split-dims", lambda: wae.split(z5, y5[:, :2], y5), ValueError, r"Z must have latent dimension D=3 to match; got D=2"),
    ("split-empty-Z", lambda: wae.split(z5, z5[:0], y5), ValueError, r"Z must have n >= 1 rows; got n=0"),
    ("split-small-n", lambda: wae.split(z5[:0], z5[:1], y5), ValueError, r"H and Z together must have n = m \+ k >= 2 rows.*m=0, k=1"),
    ("split-cache-type", lambda: cw.split(z5, y5, cache=(1.0, 2.0, 0)), TypeError, r"cache must be a SplitCache or None; got tuple"),
    ("split-constants", lambda: cw.split(z5, y5, constants=1), TypeError, r"constants must be a bool; got constants=1"),
    ("init-cache-n", lambda: cw.init_cache(z5, n=5), ValueError, r"n must be an integer with 6 <= n; got n=5"),
    ("update-slots-dup", lambda: cw.update_cache(None, z5, torch.tensor([1, 1]), y5[:2]), ValueError, r"slots must be distinct indices; got \[1, 1\]"),
    ("update-slots-range", lambda: cw.update_cache(None, z5, torch.tensor([0, 5]), y5[:2]), ValueError, r"slots must be indices in \[0, m\) = \[0, 5\); got \[0, 5\]"),
    ("update-slots-len", lambda: cw.update_cache(None, z5, torch.tensor([0]), y5[:2]), ValueError, r"slots must have one index per row of new \(k=2\); got 1"),
    ("update-slots-type", lambda: cw.update_cache(None, z5, [0, 1], y5[:2]), TypeError, r"slots must be a 1-D LongTensor"),
    ("update-new-nan", lambda: cw.update_cache(None, z5, torch.tensor([0]), nan_z[1:2]), ValueError, r"new must be finite"),
    ("symmetrize-n>8", lambda: C.symmetrize(C.pullaway)(randn(0, 9, 2)), ValueError, r"z must have n <= 8 rows .*got n=9 \(pass n_permutations=P and a generator"),
    ("symmetrize-no-generator", lambda: C.symmetrize(C.pullaway, n_permutations=5), ValueError, r"generator must be a torch.Generator when n_permutations is given.*got generator=None"),
    ("symmetrize-n-perms", lambda: C.symmetrize(C.pullaway, n_permutations=0, generator=g0), ValueError, r"n_permutations must be an integer with 1 <= n_permutations; got n_permutations=0"),
    ("symmetrize-F", lambda: C.symmetrize("pullaway"), TypeError, r"F must be callable"),
]


@pytest.mark.parametrize("call,exc,match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_batch_cost_pickles_and_copies():
    import copy
    import pickle

    for cost in (C.get("wae", scales=(1, 2), kernel="rbf"), C.get("cwae", gamma=0.5),
                 C.get("gmmn", sqrt=True)):
        for clone in (pickle.loads(pickle.dumps(cost)), copy.deepcopy(cost)):
            assert clone == cost and dict(clone.params) == dict(cost.params)
            z, y = randn(0, 5, 3), randn(1, 5, 3)
            args = (z, y) if cost.needs_prior else (z,)
            assert close(clone(*args), cost(*args))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    z, y = randn(0, 9, 4), randn(1, 9, 4)
    for spec in SPECS:
        assert close(spec.fn(z.cuda(), y.cuda()).cpu(), spec.fn(z, y), 1e-9)
    for name in C.names():
        kw = {"generator": torch.Generator(device="cuda").manual_seed(0)} if name == "swae" else {}
        cost = C.get(name, **kw)
        yy = y.cuda() if cost.needs_prior else None
        H, Z = z[:6].cuda(), z[6:].cuda().requires_grad_()
        cache = cost.init_cache(H, n=9)
        slots = torch.tensor([0, 2], device="cuda")
        cache = cost.update_cache(cache, H, slots, Z[:2].detach() + 1)
        H = H.clone()
        H[slots] = Z[:2].detach() + 1
        v = cost.split(H, Z, yy, cache=cache)
        v.backward()
        assert torch.isfinite(Z.grad).all()
        if name != "swae":
            assert close(v.detach().cpu(), cost(torch.cat([H, Z.detach()]).cpu(),
                                                None if yy is None else yy.cpu()), 1e-9)
    Ft = C.symmetrize(C.pullaway, n_permutations=3, generator=torch.Generator().manual_seed(0))
    assert close(Ft(z.cuda()).cpu(), C.pullaway(z), 1e-9)


# ------------------------------------------------------------------ the Gram path of sqdist
@pytest.mark.parametrize("batch", [(), (3,)], ids=["2d", "batched"])
def test_sqdist_gram_path_equals_difference_form(batch, monkeypatch):
    """Blocks above ``DIFF_LIMIT`` take the Gram form (2-D: ``addmm``; batched: ``matmul``);
    it must equal the difference form (forced by raising the limit), also for samples far
    from the origin (the translation keeps the cancellation error at the distances' scale)."""
    from mowtheory.costs import pairwise
    a = randn(0, *batch, 160, 8, shift=30.0)
    b = randn(1, *batch, 120, 8, shift=30.0)
    assert 160 * 120 * 8 > pairwise.DIFF_LIMIT             # the Gram path is taken
    gram = pairwise.sqdist(a, b)
    monkeypatch.setattr(pairwise, "DIFF_LIMIT", 1 << 40)
    diff = pairwise.sqdist(a, b)
    assert gram.shape == (*batch, 160, 120)
    assert torch.allclose(gram, diff, rtol=1e-10, atol=1e-9), (gram - diff).abs().max()


@pytest.mark.parametrize("name", ["cw", "wae", "energy", "gmmn"])
def test_costs_at_sizes_that_take_the_gram_path(name, monkeypatch):
    """A registered cost at n = 128, D = 8 (n^2 D > DIFF_LIMIT: the path of large-n training
    and of the benches) equals its value with the difference form forced."""
    from mowtheory.costs import pairwise
    cost = C.get(name)
    z = randn(2, 128, 8)
    y = randn(3, 128, 8) if cost.needs_prior else None
    got = cost(z, y)
    monkeypatch.setattr(pairwise, "DIFF_LIMIT", 1 << 40)
    want = cost(z, y)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-12), (got, want)


def test_sqdist_gram_path_far_from_the_origin_in_float32():
    """The translation by a point of ``b`` keeps the Gram form's cancellation error at the
    distances' scale: float32 samples centred at 1000 (|a|^2 ~ 8e6, distances ~ 16) still give
    the distances to ~1e-5 relative (untranslated, the error would be ~ eps |a|^2 ~ 0.5)."""
    from mowtheory.costs import pairwise
    a, b = randn(4, 160, 8, shift=1000.0).float(), randn(5, 120, 8, shift=1000.0).float()
    got = pairwise.sqdist(a, b).double()
    a, b = a.double(), b.double()                   # the same (rounded) points, exact distances
    want = (a.unsqueeze(-2) - b.unsqueeze(-3)).square().sum(-1)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-3), (got - want).abs().max()
