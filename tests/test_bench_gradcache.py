"""The gradcache rows of `mowtheory bench memory` and `bench step --methods`, and the
`experiments/method_comparison.py --quick` study at tiny size."""
import importlib.util
import json
from pathlib import Path

import pytest

from mowtheory.bench.memory import gradcache_ratios
from mowtheory.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_bench_step_methods_rows(tmp_path):
    out = tmp_path / "methods.json"
    rc = main(["bench", "step", "--methods", "--arch", "digits", "--n", "4", "--k", "1",
               "--chunks", "2", "--reps", "1", "--threads", "1", "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    command = doc["config"]["command"]          # a command that runs: `bench step --methods`
    assert command.startswith("mowtheory bench step ") and "--methods" in command, command
    rows = doc["rows"]
    assert [r["variant"] for r in rows] == ["MoW k=1", "gradcache c=2", "minibatch"]
    for r in rows:
        assert r["resolution"] == 8 and r["step_s"] > 0
        assert r["example_s"] == pytest.approx(r["step_s"] / r["examples_per_step"])
    assert [r["examples_per_step"] for r in rows] == [1, 4, 4]
    assert rows[1]["per_example_vs_minibatch"] == pytest.approx(
        rows[1]["example_s"] / rows[2]["example_s"])


def test_gradcache_ratios_pair_the_right_rows():
    rows = [{"resolution": 128, "method": "mow", "k": 1, "tensor_peak_mb": 150.0,
             "peak_rss_mb": 500.0, "step_s": 2.0},
            {"resolution": 128, "method": "mow", "k": 64, "tensor_peak_mb": 2000.0,
             "peak_rss_mb": 2400.0, "step_s": 32.0},
            {"resolution": 256, "method": "mow", "k": 1, "tensor_peak_mb": 999.0,
             "peak_rss_mb": 999.0, "step_s": 99.0},
            {"resolution": 128, "method": "gradcache", "chunk": 8, "k": None,
             "tensor_peak_mb": 300.0, "peak_rss_mb": 600.0, "step_s": 64.0, "example_s": 1.0},
            {"resolution": 128, "method": "gradcache", "chunk": 1, "error": "timeout"}]
    (r,) = gradcache_ratios(rows, 64)
    assert r["resolution"] == 128 and r["chunk"] == 8
    assert r["tensor_vs_k1"] == pytest.approx(2.0) and r["tensor_vs_kn"] == pytest.approx(0.15)
    assert r["process_vs_k1"] == pytest.approx(1.2)
    assert r["time_per_example_vs_k1"] == pytest.approx(0.5)     # 1 s vs 2 s per example
    assert r["time_per_example_vs_kn"] == pytest.approx(2.0)     # vs 32 s / 64 examples


@pytest.mark.slow
def test_bench_memory_gradcache_rows(tmp_path):
    out = tmp_path / "memory.json"
    rc = main(["bench", "memory", "--resolutions", "16", "--ks", "1", "--chunks", "2",
               "--n", "4", "--steps", "1", "--child-threads", "1", "--timeout", "300",
               "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert [(r["method"], r["k"], r["chunk"]) for r in doc["rows"]] == [("mow", 1, None),
                                                                       ("gradcache", None, 2)]
    g = doc["rows"][1]
    assert g["examples_per_step"] == 4 and 0 < g["tensor_peak_mb"] < g["peak_rss_mb"]
    assert doc["gradcache_ratios"][0]["chunk"] == 2
    assert doc["gradcache_ratios"][0]["tensor_vs_k1"] > 0


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "method_comparison", ROOT / "experiments" / "method_comparison.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow          # ~15 s of CPU: 20 tiny training runs
def test_method_comparison_quick_tiny(tmp_path):
    mod = _load_script()
    out = tmp_path / "mc.md"
    rc = mod.main(["--quick", "--n", "8", "--seeds", "2", "--limit", "16", "--eval-limit", "16",
                   "--models", "cwae", "--no-fd", "--out", str(out), "--runs",
                   str(tmp_path / "runs")])
    assert rc == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    rows = {(r["row"], r["budget"]) for r in doc["results"]}
    assert {("minibatch n=8", "examples"), ("gradcache n=8 (c=1)", "examples"),
            ("MoW k=1", "examples"), ("MoW k=1 balanced", "examples"),
            ("minibatch n=8, λ/8", "examples"), ("minibatch n=8", "steps"),
            ("minibatch n=8, λ/8", "steps")} == rows
    assert all(r["status"] == "completed" for r in doc["results"])
    by = {(r["row"], r["budget"], r["seed"]): r for r in doc["results"]}
    # equal examples: every examples-row read the same 16 examples; equal steps: minibatch
    # made (at least) MoW k=1's 16 steps
    assert {r["examples"] for r in doc["results"] if r["budget"] == "examples"} == {16}
    assert by[("minibatch n=8", "steps", 0)]["steps"] >= by[("MoW k=1", "examples", 0)]["steps"]
    # gradcache trains exactly what minibatch trains
    for s in (0, 1):
        a, b = by[("minibatch n=8", "examples", s)], by[("gradcache n=8 (c=1)", "examples", s)]
        assert b["recon_error"] == pytest.approx(a["recon_error"], rel=1e-4)
    text = out.read_text()
    assert "Paper's Table 1 trend" in text and "λ·k/n prediction" in text
    assert "quick smoke configuration" in text


def test_method_comparison_statistics():
    mod = _load_script()
    m, h = mod.mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(4.302653 * 1.0 / 3 ** 0.5, rel=1e-5)
    assert mod.verdict([1.0, 1.1, 0.9], [5.0, 5.1, 4.9]) == "lower"
    assert mod.verdict([5.0, 5.1, 4.9], [1.0, 1.1, 0.9]) == "higher"
    assert mod.verdict([1.0, 3.0, 2.0], [2.0, 1.0, 3.0]) == "unresolved"
    assert mod.verdict([1.0], [2.0, 3.0]) == "INCONCLUSIVE"
