"""Shared helpers of the benchmarks: machine description, timers, statistics, JSON output."""
from __future__ import annotations

import math
import os
import platform
import statistics
import time
from typing import Callable, Optional, Sequence

import torch


def cpu_model() -> str:
    """CPU model name (``/proc/cpuinfo``'s ``model name``; ``platform.processor()`` else)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict:
    """The machine a figure was measured on: CPU model, cores, torch threads, GPU if any."""
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def devices(choice: str) -> list:
    """``"cpu"``, ``"cuda"`` or ``"auto"`` (CPU, and CUDA when present) -> list of devices."""
    if choice == "auto":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("device must be 'cpu' or 'auto' on this machine (no CUDA); got 'cuda'")
    return [choice]


def sync(device) -> None:
    """Wait for the device (CUDA) so that a host timer measures finished work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device) -> float:
    """Seconds for one call of ``fn`` (device synchronised before and after)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> Optional[float]:
    """Least-squares slope of ``log y`` against ``log x`` (None with fewer than 2 points)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def fmt_s(s: Optional[float]) -> str:
    """Seconds in a readable unit (``"1.23 ms"``)."""
    if s is None or not math.isfinite(s):
        return "—"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.0f} µs"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (also readable as plain text)."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def write_json(path, obj: dict) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (parent folders created); non-finite
    floats -> null."""
    from .._io import atomic_write_json
    atomic_write_json(path, obj, indent=1)      # tensors -> lists, dtypes/devices -> str


def report(bench: str, config: dict, **fields) -> dict:
    """The JSON document of one bench: name, machine, configuration, results."""
    return {"bench": bench, "machine": machine(), "config": config, **fields,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def finish(args, bench: str, config: dict, *, sub: Optional[str] = None, **fields) -> int:
    """End a bench: add the command line to ``config`` (``mowtheory bench SUB ...``, SUB
    defaulting to ``bench``: a report name that is not a subcommand, such as
    ``step-methods``, names the subcommand that wrote it), write the JSON report when
    ``--json`` was given, and return exit status 0."""
    config = {**config, "command": command(args, sub or bench)}
    if args.json:
        write_json(args.json, report(bench, config, **fields))
        print(f"wrote {args.json}")
    return 0


def command(args, sub: str) -> str:
    """The command line that produced a figure: ``sys.argv`` when it was ``mowtheory bench
    SUB ...``, else rebuilt from the parsed options."""
    import shlex
    import sys
    argv = sys.argv[1:]
    if argv[:2] == ["bench", sub]:
        return "mowtheory " + " ".join(shlex.quote(a) for a in argv)
    skip = {"command", "bench", "json", "_run", "_bench_run"}
    opts = []
    for key, val in sorted(vars(args).items()):
        if key in skip or key.startswith("_") or val is None or val is False:
            continue
        flag = "--" + key.replace("_", "-")
        opts.append(flag if val is True else f"{flag} {shlex.quote(str(val))}")
    return " ".join(["mowtheory bench", sub] + opts)


def set_threads(n: Optional[int]) -> None:
    if n is not None:
        if n < 1:
            raise ValueError(f"threads must be an integer >= 1; got threads={n}")
        torch.set_num_threads(n)


def profile_table(fn: Callable[[], object], *, steps: int = 5, rows: int = 12,
                  device="cpu") -> str:
    """``torch.profiler`` table (ops by self time) of ``steps`` calls of ``fn``."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                     if torch.device(device).type == "cuda" else [])
    fn()
    with profile(activities=acts) as prof:
        for _ in range(steps):
            fn()
        sync(device)
    key = "self_cuda_time_total" if torch.device(device).type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)
