"""experiments/gpu_suite.py: every item runs its code path at --quick sizes on the CPU, a tiny
budget skips items with a reason, and a CUDA out-of-memory error is a recorded result."""
from __future__ import annotations

import importlib.util
import json
import signal
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "experiments" / "gpu_suite.py"
GPU_MD = ROOT / "experiments" / "results" / "gpu.md"


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _state(path: Path):
    return path.stat().st_mtime_ns if path.exists() else None


def _check_item(it: dict) -> None:
    assert it["status"] in ("ok", "skipped", "oom", "error"), it
    if it["status"] == "skipped":
        assert it["reason"].strip(), it
    if it["status"] == "ok":
        assert it["figures"] and "error" not in it["figures"], it
        assert any(r["status"] == "ok" for r in it["rows"])


def test_quick_cpu_run_has_every_item(suite, tmp_path):
    before = _state(GPU_MD)
    torch_threads = torch.get_num_threads()
    try:
        assert suite.main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(torch_threads)
    assert _state(GPU_MD) == before                   # only a real GPU run writes gpu.md
    assert not (tmp_path / "gpu.md").exists() and not (tmp_path / "gpu.json").exists()
    doc = json.loads((tmp_path / "gpu_suite_check.json").read_text())
    assert list(doc["items"]) == list(suite.ITEMS)
    for name, it in doc["items"].items():
        _check_item(it)
        assert it["status"] == "ok", (name, it)        # on the CPU every code path must run
    items = doc["items"]
    assert items["step_share"]["rows"][0]["host_reads_accelerator_path"] == 0
    assert 0 <= len(items["costs"]["figures"]["slopes"])
    assert {(r["k"], r["precision"]) for r in items["memory"]["rows"]} == {
        (1, "float32"), (1, "bfloat16"), (4, "float32"), (4, "bfloat16")}
    peak = {(r["k"], r["precision"]): r["peak_mb"] for r in items["memory"]["rows"]}
    ratios = items["memory"]["figures"]["ratios_vs_k1"]
    assert len(ratios) == 2 and all(
        r["peak_ratio"] == pytest.approx(peak[(4, r["precision"])] / peak[(1, r["precision"])])
        for r in ratios)
    assert all(r["steps"] >= 1 for r in items["train_1024"]["rows"])
    assert items["flow_replicas"]["figures"]["wall_s"]["cpu"] > 0
    md = (tmp_path / "gpu_suite_check.md").read_text()
    assert "not CUDA figures" in md and "--device cpu --quick" in md
    for name in suite.ITEMS:
        assert f"## {name}: ok" in md


def test_tiny_global_budget_skips_items_with_a_reason(suite):
    doc = suite.run_suite("cpu", quick=True, budget=1e-3, log=lambda s: None)
    assert list(doc["items"]) == list(suite.ITEMS)
    for it in doc["items"].values():
        assert it["status"] == "skipped"
        assert "left of the global budget" in it["reason"]


@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="no SIGALRM on this platform")
def test_item_past_its_budget_is_stopped_and_recorded(suite):
    doc = suite.run_suite("cpu", quick=True, items=("flow_replicas",),
                          item_budgets={"flow_replicas": 0.05}, log=lambda s: None)
    it = doc["items"]["flow_replicas"]
    assert it["status"] == "skipped" and "ran past its budget" in it["reason"]
    assert "stopped" in it


def test_cuda_oom_is_recorded_not_raised(suite, monkeypatch):
    from mowtheory.bench import memory_child as M
    real = M.child

    def child(args):                    # k = n runs out of memory, k = 1 does not
        if args.k == args.n:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(args)

    monkeypatch.setattr(M, "child", child)
    doc = suite.run_suite("cpu", quick=True, items=("memory",), log=lambda s: None)
    it = doc["items"]["memory"]
    assert it["status"] == "ok"
    st = {(r["k"], r["precision"]): r["status"] for r in it["rows"]}
    assert st == {(1, "float32"): "ok", (1, "bfloat16"): "ok",
                  (4, "float32"): "oom", (4, "bfloat16"): "oom"}
    assert len(it["figures"]["oom"]) == 2 and it["figures"]["ratios_vs_k1"] == []


def test_oom_of_a_whole_item_and_runtime_error_text(suite, monkeypatch):
    from mowtheory.bench import step

    def boom(*a, **kw):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(step, "measure", boom)
    doc = suite.run_suite("cpu", quick=True, items=("step_share",), log=lambda s: None)
    it = doc["items"]["step_share"]
    assert it["status"] == "oom" and "out of memory" in it["reason"]
    assert suite.is_oom(RuntimeError("CUDA out of memory")) and \
        not suite.is_oom(RuntimeError("shape mismatch"))


@pytest.mark.parametrize("argv, needle", [
    (["--device", "cpu", "--budget", "0"], "budget"),
    (["--device", "cpu", "--items", "step_share,nope"], "--items"),
])
def test_bad_input_is_refused_before_work(suite, tmp_path, capsys, argv, needle):
    assert suite.main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "got" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has CUDA")
def test_cuda_refused_without_cuda(suite, tmp_path, capsys):
    assert suite.main(["--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "torch.cuda.is_available() is False" in capsys.readouterr().err
