"""``mowtheory train``: train an autoencoder with MoW_k(n) (see :mod:`mowtheory.train.trainer`);
the parser is generated from :class:`~mowtheory.train.config.TrainConfig`.

Example::

    mowtheory train --model cwae --dataset digits --n 64 --k 1 --epochs 5 --out runs/cwae-k1
    mowtheory train ... --out runs/cwae-k1 --resume        # continue after an interruption

Writes ``metrics.jsonl``, ``report.json``, ``checkpoint.pt`` and the PNG figures in ``--out``.
Exit status: 0 done, 2 bad input or an I/O error (one-line message naming the file and what
was kept), 3 non-finite loss (the last good checkpoint is kept), 143 / 130 after SIGTERM /
SIGINT (the current step finished and its checkpoint written; continue with ``--resume``).
One run at a time writes an ``--out`` folder (a lock; a second is refused naming the PID).

Several processes: ``torchrun --nproc_per_node=P -m mowtheory train ... --distributed``; each
process reads k examples a step (the step of one process with k·P), rank 0 writes the files.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import EXIT_NON_FINITE, EXIT_OK
from ._options import Formatter, add_options, values as _values

#: the options whose CLI default differs from the :class:`TrainConfig` field's: None is
#: resolved by :func:`config_from_args` (``out`` from the run's settings, ``device`` to cuda
#: when available)
CLI_RESOLVED = ("out", "device")


#: the options of `mowtheory train`, by group: ``(TrainConfig field, help[, flags...])``;
#: the default, type and choices of each come from the field and
#: :data:`~mowtheory.train.config.CHOICES` (:func:`mowtheory.cli._options.add_options`)
OPTIONS = (
    ("model and data", (
        ("model", "cwae: log Cramér-Wold distance; wae: MMD with IMQ kernels; swae: sliced "
                  "Wasserstein (fresh directions each step); gmmn: Gaussian MMD^2; energy: "
                  "energy distance"),
        ("dataset", "digits, mnist5k (bundled); mnist, fashion, cifar10, celeba, ffhq (need "
                    "--data-dir)"),
        ("data_dir", "folder with the dataset's files"),
        ("arch", "architecture (default: the dataset's)"),
        ("latent_dim", "latent dimension D (default: the architecture's)"),
        ("resolution", "image side for celeba/ffhq (default 64/1024)"),
        ("limit", "use the first LIMIT training examples"),
    )),
    ("method", (
        ("method", "mow: k examples a step against a window of n-k frozen latents; minibatch: "
                   "standard training, n examples a step; gradcache: the same n-batch step and "
                   "gradient in the activation memory of --chunk examples (the n-batch methods "
                   "ignore --k, --init, --refresh)"),
        ("chunk", "gradcache: examples encoded at a time (1 <= chunk <= n)"),
    )),
    ("MoW", (
        ("n", "batch size seen by the batch cost F (--batch-n is the same option; spell it so "
              "under torchrun, whose own options make --n ambiguous)", "--n", "--batch-n"),
        ("k", "fresh examples per step (1 <= k <= n)"),
        ("lam", "weight of the batch cost F", "--lambda"),
        ("reduction", "reduction of the per-example errors over the k fresh examples; "
                      "sqrt_mean (square root of the batch mean) is what the paper's "
                      "experiments (the authors' code) used; sum is the theorem's cost"),
        ("balanced", "scale the F-term by n/k (balanced MoW: the balance of standard training)"),
        ("init", "window init: encode n-k training examples at theta_0 (paper); prior: N(0, I) "
                 "draws at the start of every epoch, write position reset (authors' code); "
                 "prior-once: N(0, I) draws before the first step only"),
        ("refresh", "store latents re-encoded after the update (paper) or those from before it "
                    "(authors' code)"),
        ("swae_directions", "random directions of the sliced distance (swae)"),
    )),
    ("optimisation", (
        ("optimizer", "adam, or gd (plain gradient descent)"),
        ("lr", "learning rate"),
        ("epochs", "passes over the training examples"),
        ("seed", "seeds the model, the data order, the window init and the prior"),
    )),
    ("run", (
        ("out", "output directory (default runs/MODEL-DATASET-nN-kK[-balanced]-sSEED; "
                "-minibatch or -gradcache-cC in place of -kK for those methods)"),
        ("resume", "continue from OUT/checkpoint.pt (the configuration must match)"),
        ("overwrite", "start afresh in an OUT that already holds a checkpoint"),
        ("checkpoint_every", "also write the checkpoint every this many steps (0: each epoch "
                             "only)"),
        ("stop_after_steps", "stop after this many steps in total, with a checkpoint, as an "
                             "interruption would (continue with --resume)"),
        ("device", "default: cuda when available, else cpu"),
        ("bf16", "bfloat16 autocast for the networks"),
        ("eval_every", "also evaluate every this many steps (0: at the end of each epoch only)"),
        ("eval_limit", "test examples used for the metrics"),
        ("distance_n", "test latents used for the WAE/CW distances (O(N^2))"),
        ("cache_dir", "cache of the FD feature network (default OUT/cache)"),
        ("fd", "skip the Fréchet distance (FD-small-classifier)"),
        ("fd_train_steps", "minimum training steps of the FD feature network (trained once, "
                           "cached)"),
        ("images", "do not write the PNG figures"),
        ("progress", "no progress bar"),
    )),
    ("several processes", (
        ("distributed", "data-parallel MoW under `torchrun --nproc_per_node=P -m mowtheory "
                        "train ... --distributed`: each process reads k examples a step (the "
                        "step of one process with k*P); rank 0 evaluates and writes the files"),
        ("dist_timeout", "seconds every collective may wait (rank 0's evaluations must fit)"),
    )),
)


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``train`` to ``subparsers``: one option per :class:`TrainConfig` field (a test
    checks that every field has one, with the field's default and choices)."""
    from ..train.config import CHOICES, TrainConfig
    p = subparsers.add_parser(
        "train", help="train an autoencoder (CWAE, WAE, SWAE, ...) with MoW_k(n) (or --method "
             "minibatch / gradcache)",
        description=(
            "Train an autoencoder with MoW_k(n): each step encodes k fresh examples and lets the "
            "batch cost F see them together with the n-k frozen latents of the window. "
            "Objective per step: (n/k if --balanced else 1) * lambda * F + reduction of the "
            "per-example summed squared reconstruction errors. Writes metrics.jsonl, "
            "report.json, checkpoint.pt, samples.png, reconstructions.png and "
            "interpolations.png in --out."),
        formatter_class=Formatter)
    add_options(p, TrainConfig, OPTIONS, choices=CHOICES,
                cli_defaults={name: None for name in CLI_RESOLVED})
    return p


def config_from_args(args):
    """The :class:`~mowtheory.train.trainer.TrainConfig` of parsed arguments: every field
    from the option of the same name; ``out`` and ``device`` resolved when not given."""
    import torch

    from ..train.config import TrainConfig

    values = _values(TrainConfig, args)
    values["device"] = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    what = (f"k{args.k}{'-balanced' if args.balanced else ''}" if args.method == "mow" else
            args.method + (f"-c{args.chunk}" if args.method == "gradcache" else ""))
    if args.out is None:                        # --out "" is refused, not replaced
        values["out"] = f"runs/{args.model}-{args.dataset}-n{args.n}-{what}-s{args.seed}"
    return TrainConfig(**values)


def _warn_inapplicable(cfg) -> None:
    """A warning (stderr) for options that do not apply to the chosen model or dataset."""
    from ..train.config import TrainConfig
    from ..train.data import DATASETS
    default = TrainConfig.__dataclass_fields__["swae_directions"].default
    if cfg.model != "swae" and cfg.swae_directions != default:
        print(f"mowtheory train: warning: --swae-directions {cfg.swae_directions} applies to "
              f"--model swae only; ignored with --model {cfg.model}", file=sys.stderr)
    if cfg.data_dir is not None and DATASETS[cfg.dataset].get("bundled"):
        print(f"mowtheory train: warning: --data-dir applies to datasets read from files; "
              f"{cfg.dataset!r} is bundled, --data-dir {cfg.data_dir!r} is ignored",
              file=sys.stderr)


def run(args) -> int:
    from ..train._signals import Interrupted
    from ..train.trainer import NonFiniteLoss, train

    cfg = config_from_args(args)
    _warn_inapplicable(cfg)
    try:
        report = train(cfg)
    except NonFiniteLoss as exc:
        print(f"mowtheory train: error: {exc}", file=sys.stderr)
        return EXIT_NON_FINITE
    except Interrupted as exc:                 # SIGTERM 143, SIGINT 130, checkpoint written
        print(f"mowtheory train: {exc}", file=sys.stderr)
        return exc.exit_status
    if report.get("rank", 0) != 0:
        _end_distributed(cfg, 0)      # rank 0 reports for every process
    fm = report["final_metrics"]
    keys = ["recon_error", "wae_distance", "cw_distance"] + (
        [report["fd_metric"]] if report.get("fd_metric") else [])
    summary = ", ".join(f"{k}={fm[k]:.4g}" if isinstance(fm.get(k), float) else f"{k}={fm.get(k)}"
                        for k in keys)
    print(f"mowtheory train: {report['status']} after {report['step']} steps "
          f"({report['examples_seen']} examples) in {report['seconds']:.1f} s; {summary}; "
          f"files in {cfg.out}")
    _end_distributed(cfg, 0)
    return EXIT_OK


def _end_distributed(cfg, code: int) -> None:
    """After a completed ``--distributed`` run (every file written, the group destroyed):
    end the process now, skipping the interpreter's teardown, in which gloo's threads can
    abort it (SIGABRT, "terminate called without an active exception"; seen in about 1 of 16
    two-rank runs on a 2-core machine), which torchrun would report as a failed rank."""
    if cfg.distributed:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

