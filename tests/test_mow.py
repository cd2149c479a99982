"""The MoW objective and step: freezing, reductions, k = n, refresh policies, split vs full."""
import pytest
import torch
from hypothesis import given

from mowtheory import costs
from mowtheory import testing as mt
from mowtheory.mow import MoW, mow_loss, reduce_per_example

D = 3


def _F_sq(z):  # a permutation-invariant F: squared norm of the mean plus mean squared norm
    return z.mean(-2).pow(2).sum(-1) + z.pow(2).sum(-1).mean(-1)


def test_mow_loss_parts_and_reductions():
    g = torch.Generator().manual_seed(0)
    fresh = torch.randn(2, D, generator=g, dtype=torch.float64)
    window = torch.randn(3, D, generator=g, dtype=torch.float64)
    G = torch.tensor([1.0, 4.0], dtype=torch.float64)
    f = _F_sq(torch.cat([window, fresh]))
    for red, want in [("sum", 5.0), ("mean", 2.5), ("sqrt_mean", 2.5 ** 0.5)]:
        p = mow_loss(_F_sq, fresh, window, G, reduction=red)
        assert torch.allclose(p.batch_cost, f) and abs(float(p.per_example) - want) < 1e-12
        assert torch.allclose(p.total, f + want)
    pb = mow_loss(_F_sq, fresh, window, G, balanced=True)
    assert torch.allclose(pb.total, f * 5 / 2 + 5.0) and torch.allclose(pb.batch_cost, f)


@pytest.mark.parametrize("name", costs.names())
@given(case=mt.mow_cases(max_n=10, max_d=5, allow_empty_window=False))
def test_every_cost_is_frozen_in_mow_loss(name, case):
    """check_gradient_frozen on the split evaluation of every registered cost."""
    cost = costs.get(name, **({"generator": torch.Generator().manual_seed(1)} if name == "swae" else {}))
    if case.fresh.shape[-1] < cost.min_d or case.n < cost.min_n:
        return
    prior = case.prior if cost.needs_prior else None
    if name == "swae":  # fresh directions per call: compare with the same directions
        dirs = torch.nn.functional.normalize(torch.randn(7, case.fresh.shape[-1], dtype=torch.float64,
                                                         generator=torch.Generator().manual_seed(2)), dim=-1)
        cost = costs.get("swae", directions=dirs)
    scale = None
    if name == "pullaway":   # homogeneous of degree 0 in each row: gradients round like 1 / |z_i|
        size = case.fresh.abs().amax(-1)         # |z_i| within sqrt(D); never underflows
        scale = torch.where(size > 0, 1 / size.clamp_min(1e-300), torch.zeros_like(size))
    mt.check_gradient_frozen(lambda f, w, y: mow_loss(cost, f, w, prior=y).total, cost,
                             case.fresh, case.window, prior, atol=1e-8, grad_scale=scale)


def test_pullaway_frozen_at_a_tiny_row_whose_exact_gradient_vanishes():
    """A fresh row of norm 1e-216 parallel to the window (found by hypothesis): the exact
    gradient is 0, rounding gives ~1e-28 / |z| in the split path and exactly 0 in the full
    one. Held to max |reference gradient| (0) the check fails; held to the row's natural
    scale 1 / |z_i| it passes, and a gradient off by a relative 1e-6 of that scale fails."""
    cost = costs.get("pullaway")
    window = torch.tensor([[0., 0., 0.], [0., 0., 1.], [0., 0., 1.]], dtype=torch.float64)
    scale = None
    obj = lambda f, w, y: mow_loss(cost, f, w).total  # noqa: E731
    for tiny in (1e-300, 1e-216, 1e-100):
        fresh = torch.tensor([[0., 0., 1.], [0., 0., tiny]], dtype=torch.float64)
        with pytest.raises(AssertionError, match="fresh row 1"):
            mt.check_gradient_frozen(obj, cost, fresh, window, atol=1e-8)
        scale = 1 / fresh.abs().amax(-1)
        mt.check_gradient_frozen(obj, cost, fresh, window, atol=1e-8, grad_scale=scale)
    off = torch.tensor([[0., 0., 0.], [1e-6, 0., 0.]], dtype=torch.float64) * scale[:, None]
    bad = lambda f, w, y: mow_loss(cost, f, w).total + (f * off).sum()  # noqa: E731
    with pytest.raises(AssertionError, match="fresh row 1"):
        mt.check_gradient_frozen(bad, cost, fresh, window, atol=1e-8, grad_scale=scale)


def test_leaky_objective_is_caught():
    """Planted fault: an objective that forgets to detach the window."""
    case = mt.MoWCase(torch.randn(5, D, dtype=torch.float64), torch.randn(2, D, dtype=torch.float64),
                      None, 7, 2, 1e-9)
    leaky = lambda f, w, y: _F_sq(torch.cat([w, f]))  # noqa: E731
    with pytest.raises(AssertionError, match="gradient leaks into the window"):
        mt.check_gradient_frozen(leaky, _F_sq, case.fresh, case.window)
    # and a wrong fresh gradient (a flipped sign) is caught too
    flipped = lambda f, w, y: -mow_loss(_F_sq, f, w).total  # noqa: E731
    with pytest.raises(AssertionError, match="differs"):
        mt.check_gradient_frozen(flipped, _F_sq, case.fresh, case.window)
    assert mt.check_gradient_frozen(lambda f, w, y: mow_loss(_F_sq, f, w).total, _F_sq,
                                    case.fresh, case.window) < 1e-12


def test_position_dependent_F_is_caught():
    z = torch.randn(6, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    weights = torch.linspace(0.5, 2.0, 6, dtype=torch.float64)
    positional = lambda z: (weights[:, None] * z.pow(2)).sum()  # noqa: E731
    with pytest.raises(AssertionError, match="not permutation invariant"):
        mt.check_permutation_invariant(positional, z)
    mt.check_permutation_invariant(costs.symmetrize(positional), z)


def _linear_setup(n, k, seed=0, **kw):
    torch.manual_seed(seed)  # test code only: build identical modules
    enc = torch.nn.Linear(4, D, dtype=torch.float64)
    dec = torch.nn.Linear(D, 4, dtype=torch.float64)
    G = lambda x, z: (dec(z) - x).pow(2).sum(-1)  # noqa: E731
    params = list(enc.parameters()) + list(dec.parameters())
    return enc, dec, G, params


def test_k_equals_n_is_minibatch_sgd_exactly():
    n = k = 4
    x = torch.randn(6, n, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    enc, dec, G, params = _linear_setup(n, k)
    mow = MoW(enc, _F_sq, n=n, k=k, latent_dim=D, per_example=G, dtype=torch.float64)
    mow.init_window("prior")
    opt = torch.optim.SGD(params, lr=0.05)
    for xb in x:
        mow.step(xb, opt)
    enc2, dec2, G2, params2 = _linear_setup(n, k)
    opt2 = torch.optim.SGD(params2, lr=0.05)
    for xb in x:
        opt2.zero_grad()
        z = enc2(xb)
        g = G2(xb, z).sum()  # the graph order of MoW.loss (G first): bitwise-equal gradients
        (_F_sq(z) + g).backward()
        opt2.step()
    for a, b in zip(params, params2):
        assert torch.equal(a, b)


@pytest.mark.parametrize("refresh", ["post", "pre"])
def test_refresh_policies(refresh):
    n, k = 5, 2
    enc, dec, G, params = _linear_setup(n, k)
    mow = MoW(enc, _F_sq, n=n, k=k, latent_dim=D, per_example=G, refresh=refresh, dtype=torch.float64)
    x0 = torch.randn(3, 4, dtype=torch.float64)
    mow.init_window("encode", x0)
    assert torch.allclose(mow.window.ordered(), enc(x0).detach())
    x = torch.randn(2, 4, dtype=torch.float64)
    before = enc(x).detach()
    mow.step(x, torch.optim.SGD(params, lr=0.1))
    after = enc(x).detach()
    assert not torch.allclose(before, after)
    want = before if refresh == "pre" else after
    assert torch.allclose(mow.window.ordered()[-2:], want)


@pytest.mark.parametrize("name", ["cw", "cwae", "wae", "energy", "gmmn", "pullaway"])
def test_split_path_equals_full_path_over_many_steps(name):
    """The cached split evaluation and a plain full evaluation train identically (float64)."""
    n, k, steps = 8, 2, 25
    cost = costs.get(name)
    full = lambda z, y=None: cost(z, y)  # noqa: E731  a plain callable: full O(n^2) evaluation
    x = torch.randn(steps, k, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    results = []
    for F in (cost, full):
        enc, dec, G, params = _linear_setup(n, k)
        mow = MoW(enc, F, n=n, k=k, latent_dim=D, per_example=G, dtype=torch.float64,
                  generator=torch.Generator().manual_seed(3))
        mow.needs_prior = cost.needs_prior
        mow.init_window("prior")
        opt = torch.optim.SGD(params, lr=0.02)
        vals = [mow.step(xb, opt).batch_cost for xb in x]
        results.append((params, torch.stack(vals)))
    (p1, v1), (p2, v2) = results
    assert torch.allclose(v1, v2, rtol=1e-9, atol=1e-10)
    for a, b in zip(p1, p2):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-11)


def test_step_returns_device_tensors_and_state_roundtrip():
    n, k = 6, 1
    enc, dec, G, params = _linear_setup(n, k)
    mow = MoW(enc, costs.get("wae"), n=n, k=k, latent_dim=D, per_example=G, dtype=torch.float64,
              generator=torch.Generator().manual_seed(0))
    mow.init_window("prior")
    opt = torch.optim.Adam(params, lr=1e-2)
    parts = mow.step(torch.randn(1, 4, dtype=torch.float64), opt)
    assert all(isinstance(t, torch.Tensor) and not t.requires_grad for t in parts)
    assert set(parts.floats()) == {"total", "batch_cost", "per_example"}
    state = mow.state_dict()
    x = torch.randn(1, 4, dtype=torch.float64)
    a = mow.loss(x)[0].total.detach()
    other = MoW(enc, costs.get("wae"), n=n, k=k, latent_dim=D, per_example=G, dtype=torch.float64)
    other.load_state_dict(state)
    assert torch.equal(other.loss(x)[0].total.detach(), a)
    with pytest.raises(ValueError, match="another MoW configuration"):
        MoW(enc, costs.get("wae"), n=n, k=2, latent_dim=D).load_state_dict(state)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: MoW(torch.nn.Identity(), _F_sq, n=4, k=5, latent_dim=2), ValueError, r"k must be .*<= n = 4; got k=5"),
    (lambda: MoW(torch.nn.Identity(), _F_sq, n=4, k=0, latent_dim=2), ValueError, r"got k=0"),
    (lambda: MoW(torch.nn.Identity(), _F_sq, n=1, k=1, latent_dim=2), ValueError, r"n must be .*2 <= n.*got n=1"),
    (lambda: MoW(torch.nn.Identity(), _F_sq, n=4, k=1, latent_dim=2, reduction="avg"), ValueError, r"reduction must be one of 'sum', 'mean', 'sqrt_mean'; got reduction='avg'"),
    (lambda: MoW(torch.nn.Identity(), _F_sq, n=4, k=1, latent_dim=2, refresh="later"), ValueError, r"refresh must be one of 'post', 'pre'"),
    (lambda: MoW(torch.nn.Identity(), _F_sq, n=4, k=1, latent_dim=2).init_window("zeros"), ValueError, r"policy must be one of 'encode', 'prior'"),
    (lambda: MoW(torch.nn.Identity(), _F_sq, n=4, k=1, latent_dim=2).init_window("encode", torch.zeros(2, 2)), ValueError, r"n - k = 3 examples.*got 2"),
    (lambda: mow_loss(_F_sq, torch.zeros(1, 2), torch.zeros(3, 3)), ValueError, r"window must have the same latent dimension as fresh: fresh has D=2, window has D=3"),
    (lambda: mow_loss(_F_sq, torch.zeros(2, 2), torch.zeros(3, 2), torch.zeros(3)), ValueError, r"G must have shape \(\.\.\., k\) with k=2"),
    (lambda: mow_loss(_F_sq, torch.zeros(2), torch.zeros(3, 2)), ValueError, r"fresh must have shape"),
    (lambda: reduce_per_example(torch.zeros(2), "median"), ValueError, r"reduction must be one of"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("lam,err", [(float("nan"), ValueError), (-1.0, ValueError),
                                     (float("inf"), ValueError), ("x", TypeError)])
def test_lambda_bad_values_are_refused_naming_it(lam, err):
    from mowtheory.gradcache import GradCache
    F = costs.get("cw")
    makers = (lambda: mow_loss(F, torch.randn(1, 2), torch.randn(3, 2), lam=lam),
              lambda: MoW(torch.nn.Identity(), F, n=4, k=1, latent_dim=2, lam=lam),
              lambda: GradCache(torch.nn.Identity(), F, n=4, chunk=1, lam=lam))
    for make in makers:
        with pytest.raises(err, match=f"lam must be .*got lam={lam!r}"):
            make()
