"""``mowtheory bench``: performance benchmarks that print ratios measured side by side in
one run (never timed tests).

Sub-benchmarks (one module each)::

    mowtheory bench costs    split (window) vs full evaluation of the pairwise batch costs
    mowtheory bench flow     replica-vectorised flow simulator vs a per-replica loop
    mowtheory bench step     MoW training step vs a plain k-example step (window's share)
    mowtheory bench memory   peak memory of k=1 vs k=n training (FFHQ-style, 256x256)

The command is :mod:`mowtheory.cli.bench`; each sub-benchmark takes ``--json PATH`` (the
results, the machine and the command) and ``--threads N`` (torch threads). ``experiments/results/benchmarks.md`` records the figures.
"""
from __future__ import annotations

#: sub-benchmark -> module exposing add_arguments(parser) and run(args) -> int (the options
#: ``--threads`` and ``--json`` are added by :mod:`mowtheory.cli.bench`)
BENCHES = {
    "costs": "mowtheory.bench.costs",
    "flow": "mowtheory.bench.flow",
    "step": "mowtheory.bench.step",
    "memory": "mowtheory.bench.memory",
}

#: sub-benchmark -> its one-line help
HELP = {
    "costs": "split (window) vs full evaluation of the pairwise batch costs",
    "flow": "replica-vectorised flow simulator vs a per-replica loop",
    "step": "MoW training step vs a plain k-example step: the window's share",
    "memory": "peak memory of k=1 vs k=n training (FFHQ-style autoencoder)",
}
