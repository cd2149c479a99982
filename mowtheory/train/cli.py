"""``mowtheory train``: train an autoencoder with MoW_k(n) (see :mod:`mowtheory.train.trainer`).

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
import sys

MODELS = ("cwae", "wae", "swae", "gmmn", "energy")
REDUCTIONS = ("sum", "mean", "sqrt_mean")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for on/off flags and options whose default is None."""

    def _get_help_string(self, action):
        if action.nargs == 0 or action.default is None:
            return action.help
        return super()._get_help_string(action)


def register(subparsers) -> argparse.ArgumentParser:
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
        formatter_class=_Formatter)
    g = p.add_argument_group("model and data")
    g.add_argument("--model", choices=MODELS, default="cwae",
                   help="cwae: log Cramér-Wold distance; wae: MMD with IMQ kernels; swae: sliced "
                        "Wasserstein (fresh directions each step); gmmn: Gaussian MMD^2; "
                        "energy: energy distance")
    g.add_argument("--dataset", default="digits",
                   help="digits, mnist5k (bundled); mnist, fashion, cifar10, celeba, ffhq "
                        "(need --data-dir)")
    g.add_argument("--data-dir", default=None, help="folder with the dataset's files")
    g.add_argument("--arch", default=None, help="architecture (default: the dataset's)")
    g.add_argument("--latent-dim", type=int, default=None, help="latent dimension D "
                   "(default: the architecture's)")
    g.add_argument("--resolution", type=int, default=None,
                   help="image side for celeba/ffhq (default 64/1024)")
    g.add_argument("--limit", type=int, default=None, help="use the first LIMIT training examples")
    t = p.add_argument_group("method")
    t.add_argument("--method", choices=("mow", "minibatch", "gradcache"), default="mow",
                   help="mow: k examples a step against a window of n-k frozen latents; "
                        "minibatch: standard training, n examples a step; gradcache: the same "
                        "n-batch step and gradient in the activation memory of --chunk examples "
                        "(the n-batch methods ignore --k, --init, --refresh)")
    t.add_argument("--chunk", type=int, default=1,
                   help="gradcache: examples encoded at a time (1 <= chunk <= n)")
    m = p.add_argument_group("MoW")
    m.add_argument("--n", "--batch-n", dest="n", type=int, default=64,
                   help="batch size seen by the batch cost F (--batch-n is the same option; "
                        "spell it so under torchrun, whose own options make --n ambiguous)")
    m.add_argument("--k", type=int, default=1, help="fresh examples per step (1 <= k <= n)")
    m.add_argument("--lambda", dest="lam", type=float, default=1.0,
                   help="weight of the batch cost F")
    m.add_argument("--reduction", choices=REDUCTIONS, default="sqrt_mean",
                   help="reduction of the per-example errors over the k fresh examples; "
                        "sqrt_mean (square root of the batch mean) is what the paper's "
                        "experiments (the authors' code) used; sum is the theorem's cost")
    m.add_argument("--balanced", action="store_true",
                   help="scale the F-term by n/k (balanced MoW: the balance of standard training)")
    m.add_argument("--init", choices=("encode", "prior", "prior-once"), default="encode",
                   help="window init: encode n-k training examples at theta_0 (paper); prior: "
                        "N(0, I) draws at the start of every epoch, write position reset "
                        "(authors' code); prior-once: N(0, I) draws before the first step only")
    m.add_argument("--refresh", choices=("post", "pre"), default="post",
                   help="store latents re-encoded after the update (paper) or those from before "
                        "it (authors' code)")
    m.add_argument("--swae-directions", type=int, default=50,
                   help="random directions of the sliced distance (swae)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--optimizer", choices=("adam", "gd"), default="adam")
    o.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    o.add_argument("--epochs", type=int, default=1, help="passes over the training examples")
    o.add_argument("--seed", type=int, default=0)
    r = p.add_argument_group("run")
    r.add_argument("--out", default=None,
                   help="output directory (default runs/MODEL-DATASET-nN-kK[-balanced]-sSEED; "
                        "-minibatch or -gradcache-cC in place of -kK for those methods)")
    r.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.pt (the configuration must match)")
    r.add_argument("--overwrite", action="store_true",
                   help="start afresh in an OUT that already holds a checkpoint")
    r.add_argument("--checkpoint-every", type=int, default=0,
                   help="also write the checkpoint every this many steps (0: each epoch only)")
    r.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="default: cuda when available, else cpu")
    r.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the networks")
    r.add_argument("--eval-every", type=int, default=0,
                   help="also evaluate every this many steps (0: at the end of each epoch only)")
    r.add_argument("--eval-limit", type=int, default=2000,
                   help="test examples used for the metrics")
    r.add_argument("--distance-n", type=int, default=1000,
                   help="test latents used for the WAE/CW distances (O(N^2))")
    r.add_argument("--cache-dir", default=None,
                   help="cache of the FD feature network (default OUT/cache)")
    r.add_argument("--no-fd", dest="fd", action="store_false",
                   help="skip the Fréchet distance (FD-small-classifier)")
    r.add_argument("--fd-train-steps", type=int, default=800,
                   help="minimum training steps of the FD feature network (trained once, cached)")
    r.add_argument("--no-images", dest="images", action="store_false",
                   help="do not write the PNG figures")
    r.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")
    d = p.add_argument_group("several processes")
    d.add_argument("--distributed", action="store_true",
                   help="data-parallel MoW under `torchrun --nproc_per_node=P -m mowtheory train "
                        "... --distributed`: each process reads k examples a step (the step of "
                        "one process with k*P); rank 0 evaluates and writes the files")
    d.add_argument("--dist-timeout", type=float, default=1800.0,
                   help="seconds every collective may wait (rank 0's evaluations must fit)")
    return p


def config_from_args(args):
    """The :class:`~mowtheory.train.trainer.TrainConfig` of parsed arguments."""
    import torch

    from .trainer import TrainConfig

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    what = (f"k{args.k}{'-balanced' if args.balanced else ''}" if args.method == "mow" else
            args.method + (f"-c{args.chunk}" if args.method == "gradcache" else ""))
    out = (args.out if args.out is not None     # --out "" is refused, not replaced
           else f"runs/{args.model}-{args.dataset}-n{args.n}-{what}-s{args.seed}")
    return TrainConfig(
        model=args.model, dataset=args.dataset, out=out, n=args.n, k=args.k, lr=args.lr,
        optimizer=args.optimizer, epochs=args.epochs, lam=args.lam, reduction=args.reduction,
        balanced=args.balanced, init=args.init, refresh=args.refresh, method=args.method,
        chunk=args.chunk, device=device,
        seed=args.seed, arch=args.arch, latent_dim=args.latent_dim, resolution=args.resolution,
        data_dir=args.data_dir, limit=args.limit, eval_limit=args.eval_limit,
        distance_n=args.distance_n, eval_every=args.eval_every,
        swae_directions=args.swae_directions, bf16=args.bf16, fd=args.fd,
        fd_train_steps=args.fd_train_steps, images=args.images,
        cache_dir=args.cache_dir, resume=args.resume, overwrite=args.overwrite,
        checkpoint_every=args.checkpoint_every, progress=args.progress,
        distributed=args.distributed, dist_timeout=args.dist_timeout)


def _warn_inapplicable(cfg) -> None:
    """A warning (stderr) for options that do not apply to the chosen model or dataset."""
    from .data import DATASETS
    from .trainer import TrainConfig
    default = TrainConfig.__dataclass_fields__["swae_directions"].default
    if cfg.model != "swae" and cfg.swae_directions != default:
        print(f"mowtheory train: warning: --swae-directions {cfg.swae_directions} applies to "
              f"--model swae only; ignored with --model {cfg.model}", file=sys.stderr)
    if cfg.data_dir is not None and DATASETS[cfg.dataset].get("bundled"):
        print(f"mowtheory train: warning: --data-dir applies to datasets read from files; "
              f"{cfg.dataset!r} is bundled, --data-dir {cfg.data_dir!r} is ignored",
              file=sys.stderr)


def run(args) -> int:
    from ._signals import Interrupted
    from .trainer import NonFiniteLoss, train

    cfg = config_from_args(args)
    _warn_inapplicable(cfg)
    try:
        report = train(cfg)
    except NonFiniteLoss as exc:
        print(f"mowtheory train: error: {exc}", file=sys.stderr)
        return 3
    except Interrupted as exc:                 # SIGTERM 143, SIGINT 130, checkpoint written
        print(f"mowtheory train: {exc}", file=sys.stderr)
        return exc.exit_status
    if report.get("rank", 0) != 0:
        return 0                      # rank 0 reports for every process
    fm = report["final_metrics"]
    keys = ["recon_error", "wae_distance", "cw_distance"] + (
        [report["fd_metric"]] if report.get("fd_metric") else [])
    summary = ", ".join(f"{k}={fm[k]:.4g}" if isinstance(fm.get(k), float) else f"{k}={fm.get(k)}"
                        for k in keys)
    print(f"mowtheory train: {report['status']} after {report['step']} steps "
          f"({report['examples_seen']} examples) in {report['seconds']:.1f} s; {summary}; "
          f"files in {cfg.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="mowtheory")
    sub = parser.add_subparsers()
    register(sub)
    ns = parser.parse_args()
    sys.exit(run(ns))
