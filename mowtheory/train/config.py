"""Configuration of a training run: :class:`TrainConfig` and its choices. Importing it does
not import torch (``mowtheory train --help`` is built from it); the weighted batch cost
F of each model is :func:`mowtheory.train.objective.build_cost` (lambda is a parameter of
the objective, passed to the step).

``MODELS`` names the autoencoders (each trains against the registered batch cost
``MODEL_COSTS[model]`` of :mod:`mowtheory.costs`); ``RESUME_FREE`` the fields that may change
when a run is resumed (they do not change the trained weights). The objective a configuration
trains is written out in :mod:`mowtheory.train.trainer`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .._names import REDUCTIONS, REFRESH_POLICIES

MODELS = ("cwae", "wae", "swae", "gmmn", "energy")
#: the training methods (:mod:`mowtheory.train.methods`)
METHODS = ("mow", "minibatch", "gradcache")
#: window init policies of the trainer: ``"encode"`` (the paper), ``"prior"`` (the authors'
#: code: the window redrawn from N(0, I), write position reset, at the start of every epoch),
#: ``"prior-once"`` (drawn from N(0, I) once, before the first step).
TRAIN_INIT_POLICIES = ("encode", "prior", "prior-once")
OPTIMIZERS = ("adam", "gd")
DEVICES = ("cpu", "cuda")

#: model -> registry name of its batch cost in :mod:`mowtheory.costs`
MODEL_COSTS = {"cwae": "cwae", "wae": "wae", "swae": "swae", "gmmn": "gmmn", "energy": "energy"}

#: field -> its allowed values, for the fields whose values are names (the CLI's choices are
#: these tuples; ``dataset`` and ``arch`` are checked against their registries in
#: :meth:`TrainConfig.validate`)
CHOICES = {"model": MODELS, "method": METHODS, "reduction": REDUCTIONS,
           "init": TRAIN_INIT_POLICIES, "refresh": REFRESH_POLICIES, "optimizer": OPTIMIZERS,
           "device": DEVICES}

#: configuration keys that may change when resuming (they do not change the trained weights)
RESUME_FREE = ("out", "resume", "overwrite", "epochs", "eval_every", "eval_limit",
               "distance_n", "fd", "fd_train_steps", "images", "progress", "stop_after_steps",
               "data_dir", "cache_dir", "checkpoint_every", "distributed", "dist_timeout")


@dataclass
class TrainConfig:
    """Configuration of :func:`~mowtheory.train.trainer.train` (validated on construction;
    see ``mowtheory train -h``).

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
        import torch

        from .. import _io
        from .._validate import check_choice, check_int, check_positive
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


def resolved(cfg: TrainConfig) -> dict:
    """The defaults a configuration leaves to its dataset and architecture, filled in:
    ``{"arch", "resolution", "latent_dim"}``."""
    from .data import DATASETS
    from .models import ARCHS
    meta = DATASETS[cfg.dataset]
    arch = cfg.arch or meta["default_arch"]
    res = cfg.resolution
    if res is None and meta.get("default_resolution") is not None:
        res = meta["default_resolution"]
    return {"arch": arch, "resolution": res,
            "latent_dim": cfg.latent_dim or ARCHS[arch]["latent_dim"]}
