"""Training faults survived with the whole state: the output lock, SIGTERM/SIGINT, a full
disk, corrupted checkpoints, atomic outputs, the global RNG across a resume.

Each test plants the fault from outside the package (a second lock holder, a signal, a
file-size limit, a flipped byte, a failing rename, a model drawing from the global RNG) and
checks what the run says and what it keeps.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from mowtheory import _io
from mowtheory.cli import main as cli_main
from mowtheory.train import checkpoint as ckpt
from mowtheory.train._lock import OutputLock

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
SMALL = dict(model="wae", dataset="digits", n=8, k=1, limit=24, eval_limit=32, epochs=2,
             eval_every=5, progress=False, fd=False, images=False)


def _argv(out, *extra, limit=24, epochs=2):
    return ["train", "--model", "wae", "--dataset", "digits", "--n", "8", "--k", "1",
            "--limit", str(limit), "--eval-limit", "32", "--epochs", str(epochs),
            "--eval-every", "5", "--no-fd", "--no-images", "--no-progress", "--device", "cpu",
            "--out", str(out), *extra]


def _train(out, **kw):
    from mowtheory.train import train
    return train(dict(SMALL, out=str(out), **kw))


def _rows(out):
    return [{k: v for k, v in json.loads(s).items() if k != "time_s"}
            for s in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def _same(a, b, where="checkpoint"):
    """Every tensor (bit for bit) and every other leaf of two nested states are equal."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (where, a.keys(), b.keys())
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif hasattr(a, "shape") and hasattr(a, "dtype"):          # numpy arrays (RNG states)
        assert (a == b).all(), where
    else:
        assert a == b, (where, a, b)


def _state(out):
    s = ckpt.load_checkpoint(Path(out) / "checkpoint.pt")
    s.pop("config")                                   # out, resume, stop_after_steps differ
    s["last_metrics"] = {k: v for k, v in s["last_metrics"].items() if k != "time_s"}
    return s


def _one_error_line(err):
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------------------ lock
def test_second_writer_refused_naming_the_holder_pid(tmp_path, capsys, monkeypatch):
    from mowtheory.train import setup
    out = tmp_path / "run"
    loads = []
    real_load = setup.load_model
    monkeypatch.setattr(setup, "load_model", lambda *a, **kw: loads.append(1) or real_load(*a, **kw))
    with OutputLock(out):
        rc = cli_main(_argv(out))
        assert loads == []                          # refused before any work (no data loaded)
        line = _one_error_line(capsys.readouterr().err)
        assert rc == 2 and f"PID {os.getpid()}" in line and "in use by another run" in line
        assert sorted(p.name for p in out.iterdir()) == [".lock"]   # nothing else written
        rc = cli_main(_argv(out, "--overwrite"))                   # --overwrite cannot wipe it
        assert rc == 2 and "in use" in capsys.readouterr().err and loads == []
    assert cli_main(_argv(out, "--epochs", "1")) == 0              # released: runs


def test_lock_of_a_dead_holder_does_not_block(tmp_path):
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os
        from mowtheory.train._lock import OutputLock
        OutputLock({str(out)!r}).acquire()
        os._exit(0)                       # dies holding the lock (as after SIGKILL)
    """)], env=ENV, timeout=60)
    assert p.returncode == 0 and (out / ".lock").exists()
    with OutputLock(out):
        pass


# ------------------------------------------------------------------------------ signals
@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 143),
                                        pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow)])
def test_signal_finishes_the_step_checkpoints_and_resume_matches(tmp_path, sig, status):
    """A signal mid-epoch: exit 128+signum naming the checkpoint; --resume then ends with
    every tensor of the checkpoint and every metrics line of an uninterrupted run."""
    full, part = tmp_path / "full", tmp_path / "part"
    argv = [sys.executable, "-m", "mowtheory", *_argv(part, limit=200)]
    p = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.time() + 200
    metrics = part / "metrics.jsonl"
    while time.time() < deadline and p.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            p.send_signal(sig)
            break
        time.sleep(0.01)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == status, err
    assert f"received {signal.Signals(sig).name}" in err and "checkpoint.pt" in err, err
    state = ckpt.load_checkpoint(part / "checkpoint.pt")
    assert f"finished step {state['step']}" in err and 0 < state["step"] < 400
    rep = json.loads((part / "report.json").read_text())
    assert rep["status"] == "interrupted" and rep["step"] == state["step"]

    assert cli_main(_argv(part, "--resume", limit=200)) == 0
    assert cli_main(_argv(full, limit=200)) == 0
    _same(_state(full), _state(part))
    assert _rows(full) == _rows(part)


@pytest.mark.parametrize("at", [10, 12, 13])   # due an evaluation, an epoch's end, neither
def test_a_signal_at_any_step_keeps_every_metrics_line(tmp_path, monkeypatch, at):
    """Deterministic twin of the test above: SIGTERM delivered in-process right after step
    ``at`` (eval_every=5, 12 steps an epoch). The run stops there; the resumed run's metrics
    lines and checkpoint equal an uninterrupted run's, including the line due at ``at``."""
    from mowtheory.train._signals import Interrupted
    from mowtheory.train.trainer import Trainer
    full, part = tmp_path / "full", tmp_path / "part"
    _train(full, limit=12)
    original = Trainer.step

    def step_then_signal(self, x):
        original(self, x)
        if self.state.step == at:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(Trainer, "step", step_then_signal)
    with pytest.raises(Interrupted) as info:
        _train(part, limit=12)
    assert info.value.step == at and info.value.exit_status == 143
    monkeypatch.setattr(Trainer, "step", original)
    assert ckpt.load_checkpoint(part / "checkpoint.pt")["step"] == at
    _train(part, limit=12, resume=True)
    _same(_state(full), _state(part))
    assert _rows(full) == _rows(part)


# ------------------------------------------------------------------------------ full disk
FSIZE = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from mowtheory.cli import main
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.timeout(200)
def test_full_disk_says_which_file_and_keeps_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    _train(out, stop_after_steps=7, checkpoint_every=3)
    before = ckpt.load_checkpoint(out / "checkpoint.pt")
    rows = (out / "metrics.jsonl").read_text()
    size = (out / "checkpoint.pt").stat().st_size
    p = subprocess.run([sys.executable, "-c", FSIZE, str(size // 2),
                        *_argv(out, "--resume", "--checkpoint-every", "3")],
                       env=ENV, capture_output=True, text=True, timeout=150)
    line = _one_error_line(p.stderr)
    assert p.returncode == 2, p.stderr
    assert "file too large" in line and "checkpoint.pt" in line, line
    assert f"checkpoint {out / 'checkpoint.pt'} (step 7) is kept" in line, line
    _same(ckpt.load_checkpoint(out / "checkpoint.pt"), before)      # the old one, whole
    assert (out / "metrics.jsonl").read_text().startswith(rows[: rows.index("\n") + 1])
    assert not [f for f in out.iterdir() if f.name.endswith(".tmp")]


# ------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    out = tmp_path_factory.mktemp("ck") / "run"
    _train(out, stop_after_steps=7)
    return out


def _resume_error(out, capsys):
    rc = cli_main(_argv(out, "--resume"))
    return rc, _one_error_line(capsys.readouterr().err)


def _copy_with(stopped, tmp_path, edit):
    out = tmp_path / "run"
    out.mkdir()
    state = ckpt.load_checkpoint(stopped / "checkpoint.pt")
    edit(state)
    ckpt.save_checkpoint(out / "checkpoint.pt", state)
    return out


def test_flipped_payload_byte_refused_by_checksum(stopped, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    data = bytearray((stopped / "checkpoint.pt").read_bytes())
    data[len(data) * 2 // 3] ^= 0x01                                # inside tensor data
    (out / "checkpoint.pt").write_bytes(bytes(data))
    rc, line = _resume_error(out, capsys)
    assert rc == 2 and "checksum mismatch" in line and "checkpoint.pt" in line


@pytest.mark.parametrize("edit,pieces", [
    (lambda s: s.pop("optimizer"), ["'optimizer'", "missing"]),
    (lambda s: s["model"].__setitem__(next(iter(s["model"])), torch.zeros(3)),
     ["model.", "shape (3,)"]),
    (lambda s: next(iter(s["model"].values())).fill_(float("nan")), ["model.", "NaN"]),
    (lambda s: s.__setitem__("step", -4), ["'step'", "-4"]),
    (lambda s: s.__setitem__("acc", torch.tensor([1.0, float("inf"), 0.0], dtype=torch.float64)),
     ["'acc'", "non-finite"]),
    (lambda s: s["mow"]["window"].__setitem__("buffer", s["mow"]["window"]["buffer"] * float("nan")),
     ["mow.window.buffer", "NaN"]),
    (lambda s: s.__setitem__("pos", 10 ** 6), ["'pos'", "beyond"]),
])
def test_invalid_checkpoint_fields_named(stopped, tmp_path, capsys, edit, pieces):
    out = _copy_with(stopped, tmp_path, edit)
    rc, line = _resume_error(out, capsys)
    assert rc == 2, line
    for piece in pieces:
        assert piece in line, (piece, line)


def test_checkpoint_that_is_a_folder(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoint.pt").mkdir(parents=True)
    for extra in (("--resume",), ("--overwrite",)):
        rc = cli_main(_argv(out, *extra))
        line = _one_error_line(capsys.readouterr().err)
        assert rc == 2 and "is a folder" in line, line


# ------------------------------------------------------------------------------ atomic outputs
def test_atomic_writer_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    _io.atomic_write_json(path, {"v": 1, "x": float("nan")})
    assert json.loads(path.read_text()) == {"v": 1, "x": None}       # NaN -> null

    def broken(*a):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(_io.os, "replace", broken)
    with pytest.raises(OSError) as info:
        _io.atomic_write_json(path, {"v": 2})
    assert info.value.filename == str(path)
    assert json.loads(path.read_text()) == {"v": 1, "x": None}
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.json"]


@pytest.mark.parametrize("argv_of,name", [
    (lambda d: ["flow", "--replicas", "16", "--etas", "0.02,0.01,0.005", "--horizon", "0.1",
                "--no-controls", "--bootstrap", "20", "--quiet", "--no-plot",
                "--json", str(d / "out.json")], "out.json"),
    (lambda d: ["flow", "--replicas", "16", "--etas", "0.02,0.01,0.005", "--horizon", "0.1",
                "--no-controls", "--bootstrap", "20", "--quiet", "--plot", str(d / "out.png")],
     "out.png"),
    (lambda d: _argv(d / "run", "--epochs", "1"), "run/metrics.jsonl"),
])
def test_outputs_go_through_the_atomic_writer(tmp_path, monkeypatch, capsys, argv_of, name):
    """A write that fails at the rename leaves the previous file whole (written in place, it
    would have been truncated), and the CLI says so in one line."""
    target = tmp_path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("OLD")
    real = os.replace

    def broken(src, dst, *a, **kw):
        if Path(dst).name == Path(name).name:
            raise OSError(28, "No space left on device")
        return real(src, dst, *a, **kw)
    monkeypatch.setattr(_io.os, "replace", broken)
    rc = cli_main(argv_of(tmp_path))
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and "no space left" in line.lower() and Path(name).name in line, line
    assert target.read_text() == "OLD"
    assert not [f for f in target.parent.iterdir() if f.name.endswith(".tmp")]


def test_resume_truncates_metrics_atomically(stopped, tmp_path, monkeypatch, capsys):
    """--resume rewrites metrics.jsonl beside it and renames: a failure keeps every row."""
    out = tmp_path / "run"
    out.mkdir()
    for f in ("checkpoint.pt", "metrics.jsonl"):
        (out / f).write_bytes((stopped / f).read_bytes())
    with open(out / "metrics.jsonl", "a") as fh:                   # rows past the checkpoint
        fh.write(json.dumps({"step": 999}) + "\n" + '{"step": 1000, "half-writ')
    before = (out / "metrics.jsonl").read_text()
    real = os.replace

    def broken(src, dst, *a, **kw):
        if Path(dst).name == "metrics.jsonl":
            raise OSError(28, "No space left on device")
        return real(src, dst, *a, **kw)
    monkeypatch.setattr(_io.os, "replace", broken)
    assert cli_main(_argv(out, "--resume")) == 2
    assert "metrics.jsonl" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text() == before
    monkeypatch.setattr(_io.os, "replace", real)
    assert cli_main(_argv(out, "--resume")) == 0
    assert all(r["step"] < 999 for r in _rows(out))


# ------------------------------------------------------------------------------ global RNG
def _dropout_models(monkeypatch):
    """Models whose encoder draws from the global RNG (dropout), planted from outside."""
    from mowtheory.train import models
    build = models.build_autoencoder

    def with_dropout(*a, **kw):
        m = build(*a, **kw)
        enc = m.encode
        m.encode = lambda x: torch.nn.functional.dropout(enc(x), 0.3, training=True)
        return m
    monkeypatch.setattr(models, "build_autoencoder", with_dropout)


def test_global_rng_seeded_and_restored_last(tmp_path, monkeypatch):
    """Two uninterrupted runs from different global RNG states save the same checkpoint; a
    run stopped and resumed (its set-up drawing from the global RNG in between) saves every
    tensor of the uninterrupted one, dropout included."""
    _dropout_models(monkeypatch)
    torch.manual_seed(1)
    _train(tmp_path / "a")
    torch.manual_seed(2)
    _train(tmp_path / "b")
    _same(_state(tmp_path / "a"), _state(tmp_path / "b"))
    _train(tmp_path / "c", stop_after_steps=13)
    torch.randn(1000)                                   # the caller moves the global stream
    from mowtheory.train import trainer
    real = trainer.Evaluator.__init__

    def drawing_setup(self, *a, **kw):                  # set-up that consumes the global RNG
        torch.randn(7)
        real(self, *a, **kw)
    monkeypatch.setattr(trainer.Evaluator, "__init__", drawing_setup)
    _train(tmp_path / "c", resume=True)
    _same(_state(tmp_path / "a"), _state(tmp_path / "c"))
    assert _rows(tmp_path / "a") == _rows(tmp_path / "c")


# ------------------------------------------------------------------------------ kill -9 by phase
# A real `mowtheory train` process that SIGKILLs itself at a named phase (the test plants the
# injector from outside; nothing in the package knows about it).
INJECT = textwrap.dedent("""
    import os, signal, sys
    from mowtheory import _io
    from mowtheory.cli import main
    from mowtheory.train import checkpoint as ckpt, trainer as T
    phase, calls = sys.argv[1], {"n": 0}

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def after(obj, name, when):
        real = getattr(obj, name)

        def hooked(*a, **kw):
            calls["n"] += 1
            if when(calls["n"], a):
                die()
            return real(*a, **kw)
        setattr(obj, name, hooked)

    if phase == "window-init":        # the first write after the window was initialised
        after(_io, "atomic_write_text", lambda n, a: str(a[0]).endswith("metrics.jsonl"))
    elif phase == "evaluation":       # inside the second evaluation
        T.Evaluator.__call__, real_eval = None, T.Evaluator.__call__
        def ev(self):
            calls["n"] += 1
            if calls["n"] == 2:
                die()
            return real_eval(self)
        T.Evaluator.__call__ = ev
    elif phase == "checkpoint-write":  # half-way through writing the second checkpoint
        real_write = ckpt._Summing.write
        def write(self, data):
            if self.size > 50_000 and calls.setdefault("ck", 0) >= 1:
                die()
            return real_write(self, data)
        real_save = ckpt.save_checkpoint
        def save(path, state):
            r = real_save(path, state)
            calls["ck"] = calls.get("ck", 0) + 1
            return r
        ckpt._Summing.write, ckpt.save_checkpoint = write, save
    elif phase == "resume-truncate":  # while --resume rewrites metrics.jsonl (temp written)
        real_open = _io.atomic_open
        import contextlib
        @contextlib.contextmanager
        def opened(path, mode="wb"):
            with real_open(path, mode) as fh:
                yield fh
                if str(path).endswith("metrics.jsonl"):
                    fh.flush()
                    die()
        _io.atomic_open = opened
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("phase", [   # one phase in the default suite, the rest slow (~40 s each)
    pytest.param("window-init", marks=pytest.mark.slow),
    pytest.param("evaluation", marks=pytest.mark.slow),
    "checkpoint-write",
    pytest.param("resume-truncate", marks=pytest.mark.slow)])
def test_kill_at_phase_then_resume_matches_uninterrupted(tmp_path, phase):
    full, part = tmp_path / "full", tmp_path / "part"
    argv = _argv(part, "--checkpoint-every", "4", limit=40)

    def run(*extra, inject=None):
        cmd = ([sys.executable, "-c", INJECT, inject] if inject else
               [sys.executable, "-m", "mowtheory"]) + argv + list(extra)
        return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=240)
    if phase == "resume-truncate":
        r = run(inject="evaluation")                 # a run to resume, with rows to drop
        assert r.returncode == -signal.SIGKILL, r.stderr
        r = run("--resume", inject=phase)
    else:
        r = run(inject=phase)
    assert r.returncode == -signal.SIGKILL, r.stderr
    resume = ("--resume",) if (part / "checkpoint.pt").exists() else ("--overwrite",)
    r = run(*resume)
    assert r.returncode == 0, r.stderr
    assert cli_main(_argv(full, "--checkpoint-every", "4", limit=40)) == 0
    _same(_state(full), _state(part))
    assert _rows(full) == _rows(part)
