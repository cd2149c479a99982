"""Gradient-flow instruments for MoW: toy problems, the replica simulator, reference ODEs,
convergence rates and verdicts (docs/theory.md, Theorem 1).

Typical use::

    from mowtheory.flow import run_study
    study = run_study("linear-gaussian", n=8, k=1, replicas=2048)
    print(study.table()); print(study.verdicts)

or ``mowtheory flow`` on the command line (:mod:`mowtheory.cli.flow`, configured by
:class:`~mowtheory.flow.config.FlowConfig`). A real network:
``run_network_study(NetworkProblem(encoder, decoder, rows, cost), n=8, k=1)`` (exact
reference) or ``run_coupled(...)`` (reference-free).
"""
from .coupled import run_coupled
from .network import NetworkProblem
from .network_study import run_network_study
from .problem import Problem
from .problems import PROBLEMS, get_problem, names
from .rates import Order, errors, fitted_order
from .reference import ReferenceSolution, drift, effective_cost, solve_reference
from .simulate import WINDOW_MODES, Draws, SimulationResult, simulate, simulate_loop
from .sme import check_sme
from .study import Study, run_study

# The public surface. The verdict builders, fitting helpers and drift Jacobians behind these
# stay in their modules (mowtheory.flow.rates, .reference, .simulate, .sme) for the tests.
__all__ = [
    "Problem", "PROBLEMS", "get_problem", "names",
    "Study", "run_study", "Order", "errors", "fitted_order",
    "simulate", "simulate_loop", "SimulationResult", "Draws", "WINDOW_MODES",
    "solve_reference", "ReferenceSolution", "drift", "effective_cost",
    "check_sme",
    "NetworkProblem", "run_network_study", "run_coupled",
]
