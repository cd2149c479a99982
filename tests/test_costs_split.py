"""Split evaluation against a frozen window equals full evaluation on cat(H, Z): values,
gradients w.r.t. Z, constants=False, the incremental cache of a sliding ring buffer, and no
gradient into H."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from mowtheory import costs as C

F64 = torch.float64
TOL = 1e-9


def randn(seed: int, *shape, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=g, dtype=F64)


def dirs(d: int) -> torch.Tensor:
    return C.random_directions(6, d, generator=torch.Generator().manual_seed(5), dtype=F64)


# (id, factory(D) -> BatchCost)
COSTS = [
    ("cwae", lambda d: C.get("cwae")),
    ("cw", lambda d: C.get("cw")),
    ("cw-gamma", lambda d: C.get("cw", gamma=0.7)),
    ("wae", lambda d: C.get("wae")),
    ("wae-rbf", lambda d: C.get("wae", kernel="rbf", scales=(0.5, 3.0), sigma2=2.0)),
    ("swae", lambda d: C.get("swae", directions=dirs(d))),
    ("energy", lambda d: C.get("energy")),
    ("gmmn", lambda d: C.get("gmmn")),
    ("gmmn-sqrt", lambda d: C.get("gmmn", sqrt=True, bandwidths=(0.5, 2.0))),
    ("pullaway", lambda d: C.get("pullaway")),
]
IDS = [c[0] for c in COSTS]
SPLITTABLE = [c for c in COSTS if c[0] != "swae"]


def close(a, b, tol=TOL):
    a, b = torch.as_tensor(a, dtype=F64), torch.as_tensor(b, dtype=F64)
    return torch.allclose(a, b, rtol=tol, atol=tol)


def prior(cost, seed, n_y, d):
    return randn(seed, n_y, d) + 0.3 if cost.needs_prior else None


def full_and_grad(cost, H, Z, y):
    Z = Z.detach().requires_grad_()
    v = cost(torch.cat([H.detach(), Z]), y)
    (g,) = torch.autograd.grad(v, Z)
    return v.detach(), g


def split_and_grad(cost, H, Z, y, **kw):
    Z = Z.detach().requires_grad_()
    v = cost.split(H, Z, y, **kw)
    (g,) = torch.autograd.grad(v, Z)
    return v.detach(), g


@st.composite
def window(draw, cost_factory):
    d = draw(st.integers(2, 5))
    cost = cost_factory(d)
    k = draw(st.integers(1, 4))
    m = draw(st.integers(max(0, cost.min_n - k), 12))
    n_y = m + k if cost.name == "swae" else draw(st.integers(2, 10))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.floats(0.2, 2.0))
    H = randn(seed, m, d, scale=scale)
    Z = randn(seed + 1, k, d, scale=scale)
    return cost, H, Z, prior(cost, seed + 2, n_y, d), seed


@pytest.mark.parametrize("factory", [c[1] for c in COSTS], ids=IDS)
@settings(deadline=None, max_examples=40)
@given(data=st.data())
def test_split_equals_full(factory, data):
    cost, H, Z, y, seed = data.draw(window(factory))
    n = H.shape[0] + Z.shape[0]
    v_full, g_full = full_and_grad(cost, H, Z, y)
    cache = cost.init_cache(H, n=n)
    for kw in ({"cache": cache}, {"cache": None}, {"cache": cost.init_cache(H)}):
        v, g = split_and_grad(cost, H, Z, y, **kw)
        assert close(v, v_full) and close(g, g_full)
        v0, g0 = split_and_grad(cost, H, Z, y, constants=False, **kw)
        assert close(g0, g_full)
        # constants=False: value off by a θ-independent constant (the same for another Z)
        Z2 = randn(seed + 3, *Z.shape)
        off = v_full - v0
        assert close(cost(torch.cat([H, Z2]), y) - cost.split(H, Z2, y, constants=False, **kw), off)
        if not cost.linear_in_constants:
            assert close(off, 0.0)


@pytest.mark.parametrize("factory", [c[1] for c in SPLITTABLE], ids=[c[0] for c in SPLITTABLE])
@pytest.mark.parametrize("m,k,resolved", [(10, 3, True), (7, 1, True), (4, 4, True), (9, 2, False)])
def test_ring_buffer_cache_matches_fresh(factory, m, k, resolved):
    d, seed = 3, 100 * m + k
    cost = factory(d)
    H = randn(seed, m, d)
    cache = cost.init_cache(H, n=m + k) if resolved else cost.init_cache(H)
    period = math.ceil(m / k)
    for step in range(50):
        Z = randn(seed + 10 * step + 1, k, d, scale=1.2)
        y = prior(cost, seed + 10 * step + 2, 8, d)
        v_full, g_full = full_and_grad(cost, H, Z, y)
        v, g = split_and_grad(cost, H, Z, y, cache=cache)
        assert close(v, v_full) and close(g, g_full)
        _, g0 = split_and_grad(cost, H, Z, y, cache=cache, constants=False)
        assert close(g0, g_full)
        slots = (step * k + torch.arange(k)) % m
        cache = cost.update_cache(cache, H, slots, Z)
        H = H.clone()
        H[slots] = Z
        fresh = cost.init_cache(H, n=m + k)
        assert cache.key == fresh.key
        assert cache.pair_sum.dtype == F64 and cache.pair_sum.dim() == 0
        assert close(cache.pair_sum, fresh.pair_sum) and close(cache.unary_sum, fresh.unary_sum)
        assert 0 <= cache.updates < period


def test_cache_counts_updates_between_exact_recomputes():
    cost, m, k = C.get("energy"), 9, 2
    H = randn(0, m, 3)
    cache = cost.init_cache(H)
    seen = []
    for step in range(12):
        slots = (step * k + torch.arange(k)) % m
        new = randn(step + 1, k, 3)
        cache = cost.update_cache(cache, H, slots, new)
        H = H.clone()
        H[slots] = new
        seen.append(cache.updates)
    assert seen == [1, 2, 3, 4, 0] * 2 + [1, 2]  # ceil(9 / 2) = 5


@pytest.mark.parametrize("factory", [c[1] for c in COSTS], ids=IDS)
@pytest.mark.parametrize("constants", [True, False])
def test_no_gradient_reaches_H(factory, constants):
    cost = factory(3)
    H = randn(0, 6, 3).requires_grad_()
    Z = randn(1, 2, 3).requires_grad_()
    y = prior(cost, 2, 8, 3)
    for cache in (None, cost.init_cache(H, n=8)):
        v = cost.split(H, Z, y, cache=cache, constants=constants)
        v.backward()
        assert H.grad is None
        assert Z.grad is not None and torch.isfinite(Z.grad).all()
        Z.grad = None


@pytest.mark.parametrize("factory", [c[1] for c in COSTS], ids=IDS)
def test_split_gradcheck(factory):
    cost = factory(3)
    H, Z = randn(0, 5, 3), randn(1, 2, 3).requires_grad_()
    y = prior(cost, 2, 7, 3)
    cache = cost.init_cache(H, n=7)
    assert torch.autograd.gradcheck(lambda a: cost.split(H, a, y, cache=cache), (Z,),
                                    eps=1e-6, atol=1e-6, rtol=1e-5)


def test_swae_has_no_cache():
    cost = C.get("swae", directions=dirs(3))
    H = randn(0, 5, 3)
    assert not cost.supports_split
    assert cost.init_cache(H) is None
    assert cost.update_cache(None, H, torch.tensor([0]), randn(1, 1, 3)) is None


def test_split_float32_close_to_float64():
    for name, factory in SPLITTABLE:
        cost = factory(4)
        H, Z = randn(0, 12, 4), randn(1, 3, 4)
        y = prior(cost, 2, 15, 4)
        y32 = None if y is None else y.float()
        cache32 = cost.init_cache(H.float(), n=15)
        v32 = cost.split(H.float(), Z.float(), y32, cache=cache32)
        assert v32.dtype == torch.float32 and cache32.pair_sum.dtype == F64
        assert abs(float(v32) - float(cost(torch.cat([H, Z]), y))) < 1e-4, name


# ------------------------------------------------------------------ batches of windows
@pytest.mark.parametrize("factory", [c[1] for c in SPLITTABLE], ids=[c[0] for c in SPLITTABLE])
@settings(deadline=None, max_examples=15)
@given(R=st.integers(1, 3), d=st.integers(2, 4), k=st.integers(1, 3), m=st.integers(0, 8),
       n_y=st.integers(2, 6), seed=st.integers(0, 2**31 - 1), constants=st.booleans())
def test_batched_split_is_one_split_per_window(factory, R, d, k, m, n_y, seed, constants):
    """H (R, m, D), Z (R, k, D), y (R, n_y, D): the value is (R,), window r's entry and its
    gradient equal the split (and the full value) of window r alone."""
    cost = factory(d)
    m = max(m, cost.min_n - k)
    H, Z = randn(seed, R, m, d), randn(seed + 1, R, k, d).requires_grad_()
    y = randn(seed + 2, R, n_y, d) + 0.3 if cost.needs_prior else None
    v = cost.split(H, Z, y, constants=constants)
    assert v.shape == (R,)
    (g,) = torch.autograd.grad(v.sum(), Z)
    for r in range(R):
        yr = None if y is None else y[r]
        v_r, g_r = split_and_grad(cost, H[r], Z[r], yr, constants=constants)
        assert close(v[r], v_r) and close(g[r], g_r), r
        if constants or not cost.linear_in_constants:
            assert close(v[r], full_and_grad(cost, H[r], Z[r], yr)[0]), r


def test_batched_split_refuses_what_it_cannot_do():
    cost, H, Z = C.get("cw"), randn(0, 2, 5, 3), randn(1, 2, 2, 3)
    with pytest.raises(ValueError, match=r"leading \(batch\) shape; got H \(2,\), Z \(3,\)"):
        cost.split(H, randn(1, 3, 2, 3))
    with pytest.raises(ValueError, match="cache must be None for batches of windows"):
        cost.split(H, Z, cache=cost.init_cache(H[0]))
    with pytest.raises(ValueError, match="'swae' evaluates one sample"):
        C.get("swae", directions=dirs(3)).split(H, Z, randn(2, 2, 7, 3))
    with pytest.raises(ValueError, match="y must have the same latent dimension"):
        C.get("wae").split(H, Z, randn(2, 2, 7, 4))


def test_mow_loss_of_replicas_takes_the_split_and_equals_each_replica():
    """mow_loss with fresh (R, k, D) and a BatchCost runs the split evaluation (as MoW does
    for one window): it equals R separate losses, value and gradient."""
    from unittest import mock

    from mowtheory.costs import registry
    from mowtheory.mow import mow_loss
    cost = C.get("wae")
    W, Z, y = randn(0, 3, 6, 2), randn(1, 3, 2, 2).requires_grad_(), randn(2, 3, 8, 2)
    G = randn(3, 3, 2).abs()
    with mock.patch.object(registry, "split_value", wraps=registry.split_value) as spy:
        parts = mow_loss(cost, Z, W, G, prior=y, reduction="mean", balanced=True)
    assert spy.call_count == 1 and parts.total.shape == (3,)
    (g,) = torch.autograd.grad(parts.total.sum(), Z)
    for r in range(3):
        z_r = Z[r].detach().requires_grad_()
        one = mow_loss(cost, z_r, W[r], G[r], prior=y[r], reduction="mean", balanced=True)
        (g_r,) = torch.autograd.grad(one.total, z_r)
        assert close(parts.total[r], one.total) and close(g[r], g_r)


@pytest.mark.parametrize("factory", [c[1] for c in SPLITTABLE], ids=[c[0] for c in SPLITTABLE])
def test_a_cache_built_for_another_kernel_is_not_used(factory):
    """The frozen block's sums depend on the kernel, whose parameters can depend on n (the
    Cramér-Wold bandwidth does): a cache built for n = m + 1 handed to a step with k = 3
    (n = m + 3) carries another key and must be recomputed, not summed in."""
    d, m = 3, 7
    cost = factory(d)
    H = randn(5, m, d)
    other = cost.init_cache(H, n=m + 1)
    Z = randn(6, 3, d, scale=1.2)
    y = prior(cost, 7, 8, d)
    v_full, _ = full_and_grad(cost, H, Z, y)
    v, _ = split_and_grad(cost, H, Z, y, cache=other)
    assert close(v, v_full), (cost.name, float(v), float(v_full))
    if other.key != cost.init_cache(H, n=m + 3).key:       # the case the key guards
        wrong = other._replace(key=cost.init_cache(H, n=m + 3).key)
        v_wrong, _ = split_and_grad(cost, H, Z, y, cache=wrong)
        assert not close(v_wrong, v_full)                  # sums of another kernel: wrong
