"""Reference solutions: the ODEs that MoW iterates are compared against.

For a problem with exact ``E[F_n](theta)`` and ``E[red_k G](theta)`` (see
:mod:`mowtheory.flow.problems`) the limit of MoW_k(n) as eta -> 0 is the gradient flow
``S' = -grad c(S)`` of

    ode="mow":   c = w_F E[F_n] + E[red_k G],   w_F = k/n  (n/k times that if balanced)

(the k fresh slots of F carry k/n of its expected gradient, the k fresh G-terms are reduced
as in the MoW cost). With ``reduction="sum"`` and ``balanced=False`` this is Theorem 1:
``S' = -(k/n) grad C``. With ``"mean"``: ``S' = -(grad E[G] + (k/n) grad E[F])``; balanced:
``S' = -(grad E[G] + grad E[F])``. The contrast is

    ode="wrong": c = w E[F_n] + E[red_n G],     w = 1 (n/k if balanced)

the flow of the expected cost of a full batch of n (with ``"sum"``: ``S' = -grad C``), i.e.
what one gets by forgetting that only k of n slots are fresh.

The ODE is solved by ``scipy.integrate.solve_ivp`` (DOP853, rtol 1e-11, atol 1e-12, dense
output); the drift is autograd of the closed form in float64.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp

from .._validate import check_choice, check_int, check_positive
from ..mow import REDUCTIONS
from .problem import DTYPE, Problem

ODES = ("mow", "wrong")


def effective_cost(problem: Problem, theta: torch.Tensor, *, n: int, k: int,
                   reduction: str = "sum", balanced: bool = False,
                   ode: str = "mow") -> torch.Tensor:
    """The potential ``c(theta)`` of the limit flow ``S' = -grad c`` (see module docstring);
    theta ``(..., P)`` -> ``(...)``."""
    check_choice("ode", ode, ODES)
    check_choice("reduction", reduction, REDUCTIONS)
    n = check_int("n", n, low=2)
    k = check_int("k", k, low=1, high=n, high_name="n")
    if ode == "mow":
        w_f = 1.0 if balanced else k / n
        g = problem.expected_per_example(theta, k, reduction)
    else:
        w_f = n / k if balanced else 1.0
        g = problem.expected_per_example(theta, n, reduction)
    return w_f * problem.expected_batch_cost(theta, n) + g


def drift(problem: Problem, theta, **kw) -> torch.Tensor:
    """``-grad c(theta)`` by autograd of the closed form; theta ``(..., P)`` -> ``(..., P)``.
    Keywords as :func:`effective_cost`."""
    th = torch.as_tensor(theta, dtype=DTYPE).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(effective_cost(problem, th, **kw).sum(), th)
    return -g


def drift_jacobian(problem: Problem, theta, **kw) -> torch.Tensor:
    """Jacobian ``d drift / d theta = -Hess c`` at one theta ``(P,)`` -> ``(P, P)``."""
    th = torch.as_tensor(theta, dtype=DTYPE).detach()
    H = torch.autograd.functional.hessian(lambda t: effective_cost(problem, t, **kw), th)
    return -0.5 * (H + H.T)


@dataclass
class ReferenceSolution:
    """A solved reference ODE; call it with times ``(J,)`` to get ``(J, P)`` (numpy)."""
    ode: str
    horizon: float
    theta0: np.ndarray
    sol: object
    nfev: int

    def __call__(self, t) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t, dtype=float))
        return self.sol(t).T


def solve_reference(problem: Problem, theta0, horizon: float, *, n: int, k: int,
                    reduction: str = "sum", balanced: bool = False, ode: str = "mow",
                    rtol: float = 1e-11, atol: float = 1e-12) -> ReferenceSolution:
    """Solve ``S' = drift(S)``, ``S(0) = theta0`` on ``[0, horizon]`` (DOP853, dense output)."""
    horizon = check_positive("horizon", horizon)
    kw = dict(n=n, k=k, reduction=reduction, balanced=balanced, ode=ode)
    effective_cost(problem, torch.as_tensor(theta0, dtype=DTYPE), **kw)   # validates
    # the ODE runs on the host (scipy): a theta0 on an accelerator (a problem moved with
    # .to("cuda")) is copied to the CPU; the drift's problem takes CPU thetas
    y0 = torch.as_tensor(theta0, dtype=DTYPE).detach().cpu().numpy().copy()

    def rhs(_t, y):
        return drift(problem, torch.from_numpy(np.ascontiguousarray(y)), **kw).cpu().numpy()

    res = solve_ivp(rhs, (0.0, horizon), y0, method="DOP853", rtol=rtol, atol=atol,
                    dense_output=True)
    if not res.success:
        raise RuntimeError(f"the reference ODE ({ode}) failed on [0, {horizon}]: {res.message}")
    return ReferenceSolution(ode=ode, horizon=horizon, theta0=y0, sol=res.sol, nfev=res.nfev)
