"""The state of a training run and what is written from it: :class:`RunState` (everything
the loop changes), :class:`NonFiniteLoss` (how a run stops on a NaN/inf), the report, and the
small file helpers of the trainer (one JSON policy: NaN/inf -> null)."""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from .. import _io
from .config import MODEL_COSTS

#: the loss parts of a step, in the order they are accumulated
PARTS = ("total", "batch_cost", "per_example")


class NonFiniteLoss(RuntimeError):
    """Training stopped: the loss (or the latents after an update) became NaN or infinite.
    ``step`` is the first bad step (1-based), ``parts`` its loss parts
    (``total``, ``batch_cost``, ``per_example``)."""

    def __init__(self, message: str, *, step: int, parts: dict):
        super().__init__(message)
        self.step = step
        self.parts = parts


def format_parts(vals) -> str:
    t, b, g = (float(v) for v in vals)
    return f"total={t:.6g}, batch_cost={b:.6g}, per_example={g:.6g}"


def first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@dataclass
class RunState:
    """Everything the training loop changes, and nothing else.

    ``step`` steps done; ``epoch`` epochs completed; ``pos`` steps done in the current epoch
    of permutation ``perm`` (None before it is drawn); ``acc`` (float64, shape (3,), on the
    device) the loss parts :data:`PARTS` summed over the ``acc_steps`` steps since the last
    evaluation; ``first_bad`` (long scalar on the device, -1 while none) the first step whose
    parts were not finite and ``bad_parts`` its parts (kept on the device: no host sync in the
    loop); ``resumed_from`` the step of the checkpoint this run resumed; ``last_ckpt_step``
    the step of the last checkpoint written or read; ``last_metrics`` the last evaluation;
    ``metric_lines`` the lines of ``metrics.jsonl``; ``status`` ``"completed"`` or
    ``"stopped"``."""
    acc: torch.Tensor
    first_bad: torch.Tensor
    bad_parts: torch.Tensor
    step: int = 0
    epoch: int = 0
    pos: int = 0
    perm: Optional[torch.Tensor] = None
    acc_steps: int = 0
    resumed_from: Optional[int] = None
    last_ckpt_step: Optional[int] = None
    last_metrics: dict = field(default_factory=dict)
    metric_lines: list = field(default_factory=list)
    status: str = "completed"

    @classmethod
    def fresh(cls, device) -> "RunState":
        return cls(acc=torch.zeros(3, dtype=torch.float64, device=device),
                   first_bad=torch.full((), -1, dtype=torch.long, device=device),
                   bad_parts=torch.zeros(3, dtype=torch.float64, device=device))

    def record(self, parts) -> None:
        """Count one step with loss parts ``parts`` (3 scalars): accumulated on the device,
        the first non-finite step remembered (no host sync)."""
        stacked = torch.stack([p.double() for p in parts])
        self.acc += stacked
        self.acc_steps += 1
        self.step += 1
        newly_bad = (self.first_bad < 0) & ~torch.isfinite(stacked).all()
        self.first_bad = torch.where(newly_bad, torch.full_like(self.first_bad, self.step),
                                     self.first_bad)
        self.bad_parts = torch.where(newly_bad, stacked, self.bad_parts)

    def restore(self, saved: dict, device) -> None:
        """The counters, data order and accumulated loss parts of a (validated) checkpoint."""
        self.step, self.epoch, self.pos = int(saved["step"]), int(saved["epoch"]), int(saved["pos"])
        self.perm = saved["perm"]
        self.acc = saved["acc"].to(device)
        self.acc_steps = int(saved["acc_steps"])
        self.resumed_from = self.last_ckpt_step = self.step
        self.last_metrics = dict(saved.get("last_metrics") or {})


def write_json(path: Path, obj) -> None:
    _io.atomic_write_json(path, obj, indent=2)      # NaN/inf -> null


def write_or_explain(write, kept):
    """Run ``write()``; an OSError (disk full, read-only folder) becomes one line naming the
    file and what was kept (:class:`mowtheory._io.WriteError`)."""
    try:
        return write()
    except OSError as exc:
        if isinstance(exc, _io.WriteError):
            raise
        raise _io.WriteError(_io.describe_os_error(exc, kept=kept()), exc.errno) from exc


def truncate_metrics(path: Path, step: int) -> list:
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


class Logger:
    """Progress messages through tqdm (rank 0 with ``progress`` only)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, msg: str) -> None:
        if self.enabled:
            from tqdm.auto import tqdm
            tqdm.write(f"mowtheory train: {msg}")


def params_finite(model) -> bool:
    """Are all parameters finite? (one host synchronisation)"""
    flags = [torch.isfinite(p).all() for p in model.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


def report(cfg, res, status, step, steps_per_epoch, N, kP, last_metrics, evaluator,
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
        "final_metrics": _io.json_safe(last_metrics),             # NaN/inf -> None
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
