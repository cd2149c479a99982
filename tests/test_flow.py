"""mowtheory.flow: closed forms against Monte Carlo, the reference ODE, and the vectorised
simulator against the per-replica loop on the same random numbers."""
import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mowtheory.flow import (
    Draws,
    drift,
    get_problem,
    names,
    simulate,
    simulate_loop,
    solve_reference,
)
from mowtheory.flow._gauss import expected_reduced_quadratic, expected_sqrt_mean_chi2
from mowtheory.flow.problems import PositionWeighted
from mowtheory.flow.simulate import mow_gradient
from mowtheory.mow import reduce_per_example

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- closed forms
CASES = [("linear-gaussian", {}, 6), ("linear-gaussian", {"variances": (2.0, 0.3), "latent_dim": 1}, 5),
         ("mmd-gaussian", {}, 5), ("mmd-gaussian", {"data_dim": 3, "bandwidth2": 0.5}, 4),
         ("scalar", {}, 6), ("position-weighted", {}, 5),
         ("position-weighted", {"symmetrize": True}, 4)]


@pytest.mark.parametrize("name,params,n", CASES)
def test_expected_cost_matches_monte_carlo(name, params, n):
    """C(theta) (and E[F_n] alone) within 4.5 standard errors of a Monte Carlo average."""
    p = get_problem(name, **params)
    theta = p.theta0(_gen(3)) * 1.2
    B = 20000
    g = _gen(11)
    x = p.sample_data((B, n), g)
    prior = p.sample_prior((B, n), g) if p.needs_prior else None
    F = p.batch_cost(p.encode(theta, x), prior)
    c = F + p.per_example(theta, x).sum(-1)
    for sample, exact in ((c, p.expected_cost(theta, n)), (F, p.expected_batch_cost(theta, n))):
        z = (sample.mean() - exact) / (sample.std() / math.sqrt(B))
        assert abs(float(z)) < 4.5, (name, float(sample.mean()), float(exact))


@pytest.mark.parametrize("name", ["linear-gaussian", "mmd-gaussian", "scalar"])
@pytest.mark.parametrize("reduction", ["sum", "mean", "sqrt_mean"])
def test_expected_reduced_per_example_matches_monte_carlo(name, reduction):
    p = get_problem(name)
    theta = p.theta0(_gen(5))
    k, B = 3, 30000
    x = p.sample_data((B, k), _gen(7))
    s = reduce_per_example(p.per_example(theta, x), reduction)
    exact = p.expected_per_example(theta, k, reduction)
    assert abs(float((s.mean() - exact) / (s.std() / math.sqrt(B)))) < 4.5


def test_sqrt_mean_quadrature_is_exact():
    """E sqrt(chi^2_k / k) from the Laplace-transform integral equals the Gamma formula."""
    for k in (1, 2, 3, 7):
        for d in (1, 3):
            A = torch.eye(d, dtype=F64)
            got = expected_reduced_quadratic(torch.zeros(d, dtype=F64), A, k, "sqrt_mean")
            # sum of d unit-variance squares: E sqrt(chi^2_{kd} / k)
            want = expected_sqrt_mean_chi2(k * d) * math.sqrt(d)
            assert abs(float(got) - want) < 1e-10


def test_issue_formulas_verbatim():
    """The closed forms as the issue states them (the proof checks import expected_cost)."""
    th = torch.tensor([[0.3], [1.7], [-0.4]], dtype=F64)
    for s2, beta, n in ((1.0, 0.5, 8), (2.0, 0.1, 3)):
        p = get_problem("scalar", s2=s2, beta=beta)
        t = th[:, 0]
        want = 2 * t**4 * s2**2 / n + (t**2 * s2 - 1) ** 2 + n * beta * (1 - t) ** 2 * s2
        assert torch.allclose(p.expected_cost(th, n), want, rtol=1e-13, atol=1e-13)
    p = get_problem("linear-gaussian")
    theta = p.theta0(_gen(0))
    W, V = theta[:6].reshape(2, 3), theta[6:].reshape(3, 2)
    L = torch.diag(torch.tensor([1.0, 0.5, 2.0], dtype=F64))
    S = W @ L @ W.T
    R = torch.eye(3, dtype=F64) - V @ W
    n = 8
    want = (torch.trace(S) / n + (S - torch.eye(2, dtype=F64)).pow(2).sum()
            + (S.pow(2).sum() + torch.trace(S) ** 2) / (n - 1) + n * torch.trace(R @ L @ R.T))
    assert torch.allclose(p.expected_cost(theta, n), want, rtol=1e-13)
    # batched theta: (..., P) -> (...)
    batch = torch.stack([theta, 2 * theta])
    assert p.expected_cost(batch, n).shape == (2,)


def test_symmetrized_position_weighted_equals_analytic_symmetrisation():
    """costs.symmetrize of the slot-weighted F equals E_sigma[(sum w_sigma(i) u_i - 1)^2]."""
    n = 5
    p = get_problem("position-weighted", symmetrize=True)
    z = torch.randn(3, n, 1, generator=_gen(2), dtype=F64)
    u = z[..., 0] ** 2
    w = PositionWeighted.slot_weights(n)
    m2 = float(w.pow(2).sum()) / n
    c = (1 - float(w.pow(2).sum())) / (n * (n - 1))
    Ea = u.sum(-1) / n
    Ea2 = m2 * u.pow(2).sum(-1) + c * (u.sum(-1) ** 2 - u.pow(2).sum(-1))
    assert torch.allclose(p.batch_cost(z), Ea2 - 2 * Ea + 1, rtol=1e-12)
    plain = get_problem("position-weighted")
    assert not torch.allclose(plain.batch_cost(z), p.batch_cost(z))
    assert p.permutation_invariant and not plain.permutation_invariant


def test_get_problem_errors():
    with pytest.raises(ValueError, match="linear-gaussian.*mmd-gaussian.*scalar.*position-weighted"):
        get_problem("nope")
    with pytest.raises(ValueError, match="bad parameters"):
        get_problem("scalar", gamma=1.0)
    with pytest.raises(ValueError, match="variances"):
        get_problem("linear-gaussian", variances=(1.0, -1.0))
    p = get_problem("scalar")
    with pytest.raises(ValueError, match=r"theta must have shape \(\.\.\., 1\)"):
        p.expected_cost(torch.zeros(2, 3, dtype=F64), 4)
    with pytest.raises(ValueError, match="n must be an integer with 2 <= n"):
        p.expected_cost(torch.zeros(1, dtype=F64), 1)
    assert set(names()) == {"linear-gaussian", "mmd-gaussian", "scalar", "position-weighted"}


# ---------------------------------------------------------------------- reference ODE
def test_drift_is_theorem_drift_and_variants():
    p = get_problem("linear-gaussian")
    th = p.theta0(_gen(1)).requires_grad_(True)
    n, k = 8, 2
    (gC,) = torch.autograd.grad(p.expected_cost(th, n), th)
    assert torch.allclose(drift(p, th, n=n, k=k), -(k / n) * gC, rtol=1e-12)
    assert torch.allclose(drift(p, th, n=n, k=k, ode="wrong"), -gC, rtol=1e-12)
    (gF,) = torch.autograd.grad(p.expected_batch_cost(th, n), th)
    (gG,) = torch.autograd.grad(p.expected_per_example(th, 1, "mean"), th)
    assert torch.allclose(drift(p, th, n=n, k=k, reduction="mean"), -(gG + k / n * gF), rtol=1e-12)
    assert torch.allclose(drift(p, th, n=n, k=k, reduction="mean", balanced=True), -(gG + gF),
                          rtol=1e-12)


def test_reference_solution_against_rk4():
    p = get_problem("mmd-gaussian")
    th0 = p.theta0(_gen(0))
    ref = solve_reference(p, th0, 0.5, n=8, k=1)
    y, h = th0.clone(), 0.5 / 400
    f = lambda y: drift(p, y, n=8, k=1)  # noqa: E731
    for _ in range(400):
        k1 = f(y); k2 = f(y + h / 2 * k1); k3 = f(y + h / 2 * k2); k4 = f(y + h * k3)  # noqa: E702
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    assert np.allclose(ref(0.5)[0], y.numpy(), atol=1e-9)
    assert np.allclose(ref(0.0)[0], th0.numpy())


# ---------------------------------------------------------------------- simulator
LOOP_CASES = [
    ("linear-gaussian", {}, dict(n=5, k=2)),
    ("linear-gaussian", {}, dict(n=4, k=1, refresh="pre", init="prior", reduction="mean",
                                 balanced=True)),
    ("mmd-gaussian", {}, dict(n=4, k=1, reduction="sqrt_mean")),
    ("position-weighted", {}, dict(n=4, k=1)),
    ("position-weighted", {"symmetrize": True}, dict(n=4, k=2, refresh="pre")),
    ("linear-gaussian", {}, dict(n=5, k=1, window="time", tau=0.03)),
    ("linear-gaussian", {}, dict(n=5, k=2, window="leak")),
    ("mmd-gaussian", {}, dict(n=4, k=1, window="leak", reduction="mean", balanced=True)),
    ("position-weighted", {}, dict(n=4, k=1, window="leak")),
    ("scalar", {}, dict(n=3, k=3)),
]


@pytest.mark.parametrize("name,params,kw", LOOP_CASES)
def test_vectorised_equals_per_replica_loop(name, params, kw):
    p = get_problem(name, **params)
    th0 = p.theta0(_gen(0))
    common = dict(eta=0.01, horizon=0.12, replicas=4, record=4, **kw)
    vec = simulate(p, th0, generator=_gen(9), **common)
    loop = simulate_loop(p, th0, generator=_gen(9), **common)
    assert vec.stable
    assert vec.thetas.shape == loop.shape == (4, 5, p.n_params)
    assert torch.allclose(vec.thetas, loop, rtol=0, atol=1e-12)
    assert not torch.allclose(vec.thetas[0], vec.thetas[1])      # replicas do differ


@settings(max_examples=8, deadline=None)
@given(n=st.integers(2, 6), kfrac=st.floats(0.0, 1.0), R=st.integers(1, 3),
       refresh=st.sampled_from(["post", "pre"]), seed=st.integers(0, 2**16))
@example(n=2, kfrac=0.0, R=2, refresh="post", seed=0)       # blows up: theta ~ 5e9
@example(n=2, kfrac=0.0, R=1, refresh="pre", seed=117)      # stable, theta ~ 1.7e4
def test_vectorised_equals_loop_property(n, kfrac, R, refresh, seed):
    k = 1 + int(kfrac * (n - 1))
    p = get_problem("linear-gaussian")
    th0 = p.theta0(_gen(seed))
    common = dict(n=n, k=k, eta=0.01, horizon=0.05, replicas=R, record=5, refresh=refresh)
    vec = simulate(p, th0, generator=_gen(seed + 1), **common)
    loop = simulate_loop(p, th0, generator=_gen(seed + 1), **common)
    if not vec.stable:
        # at n = 2 a run can blow up within the horizon (hypothesis found theta ~ 5e9 in 5
        # steps): the vectorised simulator stops at its blow-up bound (the rest is NaN), the
        # loop, which has no divergence handling, goes on; they must agree that it blew up
        assert vec.diverged >= 1 and float(loop.abs().amax()) >= 1e6 or \
            not bool(torch.isfinite(loop).all())
        return
    # equal to rounding, relative to the iterates' size: at n = 2 the step can grow theta
    # to ~1e4 within the horizon (hypothesis found it), where one ulp is ~2e-12
    assert torch.allclose(vec.thetas, loop, atol=1e-12, rtol=1e-12)


class _Replay(Draws):
    """Pre-drawn randomness: the simulator accepts any object with initial() and step()."""

    def __init__(self, init_rows, steps):
        self.init_rows, self.steps_, self.i = init_rows, steps, 0

    def initial(self, init):
        return self.init_rows

    def step(self):
        self.i += 1
        return self.steps_[self.i - 1], None


def _mow_by_hand(th0, init_x, xs, *, n, k, eta, beta, refresh="post", reduction="sum",
                 balanced=False, lag=None, weights=None):
    """One replica of MoW_k(n) on the scalar problem, written from its definition: z = theta x,
    F = ((1/n) sum_i z_i^2 - 1)^2 on the window rows then the k fresh ones,
    G = beta (x - theta x)^2, cost = (n/k if balanced else 1) F + red_j G_j, one plain gradient
    step. The window is a list, oldest first: latents pushed after the update ("post",
    re-encoded at the new theta) or before it ("pre", the latents the cost used); with ``lag``
    (window="time") it holds the n-k newest examples, encoded at a snapshot of theta taken
    after every ``lag``-th step. With ``weights`` (n,) F weighs slot i (oldest first, the
    fresh rows last) by ``weights[i]`` instead of 1/n: a position-dependent F sees the window
    in slot order. Returns theta after every step, (steps + 1, 1)."""
    def F(z):
        w = torch.full((z.shape[0],), 1.0 / z.shape[0], dtype=z.dtype) if weights is None \
            else weights
        return (((z ** 2).sum(-1) * w).sum() - 1.0) ** 2

    th, win, snap, out = th0.clone(), list(th0 * init_x), th0.clone(), [th0.clone()]
    if lag is not None:
        win = list(init_x)                                 # examples, not latents
    for s, x in enumerate(xs):
        t = th.clone().requires_grad_(True)
        frozen = torch.stack(win) if lag is None else snap * torch.stack(win)
        G = beta * (x - t * x).pow(2).sum(-1)              # (k,)
        red = G.sum() if reduction == "sum" else G.mean()
        cost = (n / k if balanced else 1.0) * F(torch.cat([frozen.detach(), t * x])) + red
        (grad,) = torch.autograd.grad(cost, t)
        new = th - eta * grad
        if lag is not None:
            win = (win + list(x))[-(n - k):]
            if (s + 1) % lag == 0:
                snap = new.clone()
        else:
            win = (win + list((th if refresh == "pre" else new) * x))[-(n - k):]
        th = new
        out.append(th.clone())
    return torch.stack(out)


@pytest.mark.parametrize("n,k,kw", [
    (4, 1, {}),
    (5, 2, dict(refresh="pre")),
    (5, 2, dict(reduction="mean", balanced=True)),
    (5, 2, dict(window="time", tau=0.025)),               # snapshot every ceil(2.5) = 3 steps
])
def test_simulator_takes_predrawn_randomness(n, k, kw):
    """simulate, fed pre-drawn examples, follows the by-hand MoW recursion of every replica
    (refresh "pre", balanced "mean" and window "time" included) to 1e-12."""
    p = get_problem("scalar")
    th0, eta, steps = p.theta0(_gen(0)), 0.01, 12
    g = _gen(4)
    init = p.sample_data((2, n - k), g)
    xs = [p.sample_data((2, k), g) for _ in range(steps)]
    a = simulate(p, th0, n=n, k=k, eta=eta, horizon=steps * eta, replicas=2, generator=_gen(0),
                 draws=_Replay(init, xs), record=steps, **kw)
    hand = dict(n=n, k=k, eta=eta, beta=p.beta)
    lag = math.ceil(kw["tau"] / eta) if "tau" in kw else None
    opts = {key: v for key, v in kw.items() if key not in ("window", "tau")}
    for r in range(2):
        want = _mow_by_hand(th0, init[r], [x[r] for x in xs], lag=lag, **opts, **hand)
        assert torch.allclose(a.thetas[r], want, rtol=0, atol=1e-12), (r, a.thetas[r], want)
        if kw:     # the option matters here: the plain recursion is measurably elsewhere
            plain = _mow_by_hand(th0, init[r], [x[r] for x in xs], **hand)
            assert (want - plain).abs().max() > 1e-6


def test_simulator_feeds_a_position_dependent_F_its_window_in_slot_order():
    """position-weighted F (not invariant): the simulator must hand F the window oldest first
    whatever the ring buffer's head; after more steps than slots the head has wrapped, so a
    window passed in buffer order differs from the by-hand recursion."""
    p = get_problem("position-weighted")
    n, k, eta, steps = 5, 1, 0.05, 11
    th0, g = p.theta0(_gen(0)), _gen(5)
    init = p.sample_data((2, n - k), g)
    xs = [p.sample_data((2, k), g) for _ in range(steps)]
    a = simulate(p, th0, n=n, k=k, eta=eta, horizon=steps * eta, replicas=2, generator=_gen(0),
                 draws=_Replay(init, xs), record=steps)
    hand = dict(n=n, k=k, eta=eta, beta=p.beta, weights=p.slot_weights(n))
    for r in range(2):
        want = _mow_by_hand(th0, init[r], [x[r] for x in xs], **hand)
        assert torch.allclose(a.thetas[r], want, rtol=0, atol=1e-12), (r, a.thetas[r], want)


def test_leak_gradient_flows_through_every_window_latent():
    """window="leak": the gradient is that of F over all n encodings at theta (+ the fresh G),
    not MoW's (window frozen); for a symmetric F its F part is, in expectation, n/k times
    MoW's."""
    p = get_problem("linear-gaussian")
    th = p.theta0(_gen(0))
    g = _gen(1)
    wx, x = p.sample_data((5,), g), p.sample_data((1,), g)
    leak, fresh = mow_gradient(p, th, None, x, None, window_x=wx)
    t = th.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(p.batch_cost(p.encode(t, torch.cat([wx, x])))
                                  + p.per_example(t, x).sum(), t)
    assert torch.allclose(leak, want, rtol=1e-12, atol=1e-14)
    assert torch.allclose(fresh, p.encode(th, x))
    frozen, _ = mow_gradient(p, th, p.encode(th, wx), x, None)
    assert not torch.allclose(frozen, leak, rtol=1e-3)
    # in expectation over i.i.d. batches: E[leak] = grad E[F_n] + k grad E[G], E[MoW] = the
    # same with (k/n) grad E[F_n]  (n = 6, k = 1; 20000 batches, vectorised)
    B = 20000
    g = _gen(2)
    wx, x = p.sample_data((B, 5), g), p.sample_data((B, 1), g)
    thB = th.expand(B, -1)
    leak = mow_gradient(p, thB, None, x, None, window_x=wx)[0].mean(0)
    mow = mow_gradient(p, thB, p.encode(thB, wx), x, None)[0].mean(0)
    t = th.clone().requires_grad_(True)
    (gF,) = torch.autograd.grad(p.expected_batch_cost(t, 6), t)
    (gG,) = torch.autograd.grad(p.expected_per_example(t, 1), t)
    assert (leak - (gF + gG)).norm() < 0.05 * gF.norm()
    assert (mow - (gF / 6 + gG)).norm() < 0.05 * gF.norm()


def test_unstable_step_size_is_flagged_not_nan():
    p = get_problem("linear-gaussian")
    sim = simulate(p, p.theta0(_gen(0)) * 3, n=8, k=1, eta=0.5, horizon=5.0, replicas=16,
                   generator=_gen(1))
    assert not sim.stable and sim.diverged > 0 and sim.diverged_at is not None


def test_simulate_argument_errors():
    p = get_problem("scalar")
    th0 = p.theta0(_gen(0))
    kw = dict(n=4, k=1, horizon=1.0, replicas=2, generator=_gen(0))
    with pytest.raises(ValueError, match="horizon / eta must be a positive integer"):
        simulate(p, th0, eta=0.3, **kw)
    with pytest.raises(ValueError, match="init must be one of"):
        simulate(p, th0, eta=0.1, init="zeros", **kw)
    with pytest.raises(ValueError, match="init must be 'encode' with window='time'"):
        simulate(p, th0, eta=0.1, init="prior", window="time", **kw)
    with pytest.raises(ValueError, match="init must be 'encode' with window='leak'.*got init='prior'"):
        simulate_loop(p, th0, eta=0.1, init="prior", window="leak", **kw)
    with pytest.raises(ValueError, match="window='leak' needs a window: k < n; got k = n = 4"):
        simulate(p, th0, eta=0.1, window="leak", **{**kw, "k": 4})
    with pytest.raises(ValueError, match="tau is the staleness of window='time'.*"
                                         "window='steps'; got tau=0.2"):
        simulate(p, th0, eta=0.1, tau=0.2, **kw)
    with pytest.raises(ValueError, match="window must be one of 'steps', 'time', 'leak'; "
                                         "got window='leaky'"):
        simulate(p, th0, eta=0.1, window="leaky", **kw)
    with pytest.raises(ValueError, match=r"theta0 must have shape \(1,\)"):
        simulate(p, torch.zeros(2, dtype=F64), eta=0.1, **kw)
    with pytest.raises(ValueError, match="k must be an integer with 1 <= k <= n = 4"):
        simulate(p, th0, eta=0.1, **{**kw, "k": 5})
