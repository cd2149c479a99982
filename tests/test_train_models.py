"""Autoencoder architectures: shapes of encode/decode/forward/backward, batch size 1,
per-example independence (no batch statistics), argument checks."""
import pytest
import torch
from torch import nn

from mowtheory.train.models import ARCHS, Autoencoder, build_autoencoder

# ffhq is built at a small resolution to keep the suite fast; every other arch at its default.
CASES = [
    ("mnist", {}, (1, 28, 28), 20),
    ("fashion", {}, (1, 28, 28), 8),
    ("cifar10", {}, (3, 32, 32), 64),
    ("cifar10-padded", {}, (3, 32, 32), 64),
    ("celeba", {}, (3, 64, 64), 32),
    ("ffhq", {"resolution": 32}, (3, 32, 32), 64),
    ("ffhq", {"resolution": 64}, (3, 64, 64), 64),
    ("digits", {}, (1, 8, 8), 8),
]


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {(a, tuple(kw.items())): build_autoencoder(a, **kw) for a, kw, _, _ in CASES}


def test_archs_metadata_is_complete():
    assert set(ARCHS) == {"mnist", "fashion", "cifar10", "cifar10-padded", "celeba", "ffhq",
                          "digits"}
    for name, meta in ARCHS.items():
        assert {"latent_dim", "input_shape", "description", "source"} <= set(meta), name
        assert meta["source"] in ("paper Appendix A", "ours", "authors' PyTorch port")
    assert ARCHS["ffhq"]["input_shape"] == (3, 1024, 1024)


@pytest.mark.parametrize("arch, kw, shape, dim", CASES, ids=lambda v: str(v))
def test_shapes_range_and_backward(models, arch, kw, shape, dim):
    ae = models[(arch, tuple(kw.items()))]
    assert isinstance(ae, Autoencoder)
    assert ae.input_shape == shape and ae.latent_dim == dim
    assert isinstance(ae.encoder, nn.Module) and isinstance(ae.decoder, nn.Module)
    if not kw:
        assert (ARCHS[arch]["input_shape"], ARCHS[arch]["latent_dim"]) == (shape, dim)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in ae.modules())
    ae.zero_grad()
    x = torch.rand(2, *shape)
    z = ae.encode(x)
    assert z.shape == (2, dim)
    y = ae.decode(z)
    assert y.shape == (2, *shape)
    assert bool(((y >= 0) & (y <= 1)).all())
    r = ae(x)
    assert r.shape == x.shape
    ((r - x) ** 2).sum().add(z.pow(2).sum()).backward()
    grads = [p.grad for p in ae.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in ae.encoder.parameters() for g in [g.grad])


@pytest.mark.parametrize("arch, kw, shape, dim", CASES, ids=lambda v: str(v))
def test_batch_of_one_and_examples_are_independent(models, arch, kw, shape, dim):
    """k = 1 must work in training mode, and an example's latent must not depend on the
    other examples of its batch (what BatchNorm would break)."""
    ae = models[(arch, tuple(kw.items()))].train()
    x = torch.rand(3, *shape)
    with torch.no_grad():
        z1 = ae.encode(x[:1])
        z3 = ae.encode(x)
        y1 = ae.decode(z3[:1])
        y3 = ae.decode(z3)
    assert z1.shape == (1, dim)
    assert torch.allclose(z1, z3[:1], atol=1e-5, rtol=1e-4)
    assert torch.allclose(y1, y3[:1], atol=1e-5, rtol=1e-4)
    ae.zero_grad()
    ae(x[:1]).sum().backward()


def test_ffhq_stages_adapt_to_resolution():
    def stride2(ae):
        return sum(1 for m in ae.encoder.modules()
                   if isinstance(m, nn.Conv2d) and m.stride == (2, 2))

    small, large = build_autoencoder("ffhq", resolution=16), build_autoencoder("ffhq",
                                                                               resolution=64)
    assert (stride2(small), stride2(large)) == (2, 4)
    assert small.input_shape == (3, 16, 16) and small.latent_dim == 64
    assert small(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)


def test_options_latent_dim_channels_resolution():
    ae = build_autoencoder("mnist", latent_dim=5, channels=3, resolution=8)
    assert ae.input_shape == (3, 8, 8) and ae.latent_dim == 5
    assert ae(torch.rand(2, 3, 8, 8)).shape == (2, 3, 8, 8)
    ae = build_autoencoder("celeba", resolution=32, channels=1, latent_dim=4)
    assert ae.encode(torch.rand(1, 1, 32, 32)).shape == (1, 4)


def test_unknown_arch_lists_valid_names():
    with pytest.raises(ValueError) as e:
        build_autoencoder("resnet")
    msg = str(e.value)
    assert "'resnet'" in msg
    for name in ARCHS:
        assert repr(name) in msg


@pytest.mark.parametrize("arch, kw, match", [
    ("ffhq", {"resolution": 48}, "power of two"),
    ("ffhq", {"resolution": 8}, "power of two"),
    ("fashion", {"resolution": 30}, "multiple of 4"),
    ("cifar10", {"resolution": 33}, "even"),
    ("cifar10", {"resolution": 6}, ">= 8"),
    ("cifar10-padded", {"resolution": 33}, "even"),
    ("mnist", {"latent_dim": 0}, "latent_dim"),
    ("mnist", {"channels": 0}, "channels"),
])
def test_bad_options_name_argument_and_value(arch, kw, match):
    with pytest.raises(ValueError, match=match) as e:
        build_autoencoder(arch, **kw)
    key, value = next(iter(kw.items()))
    assert key in str(e.value) and str(value) in str(e.value)


def test_wrong_input_shape_is_explained(models):
    ae = models[("mnist", ())]
    with pytest.raises(ValueError, match=r"\(b, 1, 28, 28\).*\(2, 1, 32, 32\)"):
        ae.encode(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(b, 20\).*\(2, 8\)"):
        ae.decode(torch.rand(2, 8))
