"""Check ``errata-partials``: the proof's "∂F/∂r_j are all equal" holds in expectation only.

1. Pointwise counterexample: for the scalar problem's batch cost F(z) = ((1/n)Σ z_i² − 1)²
   (n = 3) at the rational point z = (0, 1, 2) the partial derivatives are computed exactly and
   are not all equal.
2. In expectation: for the general symmetric polynomial F of degree ≤ 4 (13 symbolic
   coefficients, linear encoder of correlated Gaussian data, as in ``expected-gradient``) the
   per-slot contributions E[∂F/∂z_j(z_1..z_n) · ∂z_j/∂θ] are the same polynomial for every
   slot j and equal (1/n)∇E[F], for n = 2..4.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Callable, Optional, Sequence

from sympy import QQ

from ._gauss import GaussModel
from ._mow_sym import power_sum
from ._problems import N_F_COEFFS, N_G_COEFFS, general_problem
from ._result import CheckResult, short

ID = "errata-partials"
CLAIM = ("The partial derivatives ∂F/∂z_j of a symmetric F are not equal pointwise (exact "
         "counterexample); only their expected contributions E[∂F/∂z_j ∂z_j/∂θ] are.")


def scalar_batch_F(model, n: int) -> Callable:
    """F(z) = ((1/n) Σ z_i² − 1)² (the scalar problem's batch cost)."""
    def F(lat, prior):
        return (QQ(1, n) * power_sum(lat, 2) - 1) ** 2
    return F


def pointwise_partials(builder: Callable, point: Sequence):
    """Exact ∂F/∂z_j at ``point`` (F built by ``builder(model, n)``), as ring elements (they
    may still contain symbolic coefficients of F)."""
    n = len(point)
    syms = [f"z{j}" for j in range(n)] + [f"c{j}" for j in range(N_F_COEFFS)] + \
        [f"g{j}" for j in range(N_G_COEFFS)]
    M = GaussModel(syms, [])
    z = M.syms([f"z{j}" for j in range(n)])
    F = builder(M, n)([[zj] for zj in z], None)
    vals = [QQ(Fraction(p).numerator, Fraction(p).denominator) for p in point]
    out = []
    for j in range(n):
        d = F.diff(z[j])
        out.append(d.compose([(z[i], M.R(vals[i])) for i in range(n)]))
    return out, M


def per_slot_contributions(n: int, builder: Optional[Callable]):
    """[E ∂_θ F with only slot j carrying gradient]_j (each a list over parameters) and
    (1/n)∇E[F]."""
    Fb = None if builder is None else (lambda model: builder(model, n))
    prob = general_problem(n, F=Fb, with_G=False)
    M = prob.model
    contrib = []
    for j in range(n):
        lat = [prob.encode(prob.x[i], prob.params if i == j else prob.frozen) for i in range(n)]
        cost = prob.F(lat, prob.v)
        contrib.append([prob.unfreeze(M.E(cost.diff(t))) for t in prob.params])
    EF = M.E(prob.full_cost())
    ref = [g * QQ(1, n) for g in prob.grad(EF)]
    return contrib, ref, prob


def check_errata_partials(*, point: Sequence = (0, 1, 2), F: Optional[Callable] = None,
                          max_n: int = 4) -> CheckResult:
    """Run the check.

    Args:
        point: the rational point z of the pointwise counterexample (its length is n).
        F: builder ``F(model, n) -> F(latents, prior)``; default: the scalar problem's F for
            the pointwise part and the general symmetric F (all symmetric polynomials of
            degree ≤ 4) for the expectation part. A given builder is used for both.
        max_n: the expectation part is checked for n = 2..max_n.
    """
    partials, M = pointwise_partials(F or scalar_batch_F, point)
    unequal = any(p - partials[0] for p in partials[1:])
    shown = [short(M.to_expr(p), 80) for p in partials]
    bad = []
    for n in range(2, max_n + 1):
        contrib, ref, prob = per_slot_contributions(n, F)
        if any(any(c[p] - ref[p] for p in range(len(ref))) for c in contrib):
            bad.append(n)
    passed = unequal and not bad
    head = (f"pointwise at z={tuple(str(Fraction(p)) for p in point)}: ∂F/∂z_j = {shown} "
            f"({'not all equal' if unequal else 'ALL EQUAL: no counterexample'}); "
            f"in expectation equal for every slot and = (1/n)∇E[F]: "
            f"{'n=2..' + str(max_n) if not bad else 'FAILS for n in ' + str(bad)}")
    evidence = "\n".join([
        head,
        "pointwise F: " + ("((1/n)Σz_i² − 1)²" if F is None else getattr(F, "__name__", repr(F))) +
        "; expectation F: " + ("general symmetric polynomial of degree ≤ 4 with symbolic coefficients, "
                               "z = a0·x0 + a1·x1 + b, x ~ N(0,[[1,1/2],[1/2,2]]), exact Isserlis moments"
                               if F is None else "the given builder"),
        "the proof's step needs only the expectation: E[Σ_{fresh j} ∂F/∂z_j ∂z_j/∂θ] = k·(1/n)∇E[F].",
    ])
    return CheckResult(ID, CLAIM, passed, evidence, data={"pointwise_unequal": unequal, "bad_n": bad})
