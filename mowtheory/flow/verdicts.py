"""The ids and constructors of the flow verdicts (:class:`mowtheory.verdict.Verdict`).

Programs select a verdict by its ``id`` (:data:`IDS`; an observable's verdicts are
``observable.<name>.<id>``, a sub-study's ``<prefix>.<id>``), never by its prose. Verdicts
read from JSON files written before verdicts had ids get the id their claim had
(:func:`id_of`). :mod:`mowtheory.flow.rates` re-exports every name here.
"""
from __future__ import annotations

from typing import Optional, Sequence

from ..verdict import FAIL, INCONCLUSIVE, PASS, Verdict

__all__ = ["FAIL", "IDS", "INCONCLUSIVE", "PASS", "Verdict", "by_id", "id_of", "prefixed",
           "status", "verdict"]

#: verdict ids (:func:`verdict`): what programs select verdicts by, never their prose
STRONG_ORDER, WEAK_ORDER, NO_BIAS_FLOOR = "strong_order", "weak_order", "no_bias_floor"
WRONG_ODE = "wrong_ode_rejected"
FAULT_POSITION_WEIGHTED, SYMMETRIZED_FOLLOWS = "fault.position_weighted", "symmetrized_follows"
FAULT_TIME_WINDOW, FAULT_LEAK = "fault.time_window", "fault.leak"
FAULT_TIME_SCALE, FAULT_WRONG_EXPECTATION = "fault.time_scale", "fault.wrong_expectation"
#: every id a flow verdict can have (observables' ids are ``observable.<name>.<id>``)
IDS = (STRONG_ORDER, WEAK_ORDER, NO_BIAS_FLOOR, WRONG_ODE, FAULT_POSITION_WEIGHTED,
       SYMMETRIZED_FOLLOWS, FAULT_TIME_WINDOW, FAULT_LEAK, FAULT_TIME_SCALE,
       FAULT_WRONG_EXPECTATION, "sme_covariance", "coupled.partner_order",
       "coupled.contrast_rejected")


def verdict(id: str, claim: str, passed, detail: str, *,
            inconclusive: Optional[str] = None) -> Verdict:
    """A :class:`~mowtheory.verdict.Verdict` ``{"id", "claim", "passed", "status",
    "detail"}``: ``id`` is the stable name programs select it by (:data:`IDS`; the claim and
    detail are prose for people and may change). With ``inconclusive`` (the reason) it is
    INCONCLUSIVE: ``passed`` False, ``detail`` starting with "inconclusive: "."""
    return Verdict.decide(id, claim, passed, detail, inconclusive=inconclusive)


def by_id(verdicts: Sequence[dict], id: str) -> Optional[dict]:
    """The verdict with this ``id`` (None when there is none)."""
    return next((v for v in verdicts if id_of(v) == id), None)


#: claim openings of verdicts written before ids existed (JSON files of version <= 0.2), for
#: :func:`id_of` only
_LEGACY = (("strong order", STRONG_ORDER), ("weak order", WEAK_ORDER),
           ("weak error extrapolates", NO_BIAS_FLOOR), ("wrong ODE", WRONG_ODE),
           ("planted fault: position-weighted", FAULT_POSITION_WEIGHTED),
           ("its symmetrisation", SYMMETRIZED_FOLLOWS),
           ("planted fault: window='time'", FAULT_TIME_WINDOW),
           ("planted fault: gradient leaking", FAULT_LEAK),
           ("planted fault: time scale", FAULT_TIME_SCALE),
           ("planted fault: a reference from a wrong", FAULT_WRONG_EXPECTATION),
           ("coupled: MoW and its", "coupled.partner_order"),
           ("coupled: SGD at step eta", "coupled.contrast_rejected"))


def id_of(v: dict) -> Optional[str]:
    """The id of a verdict dict; for one read from a file written before verdicts had ids,
    the id its claim had (``observable <name>: ...`` -> ``observable.<name>.<id>``)."""
    if "id" in v:
        return v["id"]
    claim, prefix = v.get("claim", ""), ""
    if claim.startswith("observable "):
        name, claim = claim[len("observable "):].split(": ", 1)
        prefix = f"observable.{name}."
    return next((prefix + i for start, i in _LEGACY if claim.startswith(start)), None)


def prefixed(v: dict, prefix: str, claim_prefix: str) -> dict:
    """``v`` renamed for a sub-study: id ``prefix + "." + id``, claim prefixed as well."""
    base = _as_verdict(v)
    return base.renamed(f"{prefix}.{base.id}", f"{claim_prefix}{base.claim}")


def _as_verdict(v: dict) -> Verdict:
    """``v`` as a :class:`~mowtheory.verdict.Verdict` (a dict read back from JSON is one)."""
    if isinstance(v, Verdict):
        return v
    return Verdict(id_of(v) or "", v.get("claim", ""), status(v), v.get("detail", ""))


def status(v: dict) -> str:
    """``"PASS" | "FAIL" | "INCONCLUSIVE"`` of a verdict dict (also of one without a status)."""
    if v.get("status") in (PASS, FAIL, INCONCLUSIVE):
        return v["status"]
    if str(v.get("detail", "")).startswith("inconclusive"):
        return INCONCLUSIVE
    return PASS if v.get("passed") else FAIL
