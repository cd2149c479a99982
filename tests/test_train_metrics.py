"""Evaluation metrics, the FD feature network cache, figures and checkpoint files."""
import os

import numpy as np
import pytest
import torch

from mowtheory.train import checkpoint as ckpt
from mowtheory.train import features, images, metrics


def test_reconstruction_error_is_the_mean_of_summed_squared_errors():
    x = torch.zeros(2, 1, 2, 2)
    y = torch.zeros(2, 1, 2, 2)
    y[0] = 1.0                 # example 0: 4 pixels off by 1 -> 4
    y[1, 0, 0, 0] = 1.0        # example 1: 1 pixel off by 1 -> 1
    assert metrics.reconstruction_error(x, y) == pytest.approx(2.5)
    y[1, 0, 1, 1] = -2.0       # example 1: 1 + 4 -> 5
    assert metrics.reconstruction_error(x, y) == pytest.approx(4.5)
    with pytest.raises(ValueError, match="same shape"):
        metrics.reconstruction_error(x, y[:1])


def _scipy_fd(a, b):
    from scipy import linalg
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert metrics.frechet_distance(torch.tensor(a), torch.tensor(a.copy())) < 1e-8
    shift = np.full(6, 0.5)
    # equal covariances: the distance is the squared distance of the means
    assert metrics.frechet_distance(a, a + shift) == pytest.approx(6 * 0.25, rel=1e-6)
    b = rng.normal(size=(400, 6)) * 2.0 + 1.0
    fd = metrics.frechet_distance(a, b)
    assert fd > 1.0 and fd == pytest.approx(_scipy_fd(a, b), rel=1e-6)
    with pytest.raises(ValueError, match=r"shapes \(N1, d\) and \(N2, d\)"):
        metrics.frechet_distance(a, b[:, :3])


def test_latent_distances_see_a_shift_from_the_prior():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(400, 4, generator=g)
    near = metrics.latent_distances(z)
    far = metrics.latent_distances(z + 2.0)
    assert far["cw_distance"] > 5 * near["cw_distance"] > 0
    assert far["wae_distance"] > 5 * abs(near["wae_distance"])


def _blobs(n, seed):
    """Two classes of 8x8 images: bright top half or bright bottom half, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.3
    x[labels == 0, :, :4] += 0.7
    x[labels == 1, :, 4:] += 0.7
    return x.clamp(0, 1), labels


def test_feature_network_is_trained_once_and_reused(tmp_path, monkeypatch):
    x, y = _blobs(256, 0)
    xv, yv = _blobs(64, 1)
    net, info = features.feature_network("blobs", x, y, cache_dir=tmp_path, x_val=xv,
                                        labels_val=yv, epochs=3, min_steps=30)
    assert info["metric"] == "FD-small-classifier" and info["cached"] is False
    assert info["val_accuracy"] > 0.9
    path = info["path"]
    mtime = os.stat(path).st_mtime_ns

    def no_training(*a, **k):
        raise AssertionError("the cached network should have been loaded, not retrained")
    monkeypatch.setattr(torch.optim, "Adam", no_training)
    net2, info2 = features.feature_network("blobs", x, y, cache_dir=tmp_path, epochs=3,
                                          min_steps=30)
    assert info2["cached"] is True and info2["path"] == path
    assert os.stat(path).st_mtime_ns == mtime
    f1, f2 = features.features(net, xv), features.features(net2, xv)
    assert torch.equal(f1, f2)
    # features separate the classes: FD between the two classes >> FD within one class
    within = metrics.frechet_distance(f1[yv == 0][:16], f1[yv == 0][16:])
    between = metrics.frechet_distance(f1[yv == 0], f1[yv == 1])
    assert between > within
    monkeypatch.undo()
    # unlabelled data: a small autoencoder, named differently, cached separately
    _, info3 = features.feature_network("blobs", x, None, cache_dir=tmp_path, epochs=1,
                                       min_steps=10)
    assert info3["metric"] == "FD-small-autoencoder" and info3["path"] != path


@pytest.mark.parametrize("epochs,min_steps,want_epochs,want_steps", [
    (1, 9, 5, 10),      # 2 steps an epoch: min_steps sets the budget (5 epochs, 10 steps)
    (3, 1, 3, 6),       # epochs set it
])
def test_feature_network_budget_is_at_least_epochs_and_min_steps(tmp_path, epochs, min_steps,
                                                                 want_epochs, want_steps):
    x, y = _blobs(32, 0)
    _, info = features.feature_network("budget", x, y, cache_dir=tmp_path, epochs=epochs,
                                      min_steps=min_steps, batch_size=16)
    assert (info["epochs"], info["steps"]) == (want_epochs, want_steps)


def test_dataset_labels_are_verified_against_the_images():
    from mowtheory.train.data import load_dataset
    x = load_dataset("digits", split="test", limit=40)
    y = metrics.dataset_labels("digits", x, split="test")
    from sklearn.datasets import load_digits
    d = load_digits()
    ref = torch.tensor(d.images / 16.0, dtype=torch.float32)
    for i in range(5):   # each image is the sklearn image of that label
        j = int(np.flatnonzero((ref == x[i, 0]).flatten(1).all(1))[0])
        assert int(d.target[j]) == int(y[i])
    assert metrics.dataset_labels("digits", x.flip(0), split="test") is None
    assert metrics.dataset_labels("celeba", x, split="test") is None


def test_inception_fid_is_not_pretended():
    with pytest.raises(NotImplementedError, match="never downloads"):
        metrics.inception_fid()


class _Stub(torch.nn.Module):
    """Autoencoder stub: decode gives all-black images, encode the mean brightness."""
    latent_dim = 2

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def encode(self, x):
        m = x.mean((1, 2, 3))
        return torch.stack([m, -m], 1)

    def decode(self, z):
        return torch.zeros(len(z), 1, 4, 4) + 0 * z.sum()


def test_figures(tmp_path):
    g = torch.Generator().manual_seed(0)
    grid = images.make_grid(torch.ones(5, 1, 4, 4), nrow=3)
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1)
    x = torch.ones(8, 1, 4, 4)
    model = _Stub()
    p = images.save_reconstructions(model, x, tmp_path / "rec.png", nrow=4, rows=2)
    assert p.is_file()
    # alternating rows: inputs (here white), then their reconstructions (black)
    tiles = images.reconstruction_tiles(x[:6], torch.zeros(6, 1, 4, 4), nrow=4)
    assert tiles.shape == (16, 1, 4, 4)
    row_means = tiles.view(4, 4, -1).mean(-1)
    assert row_means[0].eq(1).all() and row_means[1].eq(0).all()
    assert row_means[2, :2].eq(1).all() and row_means[3, :2].eq(0).all()
    assert row_means[2:, 2:].eq(1).all()          # padding of the short last pair of rows
    assert images.save_samples(model, tmp_path / "s.png", n=8, generator=g).is_file()
    assert images.save_interpolations(model, x, tmp_path / "i.png", rows=3, steps=5).is_file()
    rgb = images.make_grid(torch.rand(2, 3, 4, 4), nrow=2)
    assert rgb.shape == (6, 11, 3)


def test_checkpoint_is_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ckpt.save_checkpoint(path, {"format": ckpt.FORMAT, "step": 1})

    def crash(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(path, {"format": ckpt.FORMAT, "step": 2})
    monkeypatch.undo()
    assert ckpt.load_checkpoint(path)["step"] == 1          # the old one is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]   # no temp left
    diff = ckpt.config_diff({"a": 1, "b": 2, "out": "x"}, {"a": 1, "b": 3, "out": "y"},
                            ignore=["out"])
    assert diff == [("b", 2, 3)]
    torch.save({"not": "ours"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a mowtheory training checkpoint"):
        ckpt.load_checkpoint(tmp_path / "other.pt")
