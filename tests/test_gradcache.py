"""mowtheory.gradcache: the gradient of a GradCache step is the plain n-batch gradient (float64,
every registered cost, every reduction, several chunk sizes), its memory is that of one chunk,
it reads no tensor value on the host; planted faults (a dropped chain-rule factor, a
chunk-local mean, a dropped F-term, a kept graph) are caught."""
import pytest
import torch

from mowtheory import costs as C
from mowtheory import gradcache as gc
from mowtheory.bench import step as bench_step
from mowtheory.gradcache import GradCache, Minibatch, gradcache_backward
from mowtheory.mow import REDUCTIONS, standard_normal_prior
from mowtheory.memory import TensorPeak

N, D, X = 7, 3, 5
DT = torch.float64


def _net(seed=0):
    torch.manual_seed(seed)
    enc = torch.nn.Sequential(torch.nn.Linear(X, 6), torch.nn.Tanh(), torch.nn.Linear(6, D))
    dec = torch.nn.Sequential(torch.nn.Linear(D, 6), torch.nn.Tanh(), torch.nn.Linear(6, X))
    enc, dec = enc.to(DT), dec.to(DT)

    def G(x, z):
        return (dec(z) - x).pow(2).sum(-1)
    return enc, dec, G


def _cost(name):
    # swae draws random directions from its generator at each call: seed it identically for
    # the reference and for GradCache (each calls F once)
    if name == "swae":
        return C.get(name, n_directions=8, generator=torch.Generator().manual_seed(3))
    return C.get(name)


def _x(n=N, seed=1):
    return torch.randn(n, X, generator=torch.Generator().manual_seed(seed), dtype=DT)


def _reference_grads(name, reduction, x, enc, dec, G):
    """Plain autograd of F(E(x); V) + red(G) over the n examples, written out here."""
    cost = _cost(name)
    z = enc(x)
    args = (z,)
    if cost.needs_prior:
        args += (standard_normal_prior(len(x), D, generator=torch.Generator().manual_seed(5),
                                       dtype=DT, device="cpu"),)
    g = G(x, z)
    red = {"sum": g.sum(), "mean": g.mean(), "sqrt_mean": g.mean().sqrt()}[reduction]
    total = cost(*args) + red
    params = list(enc.parameters()) + list(dec.parameters())
    return list(torch.autograd.grad(total, params)), float(total.detach())


def _gradcache_grads(name, reduction, x, enc, dec, G, chunk):
    cost = _cost(name)
    step = GradCache(enc, cost, n=len(x), chunk=chunk, per_example=G, reduction=reduction,
                     generator=torch.Generator().manual_seed(5))
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.SGD(params, lr=0.0)
    parts = step.step(x, opt)
    return [p.grad.clone() for p in params], parts


def _max_rel_err(a, b):
    scale = max(max(float(t.abs().max()) for t in b), 1e-300)
    return max(float((s - t).abs().max()) for s, t in zip(a, b)) / scale


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", C.names())
def test_gradient_is_the_n_batch_gradient(name, reduction):
    enc, dec, G = _net()
    x = _x()
    ref, total = _reference_grads(name, reduction, x, enc, dec, G)
    for chunk in (1, 3, N):
        got, parts = _gradcache_grads(name, reduction, x, enc, dec, G, chunk)
        assert _max_rel_err(got, ref) <= 1e-10, (name, reduction, chunk)
        assert abs(float(parts.total) - total) <= 1e-10 * max(1.0, abs(total))
        assert not parts.total.requires_grad


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_minibatch_step_is_the_n_batch_step(reduction):
    enc, dec, G = _net()
    x = _x()
    ref, total = _reference_grads("wae", reduction, x, enc, dec, G)
    params = list(enc.parameters()) + list(dec.parameters())
    step = Minibatch(enc, _cost("wae"), n=N, per_example=G, reduction=reduction,
                     generator=torch.Generator().manual_seed(5))
    parts = step.step(x, torch.optim.SGD(params, lr=0.0))
    assert _max_rel_err([p.grad for p in params], ref) <= 1e-12
    assert abs(float(parts.total) - total) <= 1e-12 * max(1.0, abs(total))


def test_user_callable_F_and_no_per_example_term():
    enc, dec, G = _net()
    x = _x()

    def F(z):                                   # not permutation-invariant on purpose
        return (z[0] * z[-1]).sum() + z.pow(3).mean()
    total = F(enc(x))
    ref = torch.autograd.grad(total, list(enc.parameters()))
    gradcache_backward(enc, F, x, chunk=2)
    assert _max_rel_err([p.grad for p in enc.parameters()], ref) <= 1e-10


def test_steps_update_like_the_n_batch_optimizer():
    """Five Adam steps of GradCache(c=2) and of Minibatch give the same parameters (the prior
    generator advances alike; the optimizer state is the same)."""
    out = []
    for cls, kw in ((Minibatch, {}), (GradCache, {"chunk": 2})):
        enc, dec, G = _net()
        params = list(enc.parameters()) + list(dec.parameters())
        opt = torch.optim.Adam(params, lr=1e-2)
        s = cls(enc, _cost("wae"), n=N, per_example=G, reduction="sqrt_mean",
                generator=torch.Generator().manual_seed(5), **kw)
        for i in range(5):
            s.step(_x(seed=10 + i), opt)
        out.append([p.detach().clone() for p in params])
        assert s.steps == 5
    assert _max_rel_err(out[1], out[0]) <= 1e-10


# ------------------------------------------------------------------------ planted faults
def _fault_drop_sqrt_factor(monkeypatch):
    real = gc.per_example_coefficient
    monkeypatch.setattr(gc, "per_example_coefficient",
                        lambda G, reduction, n: 1.0 / n if reduction == "sqrt_mean"
                        else real(G, reduction, n))


def _fault_chunk_local_mean(monkeypatch):
    """sqrt_mean with each chunk's own mean (the chunks not coupled): pass 1's G replaced by
    a copy whose first chunk differs."""
    real = gc.per_example_coefficient

    def local(G, reduction, n):
        if reduction != "sqrt_mean":
            return real(G, reduction, n)
        return real(G[:1], reduction, n)        # the mean of the first chunk only
    monkeypatch.setattr(gc, "per_example_coefficient", local)


def _fault_drop_F(monkeypatch):
    real = gc.batch_cost_gradient

    def no_F(F, z, prior, **kw):
        f, g = real(F, z, prior, **kw)
        return f, torch.zeros_like(g)
    monkeypatch.setattr(gc, "batch_cost_gradient", no_F)


@pytest.mark.parametrize("fault", [_fault_drop_sqrt_factor, _fault_chunk_local_mean,
                                   _fault_drop_F])
def test_planted_faults_are_caught_by_the_equality_check(fault, monkeypatch):
    enc, dec, G = _net()
    x = _x()
    ref, _ = _reference_grads("cwae", "sqrt_mean", x, enc, dec, G)
    got, _ = _gradcache_grads("cwae", "sqrt_mean", x, enc, dec, G, 1)
    assert _max_rel_err(got, ref) <= 1e-10                      # clean
    fault(monkeypatch)
    got, _ = _gradcache_grads("cwae", "sqrt_mean", x, enc, dec, G, 1)
    assert _max_rel_err(got, ref) > 1e-6                        # planted fault: seen


# ------------------------------------------------------------------------ memory
def _conv_net():
    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.Tanh(),
                              torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.Tanh(),
                              torch.nn.Flatten(), torch.nn.LazyLinear(4))
    enc(torch.zeros(1, 1, 32, 32))
    return enc


def _peak(make_step, n):
    enc = _conv_net()
    x = torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(enc.parameters(), lr=1e-3)

    def G(x, z):
        return z.pow(2).sum(-1)
    step = make_step(enc, G)
    step.step(x, opt)                                # gradients exist: steady state
    with TensorPeak() as tp:
        step.step(x, opt)
    return tp.peak_bytes


def test_memory_is_that_of_one_chunk():
    """Tensor peak of a step (parameters and gradients existed before): GradCache(n=32, c=2)
    is about Minibatch(n=2) (+ the n latents), far below Minibatch(n=32)."""
    n, c = 32, 2
    gcache = _peak(lambda e, G: GradCache(e, C.get("cwae"), n=n, chunk=c, per_example=G,
                                          reduction="sqrt_mean"), n)
    small = _peak(lambda e, G: Minibatch(e, C.get("cwae"), n=c, per_example=G,
                                         reduction="sqrt_mean"), c)
    big = _peak(lambda e, G: Minibatch(e, C.get("cwae"), n=n, per_example=G,
                                       reduction="sqrt_mean"), n)
    if None in (gcache, small, big):
        pytest.skip("this torch does not report allocator totals to the profiler")
    assert 0.5 * small <= gcache <= 2.0 * small, (gcache, small, big)
    assert big >= 5 * gcache, (gcache, small, big)


def test_memory_check_sees_a_kept_graph(monkeypatch):
    """Planted fault: pass 2 keeping every chunk's graph (one backward at the end) must fail
    the one-chunk memory bound."""
    real = gc.gradcache_backward

    class Keep(GradCache):
        def step(self, x, optimizer):
            kept = []
            orig = torch.Tensor.backward

            def deferred(t, *a, **kw):
                kept.append(t)
            monkeypatch.setattr(torch.Tensor, "backward", deferred)
            try:
                parts = real(self.encoder, self.cost, x, chunk=self.chunk,
                             per_example=self.per_example, reduction=self.reduction)
            finally:
                monkeypatch.setattr(torch.Tensor, "backward", orig)
            torch.stack(kept).sum().backward()
            optimizer.step()
            return parts

    n, c = 32, 2
    kept = _peak(lambda e, G: Keep(e, C.get("cwae"), n=n, chunk=c, per_example=G,
                                   reduction="sqrt_mean"), n)
    small = _peak(lambda e, G: Minibatch(e, C.get("cwae"), n=c, per_example=G,
                                         reduction="sqrt_mean"), c)
    if None in (kept, small):
        pytest.skip("this torch does not report allocator totals to the profiler")
    assert kept > 2.0 * small


# ------------------------------------------------------------------------ host reads, input
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", ["wae", "cwae", "gmmn"])
def test_step_reads_no_tensor_value_on_the_host(name, reduction):
    enc, dec, G = _net()
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    for s in (GradCache(enc, C.get(name), n=N, chunk=3, per_example=G, reduction=reduction),
              Minibatch(enc, C.get(name), n=N, per_example=G, reduction=reduction)):
        with bench_step.HostReads(raise_=True, accelerator_path=True) as h:
            s.step(_x(), opt)
        assert h.reads == []


def test_bad_input_names_the_argument():
    enc, dec, G = _net()
    with pytest.raises(ValueError, match=r"chunk.*8"):
        GradCache(enc, C.get("wae"), n=N, chunk=8)
    with pytest.raises(ValueError, match="chunk"):
        GradCache(enc, C.get("wae"), n=N, chunk=0)
    with pytest.raises(ValueError, match="reduction"):
        Minibatch(enc, C.get("wae"), n=N, reduction="median")
    with pytest.raises(TypeError, match="generator must be a torch.Generator.*got generator=3"):
        GradCache(enc, C.get("wae"), n=N, chunk=2, generator=3)
    with pytest.raises(TypeError, match="cost must be a BatchCost .* or a callable F.*; got cost='wae'"):
        Minibatch(enc, "wae", n=N)
    s = GradCache(enc, C.get("wae"), n=N, chunk=2)
    with pytest.raises(ValueError, match=r"n = 7 examples.*got 3"):
        s.step(_x(3), torch.optim.SGD(enc.parameters(), lr=0.0))
    state = s.state_dict()
    other = GradCache(enc, C.get("wae"), n=N, chunk=3)
    with pytest.raises(ValueError, match="another configuration"):
        other.load_state_dict(state)
