"""Bad input, one table: the Python API, the ``mowtheory`` command and data/checkpoint files.

Every row gives the call (or the command line) and the pieces its message must contain: the
argument's name, the value received and what is allowed. API rows must raise ValueError /
TypeError / FileNotFoundError (never an internal error such as IndexError or a bare
RuntimeError); CLI rows must exit non-zero with an ``error:`` line and no traceback.
"""
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mowtheory import LatentWindow, MoW, costs, mow_loss
from mowtheory.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
NAN, INF = float("nan"), float("inf")
CWAE = costs.get("cwae")
ENC = torch.nn.Linear(3, 2)


def _mow(**kw):
    base = dict(n=4, k=1, latent_dim=2)
    base.update(kw)
    return MoW(ENC, CWAE, **base)


def _prior_mow(n):
    m = _mow(n=n)
    m.init_window("prior")
    return m


def _train_config(**kw):
    from mowtheory.train import TrainConfig
    return TrainConfig(**dict(dict(progress=False, fd=False, images=False), **kw))


def _load(name, data_dir):
    from mowtheory.train.data import load_dataset
    return load_dataset(name, data_dir=data_dir)


# ------------------------------------------------------------------------------ files
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Data files (truncated, not IDX, undecodable image, truncated CIFAR batch) and
    checkpoints (of a short run; truncated; not a checkpoint)."""
    d = tmp_path_factory.mktemp("bad")
    trunc = d / "mnist_truncated"
    trunc.mkdir()
    (trunc / "train-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 0x803, 10, 28, 28) + bytes(100))
    notidx = d / "mnist_not_idx"
    notidx.mkdir()
    (notidx / "train-images-idx3-ubyte").write_bytes(b"hello, not an IDX file at all")
    badgz = d / "mnist_bad_gzip"
    badgz.mkdir()
    (badgz / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    imgs = d / "celeba_unreadable"
    imgs.mkdir()
    for name in ("a.png", "b.png"):
        (imgs / name).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    cifar = d / "cifar_truncated"
    cifar.mkdir()
    (cifar / "data_batch_1").write_bytes(b"\x80\x04\x95")
    empty = d / "empty_run"
    empty.mkdir()

    # a real checkpoint (digits, 5 steps) and broken copies of it
    from mowtheory.train import train
    run = d / "run"
    train(_train_config(model="cwae", dataset="digits", n=8, k=1, limit=24, eval_limit=32,
                        epochs=2, out=str(run), stop_after_steps=5))
    ck = run / "checkpoint.pt"
    truncated = d / "truncated_run"
    truncated.mkdir()
    data = ck.read_bytes()
    (truncated / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    notckpt = d / "not_a_checkpoint_run"
    notckpt.mkdir()
    torch.save([1, 2, 3], notckpt / "checkpoint.pt")
    garbage = d / "garbage_run"
    garbage.mkdir()
    (garbage / "checkpoint.pt").write_bytes(b"this is not a torch file")
    return {k: str(v) for k, v in dict(
        d=d, trunc=trunc, notidx=notidx, badgz=badgz, imgs=imgs, cifar=cifar, empty=empty,
        run=run, truncated=truncated, notckpt=notckpt, garbage=garbage).items()}


def _small_train_args(out, *extra):
    return ["train", "--dataset", "digits", "--n", "8", "--k", "1", "--limit", "24",
            "--eval-limit", "32", "--epochs", "2", "--no-fd", "--no-images", "--no-progress",
            "--out", out, *extra]


# ------------------------------------------------------------------------------ the table
# (id, kind, call or argv-maker, pieces of the message); kinds:
#   api  - call() must raise ValueError/TypeError/FileNotFoundError
#   cli  - mowtheory.cli.main(argv) in this process: exit status != 0, one error line
API = [
    ("mow-k-above-n", lambda f: _mow(n=4, k=5), ["k", "k=5", "1 <= k <= n = 4"]),
    ("mow-k-below-1", lambda f: _mow(n=4, k=0), ["k", "k=0", "1 <= k <= n = 4"]),
    ("mow-n-below-2", lambda f: _mow(n=1, k=1), ["n", "n=1", "2 <= n"]),
    ("mow-k-not-int", lambda f: _mow(n=4, k=1.5), ["k", "k=1.5", "must be an integer"]),
    ("mow-reduction", lambda f: _mow(reduction="avg"),
     ["reduction", "reduction='avg'", "'sum', 'mean', 'sqrt_mean'"]),
    ("mow_loss-latent-dims", lambda f: mow_loss(CWAE, torch.randn(1, 3), torch.randn(3, 2)),
     ["window", "D=2", "same latent dimension as fresh", "D=3"]),
    ("window-push-latent-dim", lambda f: LatentWindow(4, 1, 2).push(torch.randn(1, 3)),
     ["latents", "D=3", "D=2"]),
    ("window-fill-nan", lambda f: LatentWindow(4, 1, 2).fill(
        torch.tensor([[0.0, 1.0], [NAN, 2.0], [1.0, 1.0]])),
     ["latents", "1 NaN or infinite", "must be finite"]),
    ("mmd-prior-inf", lambda f: costs.mmd(torch.randn(5, 2), torch.full((5, 2), INF)),
     ["y", "10 NaN or infinite", "must be finite"]),
    ("cw-latent-dim-1", lambda f: costs.cramer_wold(torch.randn(5, 1)),
     ["z", "D=1", "D >= 2"]),
    ("cw-one-row", lambda f: costs.cramer_wold(torch.randn(1, 2)), ["z", "n=1", "n >= 2"]),
    ("cost-unknown-name", lambda f: costs.get("vae"),
     ["name", "name='vae'", "'cwae', 'cw', 'wae', 'swae', 'energy', 'gmmn', 'pullaway'"]),
    ("cost-unknown-param", lambda f: costs.get("wae", bandwidth=1),
     ["'bandwidth'", "cost 'wae'", "kernel, scales, sigma2"]),
    ("init-window-count", lambda f: _mow().init_window("encode", torch.randn(2, 3)),
     ["x", "got 2", "n - k = 3"]),
    ("mow-state-other-config", lambda f: _mow().load_state_dict(_prior_mow(5).state_dict()),
     ["state_dict", "'n': 5", "'n': 4"]),
    ("config-negative-lr", lambda f: _train_config(lr=-0.1), ["lr", "lr=-0.1", "> 0"]),
    ("config-unknown-model", lambda f: _train_config(model="vae"),
     ["model", "model='vae'", "'cwae', 'wae', 'swae', 'gmmn', 'energy'"]),
    ("config-unknown-dataset", lambda f: _train_config(dataset="imagenet"),
     ["dataset", "dataset='imagenet'", "'digits', 'mnist5k'"]),
    ("config-lambda-nan", lambda f: _train_config(lam=NAN),
     ["lam (lambda)", "=nan", "finite number >= 0"]),
    ("data-not-bundled", lambda f: _load("mnist", None),
     ["data_dir", "'mnist'", "train-images-idx3-ubyte"]),
    ("data-dir-missing", lambda f: _load("mnist", "/nonexistent/mnist"),
     ["/nonexistent/mnist", "data_dir", "not a directory", "train-images-idx3-ubyte"]),
    ("data-idx-truncated", lambda f: _load("mnist", f["trunc"]),
     ["train-images-idx3-ubyte", "truncated IDX file", "7840 bytes", "found 100"]),
    ("data-idx-not-idx", lambda f: _load("mnist", f["notidx"]),
     ["train-images-idx3-ubyte", "magic number 0x68656c6c", "expected 0x00000803"]),
    ("data-idx-bad-gzip", lambda f: _load("mnist", f["badgz"]),
     ["train-images-idx3-ubyte.gz", "corrupt gzip"]),
    ("data-image-unreadable", lambda f: _load("celeba", f["imgs"]),
     [".png", "cannot read as an image", "PNG or JPEG"]),
    ("data-cifar-truncated", lambda f: _load("cifar10", f["cifar"]),
     ["data_batch_1", "not a CIFAR-10 python batch", "N×3072"]),
]

CLI = [
    ("cli-k-above-n", lambda f: ["train", "--n", "4", "--k", "8", "--out", f["d"] + "/o1"],
     ["k", "k=8", "1 <= k <= n = 4"]),
    ("cli-k-zero", lambda f: ["train", "--k", "0", "--out", f["d"] + "/o2"],
     ["k", "k=0", "1 <= k <= n = 64"]),
    ("cli-n-one", lambda f: ["train", "--n", "1", "--out", f["d"] + "/o3"],
     ["n", "n=1", "2 <= n"]),
    ("cli-negative-lr", lambda f: ["train", "--lr", "-0.01", "--out", f["d"] + "/o4"],
     ["lr", "lr=-0.01", "> 0"]),
    ("cli-unknown-dataset", lambda f: ["train", "--dataset", "imagenet", "--out", f["d"] + "/o5"],
     ["dataset", "dataset='imagenet'", "'digits'"]),
    ("cli-unknown-model", lambda f: ["train", "--model", "vae", "--out", f["d"] + "/o6"],
     ["--model", "'vae'", "cwae"]),
    ("cli-lr-not-a-number", lambda f: ["train", "--lr", "fast", "--out", f["d"] + "/o7"],
     ["--lr", "'fast'", "float"]),
    ("cli-limit-too-small", lambda f: _small_train_args(f["d"] + "/o8", "--limit", "3"),
     ["limit=3", "N=3", "n - k=7"]),
    ("cli-data-truncated", lambda f: ["train", "--dataset", "mnist", "--data-dir", f["trunc"],
                                      "--out", f["d"] + "/o9"],
     ["train-images-idx3-ubyte", "truncated IDX file", "7840 bytes"]),
    ("cli-data-dir-missing", lambda f: ["train", "--dataset", "fashion", "--data-dir",
                                        "/nonexistent/fa", "--out", f["d"] + "/o10"],
     ["/nonexistent/fa", "not a directory"]),
    ("cli-resume-no-checkpoint", lambda f: _small_train_args(f["empty"], "--resume"),
     ["--resume", "checkpoint.pt", "does not exist"]),
    ("cli-resume-other-config", lambda f: _small_train_args(f["run"], "--resume", "--k", "2"),
     ["k", "1 (checkpoint)", "2 (now)"]),
    ("cli-resume-truncated-checkpoint", lambda f: _small_train_args(f["truncated"], "--resume"),
     ["checkpoint.pt", "truncated or corrupt", "--overwrite"]),
    ("cli-resume-garbage-checkpoint", lambda f: _small_train_args(f["garbage"], "--resume"),
     ["checkpoint.pt", "truncated or corrupt"]),
    ("cli-resume-not-a-checkpoint", lambda f: _small_train_args(f["notckpt"], "--resume"),
     ["checkpoint.pt", "not a mowtheory training checkpoint"]),
    ("cli-distributed-without-torchrun",
     lambda f: _small_train_args(f["d"] + "/o11", "--distributed"),
     ["--distributed", "RANK=None, WORLD_SIZE=None", "torchrun --nproc_per_node=P"]),
    ("cli-checkpoint-every-negative",
     lambda f: _small_train_args(f["d"] + "/o12", "--checkpoint-every", "-5"),
     ["checkpoint_every", "checkpoint_every=-5", "0 <= checkpoint_every"]),
    ("cli-dist-timeout-zero", lambda f: _small_train_args(f["d"] + "/o13", "--dist-timeout", "0"),
     ["dist_timeout", "dist_timeout=0", "> 0"]),
    ("cli-out-holds-checkpoint", lambda f: _small_train_args(f["run"]),
     ["already holds a checkpoint", "--resume", "--overwrite"]),
]


@pytest.mark.parametrize("name,call,pieces", API, ids=[r[0] for r in API])
def test_api_bad_input(files, name, call, pieces):
    with pytest.raises((ValueError, TypeError, FileNotFoundError)) as info:
        call(files)
    msg = str(info.value)
    for piece in pieces:
        assert piece in msg, f"{name}: {piece!r} not in message {msg!r}"


@pytest.mark.parametrize("name,argv,pieces", CLI, ids=[r[0] for r in CLI])
def test_cli_bad_input(files, capsys, name, argv, pieces):
    try:
        rc = cli_main(argv(files))
    except SystemExit as exc:          # argparse's own errors (choices, types)
        rc = exc.code
    err = capsys.readouterr().err
    assert rc not in (0, None), f"{name}: exit status {rc}"
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, f"{name}: expected one error line in {err!r}"
    for piece in pieces:
        assert piece in lines[0], f"{name}: {piece!r} not in {lines[0]!r}"


def test_table_is_large_enough():
    assert len(API) + len(CLI) >= 20


# ------------------------------------------------------------------------------ real processes
@pytest.mark.parametrize("case", ["k-above-n", "truncated-checkpoint", "truncated-data"])
def test_cli_process_exits_2_without_traceback(files, tmp_path, case):
    argv = {
        "k-above-n": ["train", "--n", "4", "--k", "8", "--out", str(tmp_path / "o")],
        "truncated-checkpoint": _small_train_args(files["truncated"], "--resume"),
        "truncated-data": ["train", "--dataset", "mnist", "--data-dir", files["trunc"],
                           "--out", str(tmp_path / "o")],
    }[case]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "mowtheory", *argv], capture_output=True,
                       text=True, env=env, timeout=120, cwd=ROOT)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert p.stderr.strip().count("\n") == 0 and "error:" in p.stderr


def test_soak_script_refuses_too_few_steps(capsys):
    import runpy
    mod = runpy.run_path(str(ROOT / "experiments" / "soak.py"), run_name="soak_module")
    assert mod["main"](["--steps", "10", "--every", "1000"]) == 2
    err = capsys.readouterr().err
    assert "steps must be >= 2 * every = 2000" in err and "got steps=10" in err


@pytest.mark.parametrize("call", [
    lambda g: __import__("mowtheory").window.LatentWindow(4, 1, 2).fill_prior(g),
    lambda g: __import__("mowtheory.flow", fromlist=["get_problem"]).get_problem(
        "linear-gaussian").theta0(g),
    lambda g: __import__("mowtheory.flow", fromlist=["get_problem"]).get_problem(
        "scalar").sample_data((2,), generator=g),
], ids=["window.fill_prior", "problem.theta0", "problem.sample_data"])
@pytest.mark.parametrize("bad", [None, 0, "seed"])
def test_a_required_generator_is_required(call, bad):
    """Library code never falls back to the global RNG: where a generator is required, None
    (or anything else that is not a torch.Generator) is refused, naming the argument."""
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator \(no global RNG"):
        call(bad)
