"""Evaluation of a training run: the test-split metrics (:class:`Evaluator`) and the figures
(:func:`write_images`). Rank 0 evaluates; nothing here changes the model or the global RNG
stream of training (the trainer builds the evaluator inside ``torch.random.fork_rng``)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import features, images, metrics

if TYPE_CHECKING:
    from .config import TrainConfig

#: training examples at most for the FD feature network (loaded without the run's ``limit``)
FD_TRAIN_LIMIT = 20000
FD_TRAIN_BYTES = 2 * 1024 ** 3


class Evaluator:
    """Test-split metrics of a model being trained, one dict per call:

    ``recon_error`` (mean summed squared error per test image), ``wae_distance`` and
    ``cw_distance`` (of the first ``distance_n`` test latents to N(0, I); NaN when a latent
    is not finite), ``log_cw_distance``, ``distance_n``, ``latent_norm_mean`` (diagnostic of
    runaway latents) and, with ``cfg.fd``, a Fréchet distance in the features of a small
    network trained on the dataset (its name in ``fd_name``; ``fd_reason`` says why there is
    none). Built once per run (the feature network is trained or loaded here)."""

    def __init__(self, cfg: "TrainConfig", model, x_test, x_train, device, out: Path, log):
        self.cfg, self.model, self.x_test, self.device = cfg, model, x_test, device
        self.fd_net, self.fd_info, self.fd_reason = None, None, None
        if cfg.fd:
            if len(x_test) < 2:
                self.fd_reason = "fewer than 2 test examples"
            else:
                # the feature network is a property of the dataset, not of this run: it is
                # trained on the whole training split (up to max_train), not on ``limit``
                fd_limit = max(1, min(FD_TRAIN_LIMIT, FD_TRAIN_BYTES // (4 * x_train[0].numel())))
                if cfg.limit is not None and cfg.limit < fd_limit:
                    from .data import load_dataset
                    x_train = load_dataset(cfg.dataset, split="train", data_dir=cfg.data_dir,
                                           seed=cfg.seed, resolution=cfg.resolution,
                                           limit=fd_limit)
                labels = metrics.dataset_labels(cfg.dataset, x_train, split="train",
                                                seed=cfg.seed, data_dir=cfg.data_dir)
                labels_val = metrics.dataset_labels(cfg.dataset, x_test, split="test",
                                                    seed=cfg.seed, data_dir=cfg.data_dir)
                cache = Path(cfg.cache_dir) if cfg.cache_dir else out / "cache"
                self.fd_net, self.fd_info = features.feature_network(
                    cfg.dataset, x_train, labels, cache_dir=cache,
                    x_val=x_test if labels_val is not None else None, labels_val=labels_val,
                    min_steps=cfg.fd_train_steps, device=device, log=log)
                if labels is None:
                    self.fd_reason = ("no class labels for this dataset: Fréchet distance in the "
                                      "bottleneck features of a small autoencoder instead")
        else:
            self.fd_reason = "disabled (fd=False)"
        self.fd_name = self.fd_info["metric"] if self.fd_info else None
        self._real_feats = None

    def __call__(self) -> dict:
        cfg, model = self.cfg, self.model
        z, xhat = metrics.encode_decode(model, self.x_test, device=self.device, autocast=cfg.bf16)
        out = {"recon_error": metrics.reconstruction_error(self.x_test, xhat)}
        zf = z[: cfg.distance_n]
        if torch.isfinite(zf).all():
            dist = metrics.latent_distances(zf, generator=torch.Generator().manual_seed(cfg.seed + 7))
        else:
            dist = {"wae_distance": float("nan"), "cw_distance": float("nan")}
        out.update(dist)
        out["log_cw_distance"] = metrics.log_distance(out["cw_distance"]) \
            if math.isfinite(out["cw_distance"]) else float("nan")
        out["distance_n"] = len(zf)
        out["latent_norm_mean"] = float(z.norm(dim=1).mean())   # diagnostic: runaway latents
        if self.fd_net is not None:
            g = torch.Generator().manual_seed(cfg.seed + 11)
            prior = torch.randn(len(self.x_test), model.latent_dim, generator=g)
            samples = metrics.decode_all(model, prior, device=self.device, autocast=cfg.bf16)
            if self._real_feats is None:
                self._real_feats = features.features(self.fd_net, self.x_test, device=self.device)
            fake = features.features(self.fd_net, samples, device=self.device)
            out[self.fd_name] = (metrics.frechet_distance(self._real_feats, fake)
                                 if torch.isfinite(fake).all() else float("nan"))
        return out


def write_images(cfg: "TrainConfig", model, x_test, out: Path, device) -> dict:
    """Write ``samples.png``, ``reconstructions.png`` and ``interpolations.png`` into ``out``;
    returns their paths by name."""
    g = torch.Generator().manual_seed(cfg.seed + 13)
    tag = (f"{cfg.model} n={cfg.n} k={cfg.k}{' balanced' if cfg.balanced else ''}"
           if cfg.method == "mow" else f"{cfg.model} {cfg.method} n={cfg.n}"
           + (f" c={cfg.chunk}" if cfg.method == "gradcache" else ""))
    return {
        "samples": str(images.save_samples(model, out / "samples.png", generator=g, device=device,
                                           title=f"{tag}: samples", autocast=cfg.bf16)),
        "reconstructions": str(images.save_reconstructions(
            model, x_test, out / "reconstructions.png", device=device,
            title=f"{tag}: inputs / reconstructions", autocast=cfg.bf16)),
        "interpolations": str(images.save_interpolations(
            model, x_test, out / "interpolations.png", device=device,
            title=f"{tag}: interpolations", autocast=cfg.bf16)),
    }
