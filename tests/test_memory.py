"""mowtheory.memory.TensorPeak: the CPU tensor-memory count is exact on known
allocations, is not fooled by tensors that existed before, and grows with what training keeps
for the backward pass; the measurement child reports both peaks."""
import gc
import json
import subprocess
import sys

import pytest
import torch

from mowtheory.bench.memory_child import measure
from mowtheory.memory import TensorPeak

MB = 2**20


def test_tensor_peak_exact_on_known_allocations():
    # the count is exact for what this thread allocates in the block: keep the garbage
    # collector (finalizers of earlier tests' objects) and the profiler's own first-use
    # set-up out of it (once seen in a full run: 720 KB more live bytes than planted)
    with TensorPeak():
        pass
    gc.collect()
    gc.disable()
    try:
        _planted_allocations()
    finally:
        gc.enable()


def _planted_allocations():
    before = torch.empty(3 * MB, dtype=torch.uint8)      # existed before: not counted
    with TensorPeak() as tp:
        a = torch.empty(8 * MB, dtype=torch.uint8)
        b = torch.empty(4 * MB, dtype=torch.uint8)
        del a                                              # 4 MB live
        c = torch.empty(12 * MB, dtype=torch.uint8)        # 16 MB live: the peak
        del b, before                                      # freeing an older tensor: ignored
    assert tp.peak_bytes == 16 * MB
    assert tp.live_bytes == 12 * MB
    assert tp.events >= 4
    del c


def test_tensor_peak_second_block_starts_from_zero():
    keep = []
    with TensorPeak() as first:
        keep.append(torch.empty(5 * MB, dtype=torch.uint8))    # still alive after the block
    with TensorPeak() as second:
        x = torch.empty(2 * MB, dtype=torch.uint8)
        del x
    assert first.peak_bytes == 5 * MB
    assert second.peak_bytes == 2 * MB and second.live_bytes == 0


@pytest.mark.parametrize("batch", [1, 16])
def test_tensor_peak_counts_what_backward_keeps(batch):
    torch.manual_seed(0)
    width = 256
    with TensorPeak() as tp:
        net = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(4)])
        x = torch.randn(batch * 64, width)
        net(x).square().sum().backward()
    params = sum(p.numel() for p in net.parameters()) * 4
    activations = 4 * batch * 64 * width * 4           # 4 layer inputs kept for backward
    # at the end of the forward pass: parameters + the activations kept for backward; after
    # it: parameters + gradients; never more than both plus temporaries of the same size
    assert tp.peak_bytes >= max(params + activations, 2 * params)
    assert tp.peak_bytes <= 2 * params + 3 * activations


def test_measurement_child_reports_both_peaks():
    rows = {k: measure(16, k, n=4, steps=1, threads=1, timeout=300) for k in (1, 4)}
    for k, r in rows.items():
        assert "error" not in r, r
        assert r["peak_rss_mb"] >= r["setup_rss_mb"] > 0
        # the tensors are a part of the process's memory
        assert 0 < r["tensor_peak_mb"] < r["peak_rss_mb"]
    params_mb = rows[1]["params"] * 4 / MB
    assert rows[1]["tensor_peak_mb"] >= 3 * params_mb      # parameters, gradients, Adam


def test_child_without_tensor_count_has_no_tensor_figure():
    out = subprocess.run([sys.executable, "-m", "mowtheory.bench.memory_child", "--resolution", "16",
                          "--k", "1", "--n", "4", "--steps", "1", "--no-tensor-peak"],
                         capture_output=True, text=True, timeout=300, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert "tensor_peak_mb" not in row and row["peak_rss_mb"] > 0
