"""mowtheory.proofs: every check passes on its defaults, fails on a planted fault, and the
``mowtheory check`` command runs them (table, --json, --only, --list, unknown ids)."""
import importlib.util
import json
from collections import namedtuple
from fractions import Fraction

import pytest
import torch

import mowtheory.proofs as pc
from mowtheory.proofs import CHECKS, CheckResult
from mowtheory.proofs._gauss import GaussModel
from mowtheory.proofs.closed_forms import check_closed_forms
from mowtheory.proofs.errata_algorithm_cost import check_errata_algorithm_cost
from mowtheory.proofs.errata_partials import check_errata_partials
from mowtheory.proofs.errata_sign import check_errata_sign
from mowtheory.proofs.expected_gradient import check_expected_gradient
from mowtheory.proofs.nonsymmetric import check_nonsymmetric, positional_F
from mowtheory.proofs.reduction_balance import check_reduction_balance, mean, total
from mowtheory.proofs.staleness import check_staleness, claimed_T

HAVE_FLOW = importlib.util.find_spec("mowtheory.flow") is not None and \
    importlib.util.find_spec("mowtheory.flow.problems") is not None
HAVE_MOW = importlib.util.find_spec("mowtheory.mow") is not None
NEEDS = {"closed-forms": HAVE_FLOW, "errata-algorithm-cost": HAVE_MOW}
AVAILABLE = [i for i in CHECKS if NEEDS.get(i, True)]
LP = namedtuple("LP", "total batch_cost per_example")


@pytest.fixture(scope="module")
def default_results():
    return {r.id: r for r in pc.run_all(AVAILABLE)}


# ------------------------------------------------------------------------- defaults pass
@pytest.mark.parametrize("check_id", list(CHECKS))
def test_check_passes_on_defaults(check_id, default_results):
    if check_id == "closed-forms":
        pytest.importorskip("mowtheory.flow.problems")
    if check_id == "errata-algorithm-cost":
        pytest.importorskip("mowtheory.mow")
    r = default_results[check_id]
    assert isinstance(r, CheckResult)
    assert r.id == check_id
    assert r.claim and r.evidence and r.summary
    assert r.passed, r.evidence
    assert r.seconds >= 0


def test_registry_ids_match_modules():
    for cid, fn in CHECKS.items():
        mod = __import__(fn.__module__, fromlist=["ID"])
        assert mod.ID == cid


# ------------------------------------------------------------------------- planted faults
def test_expected_gradient_fails_without_k_over_n():
    r = check_expected_gradient(time_scale=1)
    assert not r.passed
    assert (2, 1) in r.data["failures"] and (2, 2) not in r.data["failures"]


def test_expected_gradient_fails_for_positional_F():
    r = check_expected_gradient(max_n=3, F=positional_F)
    assert not r.passed
    assert (2, 1) in r.data["failures"] and (2, 2) not in r.data["failures"]


def test_nonsymmetric_fails_without_symmetrisation():
    r = check_nonsymmetric(symmetrize=False)
    assert not r.passed
    assert r.data["raw_nonzero"] and r.data["symmetrized_nonzero"]


def test_nonsymmetric_fails_for_a_symmetric_F():
    def sym(model, n):
        return lambda lat, prior: sum((z[0] ** 2 for z in lat), model.R.zero)
    r = check_nonsymmetric(max_n=3, F=sym)
    assert not r.passed and not r.data["raw_nonzero"]


def test_nonsymmetric_counterexample_is_shown():
    r = check_nonsymmetric(max_n=2)
    assert r.passed
    assert "(2*a0 + a1)/2" in r.evidence


def test_reduction_balance_fails_without_balance_factor():
    r = check_reduction_balance(max_n=3, balance=1)
    assert not r.passed and r.data["bad_b"]


@pytest.mark.parametrize("reduce", [mean, total])
def test_reduction_balance_fails_for_per_example_reductions(reduce):
    r = check_reduction_balance(max_n=2, reduce=reduce)
    assert not r.passed and not r.data["not_per_example"]


@pytest.mark.parametrize("wrong", [
    lambda th, n, k, s2, b: -claimed_T(th, n, k, s2, b),          # sign flipped
    lambda th, n, k, s2, b: claimed_T(th, n, k, s2, b) * n / k,   # k/n of the mean path dropped
])
def test_staleness_fails_for_wrong_leading_term(wrong):
    r = check_staleness(leading_term=wrong, engine_cases=((2, 1),))
    assert not r.passed and not r.data["leading_ok"]


def _scalar_C(theta, n, s2=1.0, beta=0.5):
    th = theta[..., 0]
    return 2 * th ** 4 * s2 ** 2 / n + (th ** 2 * s2 - 1) ** 2 + n * beta * (1 - th) ** 2 * s2


def _lg_C(theta, n):
    lam = torch.diag(torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64))
    W = theta[..., :6].reshape(*theta.shape[:-1], 2, 3)
    V = theta[..., 6:].reshape(*theta.shape[:-1], 3, 2)
    S = W @ lam @ W.transpose(-1, -2)
    R = torch.eye(3, dtype=torch.float64) - V @ W
    tr = S.diagonal(dim1=-2, dim2=-1).sum(-1)
    fro2 = (S ** 2).sum((-1, -2))
    dev2 = ((S - torch.eye(2, dtype=torch.float64)) ** 2).sum((-1, -2))
    return tr / n + dev2 + (fro2 + tr ** 2) / (n - 1) + n * (R @ lam @ R.transpose(-1, -2)).diagonal(
        dim1=-2, dim2=-1).sum(-1)


def _closed_form(name, theta, n, **params):
    if name == "scalar":
        return _scalar_C(theta, n, **params)
    if name == "linear-gaussian":
        return _lg_C(theta, n)
    raise KeyError(name)


def test_closed_forms_passes_with_a_correct_closed_form():
    r = check_closed_forms(closed_form=_closed_form, symbolic=False)
    assert r.passed, r.evidence


@pytest.mark.parametrize("problem", ["scalar", "linear-gaussian"])
def test_closed_forms_fails_for_a_wrong_closed_form(problem):
    def wrong(name, theta, n, **params):
        v = _closed_form(name, theta, n, **params)
        if name == problem:
            # drop the sampling-variance term of the scalar problem / use 1/n for 1/(n-1)
            v = v - (2 * theta[..., 0] ** 4 / n if name == "scalar" else 1e-3 * v)
        return v
    r = check_closed_forms(closed_form=wrong, symbolic=False)
    assert not r.passed
    assert problem in r.summary


def test_closed_forms_reports_a_missing_implementation():
    def missing(name, theta, n, **params):
        raise ImportError("no module named mowtheory.flow.problems")
    r = check_closed_forms(closed_form=missing, symbolic=False)
    assert not r.passed and "not importable" in r.evidence


def test_errata_sign_fails_with_ascent():
    r = check_errata_sign(sign=+1)
    assert not r.passed
    assert r.data["exact"] == (True, False)


def test_errata_partials_fails_without_a_counterexample():
    r = check_errata_partials(point=(1, 1, 1), max_n=2)
    assert not r.passed and not r.data["pointwise_unequal"]


def test_errata_partials_fails_for_positional_F():
    r = check_errata_partials(F=positional_F, max_n=3)
    assert not r.passed and r.data["bad_n"] == [2, 3]


def _literal_line(F, fresh, window, G, *, reduction="sum", balanced=False):
    return LP(G.sum(), torch.zeros(()), G.sum())


def _undetached(F, fresh, window, G, *, reduction="sum", balanced=False):
    f = F(torch.cat([window, fresh]))
    return LP(f + G.sum(), f, G.sum())


def _correct(F, fresh, window, G, *, reduction="sum", balanced=False):
    k, n = fresh.shape[0], fresh.shape[0] + window.shape[0]
    f = F(torch.cat([window.detach(), fresh]))
    g = {"sum": G.sum(), "mean": G.mean(), "sqrt_mean": G.mean().sqrt()}[reduction]
    return LP((n / k if balanced else 1.0) * f + g, f, g)


def test_errata_algorithm_cost_independent_of_library():
    assert check_errata_algorithm_cost(loss_fn=_correct).passed


def _unbalanced(F, fresh, window, G, *, reduction="sum", balanced=False):
    return _correct(F, fresh, window, G, reduction=reduction, balanced=False)


def _balanced_by_window(F, fresh, window, G, *, reduction="sum", balanced=False):
    """F scaled by (n-k)/k (the window's share) instead of n/k when balanced."""
    parts = _correct(F, fresh, window, G, reduction=reduction, balanced=False)
    if not balanced:
        return parts
    m, k = window.shape[0], fresh.shape[0]
    return LP(m / k * parts.batch_cost + parts.per_example, parts.batch_cost, parts.per_example)


@pytest.mark.parametrize("fault", [_literal_line, _undetached])
def test_errata_algorithm_cost_fails_for_wrong_objectives(fault):
    r = check_errata_algorithm_cost(loss_fn=fault)
    assert not r.passed and "FAILED" in r.summary


@pytest.mark.parametrize("fault", [_unbalanced, _balanced_by_window])
def test_errata_algorithm_cost_fails_for_a_wrong_balanced_scaling(fault):
    """The sum/unbalanced line is right; only balanced=True (with "mean") is wrong."""
    r = check_errata_algorithm_cost(loss_fn=fault)
    assert not r.passed
    assert "FAILED" in r.summary and "fails balanced+mean" in r.summary, r.summary
    assert "fails value" not in r.summary and "gradient" not in r.summary


def test_errata_algorithm_cost_fails_without_the_library_cwae(monkeypatch):
    import mowtheory.costs

    def missing(name, **params):
        raise ValueError(f"planted: no cost {name!r}")
    monkeypatch.setattr(mowtheory.costs, "get", missing)
    r = check_errata_algorithm_cost(loss_fn=_correct)
    assert not r.passed
    assert "FAILED" in r.summary and "'cwae' cost not available" in r.summary, r.summary
    assert "planted: no cost 'cwae'" in r.evidence


# ------------------------------------------------------------------------- engine sanity
def test_isserlis_moments():
    M = GaussModel(["a", "b", "c"], [("x", 1, 2, [["a", "b"], ["b", "c"]])])
    a, b, c = M.syms("abc")
    x0, x1 = M.data("x")[0]
    assert M.E(x0 ** 4) == 3 * a ** 2
    assert M.E(x0 ** 2 * x1 ** 2) == a * c + 2 * b ** 2
    assert M.E(x0 ** 3 * x1) == 3 * a * b
    assert M.E(x0 * x1 ** 2) == 0
    N = GaussModel([], [("x", 2, 1, [[Fraction(1, 2)]])])
    (y0,), (y1,) = N.data("x")
    assert N.E((y0 + y1) ** 4) == 3 * 1 ** 2   # y0 + y1 ~ N(0, 1)


# ------------------------------------------------------------------------- runner and CLI
def test_run_check_reports_exceptions_as_failures(monkeypatch):
    def boom():
        raise RuntimeError("planted")
    boom.__module__ = "mowtheory.proofs.errata_sign"
    monkeypatch.setitem(CHECKS, "errata-sign", boom)
    r = pc.run_check("errata-sign")
    assert not r.passed and "planted" in r.evidence and r.claim


def test_unknown_id_rejected(capsys):
    with pytest.raises(ValueError, match="valid ids: expected-gradient"):
        pc.resolve_ids(["expected-gradient", "nope"])
    from mowtheory.cli import main
    assert main(["check", "--only", "nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "errata-sign" in err


def test_cli_list(capsys):
    from mowtheory.cli import main
    assert main(["check", "--list"]) == 0
    out = capsys.readouterr().out
    for cid in CHECKS:
        assert cid in out


def test_cli_runs_all_and_writes_json(tmp_path, capsys):
    from mowtheory.cli import main
    path = tmp_path / "checks.json"
    argv = ["check", "--json", str(path)]
    if len(AVAILABLE) < len(CHECKS):     # a library module has not landed yet
        for cid in AVAILABLE:
            argv += ["--only", cid]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"{len(AVAILABLE)}/{len(AVAILABLE)} checks passed" in out
    data = json.loads(path.read_text(encoding="utf-8"))
    assert [d["id"] for d in data] == AVAILABLE
    for d in data:
        assert set(d) == {"id", "claim", "passed", "status", "evidence", "seconds"}
        assert d["passed"] is True and d["status"] == "PASS" and isinstance(d["seconds"], float)
        assert isinstance(d["claim"], str) and isinstance(d["evidence"], str)


def test_cli_exit_status_1_on_failure(monkeypatch, tmp_path, capsys):
    from mowtheory.cli import main

    def failing():
        return CheckResult("errata-sign", "planted", False, "planted failure")
    failing.__module__ = "mowtheory.proofs.errata_sign"
    monkeypatch.setitem(CHECKS, "errata-sign", failing)
    path = tmp_path / "o.json"
    assert main(["check", "--only", "errata-sign", "--json", str(path)]) == 1
    assert json.loads(path.read_text())[0]["passed"] is False
    assert "FAIL" in capsys.readouterr().out
