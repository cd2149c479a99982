"""The two-phase MoW step (loss, the caller's update, commit): equal to MoW.step on every
tensor, no side effect before commit, misuse refused, non-finite losses caught before the
update, and the constructor's argument checks."""
import copy

import pytest
import torch

from mowtheory import MoW, NonFiniteError, StepContext, costs
from mowtheory.frozen import FrozenWindow

D, X = 3, 5


def _build(refresh="post", cost="wae", reduction="sum", k=2, n=6, seed=0, per_example=True):
    g = torch.Generator().manual_seed(seed)
    enc = torch.nn.Linear(X, D).double()
    dec = torch.nn.Linear(D, X).double()
    with torch.no_grad():
        for p in [*enc.parameters(), *dec.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    G = (lambda x, z: (dec(z) - x).square().sum(-1)) if per_example else None
    mow = MoW(enc, costs.get(cost), n=n, k=k, latent_dim=D, per_example=G, refresh=refresh,
              reduction=reduction, generator=torch.Generator().manual_seed(seed + 1),
              dtype=torch.float64)
    opt = torch.optim.SGD([*enc.parameters(), *dec.parameters()], lr=0.05)
    return mow, enc, dec, opt


def _data(steps, k=2, n=6, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n - k, X, generator=g, dtype=torch.float64), \
        torch.randn(steps, k, X, generator=g, dtype=torch.float64)


def _state(mow, *modules):
    out = [mow.window.buffer.clone(), torch.tensor(mow.steps), mow.generator.get_state()]
    if mow.cache is not None:
        out += [mow.cache.pair_sum, mow.cache.unary_sum]
    for m in modules:
        out += [t.detach().clone() for t in m.state_dict().values()]
    return out


@pytest.mark.parametrize("refresh", ["post", "pre"])
@pytest.mark.parametrize("cost", ["wae", "cwae"])
def test_loss_then_commit_equals_step_on_every_tensor(refresh, cost):
    a, enc_a, dec_a, opt_a = _build(refresh, cost)
    b, enc_b, dec_b, opt_b = _build(refresh, cost)
    init, xs = _data(7)
    a.init_window("encode", init)
    b.init_window("encode", init)
    for x in xs:
        pa = a.step(x, opt_a)
        parts, ctx = b.loss(x)
        opt_b.zero_grad()
        parts.total.backward()
        opt_b.step()
        b.commit(ctx)
        assert torch.equal(pa.total, parts.total.detach())
    for ta, tb in zip(_state(a, enc_a, dec_a), _state(b, enc_b, dec_b)):
        assert torch.equal(ta, tb)


def test_loss_has_no_side_effect_and_post_commit_reencodes_after_the_update():
    mow, enc, dec, opt = _build("post")
    init, xs = _data(2)
    mow.init_window("encode", init)
    before = mow.window.buffer.clone()
    parts, ctx = mow.loss(xs[0])
    assert torch.equal(mow.window.buffer, before) and mow.steps == 0
    parts.total.backward()
    opt.step()
    mow.commit(ctx)
    with torch.no_grad():
        expect = enc(xs[0])          # at the parameters after the update
    assert torch.equal(mow.window.ordered()[-2:], expect)
    assert not torch.equal(expect, ctx.fresh)


def test_pre_commit_stores_the_latents_of_the_loss():
    mow, enc, dec, opt = _build("pre")
    init, xs = _data(1)
    mow.init_window("encode", init)
    parts, ctx = mow.loss(xs[0])
    parts.total.backward()
    opt.step()
    mow.commit(ctx)
    assert torch.equal(mow.window.ordered()[-2:], ctx.fresh)


def test_misuse_is_refused_with_a_message_naming_it():
    mow, enc, dec, opt = _build()
    other, *_ = _build()
    init, xs = _data(3)
    mow.init_window("encode", init)
    other.init_window("encode", init)
    parts, ctx = mow.loss(xs[0])
    with pytest.raises(RuntimeError, match="twice without commit"):
        mow.loss(xs[1])
    with pytest.raises(ValueError, match="another MoW"):
        other.commit(ctx)
    with pytest.raises(TypeError, match="StepContext"):
        mow.commit((ctx.x, ctx.fresh))
    mow.commit(ctx)
    with pytest.raises(RuntimeError, match="stale"):
        mow.commit(ctx)
    parts, ctx2 = mow.loss(xs[1])
    mow.discard(ctx2)
    with pytest.raises(RuntimeError, match="stale"):
        mow.commit(ctx2)
    mow.loss(xs[2])                  # discard released the pending step


def test_a_failed_backward_drops_the_pending_step():
    mow, enc, dec, opt = _build()
    init, xs = _data(2)
    mow.init_window("encode", init)

    class Boom(torch.optim.SGD):
        def step(self, closure=None):
            raise OSError("disk on fire")
    bad = Boom(enc.parameters(), lr=0.1)
    before = mow.window.buffer.clone()
    with pytest.raises(OSError):
        mow.step(xs[0], bad)
    assert torch.equal(mow.window.buffer, before) and mow.steps == 0
    mow.step(xs[1], opt)             # no pending step left behind
    assert mow.steps == 1


def test_sqrt_mean_has_a_finite_gradient_when_every_cost_is_zero():
    enc = torch.nn.Linear(X, D).double()
    mow = MoW(enc, costs.get("cwae"), n=6, k=2, latent_dim=D, reduction="sqrt_mean",
              per_example=lambda x, z: (z * 0).sum(-1), dtype=torch.float64)
    init, xs = _data(1)
    mow.init_window("encode", init)
    parts, ctx = mow.loss(xs[0])
    parts.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters())
    assert float(parts.per_example.detach()) == 0.0


@pytest.mark.parametrize("bad", ["nan", "negative"])
def test_non_finite_or_negative_costs_stop_the_step_before_the_update(bad):
    mow, enc, dec, opt = _build(reduction="sqrt_mean")
    value = float("nan") if bad == "nan" else -1.0
    mow.per_example = lambda x, z: (dec(z) - x).square().sum(-1) * 0 + value
    init, xs = _data(2)
    mow.init_window("encode", init)
    before = _state(mow, enc, dec)
    with pytest.raises(NonFiniteError) as info:
        mow.step(xs[0], opt)
    assert info.value.step == 0
    after = _state(mow, enc, dec)
    del before[2], after[2]          # the generator has drawn the step's prior sample
    for t0, t1 in zip(before, after):
        assert torch.equal(t0, t1)   # weights, window and step count as before the step
    mow.per_example = lambda x, z: (dec(z) - x).square().sum(-1)
    mow.step(xs[1], opt)             # and the MoW is usable again


def test_nan_is_not_hidden_by_the_safe_square_root():
    from mowtheory.mow import reduce_per_example
    G = torch.tensor([[float("nan"), 1.0], [0.0, 0.0], [-1.0, -3.0], [4.0, 0.0]])
    out = reduce_per_example(G, "sqrt_mean")
    assert torch.isnan(out[0]) and out[1] == 0 and out[2] == 0 and out[3] == 2 ** 0.5


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(encoder=3), TypeError, "encoder must be callable"),
    (dict(cost="cwae"), TypeError, "cost must be"),
    (dict(per_example=1.5), TypeError, "per_example must be"),
    (dict(balanced="False"), TypeError, "balanced must be a bool"),
    (dict(exact_value="no"), TypeError, "exact_value must be a bool"),
    (dict(check_finite=1), TypeError, "check_finite must be"),
    (dict(generator=0), TypeError, "generator must be a torch.Generator"),
    (dict(k=7), ValueError, "k must be"),
    (dict(refresh="later"), ValueError, "refresh must be one of"),
])
def test_constructor_refuses_bad_arguments(kwargs, exc, words):
    args = dict(encoder=torch.nn.Linear(X, D), cost=costs.get("cwae"), n=6, k=2, latent_dim=D)
    args.update(kwargs)
    encoder = args.pop("encoder")
    cost = args.pop("cost")
    with pytest.raises(exc, match=words):
        MoW(encoder, cost, **args)


def test_wrong_latent_dim_and_bad_per_example_are_named_at_first_use():
    init, xs = _data(1)
    mow = MoW(torch.nn.Linear(X, D).double(), costs.get("cwae"), n=6, k=2, latent_dim=D + 1,
              dtype=torch.float64)
    mow.init_window("prior")
    with pytest.raises(ValueError, match="latent_dim"):
        mow.loss(xs[0])
    mow = MoW(torch.nn.Linear(X, D).double(), costs.get("cwae"), n=6, k=2, latent_dim=D,
              per_example=lambda x, z: z.sum(), dtype=torch.float64)
    mow.init_window("prior")
    with pytest.raises(ValueError, match="per_example must return one cost per fresh"):
        mow.loss(xs[0])
    with pytest.raises(ValueError, match="k = 2 fresh examples"):
        mow.loss(xs[0][:1])
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        mow.step(xs[0], None)


def test_state_of_another_cost_or_a_broken_state_is_refused():
    a, *_ = _build(cost="wae")
    b, *_ = _build(cost="energy")
    init, _ = _data(0)
    a.init_window("encode", init)
    state = a.state_dict()
    with pytest.raises(ValueError, match="another MoW configuration"):
        b.load_state_dict(state)
    broken = dict(state)
    del broken["window"]
    with pytest.raises(ValueError, match="missing"):
        a.load_state_dict(broken)
    bad_steps = copy.deepcopy(state)
    bad_steps["steps"] = -3
    with pytest.raises(ValueError, match="steps"):
        a.load_state_dict(bad_steps)
    legacy = copy.deepcopy(state)
    del legacy["config"]["cost"]     # saved before the cost was recorded: accepted
    a.load_state_dict(legacy)


def test_frozen_window_cache_follows_every_slide_and_keeps_the_newest_rows():
    """k > m: only the m newest latents stay, and the cache must describe exactly them."""
    cost = costs.get("wae")
    fw = FrozenWindow(cost, n=5, k=3, dim=D, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    fw.fill(torch.randn(2, D, generator=g, dtype=torch.float64))
    for _ in range(4):
        fw.push(torch.randn(3, D, generator=g, dtype=torch.float64))
        exact = cost.init_cache(fw.window.buffer, n=5)
        assert torch.allclose(fw.cache.pair_sum, exact.pair_sum, rtol=1e-12, atol=0)
    assert isinstance(StepContext(None, None, 0, 0), tuple)


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(dtype=torch.int64), TypeError, "dtype must be torch.float32 or torch.float64"),
    (dict(dtype=torch.float16), TypeError, "dtype must be"),
    (dict(batch_shape=(-1,)), ValueError, "batch_shape must be an integer with 0 <="),
    (dict(batch_shape=3), TypeError, "batch_shape must be a sequence"),
])
def test_latent_window_refuses_bad_dtype_and_batch_shape(kwargs, exc, words):
    from mowtheory import LatentWindow
    with pytest.raises(exc, match=words):
        LatentWindow(4, 1, 2, **kwargs)


def test_any_object_with_zero_grad_and_step_is_an_optimizer():
    mow, enc, dec, opt = _build()
    init, xs = _data(1)
    mow.init_window("encode", init)

    class Manual:
        def zero_grad(self, set_to_none=True):
            opt.zero_grad(set_to_none=set_to_none)

        def step(self):
            opt.step()
    mow.step(xs[0], Manual())
    assert mow.steps == 1
