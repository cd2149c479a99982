"""One verdict type for the flow studies and the proof checks."""
import json
import pickle

import pytest

from mowtheory.flow import rates
from mowtheory.proofs import CheckResult, run_check
from mowtheory.verdict import FAIL, INCONCLUSIVE, PASS, Verdict


def test_flow_verdicts_and_proof_checks_are_one_type():
    v = rates.verdict("weak_order", "weak order within 1 +/- 0.3", True, "fitted 1.02")
    r = run_check("errata-sign")
    assert isinstance(v, Verdict) and isinstance(r, Verdict) and isinstance(r, CheckResult)
    for x in (v, r):
        assert set(x) == {"id", "claim", "passed", "status", "detail"}
        assert x.passed is (x.status == PASS) and x.evidence == x.detail == x["detail"]
        assert rates.status(x) == x.status
    assert r.id == "errata-sign" and r.status == PASS and r.seconds > 0
    assert json.loads(json.dumps(v)) == dict(v)          # JSON as it is


def test_inconclusive_is_never_passed_and_status_is_checked():
    v = Verdict.decide("x", "a claim", True, "ignored", inconclusive="3 replicas")
    assert v.status == INCONCLUSIVE and v.passed is False
    assert v.detail == "inconclusive: 3 replicas" and v.summary == v.detail
    assert Verdict.decide("x", "c", 0, "d").status == FAIL
    with pytest.raises(ValueError, match="status must be one of PASS, FAIL, INCONCLUSIVE; got "
                                         "status='ok'"):
        Verdict("x", "c", "ok", "d")


def test_renamed_copies_and_pickles_keep_everything():
    v = Verdict("a", "claim", FAIL, "line 1\nline 2", data={"z": [1.0, 2.0]})
    w = v.renamed("b.a", "sub: claim")
    assert (w.id, w.claim, w.status, w.detail, w.data) == ("b.a", "sub: claim", FAIL,
                                                          v.detail, v.data)
    assert w.summary == "line 1" and type(w) is Verdict
    r = CheckResult("c", "claim", True, "ok", seconds=1.5, data={"k": 2})
    r2 = r.renamed("c2", "claim 2")
    assert type(r2) is CheckResult and r2.seconds == 1.5 and r2.passed and r2.data == {"k": 2}
    for x in (v, r):
        y = pickle.loads(pickle.dumps(x))
        assert type(y) is type(x) and dict(y) == dict(x) and y.data == x.data
    assert pickle.loads(pickle.dumps(r)).seconds == 1.5


def test_prefixed_and_legacy_dicts_become_verdicts():
    legacy = {"claim": "weak order within 1.0 +/- 0.3", "passed": False,
              "detail": "inconclusive: too few"}                       # a JSON of version 0.2
    p = rates.prefixed(legacy, "observable.C", "observable C: ")
    assert isinstance(p, Verdict) and p.id == "observable.C.weak_order"
    assert p.status == INCONCLUSIVE and p.claim.startswith("observable C: weak order")
