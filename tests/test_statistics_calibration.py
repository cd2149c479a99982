"""Calibration of the verdicts' statistics on synthetic data with a known answer.

Each test draws many synthetic "simulations" whose true order, mean or null distribution is
known, runs the package's own statistics on them (:mod:`mowtheory.flow.rates`), and checks the
frequency of the outcome against its nominal value: the 95 % interval of a fitted order covers
the true slope about 95 % of the time; the bias verdict rejects a bias-free pair of runs about
as often as its family-wise level; a pure-noise weak error exceeds its noise floor about 5 % of
the time. Each band is wide enough for the Monte Carlo error of the check itself (binomial,
stated per test) and narrow enough that a miscalibrated statistic (a 50 % interval, a percentile
interval, a one-sided threshold, the median instead of the 95th percentile, a floor factor of 0)
falls outside it. Also: the reference ODE against an exact solution, and the order fit's
minimum number of step sizes.
"""
import math

import numpy as np
import pytest
import torch

from mowtheory.flow import rates
from mowtheory.flow.problem import Problem
from mowtheory.flow.rates import (EtaErrors, errors, extrapolated_bias, fitted_order,
                                  order_verdict, status)
from mowtheory.flow.reference import solve_reference
from mowtheory.flow.simulate import SimulationResult

DT = torch.float64


def _sim(eta, thetas, times):
    return SimulationResult(eta=eta, steps=0, times=np.asarray(times, float), thetas=thetas,
                            stable=True, diverged=0, diverged_at=None,
                            paths=thetas[:1], path_times=np.asarray(times, float), wall=0.0)


class _Zero:
    """A reference that stays at 0 (P parameters)."""

    def __init__(self, P):
        self.P = P

    def __call__(self, t):
        return np.zeros((len(np.atleast_1d(t)), self.P))


ETAS = (0.04, 0.02, 0.01, 0.005)


# ----------------------------------------------------------------------------- interval coverage
def _strong_fit(g, p_true, *, R=48, bootstrap=200):
    """One synthetic study whose strong error has order exactly ``p_true`` in expectation:
    replica r of the run at eta sits at eta^p |X_r| with i.i.d. X (so log E_s(eta) =
    p log eta + the same constant at every eta, and the least-squares slope is unbiased)."""
    rows = []
    for eta in ETAS:
        x = torch.randn(R, 1, 1, generator=g, dtype=DT).abs() * (1 + torch.rand(R, 1, 1,
                                                                     generator=g, dtype=DT))
        thetas = torch.cat([torch.zeros(R, 1, 1, dtype=DT), eta ** p_true * x], 1)   # (R, 2, 1)
        rows.append(errors(_sim(eta, thetas, [0.0, 1.0]), _Zero(1), bootstrap=bootstrap,
                           generator=g))
    return fitted_order(rows, "strong")


def test_order_interval_covers_the_true_slope_at_its_nominal_rate():
    """Coverage of the nominal 95 % basic bootstrap interval over 200 synthetic fits. With 200
    fits, a true coverage of 95 % gives >= 90 % with probability > 0.99; a 50 % interval
    (percentiles 25/75) covers about half the time, and an interval 0 wide never."""
    g = torch.Generator().manual_seed(2024)
    fits = [_strong_fit(g, 0.5) for _ in range(200)]
    cover = np.mean([o.ci[0] <= 0.5 <= o.ci[1] for o in fits])
    width = np.median([o.ci[1] - o.ci[0] for o in fits])
    assert 0.90 <= cover <= 0.995, (cover, width)
    est = np.array([o.estimate for o in fits])
    assert abs(est.mean() - 0.5) < 3 * est.std() / math.sqrt(len(est)) + 1e-3, est.mean()


def test_order_interval_is_the_basic_bootstrap_interval():
    """Known answer: bootstrap slopes that sit *above* the estimate must give an interval
    reflected *below* it (basic: ``(2 est - q97.5, 2 est - q2.5)``); a percentile interval
    would lie above the estimate."""
    etas = [0.04, 0.02, 0.01]
    rows = []
    B = 400
    shifts = np.linspace(-1.0, 1.0, B)             # bootstrap curves: slope 1 + 0.1 + 0.05 s
    for eta in etas:
        e = EtaErrors(eta=eta, stable=True, strong=eta, weak=eta, resolved=True, replicas=64,
                      bootstrap=B)
        e.boot_strong = eta ** (1.1 + 0.05 * shifts) * 1.0
        e.boot_weak = e.boot_strong
        rows.append(e)
    o = fitted_order(rows, "strong")
    boots = 1.1 + 0.05 * shifts
    lo, hi = np.percentile(boots, [2.5, 97.5])
    assert o.estimate == pytest.approx(1.0, abs=1e-12)
    assert o.ci[0] == pytest.approx(2 - hi, abs=1e-9) and o.ci[1] == pytest.approx(2 - lo, abs=1e-9)
    assert o.ci[1] < 1.0            # reflected: the bootstrap's upward bias moves it down


def test_order_needs_three_step_sizes():
    rows = [EtaErrors(eta=e, stable=True, strong=e ** 0.5, weak=e, resolved=True, replicas=64,
                      bootstrap=50, boot_strong=np.full(50, e ** 0.5), boot_weak=np.full(50, e))
            for e in (0.04, 0.02)]
    o = fitted_order(rows, "strong")
    assert math.isnan(o.estimate) and "need 3" in o.note
    assert status(order_verdict(o, "strong")) == rates.INCONCLUSIVE


# ----------------------------------------------------------------------------- bias verdict
def _null_pair(g, *, R=400, J=3, P=4, alpha):
    """Two bias-free runs (mean error exactly eta * e(t), Gaussian noise): Richardson's D_0 is 0
    in expectation, so a rejection is a false one."""
    sims = []
    e_t = torch.linspace(0.2, 1.0, J, dtype=DT)[:, None] * torch.ones(P, dtype=DT)
    for eta in (0.01, 0.02):
        noise = torch.randn(R, J, P, generator=g, dtype=DT) * torch.linspace(0.5, 2, P, dtype=DT)
        thetas = torch.cat([torch.zeros(R, 1, P, dtype=DT), eta * e_t + noise], 1)
        sims.append(_sim(eta, thetas, [0.0] + [float(j + 1) for j in range(J)]))
    return extrapolated_bias(sims, _Zero(P), alpha=alpha)


def test_bias_verdict_false_rejection_rate_is_its_family_wise_level():
    """Under the null, 600 pairs at family-wise alpha = 0.2 over 12 (time, parameter) entries:
    two-sided Bonferroni rejects at rate <= alpha and close to it for independent entries
    (1 - (1 - alpha/12)^12 = 0.18); the binomial standard error is 0.016, so the band [0.12,
    0.25] holds with probability > 0.999. A one-sided threshold (alpha / m instead of
    alpha / 2m) rejects about 0.33 of the time."""
    g = torch.Generator().manual_seed(7)
    alpha = 0.2
    biases = [_null_pair(g, alpha=alpha) for _ in range(600)]
    assert all(b.entries == 12 for b in biases)
    rate = np.mean([b.z_max > b.z_crit for b in biases])
    assert 0.12 <= rate <= 0.25, rate


def test_bias_verdict_finds_a_planted_bias_at_the_same_level():
    g = torch.Generator().manual_seed(8)
    R, J, P = 400, 3, 4
    sims = []
    for eta in (0.01, 0.02):       # a floor b = 1 on parameter 0 that the step cannot remove
        thetas = torch.randn(R, J + 1, P, generator=g, dtype=DT)
        thetas[:, 0] = 0
        thetas[:, 1:, 0] += 1.0          # D_0 = 1 with SE sqrt(5 / 400): z ~ 9
        sims.append(_sim(eta, thetas, [0.0, 1.0, 2.0, 3.0]))
    b = extrapolated_bias(sims, _Zero(P))
    assert b.z_max > b.z_crit and status(rates.bias_verdict(b)) == rates.FAIL


# ----------------------------------------------------------------------------- noise floor
def test_noise_floor_is_the_95th_percentile_of_the_null():
    """Pure-noise runs (true weak error 0): the observed weak error exceeds its noise floor
    (is "resolved") about 5 % of the time. 400 runs: binomial SE 0.011, band [0.01, 0.11];
    a floor at the null's median resolves about half of them, a floor factor of 0 all."""
    g = torch.Generator().manual_seed(11)
    hits = []
    for _ in range(400):
        thetas = torch.cat([torch.zeros(64, 1, 3, dtype=DT),
                            torch.randn(64, 2, 3, generator=g, dtype=DT)], 1)
        e = errors(_sim(0.01, thetas, [0.0, 0.5, 1.0]), _Zero(3), bootstrap=200, generator=g)
        hits.append(e.resolved)
    rate = float(np.mean(hits))
    assert 0.01 <= rate <= 0.11, rate


def test_a_resolved_signal_is_resolved():
    g = torch.Generator().manual_seed(12)
    thetas = torch.cat([torch.zeros(64, 1, 3, dtype=DT),
                        1.0 + torch.randn(64, 2, 3, generator=g, dtype=DT)], 1)
    e = errors(_sim(0.01, thetas, [0.0, 0.5, 1.0]), _Zero(3), bootstrap=200, generator=g)
    assert e.resolved and e.weak > e.noise_floor > 0


# ----------------------------------------------------------------------------- reference ODE
class _Quartic(Problem):
    """E[F_n] = a theta^4 and G = 0: the flow (2) is theta' = -(k/n) 4 a theta^3, solved
    exactly by theta(t) = theta0 / sqrt(1 + 8 a (k/n) theta0^2 t)."""

    name = "quartic"
    n_params, data_dim, latent_dim = 1, 1, 1

    def __init__(self, a=1.5):
        self.a = a

    def expected_batch_cost(self, theta, n):
        return self.a * theta[..., 0] ** 4

    def residual_gaussian(self, theta):
        return torch.zeros_like(theta), torch.zeros(*theta.shape, 1, dtype=theta.dtype)


def test_reference_solution_matches_an_exact_solution_to_its_tolerance():
    """The reference is solved at rtol 1e-11: on a flow with a closed-form solution its
    relative error stays below 1e-9 at every time (a reference at rtol 1e-4 is off by ~1e-7)."""
    p, th0, n, k = _Quartic(), 2.0, 8, 2
    ref = solve_reference(p, torch.tensor([th0], dtype=DT), 3.0, n=n, k=k)
    t = np.linspace(0, 3.0, 31)
    exact = th0 / np.sqrt(1 + 8 * p.a * (k / n) * th0 ** 2 * t)
    rel = np.abs(ref(t)[:, 0] - exact) / exact
    assert rel.max() < 1e-9, rel.max()
