"""Gradient-flow instruments for MoW: toy problems, the replica simulator, reference ODEs,
convergence rates and verdicts (docs/theory.md, Theorem 1).

Typical use::

    from mowtheory.flow import run_study
    study = run_study("linear-gaussian", n=8, k=1, replicas=2048)
    print(study.table()); print(study.verdicts)

or ``mowtheory flow`` on the command line (:mod:`mowtheory.flow.cli`).
"""
from .problems import PROBLEMS, Problem, get_problem, names
from .rates import (Bias, EtaErrors, Order, bias_verdict, errors, extrapolated_bias,
                    fault_verdicts, fit_order, fitted_order, follows_ode, order_verdict,
                    wrong_ode_verdict)
from .reference import ReferenceSolution, drift, drift_jacobian, effective_cost, solve_reference
from .simulate import WINDOW_MODES, Draws, SimulationResult, mow_gradient, simulate, simulate_loop
from .sme import check_sme, noise_covariances, predict_covariance
from .study import Study, run_study

__all__ = [
    "PROBLEMS", "Problem", "get_problem", "names",
    "Bias", "EtaErrors", "Order", "bias_verdict", "errors", "extrapolated_bias",
    "fault_verdicts", "fit_order", "fitted_order", "follows_ode", "order_verdict",
    "wrong_ode_verdict",
    "ReferenceSolution", "drift", "drift_jacobian", "effective_cost", "solve_reference",
    "WINDOW_MODES", "Draws", "SimulationResult", "mow_gradient", "simulate", "simulate_loop",
    "check_sme", "noise_covariances", "predict_covariance",
    "Study", "run_study",
]
