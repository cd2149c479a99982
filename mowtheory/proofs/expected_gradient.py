"""Check ``expected-gradient``: E[∇cost_MoW] = (k/n)∇C for a symmetric F (Theorem 1's key step).

Setting (see :func:`mowtheory.proofs._problems.general_problem`): linear encoder
z = a0·x0 + a1·x1 + b, x ~ N(0, [[1, 1/2], [1/2, 2]]), prior v ~ N(0, 1), F the general
symmetric polynomial of degree ≤ 4 with 13 symbolic coefficients, G with 3 symbolic
coefficients. For every n ≤ 4 and k ≤ n the window latents are encoded with frozen copies of
the parameters, the gradient is taken with respect to the live ones, its exact expectation is
computed (Isserlis), the frozen copies are then set to θ ("fresh latents at the current θ"),
and ``E[∇cost_MoW] − time_scale·∇C`` must be the zero polynomial in (a0, a1, b, c_j, g_j).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Callable, Optional, Union

from sympy import QQ

from ._problems import general_problem
from ._result import CheckResult, short

ID = "expected-gradient"
CLAIM = ("For a symmetric polynomial F, a linear encoder and Gaussian data, with the window "
         "encoded at the current θ, E[∇cost_MoW_k(n)] = (k/n)∇C exactly for every k ≤ n ≤ 4.")


def _scale(time_scale, n, k):
    if time_scale is None:
        return QQ(k, n)
    if callable(time_scale):
        v = time_scale(n, k)
    else:
        v = time_scale
    f = Fraction(v)
    return QQ(f.numerator, f.denominator)


def gradient_gap(n: int, k: int, *, F: Optional[Callable] = None, time_scale=None):
    """``(gaps, problem, C)``: gaps is the list (one per parameter a0, a1, b) of
    E[∇cost_MoW] − time_scale·∇C as ring elements, C the expected cost."""
    prob = general_problem(n, F=None if F is None else (lambda model: F(model, n)))
    mow = prob.expected_gradient(prob.mow_cost(k))
    C = prob.expected_cost()
    ts = _scale(time_scale, n, k)
    gaps = [m - ts * g for m, g in zip(mow, prob.grad(C))]
    return gaps, prob, C


def check_expected_gradient(max_n: int = 4, *, time_scale: Union[None, float, Fraction, Callable] = None,
                            F: Optional[Callable] = None) -> CheckResult:
    """Run the check.

    Args:
        max_n: largest batch size n (all 1 ≤ k ≤ n ≤ max_n are checked).
        time_scale: the factor claimed in front of ∇C; ``None`` means k/n (Theorem 1). A
            number or a callable ``(n, k) -> number`` plants another factor.
        F: a builder ``F(model, n) -> F(latents, prior)`` replacing the general symmetric F
            (for planting a non-symmetric one, e.g. ``nonsymmetric.positional_F``).
    """
    lines = []
    failures = []
    n_terms = 0
    for n in range(1, max_n + 1):
        for k in range(1, n + 1):
            gaps, prob, C = gradient_gap(n, k, F=F, time_scale=time_scale)
            nonzero = [i for i, g in enumerate(gaps) if g]
            n_terms = len(C)
            if nonzero:
                p = ["a0", "a1", "b"][nonzero[0]]
                failures.append((n, k))
                lines.append(f"  n={n} k={k}: difference in ∂/∂{p} is NOT zero: "
                             f"{short(prob.model.to_expr(gaps[nonzero[0]]), 300)}")
            else:
                lines.append(f"  n={n} k={k}: difference is the zero polynomial")
    cases = max_n * (max_n + 1) // 2
    factor = "k/n" if time_scale is None else f"planted factor {time_scale!r}"
    if failures:
        head = f"FAILED in {len(failures)}/{cases} cases (n,k)={failures}; factor {factor}"
    else:
        head = (f"E[∇cost_MoW] − ({factor})·∇C ≡ 0 as a polynomial in (a0,a1,b) and the 16 "
                f"coefficients of F and G, all {cases} cases k ≤ n ≤ {max_n}")
    evidence = "\n".join([
        head,
        "setting: z = a0·x0 + a1·x1 + b, x ~ N(0,[[1,1/2],[1/2,2]]), v ~ N(0,1); F = Σ_j c_j·(power-sum "
        "products of degree ≤ 4) + c11(p1(z)−p1(v))² + c12(p2(z)−p2(v))²; G = g0(x0−z)² + g1z⁴ + g2x1z;",
        "exact moments by Isserlis; window slots use frozen parameter copies, set to θ after differentiating.",
        f"C(θ) for n={max_n} has {n_terms} terms in the parameters and coefficients.",
        *lines,
    ])
    return CheckResult(ID, CLAIM, not failures, evidence, data={"failures": failures})
