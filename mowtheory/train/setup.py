"""Set-up of a training run, in the order that makes a resumed run identical to an
uninterrupted one: the checkpoint to resume (:func:`saved_checkpoint`, before any work) and
the output folder (:func:`claim_output`), data and model (:func:`load_model`), the step of the method and its
optimizer (:func:`build_step`), the window of step 0 (:func:`init_window`). Nothing here draws
from the global RNG stream (each draw is seeded from ``cfg.seed`` or forked)."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Optional

import torch

from .. import _io
from . import checkpoint as ckpt
from . import methods as _methods
from ._lock import probe as _probe_lock
from .config import RESUME_FREE, TrainConfig, resolved

#: files a finished run leaves in ``out``
OUTPUT_FILES = ("metrics.jsonl", "report.json", "checkpoint.pt", "samples.png",
                "reconstructions.png", "interpolations.png")


def saved_checkpoint(cfg: TrainConfig, ckpt_path: Path, *, world: int,
                     main: bool) -> Optional[dict]:
    """The checkpoint to resume (None: a fresh start), after the resume rules
    (:func:`~mowtheory.train.checkpoint.check_resumable`); rank 0 first refuses an ``out``
    that a live run holds."""
    if main:
        _probe_lock(Path(cfg.out))
    saved = ckpt.checkpoint_to_resume(ckpt_path, resume=cfg.resume, overwrite=cfg.overwrite)
    if saved is not None:
        ckpt.check_resumable(ckpt_path, saved, cfg.to_dict(), world_size=world, k=cfg.k,
                             epochs=cfg.epochs, free=RESUME_FREE)
    return saved


def claim_output(out: Path, lock=None) -> None:
    """Rank 0's first write: take ``out``'s lock (from here on this process holds it), create
    the folder, remove temporaries left by writers killed mid-write."""
    if lock is not None:
        lock.acquire()
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES:
        _io.remove_stale_temporaries(out / name)


class Loaded(NamedTuple):
    """What :func:`load_model` returns: ``res`` (resolved arch, resolution, latent_dim),
    ``device``, the splits ``x_train`` ``(N, C, H, W)`` and ``x_test``, ``x_data`` (x_train on
    the device when it fits), ``N``, and the autoencoder ``model`` (in train mode, on the
    device, rank 0's weights on every process)."""
    res: dict
    device: torch.device
    x_train: torch.Tensor
    x_test: torch.Tensor
    x_data: torch.Tensor
    N: int
    model: torch.nn.Module


def load_model(cfg: TrainConfig, ctx=None, *, world: int = 1, kP: int = 1) -> Loaded:
    """Data (train and test splits) and the autoencoder, seeded by ``cfg.seed``; ``kP``
    examples are read per step over the ``world`` processes (ValueError when the data is
    too small for a step and the window's initial encodings)."""
    from ..distributed import broadcast_parameters
    from .data import load_dataset
    from .models import build_autoencoder
    res = resolved(cfg)
    device = ctx.device if ctx is not None else torch.device(cfg.device)
    x_train = load_dataset(cfg.dataset, split="train", data_dir=cfg.data_dir, seed=cfg.seed,
                           resolution=cfg.resolution, limit=cfg.limit)
    x_test = load_dataset(cfg.dataset, split="test", data_dir=cfg.data_dir, seed=cfg.seed,
                          resolution=cfg.resolution, limit=cfg.eval_limit)
    N = len(x_train)
    if N < kP or N < cfg.n - kP:
        kk = "k" if world == 1 else "k * world_size"
        raise ValueError(f"limit/dataset gives N={N} training examples; need N >= {kk}={kP} "
                         f"and N >= n - {kk}={cfg.n - kP} (window init); got limit={cfg.limit}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_autoencoder(res["arch"], latent_dim=cfg.latent_dim,
                                  resolution=res["resolution"], channels=x_train.shape[1])
    if tuple(model.input_shape) != tuple(x_train.shape[1:]):
        raise ValueError(f"arch={res['arch']!r} expects inputs {model.input_shape}; dataset "
                         f"{cfg.dataset!r} gives {tuple(x_train.shape[1:])}")
    model.to(device).train()
    if ctx is not None:
        broadcast_parameters(model)
    # data on the device when it fits comfortably: indexing then never leaves the device
    on_device = device.type == "cpu" or x_train.numel() * 4 < 2 * 1024 ** 3
    x_data = x_train.to(device) if on_device else x_train
    return Loaded(res, device, x_train, x_test, x_data, N, model)


def build_step(cfg: TrainConfig, model, cost, generator: torch.Generator, *, device,
               local: bool = True):
    """The step of ``cfg.method`` (:mod:`mowtheory.train.methods`) with encoder
    ``model.encode`` (float32 latents), per-example cost G(x) = summed squared reconstruction
    error, batch cost ``cost`` (F) weighted by ``cfg.lam`` in the objective, prior draws
    from ``generator``, and its
    optimizer. For "mow" one process runs DistributedMoW(local=True), plain MoW_k(n) step for
    step; each method keeps the loss parts of a step that fails after its update
    (``last_parts``). Returns ``(method, optimizer)``."""

    def encoder(x):
        return model.encode(x).float()

    def per_example(x, z):
        return (model.decode(z).float() - x.float()).pow(2).flatten(1).sum(1)

    method = _methods.build(cfg.method, encoder, cost, n=cfg.n, k=cfg.k, chunk=cfg.chunk,
                            latent_dim=model.latent_dim, per_example=per_example,
                            reduction=cfg.reduction, balanced=cfg.balanced,
                            refresh=cfg.refresh, generator=generator, device=device,
                            local=local, lam=cfg.lam)
    optimizer = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.SGD
    return method, optimizer(model.parameters(), lr=cfg.lr)


def init_window(cfg: TrainConfig, method, x_data: torch.Tensor, *, n_fresh: int,
                device) -> None:
    """The window of step 0: ``init="encode"`` encodes ``n - n_fresh`` training examples
    (chosen by a generator seeded ``cfg.seed + 2``; a model drawing from the global RNG gets
    a forked stream seeded the same), ``"prior-once"`` draws N(0, I), ``"prior"`` leaves it
    to the start of each epoch."""
    if cfg.init == "encode":
        g = torch.Generator().manual_seed(cfg.seed + 2)
        idx = torch.randperm(len(x_data), generator=g)[: cfg.n - n_fresh]
        devices = [device] if torch.device(device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(cfg.seed + 2)
            method.init_window("encode", x_data[idx.to(x_data.device)].to(device))
    elif cfg.init == "prior-once":
        method.init_window("prior")


def join_process_group(cfg: TrainConfig):
    """The process group torchrun set up (``cfg.distributed``): ValueError outside torchrun."""
    import os

    from ..distributed import init_distributed
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
        if rank is None or world is None:
            raise ValueError(
                f"--distributed (distributed=True) needs the process group that torchrun sets "
                f"up; got RANK={rank}, WORLD_SIZE={world}: run `torchrun --nproc_per_node=P -m "
                f"mowtheory train ... --distributed`, or drop --distributed for one process")
    return init_distributed(device=cfg.device, timeout_s=cfg.dist_timeout)
