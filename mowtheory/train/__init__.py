"""Autoencoder training with MoW: the paper's architectures, datasets, trainer and metrics.

Python API::

    from mowtheory.train import TrainConfig, train
    report = train(TrainConfig(model="cwae", dataset="digits", n=64, k=1, epochs=2,
                               out="runs/digits-cwae"))
    report["final_metrics"]["recon_error"]

Command line: ``mowtheory train --model cwae --dataset digits --n 64 --k 1 --out DIR``.

Submodules: :mod:`~mowtheory.train.models` (``build_autoencoder``, ``ARCHS``),
:mod:`~mowtheory.train.data` (``load_dataset``, ``DATASETS``),
:mod:`~mowtheory.train.trainer` (``train``, ``Trainer``, ``RunState``),
:mod:`~mowtheory.train.config` (``TrainConfig``, ``CHOICES``; imports no torch),
:mod:`~mowtheory.train.objective` (``build_cost``: F in float32; lambda goes to the step),
:mod:`~mowtheory.train.evaluate`, :mod:`~mowtheory.train.metrics`,
:mod:`~mowtheory.train.images`, :mod:`~mowtheory.train.checkpoint`; the command is
:mod:`mowtheory.cli.train`. The names below are imported on first use, so that importing
``mowtheory.train`` (for ``mowtheory train --help``) stays light.
"""
from __future__ import annotations

import importlib

__all__ = ["MODELS", "NonFiniteLoss", "TrainConfig", "train"]


def __getattr__(name):
    if name in __all__:
        module = ".config" if name in ("MODELS", "TrainConfig") else ".trainer"
        return getattr(importlib.import_module(module, __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
