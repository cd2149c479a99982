"""``mowtheory flow --model mlp --dataset digits``: Theorem 1 on a real autoencoder.

With an exact cost (``cw``, ``wae``, ``energy``, ``pullaway``, ``gmmn``) and reduction
``sum`` or ``mean``: :func:`~.network_study.run_network_study` (exact reference ODE,
observables, planted faults). Otherwise (``cwae``, ``swae``, ``sqrt_mean``, or ``--coupled``):
the reference-free :func:`~.coupled.run_coupled`. Called by :mod:`mowtheory.flow.cli`.
"""
from __future__ import annotations

import sys
import time


def add_arguments(p) -> None:
    """The options of the network study, added to the ``flow`` parser."""
    from ..costs import names as cost_names
    from .network import DATASETS, MODELS
    g = p.add_argument_group("real network (--model)")
    g.add_argument("--model", default=None, choices=MODELS,
                   help="run the study on a real autoencoder instead of a toy --problem")
    g.add_argument("--dataset", default="digits", choices=DATASETS)
    g.add_argument("--cost", default="cw", choices=cost_names(),
                   help="batch cost F; cwae, swae and gmmn(sqrt) run the coupled check")
    g.add_argument("--limit", type=int, default=None, help="use the first LIMIT rows")
    g.add_argument("--latent-dim", type=int, default=2)
    g.add_argument("--hidden", type=int, default=16)
    g.add_argument("--lam", type=float, default=1.0, help="weight of F")
    g.add_argument("--coupled", action="store_true",
                   help="the coupled, reference-free check even for an exact cost")
    g.add_argument("--device", default="cpu", help="cpu or cuda")


TOY_ONLY = ("problem", "param", "symmetrize", "window", "tau", "sme", "balanced")


def check_arguments(args, parser_defaults: dict) -> None:
    """Refuse toy-only options with ``--model`` (and network options without it), naming
    them, before any work."""
    if args.model is None:
        net = [f"--{k.replace('_', '-')}" for k in ("limit", "coupled")
               if getattr(args, k) != parser_defaults.get(k)]
        if net:
            raise ValueError(f"{', '.join(net)} apply to the real-network study: add "
                             "--model mlp")
        return
    toy = [f"--{k.replace('_', '-')}" for k in TOY_ONLY
           if getattr(args, k, None) != parser_defaults.get(k)]
    if toy:
        raise ValueError(f"{', '.join(toy)} apply to toy problems, not to --model "
                         f"{args.model}; remove them")
    if args.device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda'; got --device {args.device}")
    import torch
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch.cuda.is_available() is False on this machine")


def plot_network(study, path: str) -> str:
    """One PNG: the parameters' errors against eta and each observable's."""
    from .._io import atomic_savefig
    from .plot import _mpl, plot_errors
    plt = _mpl()
    panels = [("parameters", study.main)] + list(study.observables.items())
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    for ax, (name, st) in zip(list(axes) if len(panels) > 1 else [axes], panels):
        plot_errors(ax, st, title=f"{study.config['problem']}: {name}")
    fig.tight_layout()
    return atomic_savefig(fig, path)


def run(args, report) -> int:
    """Run the network study or the coupled check for ``args``; ``report(verdicts, wall)``
    prints the verdicts and returns the exit status."""
    from .._io import atomic_write_json
    from .network import network_problem
    t0 = time.perf_counter()
    problem = network_problem(args.model, args.dataset, args.cost, latent_dim=args.latent_dim,
                              hidden=args.hidden, limit=args.limit, seed=args.seed,
                              lam=args.lam)
    if args.device != "cpu":
        problem.to(args.device)
    exact = problem.cost.supports_split and problem.cost.linear_in_constants
    coupled = args.coupled or not exact or args.reduction == "sqrt_mean"
    if coupled and args.control_replicas is not None:
        raise ValueError(f"--control-replicas {args.control_replicas} applies to the study "
                         f"against the exact reference; the coupled check of cost "
                         f"{problem.cost.name!r} (reduction {args.reduction!r}) has no "
                         f"planted-fault controls: remove it")
    replicas = 256 if args.replicas is None else args.replicas
    kw = dict(n=args.n or 8, k=args.k or 1, etas=args.etas, replicas=replicas,
              horizon=args.horizon or 1.0, seed=args.seed, refresh=args.refresh,
              reduction=args.reduction, record=min(args.record, 16), bootstrap=args.bootstrap,
              progress=not args.quiet)
    out = sys.stdout
    print(f"{problem!r}: N = {len(problem.data)} rows", file=out)
    if coupled:
        from .coupled import run_coupled
        why = "--coupled" if args.coupled else (
            f"cost {problem.cost.name!r} has no exact expectation" if not exact
            else "reduction 'sqrt_mean' has no exact expectation")
        print(f"coupled, reference-free check ({why})", file=out)
        study = run_coupled(problem, **kw)
        print(study.table(), file=out)
        verdicts, plot_path = study.verdicts, None
    else:
        from .network_study import run_network_study
        print("MoW on a real network: replicas against S' = -(k/n) grad C with the exact "
              "C(theta) of the dataset (Theorem 1)", file=out)
        study = run_network_study(problem, init=args.init, controls=args.controls,
                                  control_replicas=args.control_replicas, **kw)
        print(study.table(), file=out)
        if study.controls:
            from .cli import _control_line
            print("planted-fault controls (the instrument must reject the faults):", file=out)
            for name, st in study.controls.items():
                print(_control_line(name.replace("_", "-"), st), file=out)
        verdicts = study.verdicts
        plot_path = plot_network(study, args.plot) if not args.no_plot and args.plot else None
    code = report(verdicts, time.perf_counter() - t0)
    if plot_path:
        print(f"plot: {plot_path}", file=out)
    if args.json:
        data = study.to_json()
        data["wall_seconds"] = round(time.perf_counter() - t0, 2)
        atomic_write_json(args.json, data)
        print(f"json: {args.json}", file=out)
    return code
