"""One type for every claim the package decides: :class:`Verdict`.

The flow studies' verdicts (:func:`mowtheory.flow.rates.verdict`) and the proof checks
(:class:`mowtheory.proofs.CheckResult`, a :class:`Verdict` with its run time) are the same
object: a JSON-ready dict ``{"id", "claim", "passed", "status", "detail"}`` with attribute
access, where

- ``id`` is the stable name programs select a verdict by (the claim and detail are prose for
  people, and may change);
- ``status`` is ``"PASS"``, ``"FAIL"`` (the claim was refuted) or ``"INCONCLUSIVE"`` (it could
  not be decided: a statistic that is NaN, an interval too wide, too few samples); ``passed``
  is ``status == "PASS"``, so an INCONCLUSIVE verdict never counts as passed;
- ``detail`` (alias ``evidence``) is the evidence, its first line a summary;
- ``data`` (an attribute, not a key: not written to JSON) holds the structured values behind
  the evidence, for tests and programs.

The exit status of a command that decides claims follows from the statuses
(:func:`mowtheory.cli.verdict_exit_status`). This module imports nothing.
"""
from __future__ import annotations

from typing import Optional

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
STATUSES = (PASS, FAIL, INCONCLUSIVE)

__all__ = ["FAIL", "INCONCLUSIVE", "PASS", "STATUSES", "Verdict"]


class Verdict(dict):
    """A decided claim (see the module docstring). ``Verdict(id, claim, status, detail,
    data=None)``; :meth:`decide` builds one from a bool."""

    def __init__(self, id: str, claim: str, status: str, detail: str, *,
                 data: Optional[dict] = None):
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}; got "
                             f"status={status!r}")
        super().__init__(id=str(id), claim=str(claim), passed=status == PASS, status=status,
                         detail=str(detail))
        self.data = {} if data is None else data

    @classmethod
    def decide(cls, id: str, claim: str, passed, detail: str, *,
               inconclusive: Optional[str] = None, data: Optional[dict] = None) -> "Verdict":
        """PASS or FAIL from ``passed``; INCONCLUSIVE when ``inconclusive`` (the reason) is
        given, with ``detail`` ``"inconclusive: <reason>"``."""
        if inconclusive:
            return cls(id, claim, INCONCLUSIVE, "inconclusive: " + inconclusive, data=data)
        return cls(id, claim, PASS if passed else FAIL, detail, data=data)

    def renamed(self, id: str, claim: str) -> "Verdict":
        """The same verdict (status, evidence, data) under another id and claim."""
        return type(self)._from(self, id, claim)

    @classmethod
    def _from(cls, v: "Verdict", id: str, claim: str) -> "Verdict":
        return Verdict(id, claim, v.status, v.detail, data=v.data)

    id = property(lambda self: self["id"], doc="stable name of the verdict")
    claim = property(lambda self: self["claim"], doc="the claim, one sentence")
    status = property(lambda self: self["status"], doc="PASS, FAIL or INCONCLUSIVE")
    passed = property(lambda self: self["passed"], doc="status == PASS")
    detail = property(lambda self: self["detail"], doc="the evidence")
    evidence = detail

    @property
    def summary(self) -> str:
        """The first line of the evidence."""
        text = self.detail.strip()
        return text.splitlines()[0] if text else ""
