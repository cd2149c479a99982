"""Machine checks of the steps of the MoW paper's Theorem 1 and of its errata.

Each check is a function returning a :class:`CheckResult` ``(id, claim, passed, evidence)``;
its arguments have defaults that state the claim, and injectable parts (``time_scale``,
``symmetrize``, ``sign``, ``closed_form``, ...) with which a test can plant a fault and see
the check fail. :data:`CHECKS` maps id -> function; :func:`run_all` runs them (the command
``mowtheory check`` is a front end to it). See ``mowtheory/proofs/README.md`` for the claims.

Symbolic work uses exact rational polynomial arithmetic (``sympy.polys.rings``) and exact
Gaussian moments (Isserlis), so "the difference simplifies to 0" means an exact polynomial
identity.
"""
from __future__ import annotations

try:
    import sympy  # noqa: F401  (the one package of mowtheory that needs it)
except ImportError as exc:                           # pragma: no branch
    raise ImportError("mowtheory.proofs (mowtheory check) needs sympy: pip install "
                      "'mowtheory[proofs]' (or pip install sympy)") from exc

import time
import traceback
from typing import Callable, Iterable, Optional

from ._result import CheckResult
from .closed_forms import check_closed_forms
from .errata_algorithm_cost import check_errata_algorithm_cost
from .errata_partials import check_errata_partials
from .errata_sign import check_errata_sign
from .expected_gradient import check_expected_gradient
from .nonsymmetric import check_nonsymmetric
from .reduction_balance import check_reduction_balance
from .staleness import check_staleness

CHECKS: dict[str, Callable[..., CheckResult]] = {
    "expected-gradient": check_expected_gradient,
    "nonsymmetric-counterexample": check_nonsymmetric,
    "reduction-balance": check_reduction_balance,
    "staleness-order": check_staleness,
    "closed-forms": check_closed_forms,
    "errata-sign": check_errata_sign,
    "errata-partials": check_errata_partials,
    "errata-algorithm-cost": check_errata_algorithm_cost,
}

__all__ = ["CHECKS", "CheckResult", "resolve_ids", "run_all", "run_check"]


def resolve_ids(ids: Optional[Iterable[str]] = None) -> list[str]:
    """The check ids to run, in registry order, duplicates removed; ``None`` means all.
    Raises ``ValueError`` naming the valid ids for an unknown one."""
    if ids is None:
        return list(CHECKS)
    ids = list(ids)
    unknown = [i for i in ids if i not in CHECKS]
    if unknown:
        raise ValueError(
            f"unknown check id{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)}; "
            f"valid ids: {', '.join(CHECKS)}")
    wanted = set(ids)
    return [i for i in CHECKS if i in wanted]


def run_check(check_id: str, **kwargs) -> CheckResult:
    """Run one check, timing it. An exception inside the check is reported as a failed result
    (its evidence holds the traceback) rather than raised."""
    fn = CHECKS[resolve_ids([check_id])[0]]
    t0 = time.perf_counter()
    try:
        res = fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - a crashing check is a failing check
        tb = traceback.format_exc(limit=4)
        doc = fn.__doc__.strip().splitlines()[0] if fn.__doc__ else ""
        mod = __import__(fn.__module__, fromlist=["CLAIM"])
        res = CheckResult(check_id, getattr(mod, "CLAIM", doc), False,
                          f"check raised {type(exc).__name__}: {exc}\n{tb}")
    res.seconds = time.perf_counter() - t0
    return res


def run_all(ids: Optional[Iterable[str]] = None) -> list[CheckResult]:
    """Run the checks ``ids`` (default all, registry order) with their default arguments."""
    return [run_check(i) for i in resolve_ids(ids)]
