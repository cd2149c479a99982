"""Train an autoencoder with MoW, interrupt it, resume it, and get the same weights.

``mowtheory.train`` runs the paper's autoencoders (docs/guides/training.md). A run writes
``checkpoint.pt`` atomically (each epoch and every ``checkpoint_every`` steps); resuming
continues with the same data order, random states, window and optimizer, and ends with the
same weights, bit for bit, as an uninterrupted run. This script trains the CWAE on the bundled
8×8 digits twice — once straight through, once stopped mid-epoch (``stop_after_steps``, as if
killed) and resumed — and compares the weights. It uses ``init="prior"``, the authors' window
init (redrawn from N(0, I) at the start of every epoch), which the resume must reproduce too.

    python examples/train_and_resume.py --out runs/example            # 2 epochs, N = 512
    python examples/train_and_resume.py --out runs/example --quick    # N = 24 (a smoke run)

The same from the command line:
``mowtheory train --dataset digits --init prior --epochs 2 --out DIR`` and, after an
interruption, the same command with ``--resume``.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from mowtheory.train import TrainConfig, train
from mowtheory.train.checkpoint import load_checkpoint


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/example-resume", help="folder for the two runs")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    limit = 24 if args.quick else 512
    common = dict(model="cwae", dataset="digits", n=8 if args.quick else 32, k=2, epochs=2,
                  limit=limit, eval_limit=32 if args.quick else 500, init="prior",
                  progress=False, fd=False, images=not args.quick)
    steps = limit // 2 * 2                          # k = 2: N/2 steps an epoch, 2 epochs
    stop = steps // 2 + 3                           # in the middle of the second epoch

    full = train(TrainConfig(out=str(out / "full"), **common))
    print(f"uninterrupted: {full['step']} steps, recon_error "
          f"{full['final_metrics']['recon_error']:.4f}")
    part = train(TrainConfig(out=str(out / "part"), stop_after_steps=stop, **common))
    print(f"interrupted at step {part['step']} ({part['status']})")
    rest = train(TrainConfig(out=str(out / "part"), resume=True, **common))
    print(f"resumed from step {rest['resumed_from_step']}: {rest['steps_this_run']} more steps")

    a = load_checkpoint(out / "full" / "checkpoint.pt")["model"]
    b = load_checkpoint(out / "part" / "checkpoint.pt")["model"]
    same = a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    print("weights identical to the uninterrupted run:", same)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
