"""Checkpoints of a training run: atomic writes, RNG states, configuration comparison.

A checkpoint is one ``torch.save`` dictionary (see :func:`mowtheory.train.trainer.train`)::

    {"format": 1, "config": {...}, "step": int, "epoch": int, "pos": int, "perm": LongTensor,
     "model": state_dict, "optimizer": state_dict, "mow": MoW.state_dict(),
     "data_generator": ByteTensor, "rng": rng_state(), ...}

It is written atomically: to a temporary file in the same directory (so that ``os.replace``
is a rename on one file system), flushed and fsync'ed, then renamed over the old one. A run
killed while writing leaves the previous checkpoint intact.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 1


def save_checkpoint(path, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same directory (so that
    ``os.replace`` is a rename within one file system), flushed and fsync'ed, renamed over
    ``path``, then the directory fsync'ed (the rename survives a power loss). A process killed
    at any moment (SIGKILL included) leaves the previous or the new checkpoint, never a partial
    one; at worst a stale ``.NAME.*.tmp`` file (see :func:`remove_stale_temporaries`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)        # mkstemp makes 0600; use the usual mode
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """fsync a directory (makes a rename in it durable); a no-op where not supported."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def remove_stale_temporaries(path) -> list:
    """Delete the ``.NAME.*.tmp`` files that writers of ``path`` killed mid-write left beside
    it (call it when no writer runs); returns the deleted paths."""
    path = Path(path)
    gone = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            tmp.unlink()
            gone.append(tmp)
        except OSError:
            pass
    return gone


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises ``FileNotFoundError`` (with the path) when there is none, ``ValueError`` when the
    file is truncated or corrupt or not a mowtheory training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError...
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"{path}: the checkpoint is truncated or corrupt and cannot be loaded "
                         f"({type(exc).__name__}: {first[:120]}); start afresh with --overwrite "
                         f"(overwrite=True) or choose another --out") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a mowtheory training checkpoint (format {FORMAT})")
    return state


def rng_state() -> dict:
    """The global RNG states (torch CPU, every CUDA device, numpy, random)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only where CUDA is present)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def config_diff(saved: dict, current: dict, ignore: Iterable[str] = ()) -> list[tuple]:
    """Keys on which two configuration dictionaries differ, as ``(key, saved, current)``,
    sorted by key; keys in ``ignore`` are not compared."""
    ignore = set(ignore)
    keys = sorted((set(saved) | set(current)) - ignore)
    missing = object()
    out = []
    for key in keys:
        a, b = saved.get(key, missing), current.get(key, missing)
        if a is missing or b is missing or a != b:
            out.append((key, None if a is missing else a, None if b is missing else b))
    return out


def format_diff(diff: list[tuple]) -> str:
    """``key: saved -> current`` for each difference, comma-separated."""
    return ", ".join(f"{k}: {a!r} (checkpoint) != {b!r} (now)" for k, a, b in diff)
