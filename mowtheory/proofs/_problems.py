"""Symbolic problems used by the checks.

- :func:`general_problem`: a linear encoder z = a0·x0 + a1·x1 + b of x ~ N(0, Λ) in R²
  (Λ = [[1, 1/2], [1/2, 2]], correlated, so Isserlis is exercised beyond diagonal moments),
  a prior sample v_i ~ N(0, 1), the most general symmetric polynomial F of degree ≤ 4 in the
  latents (every product of power sums, each with its own symbolic coefficient c_j) plus two
  prior-coupling terms, and a per-example cost G with symbolic coefficients.
- :func:`scalar_problem`: the "scalar" problem of docs/theory.md and mowtheory.flow: z = θ·x, x ~ N(0, s2),
  F = ((1/n) Σ z_i² − 1)², G = beta·(x − θx)² (s2 and beta symbolic).
- :func:`scalar_C_formula` and :func:`linear_gaussian_C_formula`: the closed forms stated in
  the shared specification.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Callable, Optional

from sympy import QQ

from ._gauss import GaussModel
from ._mow_sym import SymProblem, power_sum

# ---------------------------------------------------------------------------- general problem
GENERAL_COV = [[1, Fraction(1, 2)], [Fraction(1, 2), 2]]
GENERAL_PARAMS = ["a0", "a1", "b"]
GENERAL_FROZEN = ["fa0", "fa1", "fb"]
# exponents (of p1, p2, p3, p4) of the power-sum products of degree <= 4
PS_BASIS = [
    (1, 0, 0, 0), (0, 1, 0, 0), (2, 0, 0, 0), (0, 0, 1, 0), (1, 1, 0, 0), (3, 0, 0, 0),
    (0, 0, 0, 1), (1, 0, 1, 0), (0, 2, 0, 0), (2, 1, 0, 0), (4, 0, 0, 0),
]
N_F_COEFFS = len(PS_BASIS) + 2
N_G_COEFFS = 3


def general_symmetric_F(model: GaussModel) -> Callable:
    """Σ_j c_j · p1^e1 p2^e2 p3^e3 p4^e4 (all power-sum products of degree ≤ 4, which span the
    symmetric polynomials of degree ≤ 4) + c11 (p1(z) − p1(v))² + c12 (p2(z) − p2(v))²."""
    c = model.syms([f"c{j}" for j in range(N_F_COEFFS)])

    def F(lat, prior):
        ps = [None] + [power_sum(lat, m) for m in range(1, 5)]
        tot = model.R.zero
        for cj, ex in zip(c, PS_BASIS):
            term = cj
            for m, e in enumerate(ex, start=1):
                if e:
                    term = term * ps[m] ** e
            tot += term
        if prior is not None:
            tot += c[-2] * (ps[1] - power_sum(prior, 1)) ** 2
            tot += c[-1] * (ps[2] - power_sum(prior, 2)) ** 2
        return tot

    return F


def general_G(model: GaussModel) -> Callable:
    """G_θ(x) = g0 (x0 − z)² + g1 z⁴ + g2 x1 z."""
    g = model.syms([f"g{j}" for j in range(N_G_COEFFS)])

    def G(x, theta):
        z = _general_encode(x, theta)[0]
        return g[0] * (x[0] - z) ** 2 + g[1] * z ** 4 + g[2] * x[1] * z

    return G


def _general_encode(x, theta):
    return [theta[0] * x[0] + theta[1] * x[1] + theta[2]]


def general_problem(n: int, *, F: Optional[Callable] = None, with_G: bool = True,
                    n_frozen_sets: int = 1) -> SymProblem:
    """The general problem for batch size n. ``F(model) -> F(lat, prior)`` builds a custom batch
    cost (default: :func:`general_symmetric_F`). ``n_frozen_sets > 1`` adds per-slot frozen
    parameter sets ``f{s}_a0, ...`` (see ``SymProblem.mow_cost(frozen=...)``)."""
    syms = GENERAL_PARAMS + GENERAL_FROZEN
    for s in range(1, n_frozen_sets):
        syms += [f"f{s}_{p}" for p in GENERAL_PARAMS]
    syms += [f"c{j}" for j in range(N_F_COEFFS)] + [f"g{j}" for j in range(N_G_COEFFS)]
    model = GaussModel(syms, [("x", n, 2, GENERAL_COV), ("v", n, 1, [[1]])])
    Fb = (F or general_symmetric_F)(model)
    return SymProblem(
        model=model, n=n, params=model.syms(GENERAL_PARAMS), frozen=model.syms(GENERAL_FROZEN),
        x=model.data("x"), v=model.data("v"), encode=_general_encode, F=Fb,
        G=general_G(model) if with_G else None,
    )


# ---------------------------------------------------------------------------- scalar problem
def scalar_problem(n: int, *, s2="s2", beta="beta", extra_frozen: int = 0,
                   extra_symbols=()) -> SymProblem:
    """The shared scalar problem with batch size n; ``s2``/``beta`` symbolic by default (pass
    numbers to fix them). ``extra_frozen`` adds per-slot frozen parameters ``tf1, tf2, ...``."""
    syms = ["theta", "tf"] + [f"tf{j}" for j in range(1, extra_frozen + 1)]
    syms += [nm for nm in (s2, beta) if isinstance(nm, str)] + list(extra_symbols)
    model = GaussModel(syms, [("x", n, 1, [[s2]])])
    bet = model.const(beta)

    def F(lat, prior):
        return (QQ(1, n) * power_sum(lat, 2) - 1) ** 2

    def G(x, theta):
        return bet * (x[0] - theta[0] * x[0]) ** 2

    return SymProblem(model=model, n=n, params=[model.sym("theta")], frozen=[model.sym("tf")],
                      x=model.data("x"), encode=lambda x, th: [th[0] * x[0]], F=F, G=G)


def scalar_C_formula(theta, n, s2=1, beta=Fraction(1, 2)):
    """C(θ) = 2θ⁴ s2²/n + (θ² s2 − 1)² + n·beta·(1−θ)²·s2 (works on numbers, Fractions,
    sympy expressions and ring elements)."""
    return 2 * theta ** 4 * s2 ** 2 / n + (theta ** 2 * s2 - 1) ** 2 + n * beta * (1 - theta) ** 2 * s2


# ---------------------------------------------------------------------------- linear-gaussian
LG_VARS = [1, Fraction(1, 2), 2]   # diag of the data covariance Λ


def lg_unpack(theta):
    """θ (12 numbers: W row-major 2×3, then V row-major 3×2) -> (W, V) as nested lists."""
    th = list(theta)
    if len(th) != 12:
        raise ValueError(f"linear-gaussian θ must have 12 entries; got {len(th)}")
    W = [th[0:3], th[3:6]]
    V = [th[6:8], th[8:10], th[10:12]]
    return W, V


def linear_gaussian_C_formula(theta, n):
    """The closed form of the specification: with Σ = W Λ Wᵀ and R = I − VW,
    C = tr Σ/n + ‖Σ − I‖²_F + (‖Σ‖²_F + (tr Σ)²)/(n−1) + n·tr(R Λ Rᵀ) (exact for Fractions)."""
    W, V = lg_unpack(theta)
    lam = LG_VARS
    S = [[sum(W[a][c] * lam[c] * W[b][c] for c in range(3)) for b in range(2)] for a in range(2)]
    tr = S[0][0] + S[1][1]
    fro2 = sum(S[a][b] ** 2 for a in range(2) for b in range(2))
    dev2 = sum((S[a][b] - (1 if a == b else 0)) ** 2 for a in range(2) for b in range(2))
    VW = [[sum(V[a][m] * W[m][b] for m in range(2)) for b in range(3)] for a in range(3)]
    Rm = [[(1 if a == b else 0) - VW[a][b] for b in range(3)] for a in range(3)]
    g = sum(Rm[a][c] ** 2 * lam[c] for a in range(3) for c in range(3))
    return tr / n + dev2 + (fro2 + tr ** 2) / (n - 1) + n * g


def lg_F(model: GaussModel, n: int) -> Callable:
    """F = |z̄|² + ‖Ŝ − I‖²_F with Ŝ the unbiased sample covariance of the n latents (D = 2)."""
    def F(lat, prior):
        D = len(lat[0])
        mean = [sum((z[a] for z in lat), model.R.zero) * QQ(1, n) for a in range(D)]
        tot = sum((m ** 2 for m in mean), model.R.zero)
        for a in range(D):
            for b in range(D):
                s = sum(((z[a] - mean[a]) * (z[b] - mean[b]) for z in lat), model.R.zero) * QQ(1, n - 1)
                tot += (s - (1 if a == b else 0)) ** 2
        return tot
    return F
