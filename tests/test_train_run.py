"""End-to-end runs of the autoencoder trainer on the bundled `digits` (small and fast)."""
import json

import pytest
import torch

from mowtheory.cli import main
from mowtheory.train import NonFiniteLoss, TrainConfig, train
from mowtheory.train import checkpoint as ckpt
from mowtheory.train import setup, trainer as trainer_mod


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    # one FD feature network for the whole module
    return str(tmp_path_factory.mktemp("fdcache"))


def _small(out, **kw):
    base = dict(model="cwae", dataset="digits", n=8, k=1, limit=24, eval_limit=32, epochs=1,
                lr=1e-3, out=str(out), progress=False, fd=False, images=False)
    base.update(kw)
    return TrainConfig(**base)


def test_one_epoch_writes_every_file(tmp_path, cache_dir):
    report = train(_small(tmp_path / "run", limit=48, fd=True, images=True, cache_dir=cache_dir,
                          fd_train_steps=100))
    out = tmp_path / "run"
    for name in setup.OUTPUT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["step"] == 48 and lines[0]["examples_seen"] == 48
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["status"] == report["status"] == "completed"
    assert on_disk["config"]["n"] == 8 and on_disk["config"]["model"] == "cwae"
    fm = on_disk["final_metrics"]
    for key in ("recon_error", "wae_distance", "cw_distance", "FD-small-classifier"):
        assert isinstance(fm[key], float), key
    assert fm["recon_error"] > 0 and fm["cw_distance"] > 0
    assert on_disk["fd_metric"] == "FD-small-classifier" and "NOT FID" in on_disk["fd_note"]
    state = ckpt.load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 48 and state["epoch"] == 1 and state["config"]["limit"] == 48
    assert {"model", "optimizer", "mow", "data_generator", "rng"} <= set(state)


def _weights(out):
    return ckpt.load_checkpoint(out / "checkpoint.pt")["model"]


# at the end of epoch 1, in the middle of epoch 2, at a step due an evaluation (its line kept)
@pytest.mark.parametrize("stop", [12, 17, 20])
def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, stop):
    # swae + prior init: exercises the data order, the window, and the generator of prior
    # samples and random directions; k=2 with N=24: 12 steps per epoch
    kw = dict(model="swae", init="prior", k=2, epochs=2, eval_every=5, checkpoint_every=4)
    full = train(_small(tmp_path / "full", **kw))
    assert full["status"] == "completed" and full["step"] == 24

    part = train(_small(tmp_path / "part", stop_after_steps=stop, **kw))
    assert part["status"] == "stopped" and part["step"] == stop
    assert ckpt.load_checkpoint(tmp_path / "part" / "checkpoint.pt")["step"] == stop
    rest = train(_small(tmp_path / "part", resume=True, **kw))
    assert rest["status"] == "completed" and rest["resumed_from_step"] == stop
    assert rest["step"] == 24 and rest["steps_this_run"] == 24 - stop     # continued, not restarted

    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name

    def rows(p):
        return [{k: v for k, v in json.loads(s).items() if k != "time_s"}
                for s in (p / "metrics.jsonl").read_text().splitlines()]
    assert rows(tmp_path / "full") == rows(tmp_path / "part")


def test_resume_with_another_configuration_is_refused(tmp_path):
    train(_small(tmp_path / "run", stop_after_steps=5, epochs=2))
    with pytest.raises(ValueError, match=r"differs in .*k.*lr|k: 1 \(checkpoint\) != 2"):
        train(_small(tmp_path / "run", resume=True, k=2, lr=0.01))
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        train(_small(tmp_path / "run"))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(_small(tmp_path / "empty", resume=True))
    # keys that do not change the weights may differ
    rep = train(_small(tmp_path / "run", resume=True, epochs=2, eval_every=3))
    assert rep["resumed_from_step"] == 5 and rep["status"] == "completed"


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = trainer_mod.build_cost
    calls = {"n": 0}

    def poisoned(model, **kw):
        cost = real(model, **kw)

        def F(z, y=None):
            calls["n"] += 1
            bad = calls["n"] > 24          # epoch 1 (24 steps) is finite, epoch 2 is not
            return cost(z) * (float("nan") if bad else 1.0)
        return F

    monkeypatch.setattr(trainer_mod, "build_cost", poisoned)
    with pytest.raises(NonFiniteLoss, match="non-finite loss at step 25") as exc:
        train(_small(tmp_path / "run", epochs=2))
    assert exc.value.step == 25
    assert ckpt.load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 24
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["status"] == "non-finite" and "step 25" in report["message"]


def test_cli_runs_and_bad_input_exits_2(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "--model", "wae", "--dataset", "digits", "--n", "8", "--k", "4",
            "--limit", "16", "--eval-limit", "16", "--epochs", "1", "--lr", "0.001",
            "--lambda", "2", "--reduction", "mean", "--balanced", "--optimizer", "gd",
            "--device", "cpu", "--seed", "3", "--out", str(out), "--no-progress", "--no-fd",
            "--no-images"]
    assert main(args) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["config"]["lam"] == 2.0 and rep["config"]["balanced"] is True
    assert rep["config"]["optimizer"] == "gd" and rep["step"] == 4
    assert main(args + ["--resume"]) == 0                  # nothing left to do: same weights
    capsys.readouterr()

    def code(argv):
        try:
            return main(argv)
        except SystemExit as e:        # argparse rejects unknown choices itself
            return e.code
    assert code(["train", "--model", "vae", "--out", str(tmp_path / "x")]) == 2
    assert "invalid choice: 'vae'" in capsys.readouterr().err
    assert code(["train", "--lr", "-0.5", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert "lr" in err and "-0.5" in err and len(err.splitlines()) == 1
    assert code(["train", "--n", "4", "--k", "5", "--out", str(tmp_path / "z")]) == 2
    assert code(args[:-3] + ["--resume", "--k", "2"]) == 2    # another configuration
    assert "differs" in capsys.readouterr().err


def test_bf16_autocast_runs(tmp_path):
    rep = train(_small(tmp_path / "bf16", bf16=True, limit=16))
    assert rep["status"] == "completed" and rep["final_metrics"]["recon_error"] > 0


def test_config_validation_messages(tmp_path):
    with pytest.raises(ValueError, match="model must be one of .*got model='vae'"):
        _small(tmp_path, model="vae")
    with pytest.raises(ValueError, match=r"k must be an integer with 1 <= k <= n = 8; got k=9"):
        _small(tmp_path, k=9)
    with pytest.raises(ValueError, match="dataset must be one of"):
        _small(tmp_path, dataset="imagenet")
    with pytest.raises(ValueError, match="need N >= k"):
        train(_small(tmp_path / "tiny", limit=2, k=4))


@pytest.mark.parametrize("model", ["cwae", "wae"])
@pytest.mark.parametrize("method", ["mow", "minibatch", "gradcache"])
def test_lambda_is_a_parameter_of_the_objective_and_survives_copies(model, method):
    """lambda lives in the step object (not in a wrapper around F): the loss of a step with
    lam=0.25 is 0.25 * F + red(G) of the same batch, and deepcopy/pickle of the step (and
    of the float32 cost) keep it."""
    import copy
    import pickle

    from mowtheory.train import methods
    from mowtheory.train.trainer import build_cost
    cost = build_cost(model)
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    y = torch.randn(8, 4, generator=torch.Generator().manual_seed(1)) if cost.needs_prior else None
    for other in (copy.deepcopy(cost), pickle.loads(pickle.dumps(cost))):
        assert type(other) is type(cost) and torch.equal(other(z, y), cost(z, y))

    def run(lam, g_weight):
        torch.manual_seed(0)
        enc = torch.nn.Linear(3, 4)
        step = methods.build(method, enc, build_cost(model), n=8, k=2, chunk=4, latent_dim=4,
                             per_example=lambda x, z: g_weight * z.pow(2).sum(1),
                             reduction="sum", balanced=False, refresh="post",
                             generator=torch.Generator().manual_seed(3), device="cpu", lam=lam)
        step.init_window("prior")
        x = torch.randn(step.examples_per_step, 3, generator=torch.Generator().manual_seed(4))
        parts = step.step(x, torch.optim.SGD(enc.parameters(), lr=0.0))
        return step, parts, enc.weight.grad.clone()

    _, p1, _ = run(1.0, 1.0)
    quarter, p4, _ = run(0.25, 1.0)
    assert torch.allclose(p4.batch_cost, 0.25 * p1.batch_cost, rtol=1e-6)
    assert torch.allclose(p4.per_example, p1.per_example) and not torch.allclose(p4.total,
                                                                                  p1.total)
    # the gradient of the F-term scales with lambda too (G switched off)
    g1, g4 = run(1.0, 0.0)[2], run(0.25, 0.0)[2]
    assert g1.abs().max() > 0 and torch.allclose(g4, 0.25 * g1, rtol=1e-5, atol=1e-8)
    inner = quarter.dmow.mow if method == "mow" else quarter    # the MoW or n-batch step
    assert inner.lam == 0.25
    assert copy.deepcopy(inner).lam == 0.25




def test_the_trainer_passes_lambda_to_the_objective(tmp_path):
    """--lambda reaches the step: the first step's logged batch cost (lambda * F, before any
    update, on the same batch and prior) is lambda times that of lambda = 1."""
    def first(lam, method):
        out = tmp_path / f"{method}-{lam}"
        train(_small(out, lam=lam, method=method, eval_every=1, stop_after_steps=1, epochs=2))
        return json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    for method in ("mow", "gradcache"):
        a, b = first(1.0, method), first(0.5, method)
        assert b["train_batch_cost"] == pytest.approx(0.5 * a["train_batch_cost"], rel=1e-6)
        assert b["train_per_example"] == pytest.approx(a["train_per_example"], rel=1e-6)


def test_report_writes_a_non_finite_metric_as_null():
    """One JSON policy, in the returned report too: a NaN/inf metric is None (null)."""
    import time

    from mowtheory.train.state import report
    cfg = TrainConfig(out="o", device="cpu")
    t = time.perf_counter()
    rep = report(cfg, {"arch": "digits"}, "completed", 4, 2, 8, 1,
                 {"recon_error": float("nan"), "cw_distance": float("inf"), "step": 4},
                 None, None, t, t, "cpu")
    assert rep["final_metrics"] == {"recon_error": None, "cw_distance": None, "step": 4}
    json.dumps(rep, allow_nan=False)


def test_run_state_remembers_the_first_non_finite_step_without_a_host_sync():
    """RunState.record accumulates on the device and keeps the first bad step and its parts
    (a CUDA run reads them only at the next evaluation or checkpoint); restore takes every
    counter back from a checkpoint."""
    from mowtheory.train.state import RunState
    st = RunState.fresh("cpu")
    t = lambda *v: [torch.tensor(x, dtype=torch.float32) for x in v]   # noqa: E731
    st.record(t(1.0, 0.5, 0.5))
    st.record(t(float("nan"), float("nan"), 0.25))
    st.record(t(float("inf"), 1.0, float("inf")))
    st.record(t(2.0, 1.0, 1.0))
    assert st.step == 4 and st.acc_steps == 4
    assert int(st.first_bad) == 2
    assert torch.isnan(st.bad_parts[:2]).all() and float(st.bad_parts[2]) == 0.25
    saved = {"step": 7, "epoch": 1, "pos": 3, "perm": torch.arange(5), "acc": torch.ones(3),
             "acc_steps": 2, "last_metrics": {"recon_error": 1.5}}
    st.restore(saved, "cpu")
    assert (st.step, st.epoch, st.pos, st.acc_steps) == (7, 1, 3, 2)
    assert st.resumed_from == st.last_ckpt_step == 7 and torch.equal(st.perm, torch.arange(5))
    assert torch.equal(st.acc, torch.ones(3))
    assert st.last_metrics == {"recon_error": 1.5}


def test_a_run_removes_temporaries_left_by_killed_writers(tmp_path):
    """Writers killed mid-write leave `.NAME.*.tmp` files beside the outputs; the next run in
    that folder removes them when it takes the folder (and nothing else)."""
    out = tmp_path / "run"
    out.mkdir()
    stale = [out / ".checkpoint.pt.123.tmp", out / ".metrics.jsonl.9.tmp", out / ".report.json.1.tmp"]
    for p in stale:
        p.write_text("half")
    (out / "notes.txt").write_text("mine")
    assert main(["train", "--model", "wae", "--n", "8", "--k", "1", "--limit", "16",
                 "--eval-limit", "16", "--no-fd", "--no-images", "--no-progress",
                 "--device", "cpu", "--out", str(out)]) == 0
    assert not any(p.exists() for p in stale)
    assert (out / "notes.txt").read_text() == "mine"
