"""The result every check returns."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CheckResult:
    """Outcome of one proof check.

    Attributes:
        id: the check's id (a key of :data:`mowtheory.proofs.CHECKS`).
        claim: the claim checked, in one sentence.
        passed: whether the machine check confirmed the claim.
        evidence: human-readable evidence; its first line is a one-line summary (the CLI
            table shows it), the following lines the details (formulas, values, cases).
        seconds: wall time of the check (filled by :func:`mowtheory.proofs.run_all`).
        data: structured values behind the evidence (for tests and programmatic use; not
            written to the CLI's JSON).
    """

    id: str
    claim: str
    passed: bool
    evidence: str
    seconds: float = 0.0
    data: dict = field(default_factory=dict, repr=False)

    @property
    def status(self) -> str:
        """``"PASS"`` or ``"FAIL"`` (the status field of the flow verdicts; a proof check
        is exact, so it is never inconclusive: it raises or it decides)."""
        return "PASS" if self.passed else "FAIL"

    @property
    def summary(self) -> str:
        """The first line of :attr:`evidence`."""
        return self.evidence.strip().splitlines()[0] if self.evidence.strip() else ""

    def to_dict(self) -> dict:
        """``{id, claim, passed, status, evidence, seconds}`` (JSON-serialisable; the ``id``,
        ``claim``, ``passed`` and ``status`` fields are those of the flow verdicts,
        :func:`mowtheory.flow.rates.verdict`)."""
        return {
            "id": self.id,
            "claim": self.claim,
            "passed": bool(self.passed),
            "status": self.status,
            "evidence": self.evidence,
            "seconds": round(float(self.seconds), 4),
        }


def short(expr, limit: int = 400) -> str:
    """``str(expr)``, cut to ``limit`` characters with an ellipsis."""
    s = str(expr)
    return s if len(s) <= limit else s[: limit - 3] + "..."
