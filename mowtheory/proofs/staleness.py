"""Check ``staleness-order``: the bias of a frozen latent computed s steps earlier.

Scalar problem (z = θx, x ~ N(0, s2), F = ((1/n)Σz² − 1)², G = beta(x − θx)²), with n, k, s2,
beta, θ, the step size η and the age s all **symbolic**.

Model of staleness. The n − k window latents were encoded s steps earlier, at the parameters
of the mean path, θ_{−s} = θ + η·s·(k/n)·C'(θ) + O(η²) (going s steps back along the drift
−(k/n)C'), with examples independent of that displacement (as for latents re-encoded from
fresh examples, the time-τ falsifier of docs/theory.md). The correlation of a window example with
the steps it took part in is not modelled here.

Derivation (exact, for symbolic n and k): with A = Σ_window x² ~ s2·χ²_{n−k} and
B = Σ_fresh x² ~ s2·χ²_k independent, ∂_θ cost_MoW = 2((θf²A + θ²B)/n − 1)(2θB/n) − 2beta(1−θ)B,
and E[A^p B^q] = s2^{p+q} Π_{j<p}(n−k+2j) Π_{j<q}(k+2j). Then

    drift_stale − drift_fresh = η·s·T(θ) + η²·s²·U(θ),
    T(θ) = −(8 k² (n−k) θ² s2² / n³) · C'(θ),
    U(θ) = −(4 k³ (n−k) θ s2² / n⁴) · C'(θ)²            (exactly; no higher orders)

so the staleness bias is first order in η and linear in the age s; for window slots of
different ages the term is linear in each slot's age, so s is replaced by the mean age (checked
with the Isserlis engine for n = 4, k = 1 and ages 1, 2, 3). The symbolic derivation is
cross-checked against the Isserlis engine for concrete (n, k).
"""
from __future__ import annotations

from typing import Callable, Optional

import sympy as sp
from sympy import QQ

from ._problems import scalar_C_formula, scalar_problem
from ._result import CheckResult

ID = "staleness-order"
CLAIM = ("With the window encoded s steps earlier on the mean path, the expected MoW drift on "
         "the scalar problem differs from the fresh one by η·s·T(θ) + O(η²), "
         "T = −8k²(n−k)θ²s2²C'(θ)/n³.")

theta, n, k, s2, beta, eta, s = sp.symbols("theta n k s2 beta eta s")
tf = sp.Symbol("theta_f")


def claimed_T(theta, n, k, s2, beta):
    """The stated leading coefficient T(θ) (drift difference per unit η·s)."""
    C = scalar_C_formula(theta, n, s2, beta)
    return -8 * k ** 2 * (n - k) * theta ** 2 * s2 ** 2 / n ** 3 * sp.diff(C, theta)


def claimed_U(theta, n, k, s2, beta):
    """The stated η²s² coefficient U(θ)."""
    C = scalar_C_formula(theta, n, s2, beta)
    return -4 * k ** 3 * (n - k) * theta * s2 ** 2 / n ** 4 * sp.diff(C, theta) ** 2


def _chi_moments(expr, A, B):
    """E over A ~ s2·χ²_{n−k}, B ~ s2·χ²_k of a polynomial in A, B (symbolic n, k)."""
    poly = sp.Poly(sp.expand(expr), A, B)
    out = 0
    for (p, q), c in poly.terms():
        ma = sp.Mul(*[(n - k + 2 * j) for j in range(p)])
        mb = sp.Mul(*[(k + 2 * j) for j in range(q)])
        out += c * s2 ** (p + q) * ma * mb
    return sp.expand(out)


def derive():
    """Symbolic derivation; returns a dict of sympy expressions."""
    A, B, Ab = sp.symbols("A B A_all")
    # expected cost C(θ): F on n live latents + n G-terms; A_all ~ s2·χ²_n
    EF = sp.Poly(sp.expand((theta ** 2 * Ab / n - 1) ** 2), Ab)
    EFv = sum(c * s2 ** p * sp.Mul(*[(n + 2 * j) for j in range(p)]) for (p,), c in EF.terms())
    C = sp.expand(EFv + n * beta * (1 - theta) ** 2 * s2)
    dC = sp.diff(C, theta)
    grad = 2 * ((tf ** 2 * A + theta ** 2 * B) / n - 1) * (2 * theta * B / n) - 2 * beta * (1 - theta) * B
    Egrad = _chi_moments(grad, A, B)               # E[∇cost_MoW](θ, θf)
    fresh = sp.simplify(Egrad.subs(tf, theta))
    stale = Egrad.subs(tf, theta + eta * s * (k / n) * dC)
    D = sp.expand(-(stale - Egrad.subs(tf, theta)))  # drift difference (drift = −E∇)
    coeffs = sp.Poly(D, eta).all_coeffs()[::-1]      # [η⁰, η¹, η², ...]
    coeffs += [0] * (3 - len(coeffs))
    return {"C": C, "dC": dC, "Egrad": Egrad, "fresh": fresh, "D": D,
            "c0": sp.simplify(coeffs[0]), "c1": sp.factor(coeffs[1]), "c2": sp.factor(coeffs[2]),
            "degree": sp.Poly(D, eta).degree() if D != 0 else 0}


def _engine_coeff(nv: int, kv: int, ages=None):
    """η¹ coefficient of the drift difference from the Isserlis engine for concrete (n, k),
    window ages ``ages`` (default all 1·s), s2, beta symbolic."""
    m = nv - kv
    ages = ages or [None] * m
    prob = scalar_problem(nv, extra_frozen=m - 1, extra_symbols=("eta", "s"))
    M, R = prob.model, prob.model.R
    th, et, sg = prob.params[0], M.sym("eta"), M.sym("s")
    frozen = [[M.sym("tf")]] + [[M.sym(f"tf{j}")] for j in range(1, m)]
    C = M.E(prob.full_cost())
    dC = C.diff(th)
    cost = prob.mow_cost(kv, frozen=frozen if m else None)
    g = M.E(cost.diff(th))
    fresh = prob.unfreeze(g, frozen) if m else g
    pairs = []
    for j, fr in enumerate(frozen[:m]):
        age = sg if ages[j] is None else R(ages[j])
        pairs.append((fr[0], th + et * age * QQ(kv, nv) * dC))
    stale = g.compose(pairs) if pairs else g
    D = -(stale - fresh)
    expr = sp.expand(M.to_expr(D))
    sy = {str(x): x for x in expr.free_symbols}
    e = sy.get("eta", sp.Symbol("eta"))
    return expr.coeff(e, 1), expr.coeff(e, 0), sy, M.to_expr(fresh), M.to_expr(dC)


def check_staleness(*, leading_term: Optional[Callable] = None,
                    engine_cases=((2, 1), (3, 1), (3, 2), (4, 1), (4, 3))) -> CheckResult:
    """Run the check.

    Args:
        leading_term: the claimed T(θ) as a callable ``(theta, n, k, s2, beta) -> sympy expr``
            (default :func:`claimed_T`); plant a wrong one to see the check fail.
        engine_cases: concrete (n, k) cross-checked with the Isserlis engine.
    """
    Tfn = leading_term or claimed_T
    d = derive()
    # 1. the fresh expected gradient is (k/n)C' for symbolic n, k (Theorem 1 on this problem)
    thm = sp.simplify(d["fresh"] - k / n * d["dC"]) == 0
    # 2. C matches the specification's closed form
    C_ok = sp.simplify(d["C"] - scalar_C_formula(theta, n, s2, beta)) == 0
    # 3. no η⁰ term; η¹ term is s·T
    T = Tfn(theta, n, k, s2, beta)
    zero0 = d["c0"] == 0
    lead_ok = sp.simplify(d["c1"] - s * T) == 0
    U_ok = sp.simplify(d["c2"] - s ** 2 * claimed_U(theta, n, k, s2, beta)) == 0
    # T is not identically zero for k < n
    T_nonzero = sp.simplify(d["c1"].subs({n: 2, k: 1, s: 1})) != 0
    # 4. engine cross-checks
    eng_bad = []
    for nv, kv in engine_cases:
        c1, c0, sy, _, _ = _engine_coeff(nv, kv)
        ref = (s * Tfn(theta, n, k, s2, beta)).subs({n: nv, k: kv})
        ref = ref.subs({theta: sy.get("theta", theta), s2: sy.get("s2", s2), beta: sy.get("beta", beta),
                        s: sy.get("s", s)})
        if sp.simplify(c1 - ref) != 0 or c0 != 0:
            eng_bad.append((nv, kv))
    # 5. ages 1, 2, 3 for n = 4, k = 1 equal a uniform age 2
    c1a, _, sya, _, _ = _engine_coeff(4, 1, ages=[1, 2, 3])
    refa = (2 * Tfn(theta, n, k, s2, beta)).subs({n: 4, k: 1})
    refa = refa.subs({theta: sya.get("theta", theta), s2: sya.get("s2", s2), beta: sya.get("beta", beta)})
    ages_ok = sp.simplify(c1a - refa) == 0
    passed = thm and C_ok and zero0 and lead_ok and U_ok and T_nonzero and not eng_bad and ages_ok
    head = (f"drift_stale − drift_fresh = η·s·T + η²·s²·U exactly (degree {d['degree']} in η); "
            f"η¹ coefficient = s·T(θ) with the stated T: {lead_ok}; engine (n,k) "
            f"{list(engine_cases)} agree: {not eng_bad}")
    evidence = "\n".join([
        head,
        "n, k, s2, beta, θ, η, s symbolic; window encoded at θ + η·s·(k/n)·C'(θ) (mean path s steps back).",
        f"derived η¹ coefficient: {d['c1']}",
        f"stated T(θ) = −8k²(n−k)θ²s2²C'(θ)/n³ with C'(θ) = {sp.factor(d['dC'])}",
        f"derived η² coefficient: {d['c2']}  (= s²·U, U = −4k³(n−k)θ s2² C'(θ)²/n⁴: {U_ok})",
        f"fresh expected gradient = (k/n)C'(θ) for symbolic n, k: {thm}; C(θ) = spec formula: {C_ok}; "
        f"no η⁰ term: {zero0}; T ≢ 0 for k < n: {T_nonzero}",
        f"engine cross-check failures: {eng_bad or 'none'}; window ages (1,2,3) at n=4,k=1 "
        f"= uniform age 2: {ages_ok}",
        "reading: drift_stale = drift_fresh·(1 + η·s·8k(n−k)θ²s2²/n²) + O(η²): on this problem staleness "
        "rescales the speed of the flow and leaves its stationary points (C' = 0) in place; with the "
        "mean window age s ≈ (n−k)/(2k) the relative bias is ≈ 4η(n−k)²θ²s2²/n², O(η) uniformly in n.",
    ])
    return CheckResult(ID, CLAIM, passed, evidence, data={
        "leading_ok": lead_ok, "engine_bad": eng_bad, "ages_ok": ages_ok, "c1": str(d["c1"])})
