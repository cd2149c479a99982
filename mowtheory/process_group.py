"""Joining a ``torch.distributed`` process group for data-parallel MoW
(:mod:`mowtheory.distributed`): :func:`init_distributed` (from torchrun's environment or an
explicit rendezvous, with a timeout on every collective) and the :class:`DistContext` it
returns (rank, world size, device; :meth:`~DistContext.close` with a barrier so that gloo's
threads are not torn down under another rank). Re-exported by :mod:`mowtheory.distributed`.
"""
from __future__ import annotations

import datetime
import os
from typing import NamedTuple, Optional

import torch
import torch.distributed as dist

from ._validate import check_int, check_positive

__all__ = ["DEFAULT_TIMEOUT_S", "DistContext", "init_distributed", "is_distributed"]


#: default timeout of every collective, in seconds (evaluation on rank 0 while the others
#: wait must fit in it)
DEFAULT_TIMEOUT_S = 1800.0


class DistContext(NamedTuple):
    """Where this process stands: ``rank``, ``world_size``, ``local_rank``, ``device``,
    ``backend``; ``initialized_here`` says whether :func:`init_distributed` created the group
    (then :meth:`close` destroys it)."""
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    initialized_here: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self, *, wait: bool = True) -> None:
        """Destroy the group if :func:`init_distributed` created it. ``wait`` (the normal
        end): a barrier first, so that no rank tears its connections down while another
        still uses them (gloo's background threads then abort the process with SIGABRT,
        "terminate called without an active exception"). After a failure pass
        ``wait=False``: the other ranks may never reach the barrier."""
        if self.initialized_here and dist.is_available() and dist.is_initialized():
            if wait and dist.get_world_size() > 1:
                dist.barrier()
            dist.destroy_process_group()


def is_distributed() -> bool:
    """True when a default process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _env_int(name: str) -> Optional[int]:
    v = os.environ.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer; got {name}={v!r}") \
            from None


def init_distributed(backend: Optional[str] = None, *, init_method: Optional[str] = None,
                     rank: Optional[int] = None, world_size: Optional[int] = None,
                     timeout_s: float = DEFAULT_TIMEOUT_S,
                     device: Optional[str] = None) -> DistContext:
    """Initialise the default process group (once) and return the :class:`DistContext`.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; None: ``"nccl"`` when ``device`` is CUDA (or CUDA
            is available and ``device`` is None), else ``"gloo"``.
        init_method: rendezvous URL (``"env://"`` under torchrun, ``"file:///tmp/x"``,
            ``"tcp://host:port"``); None: ``"env://"``.
        rank, world_size: None: from the environment (``RANK``, ``WORLD_SIZE``, set by
            torchrun); required with a ``file://`` or ``tcp://`` ``init_method``.
        timeout_s: timeout of every collective (> 0 seconds).
        device: ``"cpu"`` or ``"cuda"``; CUDA ranks use ``cuda:LOCAL_RANK``.

    Raises ValueError for missing rank/world size or a bad backend/device, naming the value.
    """
    if not dist.is_available():
        raise ValueError("torch.distributed is not available in this build of torch; "
                         "got torch " + torch.__version__)
    timeout_s = check_positive("timeout_s", timeout_s)
    if device is not None and device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda'; got device={device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device must be 'cpu' on this machine: torch.cuda.is_available() is "
                         "False; got device='cuda'")
    use_cuda = device == "cuda" or (device is None and backend != "gloo"
                                    and torch.cuda.is_available())
    if backend is None:
        backend = "nccl" if use_cuda else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl'; got backend={backend!r}")
    if backend == "nccl" and not use_cuda:
        raise ValueError("backend 'nccl' needs CUDA tensors: pass device='cuda' on a machine "
                         "with CUDA, or use backend='gloo'; got backend='nccl' with device="
                         f"{device!r}")
    local_rank = _env_int("LOCAL_RANK")
    here = False
    if not dist.is_initialized():
        rank = _env_int("RANK") if rank is None else rank
        world_size = _env_int("WORLD_SIZE") if world_size is None else world_size
        if rank is None or world_size is None:
            raise ValueError(
                "rank and world_size are needed to join a process group: run under torchrun "
                "(it sets RANK and WORLD_SIZE) or pass them; got "
                f"rank={rank!r}, world_size={world_size!r}")
        world_size = check_int("world_size", world_size, low=1)
        rank = check_int("rank", rank, low=0, high=world_size - 1, high_name="world_size - 1")
        dist.init_process_group(backend, init_method=init_method or "env://", rank=rank,
                                world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
        here = True
    rank, world_size = dist.get_rank(), dist.get_world_size()
    backend = str(dist.get_backend())
    if local_rank is None:
        local_rank = rank if not use_cuda else rank % max(torch.cuda.device_count(), 1)
    if use_cuda:
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    return DistContext(rank, world_size, local_rank, dev, backend, here)
