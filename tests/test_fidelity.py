"""Fidelity to the authors' code (gmum/MoW, gmum/cwae TensorFlow) and scale-invariance fixes:
the per-epoch prior window of the trainer, the unpadded CIFAR-10 encoder, and a pulling-away
term that is cos^2 at any scale (docs/errata.md)."""
import pytest
import torch

from mowtheory import costs as C
from mowtheory.distributed import DistributedMoW
from mowtheory.train import TrainConfig, train
from mowtheory.train.models import ARCHS, build_autoencoder
from mowtheory.train.config import TRAIN_INIT_POLICIES

F64 = torch.float64


# ----------------------------------------------------------------------------- pulling-away
def _cos2_reference(z):
    u = z / z.norm(dim=1, keepdim=True)
    c = (u @ u.T).square()
    n = len(z)
    return (c.sum() - c.diagonal().sum()) / (n * (n - 1))


@pytest.mark.parametrize("scale", [1.0, 1e-7, 1e-20, 1e20])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pullaway_is_cos2_at_every_scale(scale, dtype):
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    ref = float(_cos2_reference(z))
    got = float(C.pullaway((scale * z).to(dtype)))
    assert got == pytest.approx(ref, rel=1e-5 if dtype == torch.float32 else 1e-12)


def test_pullaway_gradient_scales_like_cos2_and_split_agrees():
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    grads = []
    for s in (1.0, 1e-7):
        w = (s * z).requires_grad_()
        (g,) = torch.autograd.grad(C.pullaway(w), w)
        grads.append(g * s)                  # cos^2 is homogeneous of degree 0: grad ~ 1/s
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-9, atol=0)
    F = C.get("pullaway")
    H, Z = 1e-7 * z[:4], 1e-7 * z[4:]
    assert float(F.split(H, Z, None, cache=F.init_cache(H))) == pytest.approx(
        float(_cos2_reference(z)), rel=1e-12)


# ----------------------------------------------------------------------------- CIFAR-10
def _conv_sides(model, x):
    sides = []
    for layer in model.encoder:
        x = layer(x)
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.Flatten)):
            sides.append(tuple(x.shape[1:]))
    return sides


def test_cifar10_is_the_unpadded_tensorflow_encoder():
    ae = build_autoencoder("cifar10")
    assert not any(isinstance(m, torch.nn.ZeroPad2d) for m in ae.encoder)
    assert _conv_sides(ae, torch.rand(2, 3, 32, 32)) == [
        (3, 31, 31), (32, 15, 15), (32, 14, 14), (32, 13, 13), (5408,)]
    assert ae.encode(torch.rand(1, 3, 32, 32)).shape == (1, 64)
    assert ae.decode(torch.randn(2, 64)).shape == (2, 3, 32, 32)
    # decoder as in the TF code: dense 128, dense 8192, 16x16x32
    linears = [m for m in ae.decoder if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [128, 8192]
    assert "5408" in ARCHS["cifar10"]["description"]


def test_cifar10_padded_is_the_pytorch_port_and_keeps_its_name():
    ae = build_autoencoder("cifar10-padded")
    assert _conv_sides(ae, torch.rand(2, 3, 32, 32)) == [
        (3, 32, 32), (32, 16, 16), (32, 16, 16), (32, 16, 16), (8192,)]
    assert ae.arch == "cifar10-padded" and ae.decode(torch.randn(1, 64)).shape == (1, 3, 32, 32)


def test_cifar10_other_resolutions():
    ae = build_autoencoder("cifar10", resolution=16)      # 16 -> 15 -> 7 -> 6 -> 5
    assert _conv_sides(ae, torch.rand(1, 3, 16, 16))[-1] == (32 * 5 * 5,)
    assert ae(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)


# ----------------------------------------------------------------------------- prior init
def _init_calls(tmp_path, monkeypatch, init, epochs=2):
    calls = []
    real = DistributedMoW.init_window

    def spy(self, policy="encode", x=None):
        calls.append((policy, self.mow.steps))
        real(self, policy, x)
        assert self.mow.window._head == 0 and self.mow.window.is_full   # write position reset

    monkeypatch.setattr(DistributedMoW, "init_window", spy)
    cfg = TrainConfig(model="cwae", dataset="digits", n=8, k=2, limit=24, eval_limit=16,
                      epochs=epochs, out=str(tmp_path / init), progress=False, fd=False,
                      images=False, init=init)
    rep = train(cfg)
    return calls, rep


def test_prior_init_is_redrawn_at_the_start_of_every_epoch(tmp_path, monkeypatch):
    assert TRAIN_INIT_POLICIES == ("encode", "prior", "prior-once")
    calls, rep = _init_calls(tmp_path, monkeypatch, "prior", epochs=3)
    assert rep["step"] == 36
    assert calls == [("prior", 0), ("prior", 12), ("prior", 24)]    # 12 steps an epoch


def test_prior_once_and_encode_draw_once(tmp_path, monkeypatch):
    assert _init_calls(tmp_path, monkeypatch, "prior-once")[0] == [("prior", 0)]
    assert _init_calls(tmp_path, monkeypatch, "encode")[0] == [("encode", 0)]


def test_prior_redraw_changes_the_second_epoch_only(tmp_path):
    def weights(init, epochs):
        cfg = TrainConfig(model="cwae", dataset="digits", n=8, k=2, limit=24, eval_limit=16,
                          epochs=epochs, out=str(tmp_path / f"{init}-{epochs}"), progress=False,
                          fd=False, images=False, init=init)
        train(cfg)
        from mowtheory.train.checkpoint import load_checkpoint
        return load_checkpoint(tmp_path / f"{init}-{epochs}" / "checkpoint.pt")["model"]

    a1, b1 = weights("prior", 1), weights("prior-once", 1)
    assert all(torch.equal(a1[key], b1[key]) for key in a1)          # same first epoch
    a2, b2 = weights("prior", 2), weights("prior-once", 2)
    assert not all(torch.equal(a2[key], b2[key]) for key in a2)      # redrawn window differs


def test_bad_init_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"init must be one of 'encode', 'prior', 'prior-once'; "
                                         r"got init='zeros'"):
        TrainConfig(init="zeros", out=str(tmp_path))
