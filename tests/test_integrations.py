"""MoW under PyTorch Lightning (automatic and manual optimisation, checkpoint resume) and
Hugging Face Accelerate (one process; two CPU processes with gloo), through the examples'
own modules: each run equals the reference :meth:`MoW.step` loop on every tensor (float64,
to float rounding), and each example runs at tiny size."""
import importlib
import math
import runpy
import sys
from pathlib import Path

import pytest
import torch

from mowtheory import MoW, costs

L = pytest.importorskip("lightning")
pytest.importorskip("accelerate")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
AUTO = runpy.run_path(str(EXAMPLES / "lightning_automatic.py"))
MANUAL = runpy.run_path(str(EXAMPLES / "lightning_manual.py"))
sys.path.insert(0, str(EXAMPLES))          # a module: its spawned ranks must import it
ACC = vars(importlib.import_module("accelerate_loop"))
sys.path.remove(str(EXAMPLES))
N, K, STEPS = 9, 2, 6
TOL = {"rtol": 1e-12, "atol": 1e-12}


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Accelerate keeps one process-wide state (mixed precision, device); reset it between
    tests as accelerate's own test cases do."""
    yield
    from accelerate.state import AcceleratorState, GradientState
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _x(rows):
    return AUTO["data"](rows, dtype=torch.float64)


def _reference(module, x, steps, opt=None):
    """The same module and window stepped by ``MoW.step``."""
    opt = opt or module.configure_optimizers()
    module.mow.init_window("encode", x[:N - K])
    for s in range(steps):
        module.mow.step(x[N - K + s * K:N - K + (s + 1) * K], opt)
    return module, opt


def _fit(module, x, steps, **kwargs):
    loader = torch.utils.data.DataLoader(x[N - K:N - K + steps * K], batch_size=K,
                                         shuffle=False)
    ckpt = kwargs.pop("ckpt_path", None)
    trainer = AUTO["trainer"](kwargs.pop("max_steps", steps), **kwargs)
    trainer.fit(module, loader, ckpt_path=ckpt)
    return trainer


def _same(a, b):
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, **TOL, msg=name)
    torch.testing.assert_close(a.mow.window.buffer, b.mow.window.buffer, **TOL)
    assert a.mow.steps == b.mow.steps
    assert torch.equal(a.mow.generator.get_state(), b.mow.generator.get_state())


@pytest.mark.parametrize("which", ["automatic", "manual"])
def test_lightning_equals_mow_step(which):
    x = _x(N + STEPS * K)
    cls = AUTO["MoWAutoencoder"] if which == "automatic" else MANUAL["ManualMoWAutoencoder"]
    build = lambda: cls(x[:N - K], n=N, k=K, lr=0.002, momentum=0.9).double()
    ref, _ = _reference(build(), x, STEPS)
    module = build()
    _fit(module, x, STEPS)
    assert module.mow.steps == STEPS
    _same(module, ref)
    assert not torch.equal(module.enc[0].weight, build().enc[0].weight)     # it trained


def test_lightning_accumulation_commits_every_batch_and_steps_every_second():
    """accumulate_grad_batches=2: Lightning scales each loss by 1/2 and steps every second
    batch; on_train_batch_end commits every batch: mowtheory.accumulate's semantics."""
    from mowtheory.accumulate import accumulation_step
    x = _x(N + 2 * STEPS * K)
    build = lambda: AUTO["MoWAutoencoder"](x[:N - K], n=N, k=K, lr=0.002,
                                           momentum=0.9).double()
    ref = build()
    opt = ref.configure_optimizers()
    ref.mow.init_window("encode", x[:N - K])
    blocks = x[N - K:N - K + 2 * STEPS * K].reshape(STEPS, 2, K, -1)
    for b in blocks:
        accumulation_step(ref.mow, b, opt)
    module = build()
    _fit(module, x, 2 * STEPS, max_steps=STEPS, accumulate_grad_batches=2)
    _same(module, ref)


def test_lightning_checkpoint_resume_restores_every_tensor(tmp_path):
    """One epoch, checkpoint, resume for a second epoch == two epochs straight: weights,
    optimizer state, window (buffer, head, count), step count and prior generator."""
    x = _x(N + STEPS * K)
    build = lambda: AUTO["MoWAutoencoder"](x[:N - K], n=N, k=K, lr=0.002,
                                           momentum=0.9).double()
    straight = build()
    t_straight = _fit(straight, x, STEPS, max_steps=-1, max_epochs=2)
    first = build()
    t_first = _fit(first, x, STEPS, max_steps=-1, max_epochs=1)
    path = tmp_path / "epoch1.ckpt"
    t_first.save_checkpoint(path)
    saved = torch.load(path, weights_only=False)
    assert saved["mow"]["steps"] == STEPS and "buffer" in saved["mow"]["window"]
    resumed = build()
    t_resumed = _fit(resumed, x, STEPS, max_steps=-1, max_epochs=2, ckpt_path=str(path))
    assert resumed.mow.steps == 2 * STEPS
    _same(resumed, straight)
    sa, sb = resumed.mow.state_dict(), straight.mow.state_dict()
    assert sa["window"]["head"] == sb["window"]["head"]
    assert sa["window"]["count"] == sb["window"]["count"]
    oa = t_resumed.optimizers[0].state_dict()["state"]
    ob = t_straight.optimizers[0].state_dict()["state"]
    assert oa.keys() == ob.keys() and len(oa) > 0
    for key in oa:
        torch.testing.assert_close(oa[key]["momentum_buffer"], ob[key]["momentum_buffer"], **TOL)
    # without the hook the window would restart from the initial encoding: a real difference
    fresh = build()
    fresh.on_load_checkpoint = lambda checkpoint: None
    _fit(fresh, x, STEPS, max_steps=-1, max_epochs=2, ckpt_path=str(path))
    assert not torch.allclose(fresh.mow.window.buffer, straight.mow.window.buffer)


def test_lightning_bf16_mixed_keeps_the_window_in_float32():
    x = AUTO["data"](N + STEPS * K)
    module = AUTO["MoWAutoencoder"](x[:N - K], n=N, k=K)
    seen = []
    loss = module.mow.loss

    def spy(batch):
        parts, ctx = loss(batch)
        seen.append((torch.get_autocast_dtype("cpu"), torch.is_autocast_enabled("cpu"),
                     ctx.fresh.dtype, parts.total.dtype))
        return parts, ctx
    module.mow.loss = spy
    _fit(module, x, STEPS, precision="bf16-mixed")
    assert set(seen) == {(torch.bfloat16, True, torch.bfloat16, torch.float32)}
    assert module.mow.window.buffer.dtype == torch.float32 and module.mow.steps == STEPS


def test_accelerate_one_process_equals_mow_step():
    x = ACC["data"](N + STEPS * K, dtype=torch.float64)
    model, mow, acc = ACC["train"](x, n=N, k=K, steps=STEPS, lr=0.01)
    torch.manual_seed(0)
    ref = ACC["AE"]().double()
    ref_mow = MoW(ref.enc, costs.get("cwae"), n=N, k=K, latent_dim=ACC["LATENT"],
                  per_example=ref.G, dtype=torch.float64,
                  generator=torch.Generator().manual_seed(1))
    opt = torch.optim.SGD(ref.parameters(), lr=0.01)
    ref_mow.init_window("encode", x[:N - K])
    for s in range(STEPS):
        ref_mow.step(x[N - K + s * K:N - K + (s + 1) * K], opt)
    assert mow.steps == STEPS
    torch.testing.assert_close(mow.window.buffer, ref_mow.window.buffer, **TOL)
    for p, q in zip(acc.unwrap_model(model).parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, **TOL)


@pytest.mark.slow
def test_accelerate_two_processes_equal_one_process_with_2k(monkeypatch):
    """Two gloo ranks with k each (Accelerate's sharded loader) == one process with 2k.
    Slow (two spawned interpreters importing torch and accelerate: 20-40 s on 2 cores); the
    gloo equality of DistributedMoW itself is in the default suite (test_distributed.py)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))      # the spawned ranks import the example
    steps = 4
    rows = N + steps * K * 2
    state = ACC["train_processes"](2, N=rows, n=N, k=K, steps=steps, dtype=torch.float64)
    x = ACC["data"](rows, dtype=torch.float64)
    model, mow, _ = ACC["train"](x, n=N, k=2 * K, steps=steps)     # one process, k·P = 4
    assert state["mow"]["mow"]["steps"] == mow.steps == steps
    torch.testing.assert_close(state["mow"]["mow"]["window"]["buffer"], mow.window.buffer,
                               rtol=1e-10, atol=1e-10)
    for name, p in model.state_dict().items():
        torch.testing.assert_close(state["model"][name], p, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("script, args, line", [
    ("lightning_automatic.py", [], "lightning automatic optimisation: 12 MoW steps"),
    ("lightning_automatic.py", ["--precision", "bf16-mixed"],
     "lightning automatic optimisation: 12 MoW steps"),
    ("lightning_manual.py", [], "lightning manual optimisation: 12 MoW steps"),
    ("accelerate_loop.py", ["--mixed-precision", "bf16"], "accelerate, 1 process(es): 12"),
])
def test_example_runs_at_tiny_size(script, args, line, capsys, monkeypatch):
    module = {"lightning_automatic.py": AUTO, "lightning_manual.py": MANUAL,
              "accelerate_loop.py": ACC}[script]
    monkeypatch.setattr(sys, "argv", [script])
    assert module["main"](["--quick", *args]) == 0
    out = capsys.readouterr().out
    assert line in out, out
    err = float(out.rsplit("error", 1)[1])
    assert math.isfinite(err) and err < 1e3              # did not blow up
