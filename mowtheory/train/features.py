"""Feature networks for the Fréchet distance of :mod:`mowtheory.train.metrics`.

:class:`SmallClassifier` (a small CNN trained on the dataset's labels; without labels a small
autoencoder) gives the features of ``"FD-small-classifier"`` / ``"FD-small-autoencoder"``:
an FID-like number that is *not* FID, comparable only between runs on the same dataset and
resolution with the same cached network. :func:`feature_network` trains it once (seeded,
for at least ``min_steps`` steps) and caches it by a digest of its training data;
:func:`features` maps images to features in batches.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as Fn

from .._validate import check_int, check_positive

FD_CLASSIFIER = "FD-small-classifier"


FD_AUTOENCODER = "FD-small-autoencoder"


FEATURE_NET_VERSION = 2


_MAX_FEATURE_RES = 64      # feature networks see images average-pooled to at most 64x64


# --------------------------------------------------------------------------- feature networks
class SmallClassifier(nn.Module):
    """A small CNN for ``(C, H, W)`` images in [0, 1]; inputs are average-pooled to at most
    64x64 first. ``features(x)`` is the penultimate layer, ``(B, feature_dim)``.

    With ``n_classes=None`` it is a small autoencoder instead (self-supervised features for
    unlabelled image folders): ``features`` is its bottleneck and ``reconstruct`` its output.
    """

    def __init__(self, in_channels: int, resolution: int, n_classes: Optional[int],
                 feature_dim: int = 64):
        super().__init__()
        self.in_channels, self.resolution, self.n_classes = in_channels, resolution, n_classes
        self.work_res = min(resolution, _MAX_FEATURE_RES)
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1, stride=2 if self.work_res >= 8 else 1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1, stride=2 if self.work_res >= 16 else 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(64 * 16, feature_dim), nn.ReLU(),
        )
        if n_classes is not None:
            self.head = nn.Linear(feature_dim, n_classes)
        else:
            self.head = nn.Sequential(
                nn.Linear(feature_dim, 256), nn.ReLU(),
                nn.Linear(256, in_channels * self.work_res ** 2), nn.Sigmoid())

    def _prep(self, x):
        if x.shape[-1] != self.work_res or x.shape[-2] != self.work_res:
            x = Fn.adaptive_avg_pool2d(x, self.work_res)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self._prep(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def target(self, x):
        """What a self-supervised (autoencoder) network reconstructs: the pooled input, flattened."""
        return self._prep(x).flatten(1)


def _digest(x: torch.Tensor, labels: Optional[torch.Tensor], extra: str = "") -> str:
    h = hashlib.sha1(extra.encode())
    h.update(str(tuple(x.shape)).encode())
    step = max(1, len(x) // 64)
    h.update(x[::step].contiguous().float().numpy().tobytes())
    if labels is not None:
        h.update(labels.long().numpy().tobytes())
    return h.hexdigest()[:12]


def _fit(net, opt, x, labels, g: torch.Generator, *, epochs: int, min_steps: int,
         batch_size: int, max_seconds: float, device) -> tuple:
    """Train the feature network: cross-entropy on ``labels``, or reconstruction of its own
    target without them; at least ``epochs`` passes and ``min_steps`` steps, stopped after
    ``max_seconds``. Returns ``(epochs, steps, last loss)``."""
    t0, steps, last = time.perf_counter(), 0, float("nan")
    epoch = 0
    while epoch < epochs or steps < min_steps:
        epoch += 1
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            xb = x[idx].to(device)
            if labels is not None:
                loss = Fn.cross_entropy(net(xb), labels[idx].to(device))
            else:
                loss = Fn.mse_loss(net(xb), net.target(xb))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
        last = float(loss.detach())
        if time.perf_counter() - t0 > max_seconds:
            break
    return epoch, steps, last


def feature_network(name: str, x: torch.Tensor, labels: Optional[torch.Tensor] = None, *,
                    cache_dir, x_val: Optional[torch.Tensor] = None,
                    labels_val: Optional[torch.Tensor] = None, epochs: int = 5,
                    batch_size: int = 128, lr: float = 2e-3, min_steps: int = 800,
                    seed: int = 0, max_train: int = 20000,
                    max_seconds: float = 300.0, device="cpu", log: Optional[Callable] = None):
    """A feature network for the Fréchet distance, trained once and cached.

    Args:
        name: dataset name (part of the cache file name).
        x: ``(N, C, H, W)`` training images in [0, 1] (CPU tensor); ``labels``: ``(N,)`` ints,
            or None for unlabelled data (then a small autoencoder is trained).
        cache_dir: directory of the cache; the file name holds the dataset name, the input
            shape, the kind and a digest of the training data, so a changed data set retrains.
        x_val, labels_val: optional held-out labelled images to report the accuracy.
        epochs, min_steps, batch_size, lr, seed, max_train, max_seconds: training budget
            (at least ``epochs`` passes and ``min_steps`` steps, stopped after ``max_seconds``).

    Returns ``(network, info)``: ``network`` in eval mode on ``device``; ``info`` a dict with
    ``metric`` (``"FD-small-classifier"`` or ``"FD-small-autoencoder"``), ``path``, ``cached``
    (True when loaded from the cache) and the training summary (e.g. held-out accuracy).
    """
    check_int("epochs", epochs, low=1)
    check_positive("lr", lr)
    if x.dim() != 4:
        raise ValueError(f"x must have shape (N, C, H, W); got {tuple(x.shape)}")
    x = x.detach().float().cpu()
    if labels is not None:
        labels = torch.as_tensor(labels).long().cpu()
        if len(labels) != len(x):
            raise ValueError(f"labels must have one entry per image: {len(labels)} labels for {len(x)} images")
    kind = "classifier" if labels is not None else "autoencoder"
    metric = FD_CLASSIFIER if labels is not None else FD_AUTOENCODER
    c, h, w = x.shape[1:]
    if h != w:
        raise ValueError(f"images must be square for the feature network; got {h}x{w}")
    n_classes = int(labels.max()) + 1 if labels is not None else None
    key = _digest(x, labels, f"{epochs}-{min_steps}-{batch_size}-{lr}-{seed}-{max_train}")
    cache_dir = Path(cache_dir)
    path = cache_dir / f"fdnet-{name}-{c}x{h}x{w}-{kind}-v{FEATURE_NET_VERSION}-{key}.pt"
    net = SmallClassifier(c, h, n_classes)
    if path.is_file():
        from .checkpoint import load_saved
        blob = load_saved(path)                # checksum verified
        net.load_state_dict(blob["state_dict"])
        info = dict(blob["info"], cached=True, path=str(path))
        return net.to(device).eval(), info

    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SmallClassifier(c, h, n_classes)
    net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    if len(x) > max_train:
        idx = torch.randperm(len(x), generator=g)[:max_train]
        x, labels = x[idx], (labels[idx] if labels is not None else None)
    t0 = time.perf_counter()
    epoch, steps, last = _fit(net, opt, x, labels, g, epochs=epochs, min_steps=min_steps,
                              batch_size=batch_size, max_seconds=max_seconds, device=device)
    net.eval()
    info = {"metric": metric, "kind": kind, "dataset": name, "input_shape": [c, h, w],
            "epochs": epoch, "steps": steps, "train_examples": len(x), "final_loss": last,
            "seconds": round(time.perf_counter() - t0, 2)}
    if labels is not None and x_val is not None and labels_val is not None:
        info["val_accuracy"] = classifier_accuracy(net, x_val, labels_val, device=device)
    cache_dir.mkdir(parents=True, exist_ok=True)
    from .checkpoint import save_checkpoint
    save_checkpoint(path, {"state_dict": net.state_dict(), "info": info})
    if log is not None:
        log(f"trained the {metric} feature network for {name}: {json.dumps(info)}")
    return net, dict(info, cached=False, path=str(path))


@torch.no_grad()
def classifier_accuracy(net: SmallClassifier, x: torch.Tensor, labels, *, device="cpu",
                        batch_size: int = 512) -> float:
    """Fraction of ``x`` that ``net`` classifies as ``labels``."""
    labels = torch.as_tensor(labels).long()
    right = 0
    for i in range(0, len(x), batch_size):
        right += int((net(x[i:i + batch_size].to(device)).argmax(1).cpu() == labels[i:i + batch_size]).sum())
    return right / max(len(x), 1)


@torch.no_grad()
def features(net: SmallClassifier, x: torch.Tensor, *, device="cpu", batch_size: int = 512) -> torch.Tensor:
    """``net.features`` of ``x`` (``(N, C, H, W)``) in batches, ``(N, d)`` float64 on the CPU."""
    out = []
    for i in range(0, len(x), batch_size):
        out.append(net.features(x[i:i + batch_size].to(device).float()).double().cpu())
    return torch.cat(out)
