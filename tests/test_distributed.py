"""Data-parallel MoW (``mowtheory.distributed``): P ranks with k each == one process with k·P.

Two CPU processes (gloo, file rendezvous in a temporary directory, a 60 s timeout on every
collective), float64. One spawn runs every configuration, to keep the test a few seconds.
"""
import os
import traceback

import pytest
import torch
import torch.multiprocessing as mp

from mowtheory import MoW, costs
from mowtheory.distributed import DistributedMoW, gather_rows, init_distributed

WORLD = 2
STEPS = 20
X_ROWS, X_DIM, LATENT = 100, 5, 3

# name -> (cost, n, k per rank, reduction, balanced, refresh, optimizer)
CONFIGS = {
    "cwae-sum-post-sgd": ("cwae", 6, 1, "sum", False, "post", "sgd"),
    "wae-sqrtmean-pre-adam-balanced": ("wae", 7, 1, "sqrt_mean", True, "pre", "adam"),
    "energy-mean-post-adam-k2": ("energy", 9, 2, "mean", False, "post", "adam"),
    "swae-sum-post-sgd": ("swae", 5, 1, "sum", False, "post", "sgd"),
    "cwae-empty-window": ("cwae", 2, 1, "sqrt_mean", False, "post", "adam"),   # k·P = n
}


class _AE(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = torch.nn.Sequential(torch.nn.Linear(X_DIM, 8), torch.nn.Tanh(),
                                       torch.nn.Linear(8, LATENT))
        self.dec = torch.nn.Linear(LATENT, X_DIM)


def _data():
    return torch.randn(X_ROWS, X_DIM, generator=torch.Generator().manual_seed(5),
                       dtype=torch.float64)


def _run(name, k_per_step, *, distributed):
    """Train one configuration; with ``distributed`` this rank's slice of each global batch."""
    cost_name, n, k, reduction, balanced, refresh, optname = CONFIGS[name]
    torch.manual_seed(0)
    ae = _AE().double()
    params = {"n_directions": 4, "generator": torch.Generator().manual_seed(3)} \
        if cost_name == "swae" else {}
    cost = costs.get(cost_name, **params)
    kw = dict(n=n, latent_dim=LATENT, reduction=reduction, balanced=balanced, refresh=refresh,
              per_example=lambda x, z: (ae.dec(z) - x).pow(2).sum(1),
              generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    if distributed:
        from mowtheory.distributed import broadcast_parameters
        broadcast_parameters(ae)
        mow = DistributedMoW(ae.enc, cost, k=k, **kw)
    else:
        mow = MoW(ae.enc, cost, k=k_per_step, **kw)
    opt = (torch.optim.SGD(ae.parameters(), lr=0.05) if optname == "sgd"
           else torch.optim.Adam(ae.parameters(), lr=0.01))
    x = _data()
    glob = k * WORLD
    mow.init_window("encode", x[-(n - glob):] if n > glob else x[:0])
    losses = []
    for s in range(STEPS):
        batch = x[s * glob:(s + 1) * glob]
        if distributed:
            import torch.distributed as dist
            r = dist.get_rank()
            batch = batch[r * k:(r + 1) * k]
        losses.append(mow.step(batch, opt).total.item())
    if distributed:
        mow.check_synchronized(ae)
    win = mow.window.ordered().clone()
    return {"params": {k_: v.detach().clone() for k_, v in ae.state_dict().items()},
            "window": win, "losses": losses}


def _worker(rank, tmpdir):
    out = {}
    try:
        ctx = init_distributed("gloo", init_method=f"file://{tmpdir}/rendezvous", rank=rank,
                               world_size=WORLD, timeout_s=60)
        torch.set_num_threads(1)
        for name, cfg in CONFIGS.items():
            out[name] = _run(name, cfg[2] * WORLD, distributed=True)
        # k·P > n is refused with a message naming k, world_size and n
        try:
            DistributedMoW(torch.nn.Identity(), costs.get("cwae"), n=3, k=2, latent_dim=2)
            out["refused"] = None
        except ValueError as exc:
            out["refused"] = str(exc)
        # the backward of gather_rows returns the local slice only
        t = torch.full((2, 1), float(rank + 1), dtype=torch.float64, requires_grad=True)
        g = gather_rows(t)
        (g * torch.arange(1.0, 5.0, dtype=torch.float64)[:, None]).sum().backward()
        out["gather"] = (g.detach().flatten().tolist(), t.grad.flatten().tolist())
        ctx.close()
    except BaseException:
        out["error"] = traceback.format_exc()
    torch.save(out, os.path.join(tmpdir, f"rank{rank}.pt"))
    # the results are on disk: skip the interpreter's teardown, in which gloo's threads abort
    # about 1 spawned pair in 16 (SIGABRT after both ranks finished; mowtheory train
    # --distributed ends the same way, see mowtheory.cli.train._end_distributed)
    os._exit(0)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    tmpdir = str(tmp_path_factory.mktemp("dist"))
    mp.spawn(_worker, args=(tmpdir,), nprocs=WORLD, join=True)
    res = [torch.load(os.path.join(tmpdir, f"rank{r}.pt"), weights_only=False)
           for r in range(WORLD)]
    for r, o in enumerate(res):
        assert "error" not in o, f"rank {r} failed:\n{o['error']}"
    return res


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_two_ranks_equal_one_process_with_k_times_p(ranks, name):
    k = CONFIGS[name][2]
    ref = _run(name, k * WORLD, distributed=False)
    for r, res in enumerate(ranks):
        got = res[name]
        for p in ref["params"]:
            torch.testing.assert_close(got["params"][p], ref["params"][p], rtol=0, atol=1e-10,
                                       msg=lambda m: f"rank {r}, {p}: {m}")
        torch.testing.assert_close(got["window"], ref["window"], rtol=0, atol=1e-10)
        assert got["losses"] == pytest.approx(ref["losses"], rel=1e-10, abs=1e-10)
    # the ranks agree with each other exactly (same gathered inputs, same reductions)
    for p in ranks[0][name]["params"]:
        assert torch.equal(ranks[0][name]["params"][p], ranks[1][name]["params"][p])
    assert torch.equal(ranks[0][name]["window"], ranks[1][name]["window"])


def test_parameters_moved(ranks):
    # not a vacuous comparison: training changed the weights
    torch.manual_seed(0)
    init = _AE().double().state_dict()
    moved = ranks[0]["cwae-sum-post-sgd"]["params"]
    assert max(float((moved[p] - init[p]).abs().max()) for p in init) > 1e-3


def test_gather_backward_returns_the_local_slice(ranks):
    for r, res in enumerate(ranks):
        vals, grad = res["gather"]
        assert vals == [1.0, 1.0, 2.0, 2.0]
        assert grad == [2 * r + 1.0, 2 * r + 2.0]      # weights of rows 2r, 2r+1 only


def test_k_times_world_size_above_n_is_refused(ranks):
    msg = ranks[0]["refused"]
    assert msg is not None
    for part in ("k=2", "world_size=2", "n=3"):
        assert part in msg


def test_without_process_group_it_is_plain_mow():
    ref = _run("cwae-sum-post-sgd", 2, distributed=False)
    torch.manual_seed(0)
    ae = _AE().double()
    d = DistributedMoW(ae.enc, costs.get("cwae"), n=6, k=2, latent_dim=LATENT,
                       per_example=lambda x, z: (ae.dec(z) - x).pow(2).sum(1),
                       generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert d.world_size == 1 and d.k_global == 2
    opt = torch.optim.SGD(ae.parameters(), lr=0.05)
    x = _data()
    d.init_window("encode", x[-4:])
    for s in range(STEPS):
        d.step(x[2 * s:2 * s + 2], opt)
    for p, v in ae.state_dict().items():
        assert torch.equal(v, ref["params"][p])
    st = d.state_dict()
    assert st["distributed"] == {"world_size": 1, "k_per_rank": 2}
    with pytest.raises(ValueError, match="another distributed layout"):
        d.load_state_dict(dict(st, distributed={"world_size": 2, "k_per_rank": 1}))


def test_init_distributed_without_rank_says_what_is_missing(monkeypatch):
    for v in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(v, raising=False)
    with pytest.raises(ValueError, match=r"run under torchrun.*got rank=None, world_size=None"):
        init_distributed("gloo", init_method="file:///nonexistent/x")
    with pytest.raises(ValueError, match=r"backend must be 'gloo' or 'nccl'; got backend='mpi'"):
        init_distributed("mpi", rank=0, world_size=1)
    with pytest.raises(ValueError, match=r"timeout_s must be a finite number > 0; got"):
        init_distributed("gloo", rank=0, world_size=1, timeout_s=0)


# ------------------------------------------------------------------------------ the trainer
def _train_args(out, n, k, *extra):
    return ["train", "--model", "wae", "--dataset", "digits", "--batch-n", str(n), "--k", str(k),
            "--limit", "60", "--eval-limit", "32", "--epochs", "1", "--no-fd", "--no-images",
            "--no-progress", "--device", "cpu", "--out", str(out), *extra]


@pytest.mark.timeout(300)
def test_torchrun_two_processes_equal_one_process_with_2k(tmp_path, capsys):
    """`torchrun --nproc_per_node=2 -m mowtheory train ... --distributed` (gloo, float32
    models) ends where `mowtheory train --k 2` ends: same steps, same window, weights equal
    up to float32 round-off of the split gradient sums."""
    import subprocess
    import sys
    from mowtheory.train import checkpoint as ckpt
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one, two = tmp_path / "one", tmp_path / "two"
    r = subprocess.run([sys.executable, "-m", "mowtheory", *_train_args(one, 8, 2)], env=env,
                       capture_output=True, text=True, timeout=200)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2", "-m", "mowtheory",
                        *_train_args(two, 8, 1, "--distributed", "--dist-timeout", "60")],
                       env=env, capture_output=True, text=True, timeout=250)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("mowtheory train: completed after 30 steps (60 examples)") == 1
    a, b = ckpt.load_checkpoint(one / "checkpoint.pt"), ckpt.load_checkpoint(two / "checkpoint.pt")
    assert a["step"] == b["step"] == 30 and b["world_size"] == 2
    for name in a["model"]:
        torch.testing.assert_close(b["model"][name], a["model"][name], rtol=0, atol=1e-5)
    torch.testing.assert_close(b["mow"]["window"]["buffer"], a["mow"]["window"]["buffer"],
                               rtol=0, atol=1e-5)
    rep = __import__("json").loads((two / "report.json").read_text())
    assert rep["status"] == "completed" and rep["examples_seen"] == 60
    # resuming with another number of processes is refused (exit 2, one line)
    from mowtheory.cli import main
    assert main(_train_args(two, 8, 1, "--resume")) == 2
    err = capsys.readouterr().err
    assert "world_size=2 (k=1 per process), this run has world_size=1" in err
    assert "torchrun --nproc_per_node=2" in err and len(err.strip().splitlines()) == 1
