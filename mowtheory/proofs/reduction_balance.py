"""Check ``reduction-balance``: how the reduction of G changes the limit flow.

On the shared scalar problem (z = θx, x ~ N(0, s2), F = ((1/n)Σz² − 1)², G = beta(x − θx)²;
s2 and beta symbolic), for every k ≤ n ≤ 4, exactly:

(a) MoW with G averaged over the k fresh examples ("mean") has expected step gradient
    ∇E[G] + (k/n)∇E[F]: the limit drift is −(∇E[G] + (k/n)∇E[F]), i.e. standard training with
    the regulariser weight multiplied by k/n;
(b) the balanced variant (F scaled by n/k) has expected step gradient ∇E[F] + ∇E[G], the drift
    of standard training on batches of n with G averaged over the n examples — per step; per
    example read, MoW takes n/k times as many steps (the time scale);
(c) without balancing and k < n the drift differs from standard training by (1 − k/n)∇E[F] ≠ 0;
(e) balancing with the theorem's sum reduction gives ∇E[F] + k∇E[G], not the standard
    ∇E[F] + n∇E[G]: the balanced variant is meant for the mean reduction;
(d) the authors' reconstruction term sqrt((1/k) Σ_fresh G_j) is not a per-example sum: its
    expected gradient per step, g_k(θ) = E[∂_θ sqrt(mean_k G)], is neither constant in k (as a
    mean of per-example terms would be) nor proportional to k (as a sum would be), so
    assumption (1) of Theorem 1 fails. g_k is computed in closed form by integrating over the
    radius of the k fresh examples (chi distribution), and cross-checked by Monte Carlo.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Callable, Optional

import sympy as sp
from sympy import QQ

from ._problems import scalar_problem
from ._result import CheckResult

ID = "reduction-balance"
CLAIM = ("With G averaged over the k fresh examples the MoW drift is −(∇E[G] + (k/n)∇E[F]); "
         "scaling F by n/k restores the standard n-batch drift ∇E[F] + ∇E[G]; the authors' "
         "sqrt-of-mean G is not a per-example sum, so assumption (1) fails for it.")


def sqrt_mean(Gs):
    """The authors' reconstruction: sqrt of the batch mean of per-example squared errors."""
    return sp.sqrt(sp.Add(*Gs) / len(Gs))


def mean(Gs):
    return sp.Add(*Gs) / len(Gs)


def total(Gs):
    return sp.Add(*Gs)


_r, _d, _s2, _beta, _theta = sp.symbols("r d s2 beta theta", positive=True)


def expected_reduced_gradient(reduce: Callable, k: int):
    """g_k(θ) = E[∂_θ reduce(G(x_1), …, G(x_k))] on the scalar problem, as a sympy expression
    in θ (for θ < 1), s2, beta. Valid for reductions that depend on the fresh examples only
    through Σ x_j² (checked: ``ValueError`` otherwise)."""
    xs = sp.symbols(f"x0:{k}", real=True)
    # θ = 1 − d with d > 0, so x − θx = d·x
    Gs = [_beta * (_d * x) ** 2 for x in xs]
    f = reduce(Gs)
    # radial evaluation: x = sqrt(s2)·r·u, ‖u‖ = 1; check two directions agree
    on_axis = f.subs({x: (sp.sqrt(_s2) * _r if i == 0 else 0) for i, x in enumerate(xs)})
    diag = f.subs({x: sp.sqrt(_s2) * _r / sp.sqrt(k) for x in xs})
    if sp.simplify(on_axis - diag) != 0:
        raise ValueError("reduction is not a function of Σ x_j²; radial integration does not apply")
    dens = _r ** (k - 1) * sp.exp(-_r ** 2 / 2) / (2 ** sp.Rational(k - 2, 2) * sp.gamma(sp.Rational(k, 2)))
    phi = sp.simplify(sp.integrate(on_axis * dens, (_r, 0, sp.oo)))
    g = -sp.diff(phi, _d)            # d/dθ = −d/dd
    return sp.simplify(g.subs(_d, 1 - _theta))


def _mc_sqrt_mean_gradient(k: int, theta: float, s2: float, beta: float, samples: int = 200_000,
                           seed: int = 0):
    import torch
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, k, generator=g, dtype=torch.float64) * s2 ** 0.5
    th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    per = beta * (x - th * x) ** 2
    vals = per.mean(dim=1).sqrt()
    # per-sample gradient in closed form of autograd: d/dθ of each value (vals are separable)
    grads = torch.autograd.grad(vals.sum(), th)[0] / samples
    # standard error from per-sample derivatives (−sqrt(beta)·sqrt(mean x²) for θ < 1)
    per_sample = -(beta ** 0.5) * x.pow(2).mean(dim=1).sqrt()
    se = per_sample.std() / samples ** 0.5
    return float(grads), float(se)


def _part_d(reduce: Callable, sqrt_n: int) -> tuple:
    """Part (d): the expected gradient g_k of the reduced reconstruction term for k = 1 ..
    sqrt_n, exact (and, for :func:`sqrt_mean`, against Monte Carlo). Returns ``(g, ratios,
    gap, not_per_example, mc_line, mc_ok)``."""
    g = [expected_reduced_gradient(reduce, k) for k in range(1, sqrt_n + 1)]
    ratios = [sp.nsimplify(sp.simplify(gk / g[0])) for gk in g]
    const_in_k = all(sp.simplify(gk - g[0]) == 0 for gk in g)
    prop_to_k = all(sp.simplify(gk - (i + 1) * g[0]) == 0 for i, gk in enumerate(g))
    gap = sp.simplify(g[-1] - g[0])
    not_per_example = not const_in_k and not prop_to_k
    mc_line = ""
    mc_ok = True
    if reduce is sqrt_mean:
        theta0, s2v, bv = 0.25, 1.0, 0.5
        for k in (1, sqrt_n):
            exact = float(g[k - 1].subs({_theta: theta0, _s2: s2v, _beta: bv}))
            mc, se = _mc_sqrt_mean_gradient(k, theta0, s2v, bv)
            ok = abs(mc - exact) < 5 * se
            mc_ok &= ok
            mc_line += f" k={k}: exact {exact:.5f}, Monte Carlo {mc:.5f} ± {se:.5f};"
        m = lambda kk: float(sp.sqrt(sp.Rational(2, kk)) * sp.gamma(sp.Rational(kk + 1, 2)) / sp.gamma(sp.Rational(kk, 2)))
        mc_line += f" for n = 64: g_64/g_1 = {m(64) / m(1):.4f}"
    return g, ratios, gap, not_per_example, mc_line, mc_ok


def check_reduction_balance(max_n: int = 4, *, balance=None, reduce: Optional[Callable] = None,
                            sqrt_n: int = 4) -> CheckResult:
    """Run the check.

    Args:
        max_n: parts (a)–(c) for all k ≤ n ≤ max_n.
        balance: factor applied to F in the balanced variant; ``None`` means n/k (a number or
            a callable ``(n, k) -> number`` plants another).
        reduce: the reconstruction reduction tested in part (d), a callable on the list of
            per-example sympy costs (default :func:`sqrt_mean`; :func:`mean` or :func:`total`
            plant per-example sums, which must make part (d) fail).
        sqrt_n: n of part (d) (gap between k = 1 and k = sqrt_n).
    """
    reduce = reduce or sqrt_mean
    bad_a, bad_b, same_c, bad_e = [], [], [], []
    diff_c, diff_c_ok = None, True
    for n in range(1, max_n + 1):
        prob = scalar_problem(n)
        M = prob.model
        EF = M.E(prob.full_cost(g_weight=0))
        EG1 = M.E(prob.G(prob.x[0], prob.params))
        gF, gG = prob.grad(EF)[0], prob.grad(EG1)[0]
        std_mean = prob.expected_gradient(prob.full_cost(g_weight=QQ(1, n)))[0]
        for k in range(1, n + 1):
            mow_mean = prob.expected_gradient(prob.mow_cost(k, g_weight=QQ(1, k)))[0]
            if mow_mean - (gG + QQ(k, n) * gF):
                bad_a.append((n, k))
            if balance is None:
                bf = QQ(n, k)
            else:
                b = Fraction(balance(n, k) if callable(balance) else balance)
                bf = QQ(b.numerator, b.denominator)
            mow_bal = prob.expected_gradient(prob.mow_cost(k, f_weight=bf, g_weight=QQ(1, k)))[0]
            if mow_bal - std_mean or std_mean - (gF + gG):
                bad_b.append((n, k))
            if k < n and not (mow_mean - std_mean):
                same_c.append((n, k))
            # (e) balancing with the theorem's sum reduction: ∇E[F] + k∇E[G] (not standard-sum)
            mow_bal_sum = prob.expected_gradient(prob.mow_cost(k, f_weight=QQ(n, k)))[0]
            if mow_bal_sum - (gF + k * gG):
                bad_e.append((n, k))
            if (n, k) == (max_n, 1):   # worked example of (c)
                diff_c = sp.factor(M.to_expr(std_mean - mow_mean))     # drift difference
                diff_c_ok = not (std_mean - mow_mean - QQ(n - k, n) * gF)

    # (d)
    g, ratios, gap, not_per_example, mc_line, mc_ok = _part_d(reduce, sqrt_n)
    passed = not bad_a and not bad_b and not same_c and diff_c_ok and not bad_e and not_per_example and mc_ok
    cases = max_n * (max_n + 1) // 2
    head = (f"(a) mean-MoW drift = −(∇E[G] + (k/n)∇E[F]): {cases - len(bad_a)}/{cases} cases; "
            f"(b) balanced = standard: {cases - len(bad_b)}/{cases}; "
            f"(c) unbalanced ≠ standard for k<n: {'yes' if not same_c else 'NO ' + str(same_c)}; "
            f"(d) g_{sqrt_n}/g_1 = {ratios[-1]} ({'not a per-example sum' if not_per_example else 'per-example sum: NO gap'})")
    evidence = "\n".join([
        head,
        "scalar problem, s2 and beta symbolic, exact Isserlis moments; "
        f"balance factor {'n/k' if balance is None else repr(balance) + ' (planted)'}.",
        f"(a) failing cases: {bad_a or 'none'}; (b) failing cases: {bad_b or 'none'} — equal per step; "
        "per example read MoW takes n/k times as many steps (the time scale)",
        f"(c) n={max_n}, k=1: mean-MoW drift minus standard-mean drift = {diff_c} "
        f"(= (1 − k/n)∂θE[F]: {diff_c_ok})",
        f"(e) balancing with the sum reduction gives ∇E[F] + k∇E[G] (standard-sum is ∇E[F] + n∇E[G]): "
        f"{'all cases' if not bad_e else 'FAILS ' + str(bad_e)} — balance only together with the mean",
        f"(d) reduction {getattr(reduce, '__name__', repr(reduce))}: g_1(θ) = {g[0]} (θ < 1); "
        f"g_k/g_1 for k = 1..{sqrt_n}: {[str(x) for x in ratios]}; g_{sqrt_n} − g_1 = {gap}",
        "    a mean of per-example terms would give g_k/g_1 = 1, a sum g_k/g_1 = k." + mc_line,
    ])
    return CheckResult(ID, CLAIM, passed, evidence, data={
        "bad_a": bad_a, "bad_b": bad_b, "bad_e": bad_e, "unbalanced_equals_standard": same_c,
        "sqrt_ratios": [str(x) for x in ratios], "not_per_example": not_per_example, "mc_ok": mc_ok})
