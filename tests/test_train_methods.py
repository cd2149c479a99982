"""`mowtheory train --method {mow, minibatch, gradcache}`: each trains on digits and resumes
exactly (every tensor of the checkpoint equal to an uninterrupted run's); minibatch is MoW
with k = n step for step; gradcache follows minibatch; bad combinations are refused."""
import json

import numpy as np
import pytest
import torch

from mowtheory.cli import main
from mowtheory.train import TrainConfig, train
from mowtheory.train import checkpoint as ckpt


def _small(out, **kw):
    base = dict(model="wae", dataset="digits", n=8, k=2, limit=48, eval_limit=32, epochs=2,
                lr=1e-3, out=str(out), progress=False, fd=False, images=False)
    base.update(kw)
    return TrainConfig(**base)


def _leaves(obj, prefix=""):
    """Every leaf of a nested checkpoint (dicts, lists, tuples) as (path, value)."""
    if isinstance(obj, dict):
        for key in sorted(obj, key=str):
            yield from _leaves(obj[key], f"{prefix}/{key}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{prefix}/{i}")
    else:
        yield prefix, obj


def _assert_same_state(a_dir, b_dir, skip=("config", "last_metrics")):
    a = ckpt.load_checkpoint(a_dir / "checkpoint.pt")
    b = ckpt.load_checkpoint(b_dir / "checkpoint.pt")
    la = dict(_leaves({k: v for k, v in a.items() if k not in skip}))
    lb = dict(_leaves({k: v for k, v in b.items() if k not in skip}))
    assert la.keys() == lb.keys()
    n_tensors = 0
    for key, va in la.items():
        vb = lb[key]
        if isinstance(va, torch.Tensor):
            n_tensors += 1
            assert torch.equal(va, vb), key
        elif isinstance(va, np.ndarray):
            assert np.array_equal(va, vb), key
        else:
            assert va == vb, key
    return n_tensors


@pytest.mark.parametrize("method,kw", [("mow", {}), ("minibatch", {}),
                                       ("gradcache", {"chunk": 3})])
def test_each_method_trains_and_resumes_exactly(tmp_path, method, kw):
    # N=48: mow reads k=2 a step (24 steps an epoch), the n-batch methods n=8 (6 steps)
    cfg = dict(method=method, eval_every=2, checkpoint_every=2, **kw)
    full = train(_small(tmp_path / "full", **cfg))
    per_step = 2 if method == "mow" else 8
    assert full["status"] == "completed" and full["step"] == 2 * 48 // per_step
    assert full["examples_seen"] == 2 * 48
    stop = full["step"] // 2 + 1                        # in the middle of epoch 2
    part = train(_small(tmp_path / "part", stop_after_steps=stop, **cfg))
    assert part["status"] == "stopped" and part["step"] == stop
    rest = train(_small(tmp_path / "part", resume=True, **cfg))
    assert rest["resumed_from_step"] == stop and rest["step"] == full["step"]
    # model, optimizer state, the method's state (window / prior generator), data generator,
    # RNG states, accumulators: every tensor equal
    assert _assert_same_state(tmp_path / "full", tmp_path / "part") > 10

    def rows(p):
        return [{k: v for k, v in json.loads(s).items() if k != "time_s"}
                for s in (p / "metrics.jsonl").read_text().splitlines()]
    assert rows(tmp_path / "full") == rows(tmp_path / "part")
    assert {"recon_error", "wae_distance", "cw_distance"} <= set(rows(tmp_path / "full")[-1])


def _weights(out):
    return ckpt.load_checkpoint(out / "checkpoint.pt")["model"]


def _maxdiff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_minibatch_is_mow_with_k_equal_n(tmp_path):
    """Standard training two ways: method=minibatch and MoW with k = n (empty window) read
    the same batches and draw the same prior samples: the same weights up to float32
    rounding (the gradient of z is accumulated in another order); MoW with k < n is not."""
    a = train(_small(tmp_path / "mb", method="minibatch", epochs=1))
    b = train(_small(tmp_path / "mow", method="mow", k=8, init="prior-once", epochs=1))
    assert a["step"] == b["step"] == 6
    train(_small(tmp_path / "k4", method="mow", k=4, init="prior-once", epochs=1))
    assert _maxdiff(_weights(tmp_path / "mb"), _weights(tmp_path / "mow")) < 1e-6
    assert _maxdiff(_weights(tmp_path / "mb"), _weights(tmp_path / "k4")) > 1e-4


def test_gradcache_follows_minibatch(tmp_path):
    """Same gradient, other summation order: float32 weights agree to rounding after an
    epoch of Adam; a planted difference (another reduction) is far outside that."""
    def weights(out, **kw):
        train(_small(tmp_path / out, **{"epochs": 1, "reduction": "sqrt_mean", **kw}))
        return _weights(tmp_path / out)
    mb = weights("mb", method="minibatch")
    gc = weights("gc", method="gradcache", chunk=1)
    other = weights("other", method="gradcache", chunk=1, reduction="mean")
    assert _maxdiff(mb, gc) < 1e-6
    assert _maxdiff(mb, other) > 1e-4


def test_cli_method_gradcache_and_bad_combinations(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "--model", "cwae", "--dataset", "digits", "--n", "8", "--limit", "16",
            "--eval-limit", "16", "--epochs", "1", "--method", "gradcache", "--chunk", "4",
            "--device", "cpu", "--out", str(out), "--no-progress", "--no-fd", "--no-images"]
    assert main(args) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["config"]["method"] == "gradcache" and rep["config"]["chunk"] == 4
    assert rep["step"] == 2 and rep["examples_seen"] == 16
    capsys.readouterr()
    bad = [(["--method", "sgd"], "invalid choice: 'sgd'"),
           (["--method", "gradcache", "--chunk", "99"], "chunk must be"),
           (["--method", "minibatch", "--balanced"], "balanced=True applies to method 'mow'")]
    for extra, msg in bad:
        try:
            rc = main(["train", "--out", str(tmp_path / "bad"), "--no-progress", *extra])
        except SystemExit as exc:           # argparse's own errors
            rc = exc.code
        assert rc == 2
        assert msg in capsys.readouterr().err
    # resuming with another method is refused
    with pytest.raises(ValueError, match="method"):
        train(TrainConfig(model="cwae", dataset="digits", n=8, limit=16, eval_limit=16,
                          out=str(out), resume=True, method="minibatch", progress=False,
                          fd=False, images=False))
