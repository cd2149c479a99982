"""The result every check returns."""
from __future__ import annotations

from typing import Optional

from ..verdict import FAIL, PASS, Verdict


class CheckResult(Verdict):
    """Outcome of one proof check: a :class:`~mowtheory.verdict.Verdict` (the type of the
    flow verdicts too) with its run time.

    ``CheckResult(id, claim, passed, evidence, seconds=0.0, data=None)``:

    - id: the check's id (a key of :data:`mowtheory.proofs.CHECKS`);
    - claim: the claim checked, in one sentence;
    - passed: whether the machine check confirmed the claim (a proof check is exact, so it
      is PASS or FAIL, never INCONCLUSIVE: it raises or it decides);
    - evidence: human-readable evidence (the verdict's ``detail``); its first line is a
      one-line summary (the CLI table shows it), the following lines the details;
    - seconds: wall time of the check (filled by :func:`mowtheory.proofs.run_check`);
    - data: structured values behind the evidence (for tests and programmatic use; not
      written to the CLI's JSON).
    """

    def __init__(self, id: str, claim: str, passed: bool, evidence: str,
                 seconds: float = 0.0, data: Optional[dict] = None):
        super().__init__(id, claim, PASS if passed else FAIL, evidence, data=data)
        self.seconds = float(seconds)

    @classmethod
    def _from(cls, v, id: str, claim: str) -> "CheckResult":
        return cls(id, claim, v.passed, v.detail, v.seconds, v.data)

    def to_dict(self) -> dict:
        """``{id, claim, passed, status, evidence, seconds}`` (JSON-serialisable; the ``id``,
        ``claim``, ``passed`` and ``status`` fields are those of the flow verdicts)."""
        return {"id": self.id, "claim": self.claim, "passed": bool(self.passed),
                "status": self.status, "evidence": self.evidence,
                "seconds": round(float(self.seconds), 4)}


def short(expr, limit: int = 400) -> str:
    """``str(expr)``, cut to ``limit`` characters with an ellipsis."""
    s = str(expr)
    return s if len(s) <= limit else s[: limit - 3] + "..."
