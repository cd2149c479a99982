"""Verdicts on the planted faults: a study of a faulty step (wrong time scale, a window fixed
in time, gradient leaking into the window, a position-dependent F, a wrong expectation) must
be *rejected* -- it does not follow (2), and its discrepancy is resolved above the noise
(:func:`rejected`) -- while the symmetrised F must follow (2). Built on the verdicts of
:mod:`mowtheory.flow.rates`.
"""
from __future__ import annotations

from typing import Sequence

from .rates import EtaErrors, all_finite, sample_problem
from .verdicts import (FAIL, FAULT_LEAK, FAULT_POSITION_WEIGHTED, FAULT_TIME_WINDOW,
                       INCONCLUSIVE, NO_BIAS_FLOOR, PASS, STRONG_ORDER, SYMMETRIZED_FOLLOWS,
                       WEAK_ORDER, by_id, id_of, status, verdict)

__all__ = ["FOLLOWS", "fault_verdict", "fault_verdicts", "follows_ode", "rejected"]


#: the ids of a study's verdicts that say "it follows (2)"
FOLLOWS = (STRONG_ORDER, WEAK_ORDER, NO_BIAS_FLOOR)


def follows_ode(verdicts: Sequence[dict]) -> bool:
    """True when the order verdicts and the bias verdict of a study all passed (a study
    without a bias verdict, from before it existed, is judged on its orders)."""
    got = {id_of(v): v["passed"] for v in verdicts if id_of(v) in FOLLOWS}
    return len(got) >= 2 and all(got.values())


def _follows_status(verdicts: Sequence[dict]) -> tuple:
    """(PASS | FAIL | INCONCLUSIVE, reason) of "the study follows (2)": FAIL as soon as one of
    its order/bias verdicts FAILED, INCONCLUSIVE when none failed but one was inconclusive."""
    got = [v for v in verdicts if id_of(v) in FOLLOWS]
    if len(got) < 2:
        return INCONCLUSIVE, "the study has no order verdicts"
    sts = [status(v) for v in got]
    if FAIL in sts:
        return FAIL, ""
    if INCONCLUSIVE in sts:
        return INCONCLUSIVE, "; ".join(v["detail"].replace("inconclusive: ", "", 1)
                                       for v in got if status(v) == INCONCLUSIVE)
    return PASS, ""


def _rejection(rows: Sequence[EtaErrors], verdicts: Sequence[dict]) -> tuple:
    """``(detected, evidence, inconclusive reason or None)``, see :func:`rejected`."""
    stable = [e for e in rows if e.stable]
    if not stable:
        return False, "no stable step size", "no stable step size"
    few = sample_problem(stable)
    if few:
        return False, few, few
    last = min(stable, key=lambda e: e.eta)
    if not all_finite(last.weak, last.noise_floor):
        why = (f"degenerate statistic at eta = {last.eta:g}: weak error {last.weak}, noise "
               f"floor {last.noise_floor}")
        return False, why, why
    bias_v = by_id(verdicts, NO_BIAS_FLOOR)
    resolved = last.weak >= 3 * last.noise_floor      # a bias well above the noise
    resolved = resolved or (bias_v is not None and status(bias_v) == FAIL)
    fails = not follows_ode(verdicts)
    weak_v = by_id(verdicts, WEAK_ORDER)
    ev = (f"weak error at eta = {last.eta:g}: {last.weak:.4g} (noise floor {last.noise_floor:.2g}); "
          f"{weak_v['detail']}" + (f"; {bias_v['detail']}" if bias_v is not None else ""))
    return bool(resolved and fails), ev, None


def rejected(rows: Sequence[EtaErrors], verdicts: Sequence[dict]) -> tuple:
    """(is the run detected as NOT following (2), evidence): it does not follow (2) (orders
    or bias verdict) and its discrepancy is resolved: the weak error at the smallest stable
    eta is at least 3x its noise floor, or the bias verdict found a floor beyond its
    Bonferroni band (itself a resolved test). Never detected on degenerate statistics (too
    few replicas, a NaN weak error or floor)."""
    ok, ev, _ = _rejection(rows, verdicts)
    return ok, ev


def fault_verdict(id: str, claim: str, study) -> dict:
    """The verdict "the planted fault of ``study`` is rejected" (:func:`rejected`)."""
    ok, ev, why = _rejection(study.rows, study.verdicts)
    return verdict(id, claim, ok, ev, inconclusive=why)


def fault_verdicts(position_weighted=None, symmetrized=None, time_window=None,
                   leak_window=None) -> list:
    """Verdicts of the planted faults from their studies (:class:`~.study.Study` objects,
    any of them None to skip)."""
    out = []
    if position_weighted is not None:
        out.append(fault_verdict(FAULT_POSITION_WEIGHTED,
                                 "planted fault: position-weighted (non-invariant) F is rejected",
                                 position_weighted))
    if symmetrized is not None:
        st, why = _follows_status(symmetrized.verdicts)
        det = "; ".join(v["detail"] for v in symmetrized.verdicts if id_of(v) in FOLLOWS)
        out.append(verdict(SYMMETRIZED_FOLLOWS,
                           "its symmetrisation follows (2) (orders in band, no bias floor)",
                           st == PASS, det, inconclusive=why or None))
    if time_window is not None:
        tau = time_window.config.get("tau")
        out.append(fault_verdict(FAULT_TIME_WINDOW, f"planted fault: window='time' (latents "
                                 f"stale by up to tau = {tau:g}) is rejected", time_window))
    if leak_window is not None:
        out.append(fault_verdict(FAULT_LEAK, "planted fault: gradient leaking into the window "
                                 "(window='leak': its latents re-encoded at theta with "
                                 "gradient) is rejected", leak_window))
    return out
