"""Autoencoder training with MoW_k(n): configuration, loop, evaluation, checkpoints.

The objective of one step (docs/theory.md, "The mathematics")::

    total = (n/k if balanced else 1) * lam * F(window, E(x_1..x_k); V) + red_j G(x_j)
    G(x)  = sum_{c,h,w} (decode(encode(x)) - x)^2         (summed squared error of one example)

with F the batch cost of the model: ``cwae`` log Cramér–Wold distance to N(0, I), ``wae``
MMD with IMQ kernels against a fresh prior sample, ``swae`` sliced Wasserstein distance with
fresh random directions each step, ``gmmn`` Gaussian-kernel MMD², ``energy`` energy distance.
``red`` is the reduction over the k fresh examples: ``"sum"`` (the theorem), ``"mean"``, or
``"sqrt_mean"`` (square root of the batch mean, as in the authors' code; the default here,
since it is what the paper's experiments trained with).

Methods (``method``, :mod:`mowtheory.train.methods`): ``"mow"`` (above; the default),
``"minibatch"`` (standard training: ``lam * F(E(x_1..x_n); V) + red_i G(x_i)`` over n examples
a step) and ``"gradcache"`` (that step with the same gradient, encoding ``chunk`` examples at a
time); everything else (data order, metrics, figures, checkpoints, resume) is shared, with n
in place of k examples a step for the n-batch methods.

Data order: epoch e takes the next k examples of a permutation drawn from a seeded
``torch.Generator`` whose state is checkpointed; the last ``N mod k`` examples of each
permutation are skipped. The window is initialised by encoding ``n - k`` training examples
at theta_0 (``init="encode"``, the paper), or with N(0, I) draws redrawn at the start of
**every epoch**, write position reset (``init="prior"``, the authors' training loop), or with
N(0, I) draws once at the start only (``init="prior-once"``). See :data:`TRAIN_INIT_POLICIES`.

Host synchronisation: none in the trainer's step loop. Loss parts are accumulated on the
device (with the index and the parts of the first non-finite step) and read at evaluation and
checkpoint points (every ``eval_every`` / ``checkpoint_every`` steps and at the end of each
epoch), where a non-finite loss stops the run with :class:`NonFiniteLoss` before any
checkpoint of the bad parameters is written. (The batch costs of :mod:`mowtheory.costs`
check their inputs for NaN, which does synchronise; a NaN that reaches them surfaces as an
error of the step, reported the same way, with the step and its loss parts.)

Several processes: under ``torchrun --nproc_per_node=P ... --distributed`` each process reads
k examples of the same global permutation a step (rank r: rows ``r*k .. r*k+k-1`` of the
global batch of k·P), which is the step of one process with k·P
(:class:`mowtheory.distributed.DistributedMoW`; with one process the trainer runs it
``local``, i.e. plain MoW_k(n) step for step). Rank 0 evaluates and writes every file.

Files in ``out``: ``metrics.jsonl`` (one line per evaluation), ``report.json`` (final metrics
and the full configuration), ``checkpoint.pt`` (atomic; each epoch and every
``checkpoint_every`` steps), ``samples.png``, ``reconstructions.png``,
``interpolations.png``, ``cache/`` (the FD feature network).
"""
from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .. import costs
from .._validate import check_choice, check_int, check_positive
from ..mow import REDUCTIONS, REFRESH_POLICIES
from . import checkpoint as ckpt
from . import images, metrics
from .. import _io
from ._lock import OutputLock, probe as _probe_lock
from ._signals import Interrupted, StopSignals
from . import methods as _methods
from .methods import METHODS

MODELS = ("cwae", "wae", "swae", "gmmn", "energy")
#: window init policies of the trainer: ``"encode"`` (the paper), ``"prior"`` (the authors'
#: code: the window redrawn from N(0, I), write position reset, at the start of every epoch),
#: ``"prior-once"`` (drawn from N(0, I) once, before the first step).
TRAIN_INIT_POLICIES = ("encode", "prior", "prior-once")
OPTIMIZERS = ("adam", "gd")
DEVICES = ("cpu", "cuda")

#: model -> registry name of its batch cost in :mod:`mowtheory.costs`
MODEL_COSTS = {"cwae": "cwae", "wae": "wae", "swae": "swae", "gmmn": "gmmn", "energy": "energy"}

#: configuration keys that may change when resuming (they do not change the trained weights)
RESUME_FREE = ("out", "resume", "overwrite", "epochs", "eval_every", "eval_limit",
               "distance_n", "fd", "fd_train_steps", "images", "progress", "stop_after_steps",
               "data_dir", "cache_dir", "checkpoint_every", "distributed", "dist_timeout")

#: training examples at most for the FD feature network (loaded without the run's ``limit``)
FD_TRAIN_LIMIT = 20000
FD_TRAIN_BYTES = 2 * 1024 ** 3

#: files a finished run leaves in ``out``
OUTPUT_FILES = ("metrics.jsonl", "report.json", "checkpoint.pt", "samples.png",
                "reconstructions.png", "interpolations.png")


class NonFiniteLoss(RuntimeError):
    """Training stopped: the loss (or the latents after an update) became NaN or infinite.
    ``step`` is the first bad step (1-based), ``parts`` its loss parts
    (``total``, ``batch_cost``, ``per_example``)."""

    def __init__(self, message: str, *, step: int, parts: dict):
        super().__init__(message)
        self.step = step
        self.parts = parts


@dataclass
class TrainConfig:
    """Configuration of :func:`train` (validated on construction; see ``mowtheory train -h``).

    Model and data:
        model: ``"cwae" | "wae" | "swae" | "gmmn" | "energy"``.
        dataset: a key of :data:`mowtheory.train.data.DATASETS` (``"digits"``, ``"mnist5k"``
            bundled; ``"mnist"``, ``"fashion"``, ``"cifar10"``, ``"celeba"``, ``"ffhq"`` need
            ``data_dir``).
        arch: a key of :data:`mowtheory.train.models.ARCHS`; None: the dataset's default.
        latent_dim, resolution: None: the architecture's / dataset's default.
        limit: use only the first ``limit`` training examples (None: all).
    Method (:mod:`mowtheory.train.methods`):
        method: ``"mow"`` (k examples a step against the window), ``"minibatch"`` (standard
        n-batch training) or ``"gradcache"`` (the same n-batch step, exact gradient, in the
        activation memory of ``chunk`` examples). The n-batch methods read n examples a
        step, reduce G over them, and ignore k, init and refresh (``balanced`` is refused).
        chunk: examples encoded at a time by ``"gradcache"`` (``1 <= chunk <= n``).
    MoW:
        n, k: batch size seen by F and fresh examples per step (``1 <= k <= n``, ``n >= 2``).
        reduction: ``"sum" | "mean" | "sqrt_mean"`` of G over the k fresh examples.
        balanced: scale the F-term by n/k (recovers the standard-training balance).
        init: window init (:data:`TRAIN_INIT_POLICIES`): ``"encode"`` (paper: encode
            ``n - k`` examples at theta_0, once), ``"prior"`` (authors' code: N(0, I) draws at
            the start of every epoch, write position reset) or ``"prior-once"`` (N(0, I)
            draws at the start of training only).
        refresh: ``"post"`` (paper: re-encode after the update) or ``"pre"`` (authors' code).
        lam: weight of the batch cost F (``>= 0``).
        swae_directions: directions L of the sliced distance (fresh each step).
    Optimisation:
        optimizer: ``"adam"`` or ``"gd"`` (plain gradient descent); lr > 0; epochs >= 1.
        seed: seeds the model initialisation, the data order, the window init and the prior.
    Evaluation and output:
        out: output directory; eval_every: also evaluate every this many steps (0: only at
        the end of each epoch); eval_limit: test examples used for the metrics (None: all);
        distance_n: test latents used for the O(N^2) latent distances; fd: compute the
        Fréchet distance in small-classifier features (its network trained for at least
        ``fd_train_steps`` steps, then cached); images: write the PNG figures;
        cache_dir: where the FD feature network is cached (None: ``out/cache``).
    Run control:
        device: ``"cpu"`` or ``"cuda"``; bf16: bfloat16 autocast for the networks (the costs
        run in float32); resume: continue from ``out/checkpoint.pt``; overwrite: start afresh
        in an ``out`` that already holds a checkpoint; checkpoint_every: also write the
        checkpoint every this many steps (0: only at the end of each epoch); progress: tqdm
        bar; stop_after_steps: stop (with a checkpoint) after this many steps in total, as if
        interrupted (for tests of ``resume``).
    Several processes (``torchrun --nproc_per_node=P ... --distributed``):
        distributed: join the process group torchrun set up; each of the P processes reads
        k fresh examples a step (k·P <= n), which is the step of one process with k·P
        (:class:`mowtheory.distributed.DistributedMoW`); rank 0 evaluates and writes the
        files. dist_timeout: seconds every collective may wait (rank 0's evaluations must
        fit in it).
    """
    model: str = "cwae"
    dataset: str = "digits"
    out: str = "runs/train"
    n: int = 64
    k: int = 1
    lr: float = 1e-3
    optimizer: str = "adam"
    epochs: int = 1
    lam: float = 1.0
    reduction: str = "sqrt_mean"
    balanced: bool = False
    init: str = "encode"
    refresh: str = "post"
    method: str = "mow"
    chunk: int = 1
    device: str = "cpu"
    seed: int = 0
    arch: Optional[str] = None
    latent_dim: Optional[int] = None
    resolution: Optional[int] = None
    data_dir: Optional[str] = None
    limit: Optional[int] = None
    eval_limit: Optional[int] = 2000
    distance_n: int = 1000
    eval_every: int = 0
    swae_directions: int = 50
    bf16: bool = False
    fd: bool = True
    fd_train_steps: int = 800
    images: bool = True
    cache_dir: Optional[str] = None
    resume: bool = False
    overwrite: bool = False
    checkpoint_every: int = 0
    progress: bool = True
    stop_after_steps: Optional[int] = None
    distributed: bool = False
    dist_timeout: float = 1800.0

    def __post_init__(self):
        self.validate()

    def validate(self) -> "TrainConfig":
        """Check every field; raises ValueError/TypeError naming the field, the value and
        what is allowed. Returns self."""
        from .data import DATASETS
        from .models import ARCHS

        check_choice("model", self.model, MODELS)
        check_choice("dataset", self.dataset, DATASETS)
        if self.arch is not None:
            check_choice("arch", self.arch, ARCHS)
        self.n = check_int("n", self.n, low=2)
        self.k = check_int("k", self.k, low=1, high=self.n, high_name="n")
        self.lr = check_positive("lr", self.lr)
        if self.lr > torch.finfo(torch.float32).max:   # one policy for every optimizer
            raise ValueError(f"lr must be <= {torch.finfo(torch.float32).max:.4g} (the largest "
                             f"float32: the parameters are float32, and a larger step cannot "
                             f"even be applied); got lr={self.lr:g}")
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        self.epochs = check_int("epochs", self.epochs, low=1)
        self.lam = check_positive("lam (lambda)", self.lam, allow_zero=True)
        check_choice("reduction", self.reduction, REDUCTIONS)
        check_choice("init", self.init, TRAIN_INIT_POLICIES)
        check_choice("refresh", self.refresh, REFRESH_POLICIES)
        check_choice("method", self.method, METHODS)
        self.chunk = check_int("chunk", self.chunk, low=1, high=self.n, high_name="n")
        if self.method != "mow" and (self.balanced is True or self.distributed is True):
            flag = "balanced" if self.balanced is True else "distributed"
            raise ValueError(f"{flag}=True applies to method 'mow' only; got method="
                             f"{self.method!r} with {flag}=True")
        check_choice("device", self.device, DEVICES)
        self.seed = check_int("seed", self.seed, low=0)
        for name in ("latent_dim", "resolution", "limit", "eval_limit", "stop_after_steps"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, check_int(name, v, low=1))
        self.distance_n = check_int("distance_n", self.distance_n, low=2)
        self.eval_every = check_int("eval_every", self.eval_every, low=0)
        self.swae_directions = check_int("swae_directions", self.swae_directions, low=1)
        self.fd_train_steps = check_int("fd_train_steps", self.fd_train_steps, low=1)
        self.checkpoint_every = check_int("checkpoint_every", self.checkpoint_every, low=0)
        self.dist_timeout = check_positive("dist_timeout", self.dist_timeout)
        for name in ("balanced", "bf16", "fd", "images", "resume", "overwrite", "progress",
                     "distributed"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool; got {name}={getattr(self, name)!r}")
        if not isinstance(self.out, (str, Path)) or str(self.out) == "":
            raise ValueError(f"out must be a directory path; got out={self.out!r}")
        self.out = str(self.out)
        _io.check_output_dir("out", self.out)
        if self.cache_dir is not None:
            _io.check_output_dir("cache_dir", self.cache_dir)
        if self.resume and self.overwrite:
            raise ValueError("resume (--resume) continues the checkpoint in out, overwrite "
                             "(--overwrite) discards it: pass one of them; got resume=True, "
                             "overwrite=True")
        if self.model == "cwae" and self.latent_dim is not None and self.latent_dim < 2:
            raise ValueError(f"latent_dim must be >= 2 with model='cwae' (the Cramér-Wold "
                             f"distance needs D >= 2); got latent_dim={self.latent_dim}")
        if self.data_dir is not None:
            self.data_dir = str(self.data_dir)
        if self.cache_dir is not None:
            self.cache_dir = str(self.cache_dir)
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device must be 'cpu' on this machine: torch.cuda.is_available() is "
                             "False; got device='cuda'")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- cost wrapper
@dataclasses.dataclass(frozen=True)
class _Weighted(costs.BatchCost):
    """A :class:`~mowtheory.costs.BatchCost` times ``weight``, evaluated in float32 with
    autocast off (so bf16 autocast of the networks never reaches the cost). The weight is a
    field: copies and pickles keep it (:meth:`__reduce__`)."""

    weight: float = 1.0

    @classmethod
    def wrap(cls, base: costs.BatchCost, weight: float) -> "_Weighted":
        return cls(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)},
                   weight=float(weight))

    def __reduce__(self):
        return (_rebuild_weighted, (self.name, dict(self.params), self.weight))

    def __call__(self, z, y=None):
        with torch.autocast(z.device.type, enabled=False):
            return self.weight * super().__call__(z.float(), None if y is None else y.float())

    def split(self, H, Z, y=None, *, cache=None, constants=True):
        with torch.autocast(Z.device.type, enabled=False):
            return self.weight * super().split(H, Z.float(), None if y is None else y.float(),
                                               cache=cache, constants=constants)


def _rebuild_weighted(name: str, params: dict, weight: float) -> _Weighted:
    return _Weighted.wrap(costs.get(name, **params), weight)


def build_cost(model: str, *, lam: float, swae_directions: int = 50,
               generator: Optional[torch.Generator] = None) -> costs.BatchCost:
    """The batch cost ``lam * F`` of ``model`` (``swae``: fresh directions from ``generator``
    each call)."""
    check_choice("model", model, MODELS)
    params = {}
    if model == "swae":
        params = {"n_directions": swae_directions, "generator": generator}
    return _Weighted.wrap(costs.get(MODEL_COSTS[model], **params), lam)


# ----------------------------------------------------------------------------- helpers
def _resolved(cfg: TrainConfig) -> dict:
    from .data import DATASETS
    from .models import ARCHS
    meta = DATASETS[cfg.dataset]
    arch = cfg.arch or meta["default_arch"]
    res = cfg.resolution
    if res is None and meta.get("default_resolution") is not None:
        res = meta["default_resolution"]
    return {"arch": arch, "resolution": res,
            "latent_dim": cfg.latent_dim or ARCHS[arch]["latent_dim"]}


def _write_json(path: Path, obj) -> None:
    _io.atomic_write_json(path, obj, indent=2)      # NaN/inf -> null


def _clean(v):
    """JSON has no NaN/inf: None (null), the package's one policy (:mod:`mowtheory._io`)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class _Evaluator:
    """Test-split metrics: reconstruction error, WAE-MMD and CW distances, FD."""

    def __init__(self, cfg: TrainConfig, model, x_test, x_train, device, out: Path, log):
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
                self.fd_net, self.fd_info = metrics.feature_network(
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
                self._real_feats = metrics.features(self.fd_net, self.x_test, device=self.device)
            fake = metrics.features(self.fd_net, samples, device=self.device)
            out[self.fd_name] = (metrics.frechet_distance(self._real_feats, fake)
                                 if torch.isfinite(fake).all() else float("nan"))
        return out


# ----------------------------------------------------------------------------- train
def train(config) -> dict:
    """Train an autoencoder with MoW_k(n); returns the report (also written to
    ``out/report.json`` by rank 0).

    Args:
        config: a :class:`TrainConfig` (or a dict of its fields).

    Returns:
        ``{"status": "completed" | "stopped", "config": {...}, "resolved": {...},
        "final_metrics": {...}, "step", "epochs_completed", "examples_seen",
        "resumed_from_step", "steps_this_run", "rank", "world_size", "files", ...}``.

    Raises:
        ValueError: bad configuration, resume with another configuration or number of
            processes, an ``out`` that already holds a checkpoint (without
            ``resume``/``overwrite``), a truncated checkpoint, ``distributed`` outside torchrun.
        FileNotFoundError: ``resume`` without a checkpoint, missing data files.
        NonFiniteLoss: the loss (or the latents after an update) became NaN/inf; the last good
            checkpoint is kept.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig(**dict(config))
    cfg.validate()
    t_start = time.perf_counter()
    ctx = _join_process_group(cfg) if cfg.distributed else None
    lock = OutputLock(cfg.out)       # taken by rank 0 just before its first write
    try:
        # SIGTERM/SIGINT: finish the step, checkpoint, raise Interrupted (one process only:
        # under torchrun the ranks would stop at different steps)
        with StopSignals(enabled=not cfg.distributed) as stop:
            return _train(cfg, ctx, t_start, lock, stop)
    finally:
        lock.release()
        if ctx is not None:
            ctx.close()


def _join_process_group(cfg: "TrainConfig"):
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


def _train(cfg: "TrainConfig", ctx, t_start: float, lock=None, stop=None) -> dict:
    from .data import load_dataset
    from .models import build_autoencoder
    from ..distributed import broadcast_parameters

    world = ctx.world_size if ctx is not None else 1
    rank = ctx.rank if ctx is not None else 0
    main = rank == 0
    # examples read per step, all processes (MoW: k fresh ones each; n-batch methods: n)
    kP = cfg.k * world if cfg.method == "mow" else cfg.n
    if kP > cfg.n:
        raise ValueError(f"k * world_size must be <= n: each of the {world} processes reads "
                         f"k={cfg.k} examples a step; got k * world_size={kP} > n={cfg.n}")

    out = Path(cfg.out)
    ckpt_path = out / ckpt.CHECKPOINT_NAME
    cfg_dict = cfg.to_dict()
    state = None
    if main:
        _probe_lock(out)             # a live run holds out: refuse before any work
    if ckpt_path.is_dir():
        raise ValueError(f"{ckpt_path} is a folder, not a checkpoint file; remove it or choose "
                         f"another --out")
    if cfg.resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint to resume from: {ckpt_path} does "
                                    f"not exist (start without --resume)")
        state = ckpt.load_checkpoint(ckpt_path)
        saved_world = int(state.get("world_size", 1))
        saved_k = int(state["config"].get("k", cfg.k))
        if saved_world != world:
            raise ValueError(
                f"cannot resume from {ckpt_path}: it was written by a run with "
                f"world_size={saved_world} (k={saved_k} per process), this run has "
                f"world_size={world} (k={cfg.k} per process); resume it with the same number "
                f"of processes: "
                + (f"torchrun --nproc_per_node={saved_world} -m mowtheory train ... "
                   f"--distributed --resume" if saved_world > 1 else
                   "one process, without --distributed"))
        saved_cfg = {"method": "mow", "chunk": 1, **state["config"]}  # older checkpoints
        diff = ckpt.config_diff(saved_cfg, cfg_dict, ignore=RESUME_FREE)
        if diff:
            raise ValueError(
                f"cannot resume from {ckpt_path}: the configuration differs in "
                f"{', '.join(k for k, _, _ in diff)} ({ckpt.format_diff(diff)}); rerun with the "
                f"checkpoint's settings or choose another --out")
        if int(state.get("epoch", 0)) > cfg.epochs:
            raise ValueError(
                f"cannot resume from {ckpt_path} with epochs={cfg.epochs}: its run has already "
                f"completed {int(state['epoch'])} epochs (step {int(state['step'])}); pass "
                f"--epochs {int(state['epoch'])} or more to continue it")
    elif ckpt_path.exists() and not cfg.overwrite:
        raise ValueError(f"out={str(out)!r} already holds a checkpoint ({ckpt_path}); pass "
                         f"resume=True (--resume) to continue it or overwrite=True "
                         f"(--overwrite) to start afresh")
    log = _Logger(cfg.progress and main)

    # ---- data and model
    res = _resolved(cfg)
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
    D = model.latent_dim

    # data on the device when it fits comfortably: indexing then never leaves the device
    on_device = device.type == "cpu" or x_train.numel() * 4 < 2 * 1024 ** 3
    x_data = x_train.to(device) if on_device else x_train

    if main:   # the first write: from here on this process holds out's lock
        if lock is not None:
            lock.acquire()
        out.mkdir(parents=True, exist_ok=True)
        for name in OUTPUT_FILES:                     # left by writers killed mid-write
            _io.remove_stale_temporaries(out / name)

    # ---- generators (identical on every process): data order, MoW (prior samples, swae
    # directions, prior init), window init
    data_gen = torch.Generator().manual_seed(cfg.seed)
    mow_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    cost = build_cost(cfg.model, lam=cfg.lam, swae_directions=cfg.swae_directions,
                      generator=mow_gen)

    def encoder(x):
        return model.encode(x).float()

    def per_example(x, z):
        return (model.decode(z).float() - x.float()).pow(2).flatten(1).sum(1)

    # the step of cfg.method (mowtheory.train.methods); for "mow" one process runs
    # DistributedMoW(local=True), plain MoW_k(n) step for step. Each keeps the loss parts of a
    # step that fails after its update (``last_parts``)
    dmow = _methods.build(cfg.method, encoder, cost, n=cfg.n, k=cfg.k, chunk=cfg.chunk,
                          latent_dim=D, per_example=per_example, reduction=cfg.reduction,
                          balanced=cfg.balanced, refresh=cfg.refresh, generator=mow_gen,
                          device=device, local=ctx is None)
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)

    steps_per_epoch = N // kP
    total_steps = cfg.epochs * steps_per_epoch
    step, epoch, pos, perm = 0, 0, 0, None
    acc = torch.zeros(3, dtype=torch.float64, device=device)   # total, batch_cost, per_example
    acc_steps = 0
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    bad_parts = torch.zeros(3, dtype=torch.float64, device=device)
    resumed_from = None
    last_ckpt_step = None
    metric_lines: list = []
    if state is not None:
        ckpt.check_training_state(state, ckpt_path, model_state=model.state_dict(),
                                  steps_per_epoch=steps_per_epoch)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        dmow.load_state_dict(state["mow"])
        data_gen.set_state(state["data_generator"])
        step, epoch, pos = int(state["step"]), int(state["epoch"]), int(state["pos"])
        perm = state["perm"]
        acc = state["acc"].to(device)
        acc_steps = int(state["acc_steps"])
        resumed_from = last_ckpt_step = step
        if main:
            metric_lines = _write_or_explain(
                lambda: _truncate_metrics(out / "metrics.jsonl", step),
                lambda: f"the checkpoint {ckpt_path} (step {step}) and metrics.jsonl are kept")
        log(f"resumed from {ckpt_path} at step {step} (epoch {epoch}, position {pos})")
    else:
        if cfg.init == "encode":
            g = torch.Generator().manual_seed(cfg.seed + 2)
            idx = torch.randperm(N, generator=g)[: cfg.n - kP]
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(cfg.seed + 2)      # a model drawing from the global RNG
                dmow.init_window("encode", x_data[idx.to(x_data.device)].to(device))
        elif cfg.init == "prior-once":
            dmow.init_window("prior")
        # init="prior": drawn at the start of the first epoch, in the loop below
        if main:
            _write_or_explain(lambda: _io.atomic_write_text(out / "metrics.jsonl", ""),
                              lambda: "nothing was written")
    metrics_path = out / "metrics.jsonl"

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        # set-up (the FD feature network, built or loaded) stays off the global RNG stream
        evaluator = _Evaluator(cfg, model, x_test, x_train, device, out, log) if main else None
    last_metrics: dict = dict(state.get("last_metrics") or {}) if state is not None else {}
    t_loop = time.perf_counter()

    def checkpoint(perm_now, pos_now, epoch_now) -> None:
        nonlocal last_ckpt_step
        read_parts(reset=False)          # a checkpoint only ever holds finite weights
        if not _params_finite(model):
            # the loss of every step was finite, but an update overflowed (e.g. refresh="pre",
            # whose window push does not re-encode and so cannot notice it)
            lp = dmow.last_parts
            vals = [float(v) for v in lp] if lp is not None else [float("nan")] * 3
            raise NonFiniteLoss(
                f"non-finite parameters after the update of step {step} although its loss was "
                f"finite ({fmt(vals)}); training stopped, {kept()}", step=step,
                parts=dict(zip(("total", "batch_cost", "per_example"), vals)))
        if main:
            ckpt.save_checkpoint(ckpt_path, {
                "format": ckpt.FORMAT, "config": cfg_dict, "resolved": res, "step": step,
                "epoch": epoch_now, "pos": pos_now, "perm": perm_now,
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "mow": dmow.state_dict(), "world_size": world, "k_per_process": cfg.k,
                "data_generator": data_gen.get_state(), "rng": ckpt.rng_state(),
                "acc": acc.cpu(), "acc_steps": acc_steps, "last_metrics": last_metrics,
                "torch": torch.__version__})
        last_ckpt_step = step

    def kept() -> str:
        if last_ckpt_step is None:
            return "no checkpoint had been written yet"
        return f"the last good checkpoint {ckpt_path} (step {last_ckpt_step}) is kept"

    def fmt(p) -> str:
        t, b, g = (float(v) for v in p)
        return f"total={t:.6g}, batch_cost={b:.6g}, per_example={g:.6g}"

    def read_parts(reset: bool = True) -> dict:
        """Mean loss parts since the last evaluation (one host sync); raises NonFiniteLoss."""
        nonlocal acc, acc_steps
        vals = acc.tolist()
        bad = int(first_bad)
        if bad >= 0 or not all(math.isfinite(v) for v in vals):
            where = bad if bad >= 0 else step
            bp = bad_parts.tolist() if bad >= 0 else vals
            raise NonFiniteLoss(
                f"non-finite loss at step {where} ({fmt(bp)}); training stopped, {kept()}",
                step=where, parts=dict(zip(("total", "batch_cost", "per_example"), bp)))
        mean = {name: v / max(acc_steps, 1)
                for name, v in zip(("total", "batch_cost", "per_example"), vals)}
        if reset:
            acc = torch.zeros_like(acc)
            acc_steps = 0
        return mean

    def step_failed(exc: Exception) -> None:
        """A step raised: name the first non-finite step and its parts, or, when the loss of
        the failing step was finite, what its update produced."""
        read_parts(reset=False)                      # an earlier non-finite loss: raised here
        if "finite" not in str(exc):                 # another error (e.g. a collective timeout)
            raise exc
        s = step + 1
        lp = dmow.last_parts
        if lp is None:
            # the fresh latents were already non-finite (an earlier update overflowed while
            # its loss was finite): the loss of this step cannot be evaluated
            nan = float("nan")
            raise NonFiniteLoss(
                f"non-finite loss at step {s} (total=nan, batch_cost=nan, per_example=nan): "
                f"{str(exc).splitlines()[0]}; training stopped, {kept()}", step=s,
                parts=dict.fromkeys(("total", "batch_cost", "per_example"), nan)) from exc
        vals = [float(t) for t in lp]
        if not all(math.isfinite(v) for v in vals):
            raise NonFiniteLoss(
                f"non-finite loss at step {s} ({fmt(vals)}); training stopped, {kept()}",
                step=s, parts=dict(zip(("total", "batch_cost", "per_example"), vals))) from exc
        raise NonFiniteLoss(
            f"non-finite values after the update of step {s} ({fmt(vals)}): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; training stopped, "
            f"{kept()}", step=s,
            parts=dict(zip(("total", "batch_cost", "per_example"), vals))) from exc

    def evaluate_point(epoch_float: float) -> None:
        nonlocal last_metrics
        train_parts = read_parts()
        if not main:
            return
        row = {"step": step, "epoch": round(epoch_float, 4), "examples_seen": step * kP,
               **{f"train_{k}": v for k, v in train_parts.items()},
               **evaluator(), "time_s": round(time.perf_counter() - t_start, 2)}
        metric_lines.append(_io.json_dumps(row))     # the whole file, atomically
        _io.atomic_write_text(metrics_path, "".join(line + "\n" for line in metric_lines))
        last_metrics = row
        bar.set_postfix({"rec": f"{row['recon_error']:.3g}", "cw": f"{row['cw_distance']:.3g}"})

    from tqdm.auto import tqdm
    bar = tqdm(total=total_steps, initial=step, disable=not (cfg.progress and main), unit="step",
               desc=f"{cfg.model} n={cfg.n} k={kP}", dynamic_ncols=True, leave=False)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    lo, hi = rank * (kP // world), (rank + 1) * (kP // world)   # this process's rows of a step
    status = "completed"
    # the global RNG (dropout, user code): seeded, or restored last, after every set-up step
    if state is not None:
        ckpt.set_rng_state(state["rng"])
    else:
        ckpt.seed_rng(cfg.seed + 3)
    try:
        while epoch < cfg.epochs:
            if perm is None:
                perm = torch.randperm(N, generator=data_gen)
            if cfg.init == "prior" and pos == 0:
                # the authors' loop: a fresh N(0, I) window (write position reset) each epoch
                dmow.init_window("prior")
            perm_dev = perm.to(x_data.device)
            for s in range(pos, steps_per_epoch):
                idx = perm_dev[s * kP + lo:s * kP + hi]
                x = x_data[idx]
                if x.device != device:
                    x = x.to(device, non_blocking=True)
                try:
                    with autocast:
                        parts = dmow.step(x, opt)
                except (ValueError, RuntimeError) as exc:
                    # the costs check their inputs: weights made non-finite by an update
                    # surface as an error about non-finite latents
                    step_failed(exc)
                stacked = torch.stack([p.double() for p in parts])
                acc += stacked
                acc_steps += 1
                step += 1
                newly_bad = (first_bad < 0) & ~torch.isfinite(stacked).all()
                first_bad = torch.where(newly_bad, torch.full_like(first_bad, step), first_bad)
                bad_parts = torch.where(newly_bad, stacked, bad_parts)
                bar.update(1)
                last_in_epoch = s + 1 == steps_per_epoch
                if stop is not None and stop.signum is not None:
                    checkpoint(perm, s + 1, epoch)
                    raise Interrupted(
                        f"received {stop.name}: finished step {step} and wrote its checkpoint "
                        f"{ckpt_path if main else '(rank 0)'}; continue with --resume",
                        signum=stop.signum, step=step, path=ckpt_path)
                if cfg.stop_after_steps is not None and step >= cfg.stop_after_steps \
                        and not last_in_epoch:
                    checkpoint(perm, s + 1, epoch)
                    status = "stopped"
                    break
                if cfg.eval_every and step % cfg.eval_every == 0 and not last_in_epoch:
                    evaluate_point(step / steps_per_epoch)
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 \
                        and not last_in_epoch:
                    checkpoint(perm, s + 1, epoch)
            if status == "stopped":
                break
            epoch += 1
            pos, perm = 0, None
            evaluate_point(float(epoch))
            checkpoint(None, 0, epoch)
            if cfg.stop_after_steps is not None and step >= cfg.stop_after_steps \
                    and epoch < cfg.epochs:
                status = "stopped"
                break
    except (NonFiniteLoss, Interrupted) as exc:
        bar.close()
        if main:
            rep_ = _report(cfg, res, "non-finite" if isinstance(exc, NonFiniteLoss) else
                           "interrupted", step, steps_per_epoch, N, kP, last_metrics, evaluator,
                           resumed_from, t_start, t_loop, device, rank, world, message=str(exc))
            rep_["failed_step" if isinstance(exc, NonFiniteLoss) else "signal"] = (
                exc.step if isinstance(exc, NonFiniteLoss) else stop.name)
            _write_or_explain(lambda: _write_json(out / "report.json", rep_), kept)
        raise
    except OSError as exc:
        bar.close()
        raise _io.WriteError(_io.describe_os_error(exc, kept=kept()), exc.errno) from exc
    bar.close()

    files = {}

    def finish():
        nonlocal files
        if main and status == "completed" and cfg.images:
            files = _write_images(cfg, model, x_test, out, device)
        rep_ = _report(cfg, res, status, step, steps_per_epoch, N, kP, last_metrics, evaluator,
                       resumed_from, t_start, t_loop, device, rank, world, files=files)
        if main:
            _write_json(out / "report.json", rep_)
        return rep_
    return _write_or_explain(finish, kept)


def _write_or_explain(write, kept):
    """Run ``write()``; an OSError (disk full, read-only folder) becomes one line naming the
    file and what was kept (:class:`mowtheory._io.WriteError`)."""
    try:
        return write()
    except OSError as exc:
        if isinstance(exc, _io.WriteError):
            raise
        raise _io.WriteError(_io.describe_os_error(exc, kept=kept()), exc.errno) from exc


def _truncate_metrics(path: Path, step: int) -> list:
    """Drop lines of evaluations after ``step`` (done after the checkpoint a run resumes from)
    and unreadable ones (a line half-written by an older version); the kept lines are written
    beside the file and renamed over it (a kill or a full disk keeps the old file whole).
    Returns the kept lines."""
    if not path.exists():
        return []
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    _io.atomic_write_text(path, "".join(line + "\n" for line in keep))
    return keep


class _Logger:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, msg: str) -> None:
        if self.enabled:
            from tqdm.auto import tqdm
            tqdm.write(f"mowtheory train: {msg}")


def _write_images(cfg: TrainConfig, model, x_test, out: Path, device) -> dict:
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


def _params_finite(model) -> bool:
    """Are all parameters finite? (one host synchronisation)"""
    flags = [torch.isfinite(p).all() for p in model.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


def _report(cfg, res, status, step, steps_per_epoch, N, kP, last_metrics, evaluator,
            resumed_from, t_start, t_loop, device, rank=0, world=1, *, files=None,
            message=None) -> dict:
    fd_name = getattr(evaluator, "fd_name", None)
    fd_reason = getattr(evaluator, "fd_reason", "evaluated on rank 0 only")
    rep = {
        "status": status,
        "config": cfg.to_dict(),
        "resolved": dict(res, train_examples=N, steps_per_epoch=steps_per_epoch,
                         cost=MODEL_COSTS[cfg.model]),
        "step": step,
        "epochs_completed": step / steps_per_epoch if steps_per_epoch else 0.0,
        "examples_seen": step * kP,
        "rank": rank,
        "world_size": world,
        "resumed_from_step": resumed_from,
        "steps_this_run": step - (resumed_from or 0),
        "final_metrics": {k: _clean(v) for k, v in last_metrics.items()},
        "fd_metric": fd_name,
        "fd_note": ("Fréchet distance in the features of a small network trained on the same "
                    "dataset; NOT FID (no Inception network) and comparable only between runs "
                    "with the same cached feature network") if fd_name else
                   f"no Fréchet distance: {fd_reason}",
        "fd_reason": fd_reason,
        "feature_network": getattr(evaluator, "fd_info", None),
        "objective": ("total = (n/k if balanced else 1) * lam * F + reduction_j G(x_j), "
                      "G = summed squared reconstruction error of one example"),
        "files": dict(files or {}, metrics="metrics.jsonl", checkpoint="checkpoint.pt"),
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "seconds": round(time.perf_counter() - t_start, 2),
        "train_seconds": round(time.perf_counter() - t_loop, 2),
    }
    if message:
        rep["message"] = message
    return rep
