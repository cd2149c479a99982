"""The bad-input corpus: every subcommand and public constructor fed inputs a new user gets
wrong, table-driven.

CLI rows run ``mowtheory.cli.main(argv)`` in this process, in an empty working folder with
the fixtures below; each must end with exit status 2 (argparse's own errors included), one
``error:`` line on stderr that names the argument and contains the pieces of the row, no
traceback, nothing new written anywhere under the working folder, and an answer within
seconds (the check comes before the work: the slowest command here would run for minutes).
API rows must raise ValueError or TypeError whose message contains the pieces (the argument's
name and the value received).
"""
import os
import time
from pathlib import Path

import pytest
import torch

from mowtheory.cli import main as cli_main

NAN, INF = float("nan"), float("inf")
LONG = "x" * 300                               # one component longer than NAME_MAX (255)
FAST = 20.0                                    # seconds: any real work takes far longer


@pytest.fixture
def work(tmp_path, monkeypatch):
    """An empty working folder with a file and a folder to misuse as outputs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "keep").write_text("")
    cifar = tmp_path / "cifar"                        # random bytes where a batch should be
    cifar.mkdir()
    g = torch.Generator().manual_seed(0)
    (cifar / "data_batch_1").write_bytes(
        b"\x80\x04" + torch.randint(0, 256, (4096,), generator=g, dtype=torch.uint8).numpy().tobytes())
    return tmp_path


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")}


# ------------------------------------------------------------------------------ CLI table
# (id, argv, pieces of the error line); "{d}" is the working folder
FLOW = ["flow", "--quiet", "--no-plot"]
TRAIN = ["train", "--no-progress", "--no-fd", "--no-images"]
CLI = [
    # flow: numbers
    ("flow-n-1", FLOW + ["--n", "1"], ["n", "n=1", "2 <= n"]),
    ("flow-n-0", FLOW + ["--n", "0"], ["n=0"]),
    ("flow-n-negative", FLOW + ["--n", "-3"], ["n=-3"]),
    ("flow-n-text", FLOW + ["--n", "eight"], ["--n", "'eight'"]),
    ("flow-n-float", FLOW + ["--n", "8.5"], ["--n", "'8.5'"]),
    ("flow-k-0", FLOW + ["--k", "0"], ["k=0", "1 <= k"]),
    ("flow-k-above-n", FLOW + ["--k", "9"], ["k=9", "k <= n = 8"]),
    ("flow-k-text", FLOW + ["--k", "one"], ["--k", "'one'"]),
    ("flow-replicas-1", FLOW + ["--replicas", "1"], ["replicas", "replicas=1", "2 <= replicas"]),
    ("flow-replicas-0", FLOW + ["--replicas", "0"], ["replicas=0"]),
    ("flow-replicas-negative", FLOW + ["--replicas", "-16"], ["replicas=-16"]),
    ("flow-replicas-text", FLOW + ["--replicas", "many"], ["--replicas", "'many'"]),
    ("flow-replicas-sci", FLOW + ["--replicas", "1e12"], ["--replicas", "'1e12'"]),
    ("flow-replicas-too-many", FLOW + ["--replicas", "1000000000000"],
     ["replicas=1000000000000", "GiB", "--replicas"]),
    ("flow-record-0", FLOW + ["--record", "0"], ["record", "record=0"]),
    ("flow-record-negative", FLOW + ["--record", "-2"], ["record=-2"]),
    ("flow-record-huge", FLOW + ["--record", "100000000"], ["record", "record=100000000", "<="]),
    ("flow-record-text", FLOW + ["--record", "all"], ["--record", "'all'"]),
    ("flow-horizon-0", FLOW + ["--horizon", "0"], ["horizon", "horizon=0", "> 0"]),
    ("flow-horizon-negative", FLOW + ["--horizon", "-1"], ["horizon=-1"]),
    ("flow-horizon-nan", FLOW + ["--horizon", "nan"], ["horizon=nan"]),
    ("flow-horizon-inf", FLOW + ["--horizon", "inf"], ["horizon=inf"]),
    ("flow-horizon-not-multiple", FLOW + ["--etas", "0.3,0.2", "--horizon", "1"],
     ["horizon / eta must be a positive integer", "eta=0.3"]),
    ("flow-seed-negative", FLOW + ["--seed", "-1"], ["seed", "seed=-1"]),
    ("flow-threads-0", FLOW + ["--threads", "0"], ["threads", "threads=0"]),
    # flow: etas
    ("flow-etas-empty", FLOW + ["--etas", ""], ["--etas", "etas"]),
    ("flow-etas-comma", FLOW + ["--etas", ","], ["--etas"]),
    ("flow-etas-text", FLOW + ["--etas", "a,b"], ["--etas", "'a,b'"]),
    ("flow-etas-one", FLOW + ["--etas", "0.01"], ["--etas", "at least 2 distinct", "[0.01]"]),
    ("flow-etas-repeated", FLOW + ["--etas", "0.01,0.01,0.01"], ["--etas", "distinct"]),
    ("flow-etas-repeated-pair", FLOW + ["--etas", "0.01,0.005,0.01"], ["distinct", "0.01"]),
    ("flow-etas-negative", FLOW + ["--etas", "0.01,-0.005"], ["etas", "-0.005", "> 0"]),
    ("flow-etas-zero", FLOW + ["--etas", "0,0.01"], ["etas", "etas=0.0"]),
    ("flow-etas-nan", FLOW + ["--etas", "0.01,nan"], ["etas", "nan"]),
    ("flow-etas-inf", FLOW + ["--etas", "inf,0.01"], ["etas", "inf"]),
    ("flow-etas-double-comma", FLOW + ["--etas", "0.01,,0.005"], ["--etas", "no empty"]),
    # flow: bootstrap
    ("flow-bootstrap-0", FLOW + ["--bootstrap", "0"], ["bootstrap", "bootstrap=0", ">= 20"]),
    ("flow-bootstrap-19", FLOW + ["--bootstrap", "19"], ["bootstrap=19", ">= 20"]),
    ("flow-bootstrap-negative", FLOW + ["--bootstrap", "-5"], ["bootstrap=-5"]),
    ("flow-bootstrap-text", FLOW + ["--bootstrap", "lots"], ["bootstrap", "'lots'"]),
    ("flow-bootstrap-float", FLOW + ["--bootstrap", "20.5"], ["bootstrap", "'20.5'"]),
    # flow: choices and combinations
    ("flow-problem-unknown", FLOW + ["--problem", "rosenbrock"], ["--problem", "'rosenbrock'"]),
    ("flow-init-unknown", FLOW + ["--init", "zeros"], ["--init", "'zeros'"]),
    ("flow-refresh-unknown", FLOW + ["--refresh", "never"], ["--refresh", "'never'"]),
    ("flow-reduction-unknown", FLOW + ["--reduction", "max"], ["--reduction", "'max'"]),
    ("flow-window-unknown", FLOW + ["--window", "sliding"], ["--window", "'sliding'"]),
    ("flow-param-unknown", FLOW + ["--param", "frob=1"],
     ["'frob'", "valid parameters", "variances", "latent_dim"]),
    ("flow-param-unknown-scalar", FLOW + ["--problem", "scalar", "--param", "gamma=2"],
     ["'gamma'", "s2, beta, theta_init"]),
    ("flow-param-no-equals", FLOW + ["--param", "beta"], ["--param", "KEY=VALUE", "'beta'"]),
    ("flow-symmetrize-wrong-problem", FLOW + ["--symmetrize"],
     ["--symmetrize", "position-weighted", "linear-gaussian"]),
    ("flow-tau-without-time-window", FLOW + ["--tau", "0.1"], ["tau", "tau=0.1", "window='time'"]),
    ("flow-tau-negative", FLOW + ["--window", "time", "--tau", "-0.1"], ["tau", "tau=-0.1"]),
    ("flow-time-window-prior-init", FLOW + ["--window", "time", "--init", "prior"],
     ["init", "init='prior'", "window='time'"]),
    ("flow-leak-window-k-eq-n", FLOW + ["--window", "leak", "--k", "8"], ["window='leak'", "k < n"]),
    # flow: output paths
    ("flow-json-folder", FLOW + ["--json", "{d}/adir"], ["--json", "adir", "is a folder"]),
    ("flow-json-under-file", FLOW + ["--json", "{d}/afile/out.json"], ["--json", "afile", "is a file"]),
    ("flow-json-long-name", FLOW + ["--json", "{d}/" + LONG + ".json"], ["--json", "bytes", "at most"]),
    ("flow-json-empty", FLOW + ["--json", " "], ["--json", "non-empty path"]),
    ("flow-plot-folder", ["flow", "--quiet", "--plot", "{d}/adir"], ["--plot", "is a folder"]),
    ("flow-plot-under-file", ["flow", "--quiet", "--plot", "{d}/afile/p.png"], ["--plot", "is a file"]),
    ("flow-plot-long-name", ["flow", "--quiet", "--plot", "{d}/" + LONG + ".png"], ["--plot", "bytes"]),
    ("flow-plot-deep-long-path", ["flow", "--quiet", "--plot", "{d}/" + "/".join(["y" * 250] * 20)],
     ["--plot", "bytes long"]),
    # train: numbers
    ("train-n-1", TRAIN + ["--n", "1", "--out", "o"], ["n", "n=1", "2 <= n"]),
    ("train-n-text", TRAIN + ["--n", "big", "--out", "o"], ["--n", "'big'"]),
    ("train-k-0", TRAIN + ["--k", "0", "--out", "o"], ["k=0", "1 <= k <= n = 64"]),
    ("train-k-above-n", TRAIN + ["--n", "4", "--k", "8", "--out", "o"], ["k=8", "k <= n = 4"]),
    ("train-lr-0", TRAIN + ["--lr", "0", "--out", "o"], ["lr", "lr=0", "> 0"]),
    ("train-lr-negative", TRAIN + ["--lr", "-0.01", "--out", "o"], ["lr=-0.01", "> 0"]),
    ("train-lr-nan", TRAIN + ["--lr", "nan", "--out", "o"], ["lr=nan", "finite"]),
    ("train-lr-inf", TRAIN + ["--lr", "inf", "--out", "o"], ["lr=inf", "finite"]),
    ("train-lr-1e308-gd", TRAIN + ["--optimizer", "gd", "--lr", "1e308", "--out", "o"],
     ["lr", "lr=1e+308", "float32"]),
    ("train-lr-1e308-adam", TRAIN + ["--lr", "1e308", "--out", "o"], ["lr=1e+308", "float32"]),
    ("train-lr-text", TRAIN + ["--lr", "fast", "--out", "o"], ["--lr", "'fast'"]),
    ("train-epochs-0", TRAIN + ["--epochs", "0", "--out", "o"], ["epochs", "epochs=0"]),
    ("train-epochs-negative", TRAIN + ["--epochs", "-1", "--out", "o"], ["epochs=-1"]),
    ("train-lambda-negative", TRAIN + ["--lambda", "-1", "--out", "o"], ["lam (lambda)", "-1"]),
    ("train-lambda-nan", TRAIN + ["--lambda", "nan", "--out", "o"], ["lam (lambda)", "nan"]),
    ("train-seed-negative", TRAIN + ["--seed", "-3", "--out", "o"], ["seed", "seed=-3"]),
    ("train-latent-dim-0", TRAIN + ["--latent-dim", "0", "--out", "o"], ["latent_dim", "latent_dim=0"]),
    ("train-latent-dim-1-cwae", TRAIN + ["--latent-dim", "1", "--out", "o"],
     ["latent_dim", "latent_dim=1", "cwae", "D >= 2"]),
    ("train-resolution-0", TRAIN + ["--resolution", "0", "--out", "o"], ["resolution", "resolution=0"]),
    ("train-limit-0", TRAIN + ["--limit", "0", "--out", "o"], ["limit", "limit=0"]),
    ("train-limit-too-small", TRAIN + ["--n", "8", "--limit", "3", "--out", "o"],
     ["limit=3", "N=3"]),
    ("train-eval-limit-0", TRAIN + ["--eval-limit", "0", "--out", "o"], ["eval_limit", "eval_limit=0"]),
    ("train-distance-n-1", TRAIN + ["--distance-n", "1", "--out", "o"], ["distance_n", "distance_n=1"]),
    ("train-eval-every-negative", TRAIN + ["--eval-every", "-1", "--out", "o"],
     ["eval_every", "eval_every=-1"]),
    ("train-swae-directions-0", TRAIN + ["--model", "swae", "--swae-directions", "0", "--out", "o"],
     ["swae_directions", "swae_directions=0"]),
    ("train-fd-train-steps-0", TRAIN + ["--fd-train-steps", "0", "--out", "o"],
     ["fd_train_steps", "fd_train_steps=0"]),
    ("train-checkpoint-every-negative", TRAIN + ["--checkpoint-every", "-5", "--out", "o"],
     ["checkpoint_every", "checkpoint_every=-5"]),
    ("train-dist-timeout-0", TRAIN + ["--dist-timeout", "0", "--out", "o"],
     ["dist_timeout", "dist_timeout=0"]),
    ("train-dist-timeout-nan", TRAIN + ["--dist-timeout", "nan", "--out", "o"], ["dist_timeout=nan"]),
    # train: choices
    ("train-model-unknown", TRAIN + ["--model", "vae", "--out", "o"], ["--model", "'vae'"]),
    ("train-dataset-unknown", TRAIN + ["--dataset", "imagenet", "--out", "o"],
     ["dataset", "dataset='imagenet'", "'digits'"]),
    ("train-arch-unknown", TRAIN + ["--arch", "resnet", "--out", "o"], ["arch", "arch='resnet'"]),
    ("train-optimizer-unknown", TRAIN + ["--optimizer", "sgd", "--out", "o"], ["--optimizer", "'sgd'"]),
    ("train-reduction-unknown", TRAIN + ["--reduction", "avg", "--out", "o"], ["--reduction", "'avg'"]),
    ("train-init-unknown", TRAIN + ["--init", "zeros", "--out", "o"], ["--init", "'zeros'"]),
    ("train-refresh-unknown", TRAIN + ["--refresh", "never", "--out", "o"], ["--refresh", "'never'"]),
    ("train-device-unknown", TRAIN + ["--device", "tpu", "--out", "o"], ["--device", "'tpu'"]),
    ("train-arch-mismatch", TRAIN + ["--arch", "mnist", "--out", "o"],
     ["arch='mnist'", "expects inputs", "digits"]),
    # train: contradictions and state
    ("train-resume-overwrite", TRAIN + ["--resume", "--overwrite", "--out", "o"],
     ["resume", "overwrite", "resume=True, overwrite=True"]),
    ("train-resume-nothing", TRAIN + ["--resume", "--out", "{d}/adir"],
     ["--resume", "checkpoint.pt", "does not exist"]),
    ("train-distributed-outside-torchrun", TRAIN + ["--distributed", "--out", "o"],
     ["--distributed", "RANK=None"]),
    ("train-mnist-without-data-dir", TRAIN + ["--dataset", "mnist", "--out", "o"],
     ["data_dir", "'mnist'"]),
    ("train-data-dir-missing", TRAIN + ["--dataset", "mnist", "--data-dir", "{d}/nothing",
                                        "--out", "o"], ["nothing", "not a directory"]),
    ("train-data-dir-is-file", TRAIN + ["--dataset", "fashion", "--data-dir", "{d}/afile",
                                        "--out", "o"], ["afile"]),
    ("train-data-dir-empty", TRAIN + ["--dataset", "cifar10", "--data-dir", "{d}/adir",
                                      "--out", "o"], ["adir", "data_batch_1"]),
    ("train-cifar-random-bytes", TRAIN + ["--dataset", "cifar10", "--data-dir", "{d}/cifar",
                                          "--out", "o"], ["data_batch_1", "not a CIFAR-10"]),
    # train: output paths
    ("train-out-empty", TRAIN + ["--out", ""], ["out", "out=''"]),
    ("train-out-is-file", TRAIN + ["--out", "{d}/afile"], ["out=", "afile", "is a file"]),
    ("train-out-under-file", TRAIN + ["--out", "{d}/afile/run"], ["out=", "afile", "is a file"]),
    ("train-out-long-name", TRAIN + ["--out", "{d}/" + LONG], ["out=", "bytes", "at most"]),
    ("train-out-long-path", TRAIN + ["--out", "{d}/" + "/".join(["z" * 250] * 20)],
     ["out=", "bytes long"]),
    ("train-cache-dir-is-file", TRAIN + ["--cache-dir", "{d}/afile", "--out", "o"],
     ["cache_dir=", "afile", "is a file"]),
    ("train-cache-dir-long", TRAIN + ["--cache-dir", "{d}/" + LONG, "--out", "o"],
     ["cache_dir=", "bytes"]),
    # check
    ("check-unknown-id", ["check", "--only", "no-such-check"], ["no-such-check"]),
    ("check-json-folder", ["check", "--json", "{d}/adir"], ["--json", "is a folder"]),
    ("check-json-under-file", ["check", "--json", "{d}/afile/c.json"], ["--json"]),
    ("check-json-missing-parent", ["check", "--json", "{d}/none/c.json"], ["--json", "none"]),
    # bench
    ("bench-memory-n-0", ["bench", "memory", "--n", "0"], ["n", "n=0", "2 <= n"]),
    ("bench-memory-n-1", ["bench", "memory", "--n", "1"], ["n=1"]),
    ("bench-memory-k-0", ["bench", "memory", "--ks", "0,64"], ["--ks", "'0,64'", ">= 1"]),
    ("bench-memory-ks-text", ["bench", "memory", "--ks", "one"], ["--ks", "'one'"]),
    ("bench-costs-n-0", ["bench", "costs", "--n", "0"], ["--n", "'0'"]),
    ("bench-costs-threads-0", ["bench", "costs", "--threads", "0"], ["threads", "threads=0"]),
    ("bench-flow-json-folder", ["bench", "flow", "--json", "{d}/adir"], ["--json", "is a folder"]),
    ("bench-step-k-text", ["bench", "step", "--k", "x"], ["--k", "'x'"]),
    ("bench-memory-k-above-n", ["bench", "memory", "--ks", "1,128"], ["k (in --ks)", "=128", "n = 64"]),
    ("bench-memory-resolution-17", ["bench", "memory", "--resolutions", "17"],
     ["resolutions", "powers of two", "resolution=17"]),
    ("bench-memory-steps-0", ["bench", "memory", "--steps", "0"], ["steps", "steps=0"]),
    ("bench-memory-timeout-0", ["bench", "memory", "--timeout", "0"], ["timeout", "timeout=0"]),
    ("bench-memory-child-threads-0", ["bench", "memory", "--child-threads", "0"],
     ["child_threads", "child_threads=0"]),
    ("bench-memory-json-folder", ["bench", "memory", "--json", "{d}/adir"], ["--json", "is a folder"]),
    ("bench-threads-0", ["bench", "memory", "--threads", "0"], ["threads", "threads=0"]),
    ("bench-costs-json-under-file", ["bench", "costs", "--json", "{d}/afile/b.json"], ["--json"]),
    ("bench-step-json-folder", ["bench", "step", "--json", "{d}/adir"], ["--json", "is a folder"]),
    ("bench-flow-json-folder", ["bench", "flow", "--json", "{d}/adir"], ["--json", "is a folder"]),
    ("bench-unknown", ["bench", "speed"], ["'speed'"]),
    # the command itself
    ("unknown-command", ["fly"], ["'fly'"]),
]


@pytest.mark.parametrize("name,argv,pieces", CLI, ids=[r[0] for r in CLI])
def test_cli(work, capsys, name, argv, pieces):
    argv = [a.replace("{d}", str(work)) for a in argv]
    before = _snapshot(work)
    t0 = time.perf_counter()
    try:
        rc = cli_main(argv)
    except SystemExit as exc:                     # argparse's own errors (types, choices)
        rc = exc.code
    took = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == 2, f"{name}: exit status {rc}; stderr {err!r}"
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, f"{name}: expected one error line in {err!r}"
    for piece in pieces:
        assert piece in lines[0], f"{name}: {piece!r} not in {lines[0]!r}"
    assert _snapshot(work) == before, f"{name}: wrote {set(_snapshot(work)) - set(before)}"
    assert took < FAST, f"{name}: {took:.1f} s to the error"


def test_train_warns_on_options_that_do_not_apply(work, capsys, monkeypatch):
    """Options without effect on the chosen model/dataset: a warning, before the work."""
    from mowtheory.cli import train as tcli

    def stop(cfg):
        raise ValueError("stopped before training (test)")
    monkeypatch.setattr("mowtheory.train.trainer.train", stop)
    assert cli_main(TRAIN + ["--swae-directions", "10", "--data-dir", str(work), "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert "warning: --swae-directions 10 applies to --model swae only" in err
    assert "warning: --data-dir applies to datasets read from files" in err and tcli


# ------------------------------------------------------------------------------ API table
def _api():
    from mowtheory import costs, testing as mt
    from mowtheory._io import check_output_dir, check_output_file
    from mowtheory.flow import get_problem, run_study
    from mowtheory.flow.sme import check_sme
    from mowtheory.train import TrainConfig
    from mowtheory.train.checkpoint import load_checkpoint
    from mowtheory.train.data import load_dataset

    def cfg(**kw):
        return TrainConfig(**dict(dict(progress=False, fd=False, images=False, out="o"), **kw))

    def study(**kw):
        return run_study("linear-gaussian", **dict(dict(replicas=16, horizon=0.2,
                                                        etas=[0.02, 0.01, 0.005]), **kw))
    g = torch.Generator().manual_seed(0)
    z32 = torch.randn(8, 3, generator=g)
    H1, H2 = torch.randn(7, 3, generator=g, dtype=torch.float64), \
        torch.randn(7, 3, generator=g, dtype=torch.float64)
    Z1, Y = torch.randn(1, 3, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    wae = costs.get("wae")

    class Tiny:                                    # a study of 4 replicas, for check_sme
        pass
    rows = [
        # run_study: the etas rule, numbers, flags
        ("study-etas-empty", lambda: study(etas=[]), ["etas", "[]", "at least 2"]),
        ("study-etas-one", lambda: study(etas=[0.01]), ["etas", "[0.01]"]),
        ("study-etas-repeated", lambda: study(etas=[0.01, 0.01, 0.01]), ["distinct", "[0.01]"]),
        ("study-etas-string", lambda: study(etas="0.01,0.005"), ["etas", "'0.01,0.005'"]),
        ("study-etas-negative", lambda: study(etas=[0.01, -1]), ["etas", "-1"]),
        ("study-etas-nan", lambda: study(etas=[0.01, NAN]), ["etas", "nan"]),
        ("study-etas-none-item", lambda: study(etas=[0.01, None]), ["etas", "None"]),
        ("study-replicas-1", lambda: study(replicas=1), ["replicas", "replicas=1"]),
        ("study-replicas-float", lambda: study(replicas=16.5), ["replicas", "16.5"]),
        ("study-replicas-bool", lambda: study(replicas=True), ["replicas", "True"]),
        ("study-replicas-huge", lambda: study(replicas=10 ** 12), ["replicas=1000000000000", "GiB"]),
        ("study-bootstrap-5", lambda: study(bootstrap=5), ["bootstrap", "bootstrap=5", ">= 20"]),
        ("study-bootstrap-negative", lambda: study(bootstrap=-1), ["bootstrap", "bootstrap=-1"]),
        ("study-record-0", lambda: study(record=0), ["record", "record=0"]),
        ("study-record-huge", lambda: study(record=10 ** 8), ["record", "record=100000000"]),
        ("study-seed-negative", lambda: study(seed=-1), ["seed", "seed=-1"]),
        ("study-horizon-0", lambda: study(horizon=0), ["horizon", "horizon=0"]),
        ("study-n-1", lambda: study(n=1), ["n", "n=1"]),
        ("study-k-0", lambda: study(k=0), ["k", "k=0"]),
        ("study-balanced-string", lambda: study(balanced="False"), ["balanced", "'False'", "bool"]),
        ("study-progress-string", lambda: study(progress="no"), ["progress", "'no'", "bool"]),
        ("study-problem-unknown", lambda: run_study("rosenbrock"), ["problem", "'rosenbrock'"]),
        ("study-params-unknown", lambda: study(params={"frob": 1}), ["'frob'", "valid parameters"]),
        ("study-init-unknown", lambda: study(init="zeros"), ["init", "'zeros'"]),
        ("study-window-unknown", lambda: study(window="sliding"), ["window", "'sliding'"]),
        ("problem-unknown-param", lambda: get_problem("linear-gaussian", frob=1),
         ["'frob'", "linear-gaussian", "variances, latent_dim, init_scale"]),
        ("problem-unknown-param-mmd", lambda: get_problem("mmd-gaussian", sigma=1),
         ["'sigma'", "bandwidth2"]),
        ("problem-unknown-name", lambda: get_problem("nope"), ["problem", "'nope'"]),
        ("sme-tolerance-0", lambda: check_sme(Tiny(), tolerance=0), ["tolerance", "tolerance=0"]),
        ("sme-tolerance-nan", lambda: check_sme(Tiny(), tolerance=NAN), ["tolerance", "nan"]),
        # TrainConfig
        ("config-lr-0", lambda: cfg(lr=0), ["lr", "lr=0"]),
        ("config-lr-huge", lambda: cfg(lr=1e308), ["lr", "1e+308", "float32"]),
        ("config-lr-string", lambda: cfg(lr="fast"), ["lr", "'fast'"]),
        ("config-n-1", lambda: cfg(n=1), ["n", "n=1"]),
        ("config-k-above-n", lambda: cfg(n=4, k=5), ["k", "k=5"]),
        ("config-epochs-0", lambda: cfg(epochs=0), ["epochs", "epochs=0"]),
        ("config-epochs-float", lambda: cfg(epochs=1.5), ["epochs", "1.5"]),
        ("config-lam-negative", lambda: cfg(lam=-1), ["lam (lambda)", "-1"]),
        ("config-balanced-string", lambda: cfg(balanced="False"), ["balanced", "'False'", "bool"]),
        ("config-fd-int", lambda: cfg(fd=1), ["fd", "fd=1", "bool"]),
        ("config-resume-string", lambda: cfg(resume="yes"), ["resume", "'yes'"]),
        ("config-out-empty", lambda: cfg(out=""), ["out", "out=''"]),
        ("config-out-none", lambda: cfg(out=None), ["out", "None"]),
        ("config-out-file", lambda: cfg(out="afile"), ["out=", "afile", "is a file"]),
        ("config-cache-dir-file", lambda: cfg(cache_dir="afile"), ["cache_dir=", "afile"]),
        ("config-resume-overwrite", lambda: cfg(resume=True, overwrite=True),
         ["resume=True, overwrite=True"]),
        ("config-latent-dim-1-cwae", lambda: cfg(latent_dim=1), ["latent_dim=1", "cwae"]),
        ("config-latent-dim-0", lambda: cfg(model="wae", latent_dim=0), ["latent_dim", "=0"]),
        ("config-model-unknown", lambda: cfg(model="vae"), ["model", "'vae'"]),
        ("config-optimizer-unknown", lambda: cfg(optimizer="sgd"), ["optimizer", "'sgd'"]),
        ("config-device-unknown", lambda: cfg(device="tpu"), ["device", "'tpu'"]),
        ("config-reduction-unknown", lambda: cfg(reduction="avg"), ["reduction", "'avg'"]),
        ("config-init-unknown", lambda: cfg(init="zeros"), ["init", "'zeros'"]),
        ("config-refresh-unknown", lambda: cfg(refresh="never"), ["refresh", "'never'"]),
        ("config-seed-negative", lambda: cfg(seed=-1), ["seed", "seed=-1"]),
        ("config-distance-n-1", lambda: cfg(distance_n=1), ["distance_n", "distance_n=1"]),
        ("config-dist-timeout-inf", lambda: cfg(dist_timeout=INF), ["dist_timeout", "inf"]),
        ("config-limit-0", lambda: cfg(limit=0), ["limit", "limit=0"]),
        # costs: names, parameters, dtypes, shapes, values
        ("cost-unknown", lambda: costs.get("vae"), ["name", "'vae'"]),
        ("cost-unknown-param", lambda: costs.get("wae", bandwidth=1), ["'bandwidth'", "wae"]),
        ("cost-half-mmd", lambda: costs.mmd(z32.half(), z32.half()),
         ["z", "float32 or float64", "torch.float16"]),
        ("cost-bf16-cw", lambda: costs.cramer_wold(z32.bfloat16()), ["z", "torch.bfloat16"]),
        ("cost-half-energy", lambda: costs.energy_distance(z32.half(), z32.half()),
         ["z", "torch.float16"]),
        ("cost-int-latents", lambda: costs.cramer_wold(torch.ones(8, 3, dtype=torch.int64)),
         ["z", "torch.int64"]),
        ("cost-list-latents", lambda: costs.cramer_wold([[0.0, 1.0]]), ["z", "list"]),
        ("cost-1d-latents", lambda: costs.cramer_wold(torch.randn(8)), ["z", "shape (8,)"]),
        ("cost-nan-latents", lambda: costs.mmd(z32 * NAN, z32), ["z", "NaN or infinite"]),
        ("cost-prior-dims", lambda: costs.mmd(z32, torch.randn(8, 2)), ["y", "D=2", "D=3"]),
        ("cost-prior-dtype", lambda: costs.mmd(z32, z32.double()), ["y", "torch.float64"]),
        ("cost-cw-d1", lambda: costs.cramer_wold(torch.randn(5, 1)), ["z", "D=1", "D >= 2"]),
        ("split-stale-cache", lambda: wae.split(H2, Z1, Y, cache=wae.init_cache(H1, n=8)),
         ["cache", "another window"]),
        ("split-stale-cache-cw", lambda: costs.get("cwae").split(
            H2, Z1, cache=costs.get("cwae").init_cache(H1, n=8)), ["cache", "another window"]),
        ("split-cache-wrong-shape", lambda: wae.split(H2[:5], Z1, Y, cache=wae.init_cache(H1, n=8)),
         ["cache"]),
        # hypothesis strategies and checkers
        ("strategy-min-n-above-max", lambda: mt.latent_batches(min_n=5, max_n=2),
         ["min_n", "max_n", "min_n=5 > max_n=2"]),
        ("strategy-min-d-above-max", lambda: mt.latent_batches(min_d=4, max_d=3),
         ["min_d=4 > max_d=3"]),
        ("strategy-min-n-0", lambda: mt.latent_batches(min_n=0), ["min_n", "min_n=0"]),
        ("strategy-bound-negative", lambda: mt.latent_batches(bound=-1), ["bound", "bound=-1"]),
        ("strategy-mow-cases-min-above-max", lambda: mt.mow_cases(min_n=9, max_n=3),
         ["min_n=9 > max_n=3"]),
        ("strategy-mow-cases-d", lambda: mt.mow_cases(min_d=5, max_d=2), ["min_d=5 > max_d=2"]),
        ("machine-cost-without-split", lambda: mt.window_machine(8, 1, 2, cost=costs.get("swae")),
         ["cost", "supports_split"]),
        ("machine-k-above-n", lambda: mt.window_machine(4, 5, 2), ["k", "k=5"]),
        ("checker-z-list", lambda: mt.check_permutation_invariant(lambda z: z.sum(), [[1.0]]),
         ["z", "(..., n, D)"]),
        ("checker-F-shape", lambda: mt.check_permutation_invariant(lambda z: z.sum(0), z32.double()),
         ["F(z, y)", "shape (3,)", "inconclusive"]),
        ("checker-F-nan", lambda: mt.check_permutation_invariant(lambda z: z.sum() * NAN,
                                                                 z32.double()),
         ["F(z, y)", "non-finite", "inconclusive"]),
        ("checker-F-float", lambda: mt.check_permutation_invariant(lambda z: 1.0, z32.double()),
         ["F(z, y)", "float"]),
        # output paths, checkpoints, data
        ("path-file-is-folder", lambda: check_output_file("--json", "adir"), ["--json", "is a folder"]),
        ("path-dir-is-file", lambda: check_output_dir("out", "afile"), ["out", "is a file"]),
        ("path-under-file", lambda: check_output_file("--plot", "afile/x.png"), ["--plot", "afile"]),
        ("path-not-a-path", lambda: check_output_file("--json", 3), ["--json", "3"]),
        ("path-nul", lambda: check_output_file("--json", "a\0b"), ["--json", "NUL"]),
        ("checkpoint-is-folder", lambda: load_checkpoint("adir"), ["adir", "is a folder"]),
        ("data-unknown", lambda: load_dataset("imagenet"), ["imagenet"]),
        ("data-split-unknown", lambda: load_dataset("digits", split="validation"),
         ["split", "'validation'"]),
    ]
    # every registered cost refuses half precision with the same message
    for name in costs.names():
        F = costs.get(name)
        zz = torch.randn(8, 3, generator=g).half()
        rows.append((f"cost-half-{name}",
                     (lambda F=F, zz=zz: F(zz, zz) if F.needs_prior else F(zz)),
                     ["float32 or float64", "torch.float16"]))
    return rows


API = _api()


@pytest.mark.parametrize("name,call,pieces", API, ids=[r[0] for r in API])
def test_api(work, name, call, pieces):
    before = _snapshot(work)
    t0 = time.perf_counter()
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    msg = str(info.value)
    for piece in pieces:
        assert piece in msg, f"{name}: {piece!r} not in message {msg!r}"
    assert _snapshot(work) == before
    assert time.perf_counter() - t0 < FAST


def test_corpus_size():
    assert len(CLI) + len(API) >= 150, (len(CLI), len(API))


def test_energy_distance_does_not_overflow_in_float32():
    """Finite float32 inputs of scale 1e30 (their squares overflow float32): a finite value,
    the scale times that of the rescaled inputs (the distance is 1-homogeneous)."""
    from mowtheory import costs
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    big = costs.energy_distance(z * 1e30, y * 1e30)
    assert torch.isfinite(big)
    assert torch.allclose(big / 1e30, costs.energy_distance(z, y), rtol=1e-5)
    assert os.environ is not None
