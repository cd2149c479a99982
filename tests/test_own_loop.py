"""MoW in the caller's own loop: gradient accumulation (against a direct computation of the
accumulated gradient from the window contents), mixed precision (bf16 autocast keeps the cost
and the window in float32; a GradScaler path), and torch.compile (no graph break in the loss
on the default path; compiled equals eager)."""
import pytest
import torch

from mowtheory import MoW, NonFiniteError, costs
from mowtheory.accumulate import accumulation_step

D, X, H = 3, 5, 8


def _build(refresh="post", *, dtype=torch.float64, cost="cwae", k=2, n=7, seed=0, lr=0.05):
    torch.manual_seed(seed)
    enc = torch.nn.Sequential(torch.nn.Linear(X, H), torch.nn.Tanh(), torch.nn.Linear(H, D))
    dec = torch.nn.Linear(D, X)
    enc, dec = enc.to(dtype), dec.to(dtype)
    mow = MoW(enc, costs.get(cost), n=n, k=k, latent_dim=D, refresh=refresh,
              per_example=lambda x, z: (dec(z) - x).square().sum(-1),
              generator=torch.Generator().manual_seed(seed + 1), dtype=dtype)
    opt = torch.optim.SGD([*enc.parameters(), *dec.parameters()], lr=lr)
    return mow, enc, dec, opt


def _data(updates, A, *, k=2, n=7, dtype=torch.float64):
    g = torch.Generator().manual_seed(9)
    return (torch.randn(n - k, X, generator=g, dtype=dtype),
            torch.randn(updates, A, k, X, generator=g, dtype=dtype))


def _params(*modules):
    return [p for m in modules for p in m.parameters()]


# ----------------------------------------------------------------------------- accumulation
@pytest.mark.parametrize("refresh", ["post", "pre"])
@pytest.mark.parametrize("average", [True, False])
def test_accumulated_update_equals_the_direct_computation(refresh, average):
    """Two updates of A = 3 blocks against a hand computation: block a's loss is F on
    cat(window_a, E(x_a)) (full evaluation, no cache) + sum G, window_{a+1} is window_a
    without its k oldest rows plus the latents of block a (at theta_l before the update;
    post: the last block's at theta_{l+1})."""
    A, k = 3, 2
    mow, enc, dec, opt = _build(refresh)
    init, xs = _data(2, A)
    mow.init_window("encode", init)
    F = costs.get("cwae")
    window = init.detach().clone()
    with torch.no_grad():
        window = enc(window)
    theta = [p.detach().clone() for p in _params(enc, dec)]
    for blocks in xs:
        # --- by hand, on copies of the parameters
        grads = [torch.zeros_like(t) for t in theta]
        for a, x in enumerate(blocks):
            with torch.no_grad():
                for p, t in zip(_params(enc, dec), theta):
                    p.copy_(t)
            leaves = _params(enc, dec)
            z = enc(x)
            total = F(torch.cat([window, z])) + (dec(z) - x).square().sum(-1).sum()
            gs = torch.autograd.grad(total, leaves)
            for acc, g in zip(grads, gs):
                acc += g / A if average else g
            if a < A - 1 or refresh == "pre":
                window = torch.cat([window[k:], z.detach()])
        theta_next = [t - 0.05 * g for t, g in zip(theta, grads)]
        if refresh == "post":
            with torch.no_grad():
                for p, t in zip(_params(enc, dec), theta_next):
                    p.copy_(t)
                window = torch.cat([window[k:], enc(blocks[-1])])
        # --- the helper, from theta
        with torch.no_grad():
            for p, t in zip(_params(enc, dec), theta):
                p.copy_(t)
        parts = accumulation_step(mow, blocks, opt, average=average)
        assert len(parts) == A and mow.steps % A == 0
        for p, t in zip(_params(enc, dec), theta_next):
            torch.testing.assert_close(p.detach(), t, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(mow.window.ordered(), window, rtol=1e-12, atol=1e-12)
        theta = theta_next


def test_one_block_is_exactly_mow_step():
    a, enc_a, dec_a, opt_a = _build()
    b, enc_b, dec_b, opt_b = _build()
    init, xs = _data(4, 1)
    a.init_window("encode", init)
    b.init_window("encode", init)
    for blocks in xs:
        pa = a.step(blocks[0], opt_a)
        (pb,) = accumulation_step(b, blocks, opt_b)
        assert torch.equal(pa.total, pb.total)
    assert torch.equal(a.window.buffer, b.window.buffer)
    for p, q in zip(_params(enc_a, dec_a), _params(enc_b, dec_b)):
        assert torch.equal(p, q)


def test_clipping_bounds_the_update_and_bad_arguments_are_named():
    mow, enc, dec, opt = _build(lr=1.0)
    init, xs = _data(1, 2)
    mow.init_window("encode", init)
    before = [p.detach().clone() for p in _params(enc, dec)]
    accumulation_step(mow, xs[0], opt, max_norm=1e-3)
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(_params(enc, dec), before)])
    assert 0 < float(step.norm()) <= 1e-3 * (1 + 1e-9)       # lr 1: |update| = clipped norm
    with pytest.raises(ValueError, match="max_norm"):
        accumulation_step(mow, xs[0], opt, max_norm=0)
    with pytest.raises(ValueError, match="at least one k-block"):
        accumulation_step(mow, [], opt)
    with pytest.raises(TypeError, match="optimizer must be"):
        accumulation_step(mow, xs[0], None)
    with pytest.raises(TypeError, match="average must be a bool"):
        accumulation_step(mow, xs[0], opt, average=1)


def test_a_non_finite_block_stops_before_the_update():
    mow, enc, dec, opt = _build()
    init, xs = _data(1, 3)
    mow.init_window("encode", init)
    blocks = xs[0].clone()
    blocks[2, 0, 0] = 1e3                      # G of that block is NaN (the latents are finite)
    G = mow.per_example
    mow.per_example = lambda x, z: G(x, z) * (float("nan") if bool((x > 100).any()) else 1.0)
    before = [p.detach().clone() for p in _params(enc, dec)]
    with pytest.raises(NonFiniteError):
        accumulation_step(mow, blocks, opt)
    assert mow.steps == 2                      # blocks 0 and 1 committed, block 2 dropped
    for p, b in zip(_params(enc, dec), before):
        assert torch.equal(p, b)
    accumulation_step(mow, xs[0], opt)         # usable again: no pending loss left


# ----------------------------------------------------------------------------- mixed precision
def _bf16_run(refresh, steps=6, *, scaler=None):
    mow, enc, dec, opt = _build(refresh, dtype=torch.float32)
    init, xs = _data(steps, 1, dtype=torch.float32)
    mow.init_window("encode", init)
    dtypes = set()
    for blocks in xs:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            parts, ctx = mow.loss(blocks[0])
            z = enc(blocks[0])
        dtypes.add((z.dtype, parts.total.dtype, parts.batch_cost.dtype, parts.per_example.dtype))
        opt.zero_grad()
        if scaler is None:
            parts.total.backward()
            opt.step()
        else:
            scaler.scale(parts.total).backward()
            scaler.step(opt)
            scaler.update()
        mow.commit(ctx)
    return mow, _params(enc, dec), dtypes


@pytest.mark.parametrize("refresh", ["post", "pre"])
def test_bf16_autocast_keeps_cost_and_window_in_float32_and_tracks_float32(refresh):
    mow, params, dtypes = _bf16_run(refresh)
    # the encoder runs in bf16, the cost, the loss and the window stay float32
    assert dtypes == {(torch.bfloat16, torch.float32, torch.float32, torch.float32)}
    assert mow.window.buffer.dtype == torch.float32
    ref, enc, dec, opt = _build(refresh, dtype=torch.float32)
    init, xs = _data(6, 1, dtype=torch.float32)
    ref.init_window("encode", init)
    for blocks in xs:
        ref.step(blocks[0], opt)
    # bf16 has an 8-bit mantissa: relative agreement of about 1e-2 after 6 steps, not 1e-6
    for p, q in zip(params, _params(enc, dec)):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0.05, atol=0.02)
    torch.testing.assert_close(mow.window.buffer, ref.window.buffer, rtol=0.05, atol=0.05)
    assert not torch.equal(mow.window.buffer, ref.window.buffer)      # bf16 did run


def test_under_autocast_F_and_the_reduction_are_float32_on_the_low_precision_latents():
    """Blocks large enough for the Gram form of the distances (a matmul, which autocast would
    run in bf16): F and the reduced G under autocast equal their float32 evaluation on the
    bf16 latents cast to float32 (only the encoder and G were in bf16)."""
    from mowtheory import mow_loss
    k, n, dim = 64, 320, 8
    torch.manual_seed(0)
    enc = torch.nn.Linear(X, dim)
    mow = MoW(enc, costs.get("cwae"), n=n, k=k, latent_dim=dim, reduction="mean",
              per_example=lambda x, z: (z + 1).square().sum(-1))    # bf16 under autocast
    g = torch.Generator().manual_seed(2)
    mow.init_window("encode", torch.randn(n - k, X, generator=g))
    x = torch.randn(k, X, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        parts, ctx = mow.loss(x)
        G16 = mow.per_example(x, ctx.fresh)
    assert ctx.fresh.dtype == G16.dtype == torch.bfloat16
    ref = mow_loss(costs.get("cwae"), ctx.fresh.float(), mow.window.ordered(),
                   G16.float(), reduction="mean")
    for got, want in zip(parts, ref):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.detach(), want, rtol=1e-6, atol=1e-6)


def test_grad_scaler_on_cpu_matches_the_unscaled_run():
    """A GradScaler multiplies the loss by 2^16 and divides the gradients back: in float32
    under bf16 autocast the parameters equal the unscaled run to float rounding."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    _, p_scaled, _ = _bf16_run("post", scaler=scaler)
    _, p_plain, _ = _bf16_run("post")
    for p, q in zip(p_scaled, p_plain):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert scaler.get_scale() == 2.0 ** 16                 # no inf/NaN step was skipped


def test_accumulation_with_a_grad_scaler_equals_without():
    a, enc_a, dec_a, opt_a = _build(dtype=torch.float32)
    b, enc_b, dec_b, opt_b = _build(dtype=torch.float32)
    init, xs = _data(2, 2, dtype=torch.float32)
    a.init_window("encode", init)
    b.init_window("encode", init)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    for blocks in xs:
        accumulation_step(a, blocks, opt_a, scaler=scaler, max_norm=10.0)
        accumulation_step(b, blocks, opt_b, max_norm=10.0)
    for p, q in zip(_params(enc_a, dec_a), _params(enc_b, dec_b)):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- torch.compile
def test_the_loss_compiles_without_graph_breaks_on_the_default_path():
    """The default cost (cwae, no prior sample): mow.loss is one graph."""
    torch._dynamo.reset()
    mow, *_ = _build(dtype=torch.float32)
    init, xs = _data(1, 1, dtype=torch.float32)
    mow.init_window("encode", init)
    explained = torch._dynamo.explain(mow.loss)(xs[0, 0])
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def _compiled_equals_eager(backend, steps):
    torch._dynamo.reset()
    a, enc_a, dec_a, opt_a = _build()
    b, enc_b, dec_b, opt_b = _build()
    init, xs = _data(steps, 1)
    a.init_window("encode", init)
    b.init_window("encode", init)
    loss = torch.compile(b.loss, backend=backend, fullgraph=True)
    for blocks in xs:
        a.step(blocks[0], opt_a)
        parts, ctx = loss(blocks[0])
        opt_b.zero_grad()
        parts.total.backward()
        opt_b.step()
        b.commit(ctx)
    assert b.steps == steps
    torch.testing.assert_close(a.window.buffer, b.window.buffer, rtol=1e-12, atol=1e-12)
    for p, q in zip(_params(enc_a, dec_a), _params(enc_b, dec_b)):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


def test_compiled_loss_equals_eager_aot_eager():
    """fullgraph=True through AOT autograd (the inductor backend's front end, without its
    C++ code generation, which takes minutes on a small CPU): same parameters and window."""
    _compiled_equals_eager("aot_eager", steps=4)


@pytest.mark.slow
def test_compiled_loss_equals_eager_inductor():
    _compiled_equals_eager("inductor", steps=4)


@pytest.mark.slow
def test_bench_compile_rows_report_no_graph_break_and_both_timings():
    """Slow (~20 s: two traced graphs of the digits model through AOT autograd)."""
    from mowtheory.bench import compile_step
    torch.manual_seed(0)
    row = compile_step.measure("digits", "cwae", n=8, k=2, reps=1, budget_s=0.005,
                               backend="aot_eager")
    assert row["graph_breaks"] == 0
    assert row["eager_s"] > 0 and row["compiled_s"] > 0
    assert row["speedup"] == row["eager_s"] / row["compiled_s"]
    table = compile_step.format_results([row])
    assert "| digits | cwae | cpu | 8 | 2 |" in table and f"{row['speedup']:.2f}x" in table
