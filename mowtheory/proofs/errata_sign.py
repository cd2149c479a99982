"""Check ``errata-sign``: Algorithm 1's update θ_{l+1} = θ_l + η∇cost is gradient *ascent*.

On the shared scalar problem (n = 4, s2 = 1, beta = 1/2):

1. symbolically, d/dη C(θ + σ·η·C'(θ)) at η = 0 equals σ·C'(θ)²: the literal rule (σ = +1)
   increases C wherever C' ≠ 0, the corrected rule (σ = −1) decreases it;
2. exactly (rationals) at θ0 = 1/2, η = 1/100: C(θ0 + ηC') > C(θ0) > C(θ0 − ηC');
3. a stochastic MoW run (k = 1, n = 4, η = 0.01, 150 steps, fixed seed, autograd on the
   sampled cost, window re-encoded after each update): the literal rule ends with a larger
   expected cost C than it started with, the corrected rule with a smaller one.
"""
from __future__ import annotations

from fractions import Fraction

import sympy as sp

from ._problems import scalar_C_formula
from ._result import CheckResult

ID = "errata-sign"
CLAIM = ("Algorithm 1's update θ + η∇cost increases the cost (gradient ascent); the corrected "
         "update θ − η∇cost decreases it (scalar problem).")

N, K, S2, BETA = 4, 1, 1.0, 0.5


def _mow_run(sign: int, *, steps: int = 150, eta: float = 0.01, theta0: float = 0.5, seed: int = 0):
    import torch
    g = torch.Generator().manual_seed(seed)
    th = torch.tensor(theta0, dtype=torch.float64)
    window = (th * torch.randn(N - K, generator=g, dtype=torch.float64) * S2 ** 0.5)
    for _ in range(steps):
        x = torch.randn(K, generator=g, dtype=torch.float64) * S2 ** 0.5
        t = th.clone().requires_grad_(True)
        z = torch.cat([window, t * x])
        cost = ((z ** 2).mean() - 1) ** 2 + (BETA * (x - t * x) ** 2).sum()
        (grad,) = torch.autograd.grad(cost, t)
        th = (th + sign * eta * grad).detach()
        if not torch.isfinite(th) or abs(float(th)) > 1e3:
            break
        window = torch.cat([window[K:], th * x])      # re-encode after the update (paper)
    return float(th)


def check_errata_sign(*, sign: int = -1) -> CheckResult:
    """Run the check.

    Args:
        sign: the sign σ of the update rule θ + σ·η·∇cost claimed to be the correct one
            (default −1; planting +1 must make the check fail).
    """
    theta, eta, sig = sp.symbols("theta eta sigma")
    C = scalar_C_formula(theta, N, sp.Integer(1), sp.Rational(1, 2))
    dC = sp.diff(C, theta)
    rate = sp.diff(C.subs(theta, theta + sig * eta * dC), eta).subs(eta, 0)
    sym_ok = sp.simplify(rate - sig * dC ** 2) == 0

    Cf = lambda t: scalar_C_formula(Fraction(t), N, 1, Fraction(1, 2))  # noqa: E731
    t0, h = Fraction(1, 2), Fraction(1, 100)
    d0 = Fraction(str(dC.subs(theta, sp.Rational(1, 2))))
    c_lit, c0, c_sig = Cf(t0 + h * d0), Cf(t0), Cf(t0 + sign * h * d0)
    exact_lit_up = c_lit > c0
    exact_sig_down = c_sig < c0

    th_lit = _mow_run(+1)
    th_sig = _mow_run(sign)
    C0 = float(Cf(Fraction(1, 2)))
    Cnum = lambda t: float(scalar_C_formula(t, N, S2, BETA))  # noqa: E731
    run_lit_up = Cnum(th_lit) > C0
    run_sig_down = Cnum(th_sig) < C0
    roots = [float(r) for r in sp.Poly(dC, theta).real_roots()]
    passed = sym_ok and exact_lit_up and exact_sig_down and run_lit_up and run_sig_down
    head = (f"literal θ+η∇cost: C {float(c0):.6f} → {float(c_lit):.6f} (one exact step), "
            f"{C0:.4f} → {Cnum(th_lit):.4g} (150 MoW steps); rule θ{'+' if sign > 0 else '−'}η∇cost: "
            f"C → {float(c_sig):.6f} (one step), {C0:.4f} → {Cnum(th_sig):.4g} (150 steps)")
    evidence = "\n".join([
        head,
        f"d/dη C(θ + σηC'(θ))|η=0 = σ·C'(θ)²: {sym_ok}  (C'(θ) = {sp.factor(dC)}; scalar problem n={N}, s2=1, beta=1/2)",
        f"exact at θ0=1/2, η=1/100, C'(θ0)={d0}: literal increases C: {exact_lit_up}; "
        f"σ={sign} decreases C: {exact_sig_down}",
        f"stochastic MoW k={K}, n={N}, η=0.01, θ0=0.5, seed 0: literal ends at θ={th_lit:.4g}, "
        f"σ={sign} ends at θ={th_sig:.4g} (stationary point of C: θ* = {', '.join(f'{r:.4f}' for r in roots)})",
    ])
    return CheckResult(ID, CLAIM, passed, evidence, data={
        "symbolic": sym_ok, "exact": (exact_lit_up, exact_sig_down), "run": (run_lit_up, run_sig_down)})
