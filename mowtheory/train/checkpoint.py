"""Checkpoints of a training run: atomic, checksummed writes, validation, RNG states,
configuration comparison.

A checkpoint is one ``torch.save`` dictionary (schema: :data:`TRAINING_KEYS`,
:func:`training_state`; written by :class:`mowtheory.train.trainer.Trainer`)::

    {"format": 1, "config": {...}, "step": int, "epoch": int, "pos": int, "perm": LongTensor,
     "model": state_dict, "optimizer": state_dict, "mow": MoW.state_dict(),
     "data_generator": ByteTensor, "rng": rng_state(), ...}

stored as the bytes of ``torch.save`` (the payload) followed by a footer ``MAGIC`` +
``crc32=XXXXXXXX size=N``: the CRC-32 and length of the payload, computed while it is written.
:func:`load_checkpoint` verifies them: a flipped byte anywhere in the payload (or a truncated
file) is refused with a message, never loaded. (A file without the footer, from before it
existed, loads without a checksum.)

It is written atomically by :func:`mowtheory._io.atomic_open` (temporary file in the
same folder, fsync, ``os.replace``): a run killed while writing leaves the previous checkpoint
intact. An I/O error while writing (disk full, a file-size limit) surfaces as the
``OSError`` naming the file, not as torch's error about its stream.
:func:`check_training_state` validates what a training run needs, naming the field.
"""
from __future__ import annotations

import io
import math
import random
import re
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from .._io import atomic_open
from .._io import remove_stale_temporaries  # noqa: F401  (re-exported: the trainer calls it)

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 1
MAGIC = b"\nMOWTHEORY-CHECKPOINT "

#: what a training checkpoint holds (:func:`training_state`, :func:`check_training_state`):
#: ``config`` (TrainConfig.to_dict), ``step`` (steps done), ``epoch`` (epochs completed),
#: ``pos`` (steps done in the current epoch), ``perm`` (its permutation; None at an epoch
#: boundary), ``model``/``optimizer``/``mow`` (state_dicts; ``mow`` holds the window),
#: ``data_generator`` (state of the data-order generator), ``rng`` (:func:`rng_state`),
#: ``acc``/``acc_steps`` (loss parts summed since the last evaluation, float64 (3,))
TRAINING_KEYS = ("format", "config", "step", "epoch", "pos", "perm", "model", "optimizer",
                 "mow", "data_generator", "rng", "acc", "acc_steps")
#: also written, optional when read (older checkpoints): ``resolved`` (arch, resolution,
#: latent_dim), ``world_size`` and ``k_per_process`` (processes of the run), ``last_metrics``
#: (the last evaluation), ``torch`` (version)
OPTIONAL_KEYS = ("resolved", "world_size", "k_per_process", "last_metrics", "torch")
#: settings of configurations older than a field (added when comparing them)
OLDER_DEFAULTS = {"method": "mow", "chunk": 1}


class _Summing:
    """A write-only file wrapper that keeps the CRC-32 and size of what passes through it,
    and the OSError of a failed write (torch reports it as a RuntimeError of its own)."""

    def __init__(self, fh):
        self.fh, self.crc, self.size, self.error = fh, 0, 0, None

    def write(self, data) -> int:
        try:
            n = self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        return n

    def flush(self) -> None:
        self.fh.flush()


def _footer(crc: int, size: int) -> bytes:
    return MAGIC + f"crc32={crc:08x} size={size}\n".encode()


_FOOTER = re.compile(re.escape(MAGIC) + rb"crc32=([0-9a-f]{8}) size=([0-9]+)\n\Z")
_FOOTER_MAX = len(MAGIC) + 40


def save_checkpoint(path, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically, followed by the CRC-32 of its payload (module
    docstring). A process killed at any moment (SIGKILL included) leaves the previous or the
    new checkpoint, never a partial one; at worst a stale ``.NAME.*.tmp`` file (see
    :func:`remove_stale_temporaries`). Raises ``OSError`` (naming the file) on I/O errors."""
    with atomic_open(path, "wb") as fh:
        out = _Summing(fh)
        try:
            torch.save(state, out)
        except RuntimeError:
            if out.error is not None:       # disk full, file-size limit, ...: the real error
                raise out.error from None
            raise
        fh.write(_footer(out.crc, out.size))
    return Path(path)


def _corrupt(path, why: str) -> ValueError:
    return ValueError(f"{path}: the checkpoint is truncated or corrupt and cannot be loaded "
                      f"({why}); start afresh with --overwrite (overwrite=True) or choose "
                      f"another --out")


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, verifying its checksum.

    Raises ``FileNotFoundError`` (with the path) when there is none, ``ValueError`` when the
    path is a folder, the file is truncated or corrupt (checksum mismatch) or not a
    mowtheory training checkpoint.
    """
    state = load_saved(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a mowtheory training checkpoint (format {FORMAT})")
    return state


def load_saved(path, map_location="cpu"):
    """What :func:`save_checkpoint` wrote to ``path`` (any object), its checksum verified;
    ValueError when the file is truncated or corrupt, FileNotFoundError when there is none."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a checkpoint file; remove it or choose "
                         f"another --out")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {path} does not exist")
    data = path.read_bytes()
    at = data.rfind(MAGIC, max(0, len(data) - _FOOTER_MAX))
    m = _FOOTER.match(data, at) if at >= 0 else None
    if m is not None:
        payload = memoryview(data)[:at]
        crc, size = int(m.group(1), 16), int(m.group(2))
        if size != len(payload) or zlib.crc32(payload) != crc:
            raise _corrupt(path, f"checksum mismatch: the {len(payload)} bytes of payload do "
                                 f"not have the CRC-32 and size ({size}) stored after them")
        src = io.BytesIO(payload)
    else:                                   # truncated, or from before the checksum footer
        src = io.BytesIO(data)
    try:
        state = torch.load(src, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError...
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise _corrupt(path, f"{type(exc).__name__}: {first[:120]}") from exc
    return state


def _bad(path, field: str, why: str) -> ValueError:
    return ValueError(f"{path}: field {field!r} of the checkpoint {why}; start afresh with "
                      f"--overwrite (overwrite=True) or choose another --out")


def _check_tensors(path, field: str, got: dict, want: dict | None) -> None:
    """``got`` (a state_dict) must have ``want``'s keys and shapes, and finite floats."""
    if not isinstance(got, dict):
        raise _bad(path, field, f"must be a state_dict; got {type(got).__name__}")
    if want is not None:
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        if missing or extra:
            raise _bad(path, field, f"has other keys than the model: missing {missing[:4]}, "
                                    f"unexpected {extra[:4]}")
    for key, t in got.items():
        if not isinstance(t, torch.Tensor):
            continue
        if want is not None and tuple(t.shape) != tuple(want[key].shape):
            raise _bad(path, f"{field}.{key}", f"has shape {tuple(t.shape)}; the model's is "
                                               f"{tuple(want[key].shape)}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise _bad(path, f"{field}.{key}", f"holds {bad} NaN or infinite values")


def check_training_state(state: dict, path, *, model_state: dict | None = None,
                         steps_per_epoch: int | None = None) -> dict:
    """Validate a training checkpoint before anything of it is used: every key of
    :data:`TRAINING_KEYS`, the counters (integers >= 0, ``pos`` within the epoch), the model
    weights (``model_state``'s keys and shapes; finite) and optimizer state (finite), the
    accumulated loss parts (3 finite values). Raises ValueError naming the field."""
    missing = [k for k in TRAINING_KEYS if k not in state]
    if missing:
        raise _bad(path, missing[0], f"is missing (missing keys: {', '.join(missing)})")
    for key in ("step", "epoch", "pos", "acc_steps"):
        v = state[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise _bad(path, key, f"must be an integer >= 0; got {v!r}")
    if steps_per_epoch is not None and state["pos"] > steps_per_epoch:
        raise _bad(path, "pos", f"is {state['pos']}, beyond the {steps_per_epoch} steps of an "
                                f"epoch")
    _check_tensors(path, "model", state["model"], model_state)
    opt = state["optimizer"]
    if not isinstance(opt, dict) or "state" not in opt or "param_groups" not in opt:
        raise _bad(path, "optimizer", "must be an optimizer state_dict")
    for i, st in opt["state"].items():
        _check_tensors(path, f"optimizer.state[{i}]", st, None)
    acc = state["acc"]
    if not isinstance(acc, torch.Tensor) or acc.shape != (3,):
        raise _bad(path, "acc", f"must be a tensor of shape (3,); got {acc!r}")
    if not all(math.isfinite(v) for v in acc.tolist()):
        raise _bad(path, "acc", f"holds non-finite loss parts {acc.tolist()}")
    if state["perm"] is not None and not isinstance(state["perm"], torch.Tensor):
        raise _bad(path, "perm", f"must be a LongTensor or None; got {type(state['perm']).__name__}")
    if not isinstance(state["mow"], dict):
        raise _bad(path, "mow", f"must be a MoW state_dict; got {type(state['mow']).__name__}")
    _check_finite_tree(path, "mow", state["mow"])
    return state


def training_state(**fields) -> dict:
    """A training checkpoint: exactly the fields of :data:`TRAINING_KEYS` (``format`` is
    filled in) and any of :data:`OPTIONAL_KEYS`; a missing or unknown field is a
    ``TypeError`` naming it (the schema lives here, not in the trainer)."""
    fields = {"format": FORMAT, **fields}
    missing = [k for k in TRAINING_KEYS if k not in fields]
    unknown = [k for k in fields if k not in TRAINING_KEYS and k not in OPTIONAL_KEYS]
    if missing or unknown:
        raise TypeError(f"training_state: missing fields {missing}, unknown fields {unknown}; "
                        f"allowed: {TRAINING_KEYS + OPTIONAL_KEYS}")
    return fields


def check_resumable(path, state: dict, config: dict, *, world_size: int, k: int,
                    epochs: int, free: Iterable[str]) -> None:
    """The resume rules: the checkpoint at ``path`` (``state``) may be continued by a run
    of ``config`` with ``world_size`` processes of ``k`` fresh examples each and ``epochs``
    epochs when it was written by the same number of processes, with a configuration equal
    on every key outside ``free``, and has not completed more than ``epochs`` epochs.
    Raises ValueError saying which rule failed and how to proceed."""
    saved_world = int(state.get("world_size", 1))
    saved_k = int(state["config"].get("k", k))
    if saved_world != world_size:
        raise ValueError(
            f"cannot resume from {path}: it was written by a run with "
            f"world_size={saved_world} (k={saved_k} per process), this run has "
            f"world_size={world_size} (k={k} per process); resume it with the same number "
            f"of processes: "
            + (f"torchrun --nproc_per_node={saved_world} -m mowtheory train ... "
               f"--distributed --resume" if saved_world > 1 else
               "one process, without --distributed"))
    diff = config_diff({**OLDER_DEFAULTS, **state["config"]}, config, ignore=free)
    if diff:
        raise ValueError(
            f"cannot resume from {path}: the configuration differs in "
            f"{', '.join(key for key, _, _ in diff)} ({format_diff(diff)}); rerun with the "
            f"checkpoint's settings or choose another --out")
    if int(state.get("epoch", 0)) > epochs:
        raise ValueError(
            f"cannot resume from {path} with epochs={epochs}: its run has already "
            f"completed {int(state['epoch'])} epochs (step {int(state['step'])}); pass "
            f"--epochs {int(state['epoch'])} or more to continue it")


def checkpoint_to_resume(path: Path, *, resume: bool, overwrite: bool) -> dict | None:
    """The checkpoint a run in ``path.parent`` starts from: the loaded one with ``resume``,
    None for a fresh start. Refuses a folder in its place, ``resume`` without a checkpoint,
    and a fresh start over a checkpoint without ``overwrite`` (ValueError or
    FileNotFoundError saying what to pass)."""
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a checkpoint file; remove it or choose "
                         f"another --out")
    if resume:
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint to resume from: {path} does "
                                    f"not exist (start without --resume)")
        return load_checkpoint(path)
    if path.exists() and not overwrite:
        raise ValueError(f"out={str(path.parent)!r} already holds a checkpoint ({path}); pass "
                         f"resume=True (--resume) to continue it or overwrite=True "
                         f"(--overwrite) to start afresh")
    return None


def _check_finite_tree(path, field: str, tree) -> None:
    """Every floating tensor in a nested dict is finite (the window's latents, ...)."""
    if isinstance(tree, dict):
        for key, v in tree.items():
            _check_finite_tree(path, f"{field}.{key}", v)
    elif isinstance(tree, torch.Tensor) and tree.is_floating_point() \
            and not bool(torch.isfinite(tree).all()):
        raise _bad(path, field, f"holds {int((~torch.isfinite(tree)).sum())} NaN or infinite "
                                f"values")


def rng_state() -> dict:
    """The global RNG states (torch CPU, every CUDA device, numpy, random)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def seed_rng(seed: int) -> None:
    """Seed the global RNGs (torch on every device, numpy, random) with ``seed``: two runs
    with the same configuration then draw the same global stream (e.g. dropout)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


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
