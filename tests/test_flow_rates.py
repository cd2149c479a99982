"""mowtheory.flow rates and verdicts: orders within bands, and the planted faults (wrong ODE,
position-weighted F, time-fixed window, gradient leaking into the window, flipped sign) each
rejected; the CLI; the SME check."""
import json
import math

import numpy as np
import pytest
import torch

from mowtheory.cli import main as cli_main
from mowtheory.flow import run_study, solve_reference
from mowtheory.flow.faults import fault_verdicts, follows_ode
from mowtheory.flow.rates import fit_order
from mowtheory.flow.sme import check_sme


def _verdict(study, vid):
    (v,) = [v for v in study.verdicts if v["id"] == vid]
    return v


def test_fit_order_recovers_slope():
    etas = np.array([0.1, 0.05, 0.025, 0.0125])
    p, c = fit_order(etas, 3.0 * etas ** 0.75)
    assert abs(p - 0.75) < 1e-12 and abs(c - math.log(3.0)) < 1e-12
    assert math.isnan(fit_order([0.1], [1.0])[0])


def test_orders_within_bands_and_wrong_ode_rejected():
    st = run_study("mmd-gaussian", etas=[0.04, 0.02, 0.01, 0.005], replicas=512, bootstrap=100)
    assert _verdict(st, "strong_order")["passed"], st.table()
    assert _verdict(st, "weak_order")["passed"], st.table()
    assert _verdict(st, "wrong_ode_rejected")["passed"], st.table()
    o = st.orders
    assert 0.2 <= o["strong"].estimate <= 0.8 and o["strong"].ci[0] <= o["strong"].estimate <= o["strong"].ci[1]
    assert 0.7 <= o["weak"].estimate <= 1.3
    js = st.to_json()
    for key in ("problem", "n", "k", "horizon", "replicas", "etas", "strong_error", "weak_error",
                "weak_error_se", "wrong_ode_weak_error", "orders", "verdicts"):
        assert key in js
    assert set(js["orders"]) == {"strong", "weak"} and len(js["orders"]["weak"]["ci"]) == 2
    json.dumps(js, allow_nan=False)


def test_wrong_ode_would_be_caught_if_it_were_the_reference():
    """Planted fault: swapping in the wrong ODE as the reference fails the order verdicts."""
    st = run_study("mmd-gaussian", etas=[0.04, 0.02, 0.01], replicas=256, bootstrap=50)
    from mowtheory.flow.rates import errors, fitted_order, order_verdict
    rows = [errors(s, st.wrong, bootstrap=50) for s in st.sims]
    assert not order_verdict(fitted_order(rows, "weak"), "weak")["passed"]
    assert not order_verdict(fitted_order(rows, "strong"), "strong")["passed"]


def test_position_weighted_rejected_and_symmetrisation_passes():
    pw = run_study("position-weighted", replicas=512, bootstrap=100)
    sym = run_study("position-weighted", params={"symmetrize": True}, replicas=2048,
                    bootstrap=100)
    assert not follows_ode(pw.verdicts), pw.table()
    assert follows_ode(sym.verdicts), sym.table()
    fv = fault_verdicts(pw, sym, None)
    assert [v["passed"] for v in fv] == [True, True], fv


def test_time_fixed_window_rejected():
    st = run_study("linear-gaussian", etas=[0.01, 0.005, 0.0025], replicas=256, window="time",
                   bootstrap=100)
    (v,) = fault_verdicts(time_window=st)
    assert v["passed"], (v, st.table())
    assert not _verdict(st, "weak_order")["passed"]
    assert st.config["tau"] == 0.25


def test_gradient_leak_into_window_rejected():
    """Planted fault window="leak" (the window re-encoded at theta with gradient) is rejected,
    while the same study with the theorem's window passes: the verdict sees the leak itself.
    The leak follows another flow, S' = -grad(E[F_n] + E[red_k G]) (balanced MoW's): its weak
    error against that flow is a fraction of the one against (2) and falls with eta."""
    kw = dict(etas=[0.04, 0.02, 0.01], replicas=256, bootstrap=50)
    leak = run_study("mmd-gaussian", window="leak", **kw)
    (v,) = fault_verdicts(leak_window=leak)
    assert v["passed"], (v, leak.table())
    assert "gradient leaking into the window" in v["claim"]
    assert not _verdict(leak, "weak_order")["passed"] and not _verdict(leak, "strong_order")["passed"]
    assert min(r.weak for r in leak.rows) > 0.5, leak.table()
    steps = run_study("mmd-gaussian", window="steps", **kw)
    assert follows_ode(steps.verdicts), steps.table()
    (v,) = fault_verdicts(leak_window=steps)
    assert not v["passed"], (v, steps.table())

    from mowtheory.flow.rates import errors
    c = leak.config
    ref = solve_reference(leak.problem, torch.tensor(c["theta0"], dtype=torch.float64),
                          c["horizon"], n=c["n"], k=c["k"], balanced=True)
    own = [errors(s, ref, bootstrap=0).weak for s in leak.sims]
    assert own[0] > own[1] > own[2] and own[2] < 0.6 * own[0], own
    assert all(o < 0.6 * r.weak for o, r in zip(own, leak.rows)), (own, leak.table())


def test_unstable_eta_is_reported_never_nan(tmp_path):
    st = run_study("linear-gaussian", etas=[0.1, 0.01, 0.005, 0.0025], horizon=0.5,
                   replicas=64, bootstrap=20)
    assert st.rows[0].stable is False and "unstable" in st.table()
    js = st.to_json()
    assert js["strong_error"][0] is None and js["weak_error"][0] is None
    json.dumps(js, allow_nan=False)      # no NaN anywhere
    assert 0.1 not in st.orders["strong"].etas


def test_cli_runs_and_writes_json_and_plot(tmp_path, capsys):
    out_json, out_png = tmp_path / "flow.json", tmp_path / "flow.png"
    rc = cli_main(["flow", "--replicas", "64", "--etas", "0.02,0.01,0.005", "--horizon", "0.2",
                   "--no-controls", "--bootstrap", "20", "--quiet", "--json", str(out_json),
                   "--plot", str(out_png)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "wrong-ODE" in text and "verdicts:" in text and "RESULT:" in text
    data = json.loads(out_json.read_text())
    assert data["problem"] == "linear-gaussian" and data["n"] == 8 and data["k"] == 1
    assert data["etas"] == [0.02, 0.01, 0.005] and len(data["weak_error_se"]) == 3
    assert all({"claim", "passed", "detail"} <= set(v) for v in data["verdicts"])
    assert out_png.stat().st_size > 10_000


def test_cli_controls_include_the_gradient_leak(tmp_path, capsys):
    out_json = tmp_path / "flow.json"
    rc = cli_main(["flow", "--replicas", "64", "--etas", "0.02,0.01,0.005", "--horizon", "0.2",
                   "--bootstrap", "20", "--quiet", "--no-plot", "--json", str(out_json),
                   "--control-replicas", "48"])
    text = capsys.readouterr().out
    assert "leak-window (linear-gaussian, n=8, k=1, 48 replicas)" in text
    assert text.count(", 48 replicas)") == 4                 # every control, as asked
    assert "PASS  planted fault: gradient leaking into the window" in text
    data = json.loads(out_json.read_text())
    assert data["controls"]["leak_window"]["window"] == "leak"
    (v,) = [v for v in data["verdicts"] if v["id"] == "fault.leak"]
    assert v["passed"], v
    # exit 1 exactly when a verdict FAILED (48 replicas are too few for some of them)
    assert rc == (1 if any(u["status"] == "FAIL" for u in data["verdicts"]) else 0)


def test_cli_bad_arguments_exit_2(capsys):
    assert cli_main(["flow", "--etas", "0.3,0.2", "--horizon", "1", "--quiet", "--no-plot"]) == 2
    assert "horizon / eta must be a positive integer" in capsys.readouterr().err
    assert cli_main(["flow", "--k", "9", "--quiet", "--no-plot"]) == 2
    assert "k must be an integer with 1 <= k <= n = 8; got k=9" in capsys.readouterr().err
    assert cli_main(["flow", "--symmetrize", "--quiet", "--no-plot"]) == 2
    assert cli_main(["flow", "--control-replicas", "3", "--quiet", "--no-plot"]) == 2
    assert "control_replicas (--control-replicas) must be an integer with 16 <= " \
           "control_replicas (--control-replicas); got" in capsys.readouterr().err
    assert cli_main(["flow", "--control-replicas", "32", "--no-controls", "--quiet"]) == 2
    assert "which --no-controls turns off" in capsys.readouterr().err


def test_sme_covariance_prediction_scalar():
    """Fluctuations: Cov(S_eta)/eta matches the Lyapunov prediction with the long-run noise."""
    st = run_study("scalar", etas=[0.0125, 0.00625], replicas=4096, bootstrap=0)
    res = check_sme(st, chains=4096)
    assert res["verdict"]["passed"], res
    last = min(res["rows"], key=lambda r: r["eta"])
    assert abs(last["trace_ratio_T"] - 1) < 0.1


@pytest.mark.slow
def test_headline_study_and_sme_linear_gaussian():
    st = run_study("linear-gaussian", replicas=2048)
    assert all(v["passed"] for v in st.verdicts), st.table()
    res = check_sme(st)
    assert res["verdict"]["passed"], res
    assert res["rows"][-1]["rel_error_naive"] > 2 * res["rows"][-1]["rel_error"]


def test_flipped_sign_is_rejected(monkeypatch):
    """Planted fault (Algorithm 1's erratum): theta + eta*grad instead of theta - eta*grad.
    The same instrument that passes the correct simulator must fail this one."""
    import importlib
    sim = importlib.import_module("mowtheory.flow.simulate")  # the module, not the function

    def ascent(problem, theta, window_z, x, prior, eta, reduction, balanced, window_x=None):
        grad, fresh = sim.mow_gradient(problem, theta, window_z, x, prior, reduction, balanced,
                                       window_x=window_x)
        return theta.detach() + eta * grad, fresh

    monkeypatch.setattr(sim, "_mow_step", ascent)
    st = run_study("mmd-gaussian", etas=[0.04, 0.02, 0.01], replicas=256, bootstrap=50)
    assert not follows_ode(st.verdicts), st.table()
    assert not _verdict(st, "weak_order")["passed"], st.table()


def _planted_drift(monkeypatch, fault):
    """Patch the simulator's step with a drift that is wrong by a fixed amount: ``"scale"``
    (gradient 10 % too large) or ``"drop"`` (F sees n - 1 rows: the oldest window row is
    dropped, so each fresh latent weighs 1/(n-1) instead of 1/n)."""
    import importlib
    sim = importlib.import_module("mowtheory.flow.simulate")
    step = sim._mow_step

    def faulty(problem, theta, window_z, x, prior, eta, reduction, balanced, window_x=None):
        if fault == "drop":
            window_z = window_z[..., 1:, :]
        return step(problem, theta, window_z, x, prior, eta * (1.1 if fault == "scale" else 1.0),
                    reduction, balanced, window_x=window_x)

    if fault != "none":
        monkeypatch.setattr(sim, "_mow_step", faulty)


@pytest.mark.parametrize("problem, replicas", [("scalar", 1024),
                                                ("mmd-gaussian", 512)])
@pytest.mark.parametrize("fault", ["none", "scale", "drop"])
def test_a_drift_wrong_by_ten_percent_is_rejected(monkeypatch, problem, replicas, fault):
    """A fixed drift error of ~10 % keeps the fitted orders in band (the slope over all step
    sizes hides a floor), but not the Richardson extrapolation of the weak error to eta -> 0.
    The unpatched simulator ("none") passes the same verdict with the same settings."""
    _planted_drift(monkeypatch, fault)
    etas = [0.04, 0.02, 0.01, 0.005] if problem == "mmd-gaussian" else None
    st = run_study(problem, etas=etas, replicas=replicas, bootstrap=50)
    bias = _verdict(st, "no_bias_floor")
    b = st.to_json()["bias_at_zero"]
    if fault == "none":
        assert bias["passed"] and follows_ode(st.verdicts), st.verdicts
        assert b["z_max"] < 0.7 * b["z_crit"], b
    else:
        assert not bias["passed"] and not follows_ode(st.verdicts), st.verdicts
        assert b["z_max"] > 1.3 * b["z_crit"], b


def test_extrapolated_bias_recovers_a_planted_floor_exactly():
    """On synthetic runs m_eta(t) = b(t) + eta e(t) (no noise but one replica offset), the
    Richardson extrapolation returns b."""
    from mowtheory.flow import SimulationResult
    from mowtheory.flow.rates import extrapolated_bias
    t = np.linspace(0, 1, 9)
    ref = lambda times: np.stack([np.sin(times), np.cos(times)], -1)   # noqa: E731
    b = np.stack([0.1 * t, -0.05 * t ** 2], -1)
    e = np.stack([np.ones_like(t), t], -1)

    def run(eta):
        mean = ref(t) + b + eta * e
        spread = np.array([[1.0, -1.0]]).T[:, :, None] * 1e-3 * np.minimum(t, 1)[None, :, None]
        thetas = torch.from_numpy(mean[None] + spread)                  # (2, J, P), mean exact
        return SimulationResult(eta=eta, steps=int(1 / eta), times=t, thetas=thetas, stable=True,
                                diverged=0, diverged_at=None, paths=thetas[:1],
                                path_times=t, wall=0.0, config={})

    bias = extrapolated_bias([run(0.02), run(0.01), run(0.04)], ref)
    assert bias.etas == (0.01, 0.02)
    assert abs(bias.sup - np.linalg.norm(b, axis=-1).max()) < 1e-12
    assert bias.z_max > bias.z_crit                                    # the floor is a bias
    assert extrapolated_bias([run(0.01)], ref) is None                 # one run: no verdict


def test_cli_exits_1_when_a_verdict_fails_without_strict(capsys):
    """The study of a planted fault (gradient leaking into the window) as the main study: its
    bias verdict FAILS, and a FAIL exits 1 with or without --strict (as in mowtheory check)."""
    argv = ["flow", "--window", "leak", "--replicas", "64", "--etas", "0.02,0.01,0.005",
            "--horizon", "0.2", "--no-controls", "--bootstrap", "20", "--quiet", "--no-plot"]
    assert cli_main(argv) == 1
    out = capsys.readouterr().out
    assert "FAIL  " in out and "RESULT:" in out and "FAILED" in out


def test_exit_status_policy():
    from mowtheory.cli import verdict_exit_status as status_of
    assert status_of(["PASS", "PASS"]) == 0 and status_of([]) == 0
    assert status_of(["PASS", "FAIL"]) == 1 and status_of(["FAIL"], strict=True) == 1
    assert status_of(["PASS", "INCONCLUSIVE"]) == 0
    assert status_of(["PASS", "INCONCLUSIVE"], strict=True) == 1
    with pytest.raises(ValueError, match="PASS, FAIL or INCONCLUSIVE; got \\['passed'\\]"):
        status_of(["passed"])
