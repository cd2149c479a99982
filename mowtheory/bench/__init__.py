"""``mowtheory bench``: performance benchmarks that print ratios measured side by side in
one run (never timed tests).

Sub-benchmarks (one module each)::

    mowtheory bench costs    split (window) vs full evaluation of the pairwise batch costs
    mowtheory bench flow     replica-vectorised flow simulator vs a per-replica loop
    mowtheory bench step     MoW training step vs a plain k-example step (window's share)
    mowtheory bench memory   peak memory of k=1 vs k=n training (FFHQ-style, 256x256)

Each takes ``--json PATH`` (the results, the machine and the command) and ``--threads N``
(torch threads). ``experiments/results/benchmarks.md`` records the figures.
"""
from __future__ import annotations

import argparse
import importlib

#: sub-benchmark -> module exposing add_arguments(parser) and run(args) -> int
BENCHES = {
    "costs": "mowtheory.bench.costs",
    "flow": "mowtheory.bench.flow",
    "step": "mowtheory.bench.step",
    "memory": "mowtheory.bench.memory",
}

_HELP = {
    "costs": "split (window) vs full evaluation of the pairwise batch costs",
    "flow": "replica-vectorised flow simulator vs a per-replica loop",
    "step": "MoW training step vs a plain k-example step: the window's share",
    "memory": "peak memory of k=1 vs k=n training (FFHQ-style autoencoder)",
}


def _module(name: str):
    return importlib.import_module(BENCHES[name])


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``bench`` parser and its sub-benchmarks to ``subparsers``."""
    p = subparsers.add_parser("bench", help="performance benchmarks (ratios measured side by side)",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="bench", metavar="BENCH")
    for name in BENCHES:
        mod = _module(name)
        doc = (mod.__doc__ or "").strip()
        q = sub.add_parser(name, help=_HELP[name], description=doc,
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
    from ._common import set_threads
    if getattr(args, "json", None):
        check_output_file("--json", args.json)        # before the bench runs
    if getattr(args, "threads", None) is not None:
        check_int("threads", args.threads, low=1)
    set_threads(getattr(args, "threads", None))
    return int(fn(args) or 0)
