"""Verdicts and checkers fed degenerate statistics: INCONCLUSIVE (or Inconclusive), never PASS.

Every verdict of :mod:`mowtheory.flow.rates` and :mod:`mowtheory.flow.sme` and every checker of
:mod:`mowtheory.testing` gets a NaN statistic, no bootstrap, repeated step sizes, too few
replicas or an F whose output cannot be judged; each case must come back INCONCLUSIVE with its
reason (and the minimum it names), and the same inputs made healthy must come back PASS (so
the guard is not simply "always inconclusive").
"""
import math

import numpy as np
import pytest
import torch

from mowtheory import testing as mt
from mowtheory.cli import main as cli_main
from mowtheory.flow import run_study
from mowtheory.flow.faults import fault_verdicts, follows_ode
from mowtheory.flow.rates import (INCONCLUSIVE, MIN_BOOTSTRAP, MIN_REPLICAS, PASS, Bias,
                                  EtaErrors, Order, bias_verdict, fitted_order, order_verdict,
                                  status, wrong_ode_verdict)
from mowtheory.flow.sme import check_sme, min_replicas

NAN = float("nan")
SHORT = dict(etas=[0.02, 0.01, 0.005], horizon=0.2)


def _rows(*, replicas=64, bootstrap=MIN_BOOTSTRAP, etas=(0.04, 0.02, 0.01), order=0.5,
          weak_order=1.0, nan_at=None):
    """Synthetic per-eta errors with exact orders (and bootstrap samples around them)."""
    g = np.random.default_rng(0)
    out = []
    for i, eta in enumerate(etas):
        s, w = eta ** order, eta ** weak_order
        if nan_at == i:
            s = w = NAN
        e = EtaErrors(eta=eta, stable=True, strong=s, weak=w, weak_se=w / 20, noise_floor=w / 50,
                      wrong=1.0, resolved=True, replicas=replicas, bootstrap=bootstrap)
        if bootstrap:
            e.boot_strong = s * (1 + 0.01 * g.standard_normal(bootstrap))
            e.boot_weak = w * (1 + 0.01 * g.standard_normal(bootstrap))
        out.append(e)
    return out


def _assert_inconclusive(v, *pieces):
    assert status(v) == INCONCLUSIVE and v["passed"] is False, v
    assert v["detail"].startswith("inconclusive: "), v
    for p in pieces:
        assert p in v["detail"], (p, v)


# ------------------------------------------------------------------------------ order verdicts
def test_healthy_synthetic_orders_pass():
    rows = _rows()
    for kind in ("strong", "weak"):
        v = order_verdict(fitted_order(rows, kind), kind)
        assert status(v) == PASS, v


@pytest.mark.parametrize("kind", ["strong", "weak"])
def test_order_without_bootstrap_is_inconclusive(kind):
    v = order_verdict(fitted_order(_rows(bootstrap=0), kind), kind)
    _assert_inconclusive(v, "bootstrap=0", f">= {MIN_BOOTSTRAP}")


def test_order_with_nan_interval_is_inconclusive_even_when_estimate_in_band():
    o = Order(0.5, (NAN, NAN), [0.04, 0.02, 0.01], "", 64)
    _assert_inconclusive(order_verdict(o, "strong"), "95% CI")


def test_order_nan_estimate_is_inconclusive():
    o = Order(NAN, (0.4, 0.6), [0.04, 0.02, 0.01], "", 64)
    _assert_inconclusive(order_verdict(o, "strong"))


def test_order_with_too_few_replicas_is_inconclusive():
    v = order_verdict(fitted_order(_rows(replicas=4), "strong"), "strong")
    _assert_inconclusive(v, "4 replicas", f"replicas >= {MIN_REPLICAS}")


def test_order_through_repeated_step_sizes_is_inconclusive():
    rows = _rows(etas=(0.01, 0.01, 0.01))
    v = order_verdict(fitted_order(rows, "strong"), "strong")
    _assert_inconclusive(v, "1 distinct step size", "need 3")


def test_order_with_a_nan_error_row():
    rows = _rows(nan_at=1)
    for kind in ("strong", "weak"):
        assert status(order_verdict(fitted_order(rows, kind), kind)) != PASS


# ------------------------------------------------------------------------------ bias, wrong ODE
def test_bias_verdict_degenerate():
    ok = Bias((0.01, 0.02), 0.01, 1.0, 4.0, 40, 64)
    assert status(bias_verdict(ok)) == PASS
    _assert_inconclusive(bias_verdict(None), "< 2 stable")
    _assert_inconclusive(bias_verdict(Bias((0.01, 0.02), 0.01, NAN, 4.0, 40, 64)),
                         "degenerate")
    _assert_inconclusive(bias_verdict(Bias((0.01, 0.02), 0.01, 0.0, 4.0, 0, 64)), "0 entries")
    _assert_inconclusive(bias_verdict(Bias((0.01, 0.02), 0.01, 1.0, 4.0, 40, 3)),
                         "3 replicas", f">= {MIN_REPLICAS}")


def test_wrong_ode_verdict_degenerate():
    assert status(wrong_ode_verdict(_rows())) == PASS
    _assert_inconclusive(wrong_ode_verdict(_rows(replicas=2)), "2 replicas")
    _assert_inconclusive(wrong_ode_verdict(_rows(etas=(0.01, 0.01, 0.01))), "distinct")
    rows = _rows()
    for r in rows:
        r.wrong = NAN
    _assert_inconclusive(wrong_ode_verdict(rows), "degenerate")


# ------------------------------------------------------------------------------ real studies
@pytest.fixture(scope="module")
def tiny():
    """A real study with too few replicas (and its bootstrap), and one without bootstrap."""
    few = run_study("linear-gaussian", replicas=4, bootstrap=MIN_BOOTSTRAP, **SHORT)
    noboot = run_study("linear-gaussian", replicas=64, bootstrap=0, **SHORT)
    return few, noboot


def test_study_with_too_few_replicas_every_verdict_inconclusive(tiny):
    few, _ = tiny
    for v in few.verdicts:
        _assert_inconclusive(v)
    assert any(f"replicas >= {MIN_REPLICAS}" in v["detail"] for v in few.verdicts)
    # the planted-fault verdicts built on it: inconclusive too, never "detected"
    for v in fault_verdicts(few, few, None, few):
        _assert_inconclusive(v)


def test_study_without_bootstrap_has_no_passing_order(tiny):
    _, noboot = tiny
    for v in noboot.verdicts[:2]:
        _assert_inconclusive(v, "bootstrap=0")
    assert not follows_ode(noboot.verdicts)
    (sym,) = fault_verdicts(symmetrized=noboot)
    _assert_inconclusive(sym)


def test_sme_with_too_few_replicas_is_inconclusive(tiny):
    few, _ = tiny
    v = check_sme(few)["verdict"]
    _assert_inconclusive(v, "4 replicas", f"replicas >= {min_replicas(0.15)}")
    assert min_replicas(0.15) == math.ceil(8 / 0.15 ** 2)


def test_run_study_etas_rule_is_the_cli_rule(capsys):
    for etas, piece in (([], "at least 2 distinct"), ([0.01], "at least 2 distinct"),
                        ([0.01, 0.01, 0.005], "distinct step sizes"),
                        ([0.01, -0.005], "etas must be a finite number > 0")):
        with pytest.raises(ValueError, match=piece.replace("(", r"\(")):
            run_study("linear-gaussian", etas=etas, replicas=16, horizon=0.2)
        text = ",".join(str(e) for e in etas) or ","
        with pytest.raises(SystemExit) as info:
            cli_main(["flow", "--etas", text, "--quiet", "--no-plot"])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "--etas" in err and (piece in err or "comma-separated" in err), err


def test_run_study_bootstrap_between_0_and_minimum_refused():
    with pytest.raises(ValueError, match=f"bootstrap must be 0 .* or >= {MIN_BOOTSTRAP}"):
        run_study("linear-gaussian", replicas=16, bootstrap=5, **SHORT)


# ------------------------------------------------------------------------------ the CLI
def test_cli_bootstrap_below_minimum_refused_before_work(capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["flow", "--replicas", "16", "--etas", "0.01,0.005,0.0025", "--no-controls",
                  "--bootstrap", "0", "--quiet", "--no-plot"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"bootstrap must be >= {MIN_BOOTSTRAP}" in err and "bootstrap=0" in err


def test_cli_repeated_etas_refused(capsys):
    with pytest.raises(SystemExit):
        cli_main(["flow", "--etas", "0.01,0.01,0.01", "--quiet", "--no-plot"])
    assert "distinct" in capsys.readouterr().err


def test_cli_too_few_replicas_prints_inconclusive_never_pass(capsys):
    rc = cli_main(["flow", "--replicas", "2", "--sme", "--no-controls", "--quiet", "--no-plot",
                   "--etas", "0.02,0.01,0.005", "--horizon", "0.2", "--strict"])
    out = capsys.readouterr().out
    assert rc == 1, out
    verdict_lines = [ln.split()[0] for ln in out.split("verdicts:")[1].splitlines()
                     if ln.startswith("  ") and not ln.startswith("    ")]
    assert verdict_lines and set(verdict_lines) == {"INCONCLUSIVE"}, out
    assert "PASS " not in out and "FAIL " not in out
    assert f"replicas >= {min_replicas(0.15)}" in out and "0 FAILED" in out


# ------------------------------------------------------------------------------ checkers
Z = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def _sum_F(z, y=None):
    return z.pow(2).sum()


@pytest.mark.parametrize("F,piece", [
    (lambda z, y=None: z.sum(0), "got shape (3,)"),                 # one value per column
    (lambda z, y=None: z.sum() * NAN, "non-finite"),
    (lambda z, y=None: float(z.sum()), "got float"),
    (lambda z, y=None: None, "got NoneType"),
    (lambda z, y=None: z.sum() + float("inf"), "non-finite"),
])
def test_permutation_checker_on_unjudgeable_F(F, piece):
    assert mt.check_permutation_invariant(_sum_F, Z) <= 1e-12      # a healthy F passes
    with pytest.raises(mt.Inconclusive, match=piece.replace("(", r"\(").replace(")", r"\)")):
        mt.check_permutation_invariant(F, Z)


def test_permutation_checker_still_fails_a_non_invariant_F():
    with pytest.raises(AssertionError, match="not permutation invariant"):
        mt.check_permutation_invariant(lambda z, y=None: (z[0] * 3).sum() + z.sum(), Z)


@pytest.mark.parametrize("objective,piece", [
    (lambda f, w, y: torch.cat([w, f]).pow(2).sum(0), "shape"),
    (lambda f, w, y: torch.cat([w, f]).pow(2).sum() * NAN, "non-finite"),
    (lambda f, w, y: 1.0, "got float"),
])
def test_gradient_frozen_checker_on_unjudgeable_objective(objective, piece):
    fresh, window = Z[:2], Z[2:]
    good = lambda f, w, y: torch.cat([w.detach(), f]).pow(2).sum()  # noqa: E731
    assert mt.check_gradient_frozen(good, _sum_F, fresh, window) <= 1e-12
    with pytest.raises(mt.Inconclusive, match=piece):
        mt.check_gradient_frozen(objective, _sum_F, fresh, window)


def test_gradient_frozen_checker_F_returning_nan():
    fresh, window = Z[:2], Z[2:]
    good = lambda f, w, y: torch.cat([w.detach(), f]).pow(2).sum()  # noqa: E731
    with pytest.raises(mt.Inconclusive, match="F\\(z, prior\\)"):
        mt.check_gradient_frozen(good, lambda z, y=None: z.sum() * NAN, fresh, window)


# ------------------------------------------------------------------------------ rejected()
def _judged(weak_over_floor: float, *, orders_pass: bool, n_follows: int = 3,
            bias_passes: bool = True):
    """Rows whose smallest-eta weak error is ``weak_over_floor`` times its noise floor, and
    the order verdicts (passing or failing together) and the bias verdict."""
    from mowtheory.flow.rates import NO_BIAS_FLOOR, STRONG_ORDER, WEAK_ORDER, verdict
    rows = [EtaErrors(eta=eta, stable=True, strong=0.1, weak=weak_over_floor * 1e-3,
                      weak_se=1e-4, noise_floor=1e-3, replicas=64, bootstrap=MIN_BOOTSTRAP)
            for eta in (0.04, 0.02, 0.01)]
    ids = (STRONG_ORDER, WEAK_ORDER, NO_BIAS_FLOOR)[:n_follows]
    return rows, [verdict(i, i, bias_passes if i == NO_BIAS_FLOOR else orders_pass,
                          f"{i} detail") for i in ids]


@pytest.mark.parametrize("ratio,orders_pass,bias_passes,want", [
    (10.0, False, True, True),    # resolved and does not follow (2): rejected
    (10.0, True, True, False),    # resolved but follows (2): a correct study, not rejected
    (3.5, False, True, True),     # just above the 3x noise floor
    (2.5, False, True, False),    # below 3x the floor: not resolved, never "rejected"
    (0.5, False, True, False),
    (0.5, True, False, True),     # a FAILED bias verdict is itself a resolved discrepancy
])
def test_rejected_needs_a_resolved_discrepancy_and_a_failed_theorem(ratio, orders_pass,
                                                                    bias_passes, want):
    from mowtheory.flow.faults import rejected
    rows, verdicts = _judged(ratio, orders_pass=orders_pass, bias_passes=bias_passes)
    assert rejected(rows, verdicts)[0] is want


def test_follows_needs_both_order_verdicts():
    """A study judged by fewer than two of its order/bias verdicts does not "follow (2)"."""
    _, one = _judged(1.0, orders_pass=True, n_follows=1)
    _, two = _judged(1.0, orders_pass=True, n_follows=2)
    assert not follows_ode(one) and follows_ode(two)
