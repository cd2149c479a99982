"""``mowtheory flow --model mlp --dataset digits``: Theorem 1 on a real autoencoder.

With an exact cost (``cw``, ``wae``, ``energy``, ``pullaway``, ``gmmn``) and reduction
``sum`` or ``mean``: :func:`~mowtheory.flow.network_study.run_network_study` (exact reference
ODE, observables, planted faults). Otherwise (``cwae``, ``swae``, ``sqrt_mean``, or
``--coupled``): the reference-free :func:`~mowtheory.flow.coupled.run_coupled`. Called by
:mod:`mowtheory.cli.flow` with a validated :class:`~mowtheory.flow.config.FlowConfig`.
"""
from __future__ import annotations

import sys
import time


def run(cfg, report) -> int:
    """Run the network study or the coupled check for ``cfg``; ``report(verdicts, wall)``
    prints the verdicts and returns the exit status."""
    from .._io import atomic_write_json
    from ..flow.network import network_problem
    from ..flow.plot import plot_network
    t0 = time.perf_counter()
    problem = network_problem(cfg.model, cfg.dataset, cfg.cost, latent_dim=cfg.latent_dim,
                              hidden=cfg.hidden, limit=cfg.limit, seed=cfg.seed,
                              lam=cfg.lam)
    if cfg.device != "cpu":
        problem.to(cfg.device)
    exact = problem.cost.supports_split and problem.cost.linear_in_constants
    coupled = cfg.coupled or not exact or cfg.reduction == "sqrt_mean"
    if coupled and cfg.control_replicas is not None:
        raise ValueError(f"--control-replicas {cfg.control_replicas} applies to the study "
                         f"against the exact reference; the coupled check of cost "
                         f"{problem.cost.name!r} (reduction {cfg.reduction!r}) has no "
                         f"planted-fault controls: remove it")
    replicas = cfg.replicas_or_default()
    kw = dict(n=cfg.n or 8, k=cfg.k or 1, etas=cfg.etas, replicas=replicas,
              horizon=cfg.horizon or 1.0, seed=cfg.seed, refresh=cfg.refresh,
              reduction=cfg.reduction, record=min(cfg.record, 16), bootstrap=cfg.bootstrap,
              progress=not cfg.quiet)
    out = sys.stdout
    print(f"{problem!r}: N = {len(problem.data)} rows", file=out)
    if coupled:
        from ..flow.coupled import run_coupled
        why = "--coupled" if cfg.coupled else (
            f"cost {problem.cost.name!r} has no exact expectation" if not exact
            else "reduction 'sqrt_mean' has no exact expectation")
        print(f"coupled, reference-free check ({why})", file=out)
        study = run_coupled(problem, **kw)
        print(study.table(), file=out)
        verdicts, plot_path = study.verdicts, None
    else:
        from ..flow.network_study import run_network_study
        print("MoW on a real network: replicas against S' = -(k/n) grad C with the exact "
              "C(theta) of the dataset (Theorem 1)", file=out)
        study = run_network_study(problem, init=cfg.init, controls=cfg.controls,
                                  control_replicas=cfg.control_replicas, **kw)
        print(study.table(), file=out)
        if study.controls:
            from .flow import _control_line
            print("planted-fault controls (the instrument must reject the faults):", file=out)
            for name, st in study.controls.items():
                print(_control_line(name.replace("_", "-"), st), file=out)
        verdicts = study.verdicts
        plot_path = plot_network(study, cfg.plot) if not cfg.no_plot and cfg.plot else None
    code = report(verdicts, time.perf_counter() - t0)
    if plot_path:
        print(f"plot: {plot_path}", file=out)
    if cfg.json:
        data = study.to_json()
        data["wall_seconds"] = round(time.perf_counter() - t0, 2)
        atomic_write_json(cfg.json, data)
        print(f"json: {cfg.json}", file=out)
    return code
