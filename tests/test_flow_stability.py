"""mowtheory.flow.stability: the companion matrix against the recursion it linearises, the
predicted threshold against the simulator, and the lag as the thing the prediction rests on."""
import math

import numpy as np
import pytest
import torch

from mowtheory.flow import drift, get_problem, simulate
from mowtheory.flow.stability import (companion, critical_eta, expected_window_cost, lag_blocks,
                                      lag_counts, mean_map, spectral_radius)

F64 = torch.float64
PROBLEM = get_problem("mmd-gaussian", data_dim=1, latent_dim=1, lam=16.0)
THETA_STAR = torch.tensor([1.0, 0.0, 1.0], dtype=F64)


def test_lag_counts():
    assert lag_counts(8, 1) == [1] * 7
    assert lag_counts(8, 3) == [3, 2]
    assert lag_counts(8, 3, "pre") == [0, 3, 2]


@pytest.mark.parametrize("balanced", [False, True])
def test_window_cost_gradient_is_the_mow_drift_when_the_window_is_current(balanced):
    th = torch.tensor([0.8, 0.3, 1.2], dtype=F64)
    t = th.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(expected_window_cost(PROBLEM, t, th.expand(7, 3), n=8, k=1,
                                                    reduction="mean", balanced=balanced), t)
    want = -drift(PROBLEM, th, n=8, k=1, reduction="mean", balanced=balanced)
    torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-12)


def _growth_rate(n, eta, steps, d0=1e-9):
    d = mean_map(PROBLEM, THETA_STAR, d0 * torch.tensor([1.0, -0.5, 0.3], dtype=F64), eta,
                 steps, n=n, k=1, balanced=True).norm(dim=-1).numpy()
    ls = np.arange(steps // 2, steps + 1)
    return float(np.exp(np.polyfit(ls, np.log(d[ls]), 1)[0]))


@pytest.mark.parametrize("n,factor", [(4, 0.8), (4, 1.1), (16, 0.8), (16, 1.2)])
def test_spectral_radius_is_the_growth_rate_of_the_mean_recursion(n, factor):
    """(a) rho of the companion matrix = per-step growth of the nonlinear mean map, iterated
    from a 1e-9 perturbation of theta* (window encoded at theta_0). The agreement is measured
    against |1 - rho| (the distance to the threshold, 0.008 to 0.14 here): observed within
    0.9% of it and below 8e-5; a window one latent short (lag blocks of n - 1) is off by
    2e-3 to 5e-3 and fails."""
    A = lag_blocks(PROBLEM, THETA_STAR, n=n, k=1, balanced=True)
    eta = factor * critical_eta(A)
    rho = spectral_radius(A, eta)
    steps = min(600, int(math.log(1e4) / abs(math.log(rho))))   # stay linear, above rounding
    g = _growth_rate(n, eta, steps)
    assert (g < 1) == (rho < 1) == (factor < 1), (g, rho, factor)
    assert abs(g - rho) < min(1e-3, 0.1 * abs(1 - rho)), (g, rho, steps)


def test_companion_of_one_block_is_gradient_descent():
    A = torch.tensor([[[2.0, 0.5], [0.5, 1.0]]], dtype=F64)
    torch.testing.assert_close(companion(A, 0.1), torch.eye(2, dtype=F64) - 0.1 * A[0])
    assert critical_eta(A) == pytest.approx(2.0 / float(torch.linalg.eigvalsh(A[0]).max()),
                                            rel=1e-5)


def _runaway(n, eta, replicas=32):
    steps = 12 * (n - 1) + 200
    r = simulate(PROBLEM, THETA_STAR + 0.1 * torch.tensor([1.0, 1.0, -1.0], dtype=F64), n=n,
                 k=1, eta=eta, horizon=steps * eta, replicas=replicas,
                 generator=torch.Generator().manual_seed(1), reduction="mean", balanced=True,
                 record=8)
    return not r.stable


def test_predicted_threshold_brackets_the_simulated_onset():
    """(b) balanced k=1, n=32: the simulator stays bounded at 0.5 eta* and runs away at
    1.5 eta*, a step size the lag-free prediction calls stable (1.5 eta* < 0.5 eta*_nolag).
    (At n <= 16 the batch-1 noise of G makes replicas run away below eta*: see
    experiments/results/balanced_stability.md.) The bracket is not tighter because of that
    noise at n = 32 too: over generator seeds 1-8, 1.5 eta* (and 1.25 eta*) ran away with every
    seed, but 0.7 eta* with 3 of 8 (seed 1, used here, among them), and even 0.5 eta* with one
    (seed 2, one replica of 32)."""
    n = 32
    eta = critical_eta(lag_blocks(PROBLEM, THETA_STAR, n=n, k=1, balanced=True))
    nolag = critical_eta(lag_blocks(PROBLEM, THETA_STAR, n=n, k=1, balanced=True, lag=False))
    assert 1.5 * eta < 0.5 * nolag
    assert not _runaway(n, 0.5 * eta)
    assert _runaway(n, 1.5 * eta)


def test_removing_the_lag_changes_the_threshold():
    """(c) planted fault: a window at the current theta (all A_j folded into A_0) predicts a
    threshold at least twice as large at n = 32, and one that does not depend on n."""
    with_lag = [critical_eta(lag_blocks(PROBLEM, THETA_STAR, n=n, k=1, balanced=True))
                for n in (16, 32)]
    no_lag = [critical_eta(lag_blocks(PROBLEM, THETA_STAR, n=n, k=1, balanced=True, lag=False))
              for n in (16, 32)]
    assert no_lag[1] > 2.0 * with_lag[1]
    assert no_lag[0] == pytest.approx(no_lag[1], rel=1e-6)
    assert with_lag[1] < 0.6 * with_lag[0]


@pytest.mark.parametrize("call,match", [
    (lambda: lag_counts(4, 4), r"k must be .* n - 1 = 3; got k=4"),
    (lambda: lag_counts(4, 1, refresh="mid"), r"refresh must be one of .*got refresh='mid'"),
    (lambda: companion(torch.zeros(1, 2, 2, dtype=F64), -0.1), r"eta must be .*got eta=-0.1"),
    (lambda: critical_eta(torch.zeros(1, 2, 2, dtype=F64), eta_max=0), r"eta_max must be .*got eta_max=0"),
    (lambda: lag_blocks("scalar", torch.ones(1, dtype=F64), n=4, k=1), r"problem must be .*got problem='scalar'"),
    (lambda: expected_window_cost(PROBLEM, THETA_STAR, torch.zeros(2, 3, dtype=F64), n=4, k=1),
     r"window_thetas must have shape .*\(3, 3\); got shape \(2, 3\)"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    """(d)"""
    with pytest.raises(ValueError, match=match):
        call()
