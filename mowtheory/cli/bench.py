"""``mowtheory bench``: the sub-benchmarks of :mod:`mowtheory.bench` (one module each,
listed in :data:`mowtheory.bench.BENCHES`), each with ``--threads`` and ``--json``."""
from __future__ import annotations

import argparse
import importlib

from .. import bench as _bench
from ..bench import BENCHES, HELP


def _module(name: str):
    return importlib.import_module(BENCHES[name])


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``bench`` parser and its sub-benchmarks to ``subparsers``."""
    p = subparsers.add_parser("bench", help="performance benchmarks (ratios measured side by side)",
                              description=_bench.__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="bench", metavar="BENCH")
    for name in BENCHES:
        mod = _module(name)
        doc = (mod.__doc__ or "").strip()
        q = sub.add_parser(name, help=HELP[name], description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(q)
        q.add_argument("--threads", type=int, default=None,
                       help="torch threads (default: torch's default)")
        q.add_argument("--json", default=None, metavar="PATH",
                       help="write the results (with machine and command) as JSON")
        q.set_defaults(_bench_run=mod.run)
    p.set_defaults(_bench_parser=p)
    return p


def run(args) -> int:
    """Run the selected sub-benchmark; without one, print the list."""
    fn = getattr(args, "_bench_run", None)
    if fn is None:
        args._bench_parser.print_help()
        return 0
    from .._io import check_output_file
    from .._validate import check_int
    from ..bench._common import set_threads
    if getattr(args, "json", None):
        check_output_file("--json", args.json)        # before the bench runs
    if getattr(args, "threads", None) is not None:
        check_int("threads", args.threads, low=1)
    set_threads(getattr(args, "threads", None))
    return int(fn(args) or 0)
