"""The benchmarks on tiny configurations: each writes well-formed JSON; the gradient check of
``bench costs`` fires on a planted mismatch; ``MoW.step`` reads no tensor value on the host.
No timing assertions (timings are reported by the benches, never tested)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mowtheory import costs as C
from mowtheory.bench import costs as bench_costs
from mowtheory.bench import step as bench_step
from mowtheory.cli import main
from mowtheory.mow import MoW

ROOT = Path(__file__).resolve().parents[1]


def _load(path) -> dict:
    text = Path(path).read_text()
    assert "NaN" not in text and "Infinity" not in text
    doc = json.loads(text)
    assert {"bench", "machine", "config", "created"} <= set(doc)
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["cpu"]
    assert doc["config"]["command"].startswith("mowtheory bench ")
    return doc


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


# ------------------------------------------------------------------------------- costs
def test_bench_costs_writes_json(tmp_path, capsys):
    out = tmp_path / "costs.json"
    rc = main(["bench", "costs", "--costs", "wae,cwae,energy,pullaway", "--n", "12,24",
               "--k", "1,3", "--dim", "4", "--reps", "3", "--split-steps", "2",
               "--device", "cpu", "--threads", "1", "--json", str(out)])
    assert rc == 0
    doc = _load(out)
    assert doc["bench"] == "costs"
    rows = doc["rows"]
    assert len(rows) == 4 * 2 * 2
    for r in rows:
        for key in ("full_median_s", "split_median_s", "split_amortised_s", "ratio",
                    "ratio_amortised", "recompute_s"):
            assert _positive(r[key]), (key, r)
        assert 0 <= r["grad_rel_err"] <= r["rtol"]
    assert {(s["cost"], s["k"]) for s in doc["slopes"]} == {
        (c, k) for c in ("wae", "cwae", "energy", "pullaway") for k in (1, 3)}
    assert "constants=False" in doc["note"]
    assert "split (median)" in capsys.readouterr().out


def test_bench_costs_skips_costs_without_split():
    res = bench_costs.run_costs([C.get("swae", generator=torch.Generator().manual_seed(0))],
                                [8], [1], dim=3, reps=1, split_steps=1, log=lambda s: None)
    assert res["rows"] == [] and res["skipped"][0]["cost"] == "swae"


class _Planted:
    """A BatchCost whose split gradient is off by 1% (a planted bug)."""

    def __init__(self, cost, factor=1.01):
        self.cost, self.factor = cost, factor
        self.name, self.needs_prior, self.supports_split = "planted", cost.needs_prior, True

    def __call__(self, z, y=None):
        return self.cost(z, y)

    def init_cache(self, H, *, n=None):
        return self.cost.init_cache(H, n=n)

    def update_cache(self, cache, H, slots, new):
        return self.cost.update_cache(cache, H, slots, new)

    def split(self, H, Z, y=None, *, cache=None, constants=True):
        return self.factor * self.cost.split(H, Z, y, cache=cache, constants=constants)


@pytest.mark.parametrize("name", ["wae", "cwae"])
def test_gradient_check_fires_on_planted_mismatch(name):
    planted = _Planted(C.get(name))
    with pytest.raises(bench_costs.GradientMismatch, match="split and full gradients disagree"):
        bench_costs.measure(planted, n=16, k=2, dim=4, reps=1, split_steps=1)
    # the same harness passes with the true split
    row = bench_costs.measure(_Planted(C.get(name), factor=1.0), n=16, k=2, dim=4, reps=1,
                              split_steps=1)
    assert row["grad_rel_err"] <= row["rtol"]


def test_check_agreement_tolerance_and_nan():
    g = torch.tensor([1.0, -2.0, 0.5])
    assert bench_costs.check_agreement(g, g.clone(), rtol=1e-6) == 0.0
    assert bench_costs.check_agreement(g * (1 + 1e-7), g, rtol=1e-6) < 1e-6
    with pytest.raises(bench_costs.GradientMismatch):
        bench_costs.check_agreement(g + 1e-3, g, rtol=1e-6)
    with pytest.raises(bench_costs.GradientMismatch):
        bench_costs.check_agreement(torch.tensor([float("nan"), 0.0, 0.0]), g, rtol=1.0)


def test_bench_costs_cli_reports_mismatch(monkeypatch, capsys):
    real = bench_costs.measure

    def planted_measure(cost, **kw):
        return real(_Planted(cost), **kw)

    monkeypatch.setattr(bench_costs, "measure", planted_measure)
    rc = main(["bench", "costs", "--costs", "wae", "--n", "12", "--k", "1", "--dim", "3",
               "--reps", "1", "--split-steps", "1", "--device", "cpu"])
    assert rc == 1
    assert "gradient check failed" in capsys.readouterr().err


# -------------------------------------------------------------------------------- flow
def test_bench_flow_writes_json(tmp_path):
    out = tmp_path / "flow.json"
    rc = main(["bench", "flow", "--problems", "linear-gaussian,mmd-gaussian", "--replicas", "6",
               "--steps", "2", "--reps", "1", "--loop-reps", "1", "--threads", "1",
               "--json", str(out)])
    assert rc == 0
    doc = _load(out)
    assert [r["problem"] for r in doc["rows"]] == ["linear-gaussian", "mmd-gaussian"]
    for r in doc["rows"]:
        assert _positive(r["vectorised_s"]) and _positive(r["loop_s"]) and _positive(r["ratio"])
        assert r["max_abs_diff"] <= 1e-9
    assert "ratio" in doc["targets"]


def test_bench_flow_detects_disagreeing_simulators(monkeypatch):
    import importlib

    from mowtheory.bench import flow as bench_flow
    sim = importlib.import_module("mowtheory.flow.simulate")   # the module, not the function

    real = sim.simulate_loop
    monkeypatch.setattr(sim, "simulate_loop", lambda *a, **kw: real(*a, **kw) * 1.001)
    with pytest.raises(bench_flow.SimulatorMismatch):
        bench_flow.measure("linear-gaussian", replicas=3, steps=2, reps=1, loop_reps=1)


# -------------------------------------------------------------------------------- step
def test_bench_step_writes_json(tmp_path):
    out = tmp_path / "step.json"
    rc = main(["bench", "step", "--arch", "digits", "--costs", "wae,energy", "--n", "8",
               "--k", "1,2", "--steps", "2", "--reps", "1", "--device", "cpu", "--threads", "1",
               "--json", str(out)])
    assert rc == 0
    doc = _load(out)
    assert len(doc["rows"]) == 4
    for r in doc["rows"]:
        for v in bench_step.VARIANTS:
            assert _positive(r[f"{v}_s"])
        assert math.isfinite(r["window_share"]) and r["window_share"] < 1
        assert r["host_reads_accelerator_path"] == 0
    assert doc["targets"]["no_host_sync"]["pass"] is True


# ----------------------------------------------------------------------- host syncs
def _tiny_mow(cost, n, k, refresh="post"):
    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    dec = torch.nn.Linear(3, 5)

    def G(x, z):
        return (dec(z) - x).pow(2).sum(-1)

    mow = MoW(enc, cost, n=n, k=k, latent_dim=3, per_example=G, refresh=refresh,
              generator=torch.Generator().manual_seed(1))
    mow.init_window("prior")
    params = list(enc.parameters()) + list(dec.parameters())
    return mow, torch.optim.SGD(params, lr=1e-2)


@pytest.mark.parametrize("name", ["wae", "cwae", "cw", "energy", "gmmn", "pullaway"])
@pytest.mark.parametrize("n,k,refresh", [(6, 1, "post"), (6, 2, "pre"), (4, 4, "post")])
def test_mow_step_reads_no_tensor_value_on_the_host(name, n, k, refresh):
    """MoW.step must not call .item()/float()/int()/bool()/.tolist()/.cpu()/.numpy() on a
    tensor: each would synchronise with an accelerator. The costs are put on the code path
    they take for accelerator tensors (on CPU they check the k fresh latents and the slots
    on the host, which synchronises nothing); then any such call from mowtheory raises."""
    mow, opt = _tiny_mow(C.get(name), n, k, refresh)
    x = torch.randn(5, k, 5, generator=torch.Generator().manual_seed(2))
    with bench_step.HostReads(raise_=True, accelerator_path=True) as h:
        for xb in x:          # covers incremental cache updates and an exact recompute
            parts = mow.step(xb, opt)
    assert h.reads == []
    assert all(torch.isfinite(t) for t in parts)


def test_host_read_audit_catches_a_sync(monkeypatch):
    """The audit is not vacuous: a NaN scan planted in mow_loss (a bool() of a tensor in
    mowtheory/_validate.py) is caught."""
    import mowtheory.loss as mow_mod       # where mow_loss checks its inputs

    mow, opt = _tiny_mow(C.get("wae"), 6, 1)
    real = mow_mod.check_latents
    monkeypatch.setattr(mow_mod, "check_latents",
                        lambda *a, **kw: real(*a, **{**kw, "finite": True}))
    with pytest.raises(bench_step.HostSync, match=r"__bool__ called from mowtheory/_validate"):
        with bench_step.HostReads(raise_=True, accelerator_path=True):
            mow.step(torch.randn(1, 5), opt)
    # the CPU code path of the costs reads the fresh latents and the slots on the host
    monkeypatch.setattr(mow_mod, "check_latents", real)
    with bench_step.HostReads(accelerator_path=False) as h:
        mow.step(torch.randn(1, 5), opt)
    assert h.reads and all(r[1].startswith("mowtheory/") for r in h.reads)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mow_step_has_no_cuda_sync():
    enc = torch.nn.Linear(5, 3).cuda()
    dec = torch.nn.Linear(3, 5).cuda()
    mow = MoW(enc, C.get("wae"), n=8, k=1, latent_dim=3,
              per_example=lambda x, z: (dec(z) - x).pow(2).sum(-1),
              generator=torch.Generator(device="cuda").manual_seed(0), device="cuda")
    mow.init_window("prior")
    opt = torch.optim.SGD(list(enc.parameters()) + list(dec.parameters()), lr=1e-2)
    x = torch.randn(10, 1, 5, device="cuda")
    mow.step(x[0], opt)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for xb in x[1:]:
            mow.step(xb, opt)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ------------------------------------------------------------------------------ memory
@pytest.mark.skipif(not (ROOT / "experiments" / "memory_scaling.py").is_file(),
                    reason="bench memory reuses experiments/memory_scaling.py")
def test_bench_memory_writes_json(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "memory.json"
    rc = main(["bench", "memory", "--resolutions", "16", "--ks", "1,4", "--n", "4",
               "--steps", "1", "--child-threads", "1", "--timeout", "300", "--json", str(out)])
    assert rc == 0
    doc = _load(out)
    assert [(r["resolution"], r["k"]) for r in doc["rows"]] == [(16, 1), (16, 4)]
    for r in doc["rows"]:
        assert "error" not in r, r
        assert _positive(r["peak_mb"]) and r["peak_mb"] >= r["setup_rss_mb"] > 0
        assert 0 < r["tensor_peak_mb"] < r["peak_rss_mb"]
    assert doc["ratios"] and _positive(doc["ratios"][0]["peak_ratio"])
    assert _positive(doc["ratios"][0]["tensor_ratio"])


def test_bench_memory_targets_judge_each_peak_on_its_own():
    from mowtheory.bench.memory import targets
    rat = [{"resolution": 256, "k_small": 1, "k_big": 64, "peak_ratio": 8.9,
            "tensor_ratio": 23.9, "increase_ratio": 21.5},
           {"resolution": 128, "k_small": 1, "k_big": 64, "peak_ratio": 50.0,
            "tensor_ratio": 50.0}]
    cpu = targets(rat, 64, "cpu")
    assert cpu["tensor_peak_ratio_256"]["pass"] is True
    assert cpu["process_peak_ratio_256"]["pass"] is False      # 8.9 < 10: not rounded up
    assert cpu["process_peak_ratio_256"]["ratio"] == 8.9
    assert set(targets(rat, 64, "cuda")) == {"tensor_peak_ratio_256"}
    assert targets(rat[1:], 64, "cpu") == {}                    # no 256x256 row: no verdict
