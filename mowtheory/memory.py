"""Measuring memory: :class:`TensorPeak` (the peak bytes of CPU tensors allocated in a block,
the CPU counterpart of ``torch.cuda.max_memory_allocated``) and the process's resident set
size (:func:`rss_now_kb`, :func:`maxrss_kb`). Used by the memory benchmark
(:mod:`mowtheory.bench.memory_child`), the gradient-caching memory test and
``experiments/method_comparison.py``. Importing it does not import torch.
"""
from __future__ import annotations

import resource
import sys

__all__ = ["TensorPeak", "maxrss_kb", "rss_now_kb"]


def rss_now_kb() -> int:
    """The resident set size of this process now, in KiB (0 where /proc is absent)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def maxrss_kb() -> int:
    """The peak resident set size of this process so far, in KiB."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r     # bytes on macOS, KiB on Linux


class TensorPeak:
    """Peak bytes of CPU tensor memory allocated inside a ``with`` block.

    The CPU counterpart of ``torch.cuda.max_memory_allocated``: while the block runs, the
    profiler (``profile_memory=True``) records every allocation and free of PyTorch's CPU
    allocator with the allocator's running total of live bytes; ``peak_bytes`` is the largest
    running total, ``live_bytes`` the total at the end of the block. Only tensors allocated
    inside the block count (a tensor that existed before is not seen, nor is its free), so
    open it before building the model to count everything. Memory that is not a tensor
    (Python objects, library code, what the C allocator keeps after a free) is not counted:
    that is the difference from the process RSS.

    The profiler records every operator, which costs a few microseconds per op: time steps
    outside the block when the time matters. ``peak_bytes`` is None when this torch build
    does not report allocator totals to the profiler.

    >>> import torch
    >>> with TensorPeak() as tp:
    ...     a = torch.empty(2**20, dtype=torch.uint8); del a
    ...     b = torch.empty(2**19, dtype=torch.uint8)
    >>> tp.peak_bytes, tp.live_bytes
    (1048576, 524288)
    """

    def __init__(self):
        self.peak_bytes: int | None = None
        self.live_bytes: int | None = None
        self.events = 0
        self._prof = None

    def __enter__(self) -> "TensorPeak":
        from torch.profiler import ProfilerActivity, profile
        self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self._prof.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._prof.__exit__(*exc)
        try:
            stack = list(self._prof.profiler.kineto_results.experimental_event_tree())
        except AttributeError:      # a torch without the event tree: no figure, no guess
            return
        allocs = []
        while stack:
            e = stack.pop()
            stack.extend(e.children)
            f = e.extra_fields
            if hasattr(f, "total_allocated") and str(getattr(f, "device", "cpu")) == "cpu":
                allocs.append((e.start_time_ns, f.alloc_size, f.total_allocated))
        self.events = len(allocs)
        if not allocs:
            self.peak_bytes = self.live_bytes = 0
            return
        allocs.sort(key=lambda a: a[0])
        # the allocator's total is process-wide: subtract what was live before the block
        base = allocs[0][2] - allocs[0][1]
        self.peak_bytes = max(0, max(a[2] for a in allocs) - base)
        self.live_bytes = allocs[-1][2] - base
