"""Theorem 1 on a real network: the exact expectation over a finite dataset, batched costs,
the vmap replica ensemble against a loop over the package's MoW class, and the CLI."""
import itertools
import json

import pytest
import torch

from mowtheory import MoW, costs
from mowtheory.flow.network import NetworkProblem, load_rows, mlp_autoencoder, network_problem
from mowtheory.flow.simulate import Draws, simulate, simulate_loop

F64 = torch.float64
EXACT = ("cw", "wae", "energy", "gmmn", "pullaway")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _tiny_problem(cost="wae", N=12, d=5, D=2, hidden=3, seed=0, **kw):
    g = _gen(seed)
    data = torch.rand(N, d, generator=g, dtype=F64)
    enc, dec = mlp_autoencoder(d, D, hidden, generator=g)
    return NetworkProblem(enc, dec, data, cost, prior_points=16, generator=g, **kw)


# --------------------------------------------------------------------------- expectations
@pytest.mark.parametrize("name", EXACT)
def test_expected_over_dataset_equals_exact_enumeration(name):
    F = costs.get(name)
    g = _gen(1)
    Z = torch.randn(3, 2, generator=g, dtype=F64)
    Y = torch.randn(2, 2, generator=g, dtype=F64) if F.needs_prior else None
    n = 3
    total, count = 0.0, 0
    for idx in itertools.product(range(3), repeat=n):
        ys = itertools.product(range(2), repeat=n) if Y is not None else [None]
        for jdx in ys:
            z = Z[list(idx)]
            total += float(F(z, Y[list(jdx)]) if jdx is not None else F(z))
            count += 1
    expected = float(F.expected_over_dataset(Z, n, Y))
    assert expected == pytest.approx(total / count, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", EXACT)
def test_expected_over_dataset_agrees_with_monte_carlo(name):
    """20,000 batches of n = 4 drawn with replacement, evaluated in one batched call."""
    F = costs.get(name)
    g = _gen(2)
    N, M, n, B = 20, 9, 4, 20000
    Z = torch.randn(N, 3, generator=g, dtype=F64)
    Y = torch.randn(M, 3, generator=g, dtype=F64) if F.needs_prior else None
    z = Z[torch.randint(N, (B, n), generator=g)]
    y = Y[torch.randint(M, (B, n), generator=g)] if Y is not None else None
    vals = F(z, y) if y is not None else F(z)
    mean, se = float(vals.mean()), float(vals.std() / B ** 0.5)
    assert abs(mean - float(F.expected_over_dataset(Z, n, Y))) < 5 * se
    # a planted wrong formula (V-statistic slip: n^2 z-z pairs) is outside that band
    from mowtheory.costs.expectation import expected_value
    kernel, weights = F.declaration(n, n if Y is not None else None)
    wrong = float(expected_value(kernel, weights, n, Z, n if Y is not None else None, Y,
                                 zz_pairs=n * n))
    assert abs(mean - wrong) > 5 * se


@pytest.mark.parametrize("name", ("cwae", "swae"))
def test_costs_without_a_finite_form_are_refused(name):
    with pytest.raises(ValueError, match="no exact expectation"):
        costs.get(name).expected_over_dataset(torch.randn(5, 2, dtype=F64), 4,
                                               torch.randn(5, 2, dtype=F64)
                                               if costs.get(name).needs_prior else None)
    with pytest.raises(ValueError, match="no exact expectation"):
        costs.get("gmmn", sqrt=True).expected_over_dataset(
            torch.randn(5, 2, dtype=F64), 4, torch.randn(5, 2, dtype=F64))


@pytest.mark.parametrize("name", EXACT)
def test_batched_costs_and_expectations_equal_a_loop(name):
    F = costs.get(name)
    g = _gen(3)
    z = torch.randn(3, 6, 2, generator=g, dtype=F64)
    y = torch.randn(3, 6, 2, generator=g, dtype=F64) if F.needs_prior else None
    got = F(z, y) if y is not None else F(z)
    want = torch.stack([F(z[i], y[i]) if y is not None else F(z[i]) for i in range(3)])
    assert got.shape == (3,) and torch.allclose(got, want, rtol=1e-12, atol=1e-13)
    e = F.expected_over_dataset(z, 4, y)
    e_loop = torch.stack([F.expected_over_dataset(z[i], 4, None if y is None else y[i])
                          for i in range(3)])
    assert torch.allclose(e, e_loop, rtol=1e-12, atol=1e-13)


# --------------------------------------------------------------------------- the problem
def test_network_problem_evaluates_every_replica_with_its_own_parameters():
    p = _tiny_problem()
    g = _gen(4)
    theta = p.theta0() + 0.1 * torch.randn(4, p.n_params, generator=g, dtype=F64)
    x = p.sample_data((4, 3), g)
    z = p.encode(theta, x)
    for r in range(4):
        torch.nn.utils.vector_to_parameters(theta[r], [*p.encoder.parameters(),
                                                      *p.decoder.parameters()])
        with torch.no_grad():
            assert torch.allclose(z[r], p.encoder(x[r]), rtol=1e-13, atol=1e-14)
            rec = (x[r] - p.decoder(p.encoder(x[r]))).square().mean(-1)
        assert torch.allclose(p.per_example(theta[r], x[r]), rec, rtol=1e-12)
    assert torch.allclose(p.encode(theta, p.data)[2], p.encode(theta[2], p.data))


def test_expected_cost_is_the_dataset_average():
    p = _tiny_problem("energy")
    th = p.theta0()
    with torch.no_grad():
        z = p.encode(th, p.data)
        G = p.per_example(th, p.data).mean()
    n = 4
    want = costs.get("energy").expected_over_dataset(z, n, p.prior_points) + n * G
    assert torch.allclose(p.expected_cost(th, n), want, rtol=1e-13)
    with pytest.raises(ValueError, match="sqrt_mean"):
        p.expected_per_example(th, 1, "sqrt_mean")


@pytest.mark.parametrize("refresh", ["post", "pre"])
def test_vmap_replicas_equal_a_loop_over_the_mow_class(refresh):
    """R replicas advanced with vmap equal R runs of mowtheory.MoW with SGD on the same
    random numbers (window init, examples, prior samples), every parameter."""
    p = _tiny_problem("wae")
    R, n, k, eta, steps = 3, 4, 1, 0.05, 6
    draws = Draws(p, n=n, k=k, replicas=R, generator=_gen(5))
    init = draws.initial("encode")
    stream = [draws.step() for _ in range(steps)]

    class Replay:
        def initial(self, init_):
            return init

        def __init__(self):
            self.i = 0

        def step(self):
            self.i += 1
            return stream[self.i - 1]
    sim = simulate(p, p.theta0(), n=n, k=k, eta=eta, horizon=eta * steps, replicas=R,
                   generator=_gen(0), refresh=refresh, record=steps, draws=Replay())
    loop = simulate_loop(p, p.theta0(), n=n, k=k, eta=eta, horizon=eta * steps, replicas=R,
                         generator=_gen(0), refresh=refresh, record=steps, draws=Replay())
    assert torch.allclose(sim.thetas, loop, rtol=1e-11, atol=1e-13)
    for r in range(R):
        enc, dec = mlp_autoencoder(5, 2, 3, generator=_gen(0))
        torch.nn.utils.vector_to_parameters(p.theta0(), [*enc.parameters(), *dec.parameters()])
        prior_at = {"i": 0}

        def prior(m, D, generator=None, dtype=None, device=None, r=r):
            prior_at["i"] += 1
            return stream[prior_at["i"] - 1][1][r]
        mow = MoW(enc, p.cost, n=n, k=k, latent_dim=2, refresh=refresh, prior=prior,
                  per_example=lambda x, z, dec=dec: (x - dec(z)).square().mean(-1),
                  dtype=F64)
        mow.init_window("encode", init[r])
        opt = torch.optim.SGD([*enc.parameters(), *dec.parameters()], lr=eta)
        for s in range(steps):
            mow.step(stream[s][0][r], opt)
        theta = torch.nn.utils.parameters_to_vector([*enc.parameters(), *dec.parameters()])
        assert torch.allclose(theta, sim.thetas[r, -1], rtol=1e-11, atol=1e-13)


def test_bad_network_arguments_are_named():
    g = _gen(0)
    enc, dec = mlp_autoencoder(4, 2, 3, generator=g)
    data = torch.rand(10, 4, generator=g, dtype=F64)
    with pytest.raises(TypeError, match="encoder must be a torch.nn.Module"):
        NetworkProblem(lambda x: x, dec, data)
    with pytest.raises(ValueError, match="data must be a floating tensor of rows"):
        NetworkProblem(enc, dec, data[0])
    with pytest.raises(ValueError, match="data must be finite"):
        NetworkProblem(enc, dec, data * float("nan"))
    with pytest.raises(ValueError, match="lam must be"):
        NetworkProblem(enc, dec, data, lam=0)
    with pytest.raises(TypeError, match="float64"):
        NetworkProblem(enc.float(), dec, data)
    enc, dec = mlp_autoencoder(4, 2, 3, generator=g)
    with pytest.raises(ValueError, match="encoder must map"):
        NetworkProblem(enc, torch.nn.Linear(2, 3).double(), data)
    with pytest.raises(ValueError, match="latent dimension"):
        NetworkProblem(torch.nn.Linear(4, 1).double(), torch.nn.Linear(1, 4).double(), data,
                       "cw")
    with pytest.raises(ValueError, match="min_pixel_frequency"):
        load_rows("digits", min_pixel_frequency=1.0)
    with pytest.raises(ValueError, match="model must be one of"):
        network_problem("resnet")


def test_load_rows_drops_rarely_lit_pixels():
    every = load_rows("digits", min_pixel_frequency=0)
    kept = load_rows("digits")
    assert every.shape == (1797, 64) and kept.shape[0] == 1797 and kept.shape[1] < 64
    assert ((kept > 0).double().mean(0) >= 0.1).all()


# --------------------------------------------------------------------------- verdicts
def _study_problem(cost="cw", seed=0, lam=4.0):
    g = _gen(seed)
    data = torch.rand(64, 6, generator=g, dtype=F64)
    enc, dec = mlp_autoencoder(6, 2, 4, generator=g)
    return NetworkProblem(enc, dec, data, cost, prior_points=64, generator=g, lam=lam)


def test_time_scale_and_wrong_expectation_faults_are_rejected_on_a_network():
    """Default-suite size: the main runs follow (2) on the strong order and the wrong ODE
    is rejected; the time scale k/n replaced by 1 and a reference from a wrong expectation
    formula are both rejected by the same verdicts."""
    from mowtheory.flow.network_study import _judged, variant
    from mowtheory.flow.faults import _rejection
    from mowtheory.flow.reference import solve_reference
    from mowtheory.flow.study import run_study
    p = _study_problem()
    kw = dict(n=4, k=1, etas=[0.04, 0.02, 0.01], record=4, bootstrap=50, replicas=128)
    main = run_study(p, **kw)
    assert [v["status"] for v in main.verdicts] == ["PASS"] * 4, main.table()
    fast = run_study(variant(p, gradient_scale=4.0), references=(main.ref, None), **kw)
    assert _rejection(fast.rows, fast.verdicts)[0]
    bad = variant(p, wrong_expectation=True)
    bad_ref = solve_reference(bad, p.theta0(), 1.0, n=4, k=1)
    judged = _judged(main.sims, bad_ref, main.config, bootstrap=50, seed=0)
    assert _rejection(judged.rows, judged.verdicts)[0]
    # and the correct reference is not "rejected" by the same rule
    assert not _rejection(main.rows, main.verdicts)[0]


@pytest.mark.slow
def test_network_study_passes_and_rejects_every_planted_fault():
    from mowtheory.flow.network_study import run_network_study
    st = run_network_study(_study_problem(), n=4, k=1, replicas=1024,
                           etas=[0.04, 0.02, 0.01], record=8, bootstrap=100,
                           observable_rows=32)
    bad = [v for v in st.verdicts if v["status"] != "PASS"]
    assert not bad, bad
    assert sorted(v["id"] for v in st.verdicts if v["id"].startswith("fault.")) == [
        "fault.leak", "fault.position_weighted", "fault.time_scale", "fault.time_window",
        "fault.wrong_expectation"]


# --------------------------------------------------------------------------- coupled
def test_coupled_check_passes_mow_and_rejects_the_wrong_time_scale():
    from mowtheory.flow.coupled import run_coupled
    st = run_coupled(_study_problem("cwae", lam=1.0), n=4, k=1, etas=[0.04, 0.02, 0.01], replicas=512,
                     record=4, bootstrap=100)
    assert [v["status"] for v in st.verdicts] == ["PASS", "PASS"], st.table()
    assert st.to_json()["weak_distance"][0] > st.to_json()["weak_distance"][-1]


def test_coupled_partner_has_the_mow_drift_in_expectation():
    """One SGD-partner step from theta equals, averaged over many draws, one MoW step's
    expected drift (k/n) grad E[F_n] + grad E[red_k G] (exact on a network problem)."""
    from mowtheory.flow.coupled import simulate_sgd
    from mowtheory.flow.reference import drift
    p = _tiny_problem("cw")
    th = p.theta0()
    eta = 1e-3
    _, out = simulate_sgd(p, th, n=4, k=1, eta=eta, horizon=eta, replicas=4000,
                          generator=_gen(7), reduction="mean", record=1)
    step = (out[:, -1] - th) / eta                                      # (R, P)
    want = drift(p, th, n=4, k=1, reduction="mean")
    se = step.std(0) / len(step) ** 0.5
    assert ((step.mean(0) - want).abs() <= 5 * se + 1e-9).all()
    _, wrong = simulate_sgd(p, th, n=4, k=1, eta=eta, horizon=eta, replicas=4000,
                            generator=_gen(7), reduction="mean", record=1, time_scale="1")
    assert torch.allclose((wrong[:, -1] - th) / eta, 4 * step, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- CLI
def test_cli_runs_the_network_study_and_refuses_toy_options(tmp_path, capsys):
    from mowtheory.cli import main
    js = tmp_path / "net.json"
    code = main(["flow", "--model", "mlp", "--limit", "48", "--hidden", "3", "--replicas", "32",
                 "--etas", "0.04,0.02,0.01", "--horizon", "0.4", "--no-controls", "--bootstrap", "20", "--quiet",
                 "--plot", str(tmp_path / "net.png"), "--json", str(js)])
    out = capsys.readouterr().out
    assert "RESULT:" in out and "observable recon" in out
    assert js.exists() and (tmp_path / "net.png").exists()

    def expected_code(path):          # exit 1 exactly when a verdict FAILED (tiny sizes here)
        statuses = [v["status"] for v in json.loads(path.read_text())["verdicts"]]
        return 1 if "FAIL" in statuses else 0
    assert code == expected_code(js)
    code = main(["flow", "--model", "mlp", "--cost", "cwae", "--limit", "48", "--hidden", "3",
                 "--replicas", "32", "--etas", "0.04,0.02,0.01", "--horizon", "0.4",
                 "--bootstrap", "20", "--quiet", "--no-plot", "--json", str(js)])
    out = capsys.readouterr().out
    assert code == expected_code(js) and "coupled, reference-free check" in out
    for bad, words in ((["--model", "mlp", "--window", "time"], "--window apply to toy"),
                       (["--limit", "10"], "--limit apply to the real-network"),
                       (["--model", "mlp", "--device", "tpu"], "device must be"),
                       (["--model", "mlp", "--cost", "cwae", "--control-replicas", "16"],
                        "has no planted-fault controls")):
        try:
            code = main(["flow", *bad, "--quiet", "--no-plot"])
        except SystemExit as exc:
            code = exc.code
        assert code == 2
        assert words in capsys.readouterr().err


def test_convergence_real_experiment_runs_at_toy_size(tmp_path):
    """The experiment script cannot rot: its code paths at toy sizes, into tmp_path."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, str(root / "experiments" / "convergence_real.py"),
                          "--tiny", "--jobs", "1", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=root)
    assert res.returncode == 0, res.stderr[-2000:]
    md = (tmp_path / "convergence_real_tiny.md").read_text()
    assert "| cw | 8 | 1 |" in md and "| cwae | sum |" in md and "Not run" not in md
    assert (tmp_path / "convergence_real_cw.png").exists()
    res = subprocess.run([sys.executable, str(root / "experiments" / "convergence_real.py"),
                          "--tiny", "--report-only", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=root)
    assert res.returncode == 0 and "2 runs, 0 missing" in res.stdout


def test_cli_passes_control_replicas_to_the_network_study(monkeypatch, capsys):
    from mowtheory.cli import main
    from mowtheory.flow import network_study
    seen = {}

    def capture(problem, **kw):
        seen.update(kw)
        raise ValueError("stopped before the study (test)")
    monkeypatch.setattr(network_study, "run_network_study", capture)
    code = main(["flow", "--model", "mlp", "--limit", "48", "--hidden", "3", "--replicas", "32",
                 "--control-replicas", "24", "--quiet", "--no-plot"])
    assert code == 2 and "stopped before the study" in capsys.readouterr().err
    assert seen["control_replicas"] == 24 and seen["replicas"] == 32 and seen["controls"]
