"""Faults: SIGKILL at any moment, kill and resume, non-finite losses, long runs (memory).

- checkpoints are written atomically: a writer killed with SIGKILL at random moments always
  leaves a checkpoint that loads and is one complete version;
- a training run killed with SIGKILL mid-epoch and resumed with ``--resume`` ends with the
  weights (bit for bit) and metrics of an uninterrupted run;
- a non-finite loss stops training with a message naming the step and the loss parts, keeps
  the last good checkpoint and exits with status 3;
- soak: MoW steps keep memory flat (the window never holds an autograd graph); the fast
  variant runs by default, 20,000 steps are marked slow.
"""
import json
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def _train_argv(out, *extra, limit=300, epochs=2):
    return [sys.executable, "-m", "mowtheory", "train", "--model", "wae", "--dataset", "digits",
            "--n", "8", "--k", "1", "--limit", str(limit), "--eval-limit", "32",
            "--epochs", str(epochs), "--eval-every", "50", "--checkpoint-every", "20",
            "--no-fd", "--no-images", "--no-progress", "--device", "cpu", "--out", str(out),
            *extra]


def _weights(out):
    from mowtheory.train import checkpoint as ckpt
    return ckpt.load_checkpoint(Path(out) / "checkpoint.pt")["model"]


def _rows(out):
    return [{k: v for k, v in json.loads(s).items() if k != "time_s"}
            for s in (Path(out) / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------ atomic writes
WRITER = textwrap.dedent("""
    import sys, torch
    from mowtheory.train.checkpoint import save_checkpoint
    path = sys.argv[1]
    big = torch.arange(3_000_000, dtype=torch.float64)        # ~24 MB: writes take a while
    i = 0
    while True:
        i += 1
        save_checkpoint(path, {"format": 1, "version": i, "payload": big + i, "check": i})
        print(i, flush=True)
""")


@pytest.mark.timeout(120)
def test_sigkill_while_writing_never_leaves_a_broken_checkpoint(tmp_path):
    from mowtheory.train import checkpoint as ckpt
    path = tmp_path / "checkpoint.pt"
    rng = random.Random(0)
    seen = set()
    for trial in range(8):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=ENV,
                             stdout=subprocess.PIPE, text=True)
        if trial == 0 or not path.exists():
            p.stdout.readline()                       # a first version exists
        time.sleep(rng.uniform(0.0, 0.4))             # then kill at a random moment
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        state = ckpt.load_checkpoint(path)            # never raises: always a whole file
        v = state["version"]
        assert state["check"] == v and float(state["payload"][0]) == v
        assert float(state["payload"][-1]) == 3_000_000 - 1 + v
        seen.add(v)
    # the only leftovers are temporary files, never a half-written checkpoint.pt; the trainer
    # removes them when it starts (remove_stale_temporaries)
    for f in tmp_path.iterdir():
        assert f.name == "checkpoint.pt" or (f.name.startswith(".checkpoint.pt.")
                                            and f.name.endswith(".tmp")), f.name
    ckpt.remove_stale_temporaries(path)
    assert [f.name for f in tmp_path.iterdir()] == ["checkpoint.pt"]
    assert seen


# ------------------------------------------------------------------------------ kill + resume
@pytest.mark.timeout(300)
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    r = subprocess.run(_train_argv(full), env=ENV, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    steps_per_epoch, total = 300, 600

    p = subprocess.Popen(_train_argv(part), env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    from mowtheory.train import checkpoint as ckpt
    killed_at = None
    deadline = time.time() + 200
    while time.time() < deadline and p.poll() is None:
        ck = part / "checkpoint.pt"
        if ck.exists():
            step = ckpt.load_checkpoint(ck)["step"]
            # mid-epoch, after at least two checkpoints, well before the end
            if 40 <= step and step % steps_per_epoch != 0 and step < total - 100:
                p.send_signal(signal.SIGKILL)
                killed_at = step
                break
        time.sleep(0.005)
    p.wait(timeout=60)
    p.stderr.close()
    assert killed_at is not None, "no mid-epoch checkpoint appeared before the run ended"
    assert p.returncode == -signal.SIGKILL
    state = ckpt.load_checkpoint(part / "checkpoint.pt")
    assert 0 < state["step"] < total and state["pos"] > 0     # really mid-epoch

    r = subprocess.run(_train_argv(part, "--resume"), env=ENV, capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stderr
    rep = json.loads((part / "report.json").read_text())
    assert rep["status"] == "completed" and rep["step"] == total
    assert rep["resumed_from_step"] == state["step"]

    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert _rows(full) == _rows(part)


# ------------------------------------------------------------------------------ non-finite
# A real `mowtheory train` process whose batch cost is poisoned from step BAD on (the test
# plants the fault; nothing in the package knows about it).
POISON = textwrap.dedent("""
    import sys
    from mowtheory.cli import main
    from mowtheory.train import trainer as T
    bad, calls = int(sys.argv[1]), {"n": 0}
    split = T._Weighted.split
    def poisoned(self, *a, **kw):
        calls["n"] += 1                      # one call per training step
        v = split(self, *a, **kw)
        return v * float("nan") if calls["n"] >= bad else v
    T._Weighted.split = poisoned
    sys.exit(main(sys.argv[2:]))
""")


def _error_line(stderr):
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.timeout(200)
@pytest.mark.parametrize("refresh", ["post", "pre"])
def test_non_finite_loss_stops_with_step_and_parts_and_keeps_last_good_checkpoint(
        tmp_path, refresh):
    import re
    from mowtheory.train import checkpoint as ckpt
    out, bad = tmp_path / "nan", 23
    argv = _train_argv(out, "--refresh", refresh, "--checkpoint-every", "5", epochs=1,
                       limit=100)[3:]                     # drop "python -m mowtheory"
    r = subprocess.run([sys.executable, "-c", POISON, str(bad), *argv], env=ENV,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 3, (r.returncode, r.stderr)
    msg = _error_line(r.stderr)
    m = re.search(r"non-finite loss at step (\d+) \(total=([^\s,]+), batch_cost=([^\s,]+), "
                  r"per_example=([^\s)]+)\)", msg)
    assert m, msg
    assert int(m.group(1)) == bad
    total, batch_cost, per_example = (float(m.group(i)) for i in (2, 3, 4))
    assert math.isnan(total) and math.isnan(batch_cost) and math.isfinite(per_example)
    assert f"last good checkpoint {out / 'checkpoint.pt'} (step 20) is kept" in msg

    state = ckpt.load_checkpoint(out / "checkpoint.pt")     # the last good one
    assert state["step"] == 20
    for name, t in state["model"].items():
        assert torch.isfinite(t).all(), name
    rep = json.loads((out / "report.json").read_text())
    assert rep["status"] == "non-finite" and f"step {bad}" in rep["message"]


@pytest.mark.timeout(200)
def test_huge_learning_rate_stops_at_step_1_exit_3(tmp_path):
    out = tmp_path / "lr"
    r = subprocess.run(_train_argv(out, "--lr", "1e30", epochs=1, limit=50), env=ENV,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 3, (r.returncode, r.stderr)
    msg = _error_line(r.stderr)
    # Adam moves every weight by ~1e30: the loss of step 1 is finite, the latents after its
    # update are not; the message names the step, its loss parts and what overflowed
    assert "after the update of step 1" in msg and "total=" in msg and "per_example=" in msg
    assert "no checkpoint had been written yet" in msg
    assert not (out / "checkpoint.pt").exists()


OVERFLOW = textwrap.dedent("""
    import sys, torch
    from mowtheory.cli import main
    bad, calls = int(sys.argv[1]), {"n": 0}
    step = torch.optim.Adam.step
    def overflowing(self, *a, **kw):         # the update of step BAD overflows
        calls["n"] += 1
        out = step(self, *a, **kw)
        if calls["n"] == bad:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
        return out
    torch.optim.Adam.step = overflowing
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.timeout(200)
@pytest.mark.parametrize("refresh,every,pattern,kept_step", [
    # the re-encoding after the update finds the non-finite latents in the same step
    ("post", 1, r"non-finite values after the update of step 23 \(total=[0-9.e+-]+, "
                r"batch_cost=[0-9.e+-]+, per_example=[0-9.e+-]+\): new must be finite", 22),
    # "pre" stores the pre-update latents: the checkpoint of step 23 checks the parameters
    ("pre", 1, r"non-finite parameters after the update of step 23 although its loss was "
               r"finite \(total=[0-9.e+-]+, batch_cost=", 22),
    # ... and without a checkpoint there, the next step cannot evaluate its loss
    ("pre", 5, r"non-finite loss at step 24 \(total=nan, batch_cost=nan, per_example=nan\): "
               r"Z must be finite", 20),
])
def test_overflowing_update_with_finite_loss_is_caught(tmp_path, refresh, every, pattern,
                                                       kept_step):
    import re
    from mowtheory.train import checkpoint as ckpt
    out = tmp_path / "ovf"
    argv = _train_argv(out, "--refresh", refresh, "--checkpoint-every", str(every), epochs=1,
                       limit=100)[3:]
    r = subprocess.run([sys.executable, "-c", OVERFLOW, "23", *argv], env=ENV,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 3, (r.returncode, r.stderr)
    msg = _error_line(r.stderr)
    assert re.search(pattern, msg), msg
    assert f"(step {kept_step}) is kept" in msg
    state = ckpt.load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == kept_step
    for name, t in state["model"].items():
        assert torch.isfinite(t).all(), name


# ------------------------------------------------------------------------------ soak
def _soak_module():
    import runpy
    return runpy.run_path(str(ROOT / "experiments" / "soak.py"), run_name="soak_module")


@pytest.mark.timeout(300)
def test_soak_short_window_holds_no_graph_and_tensors_do_not_grow():
    res = _soak_module()["soak"](1500, 500, log=lambda *_: None)
    series = res["series"]
    assert [r["step"] for r in series] == [500, 1000, 1500]
    assert not res["window_ever_held_graph"]
    assert all(not r["window_graph"] for r in series)
    assert len({r["tensors"] for r in series}) == 1, series      # no live tensor leaks
    assert res["rss_growth_mib"] < 16, series


def test_window_stores_detached_rows_whatever_is_pushed():
    from mowtheory import LatentWindow
    w = LatentWindow(5, 2, 3)
    w.fill(torch.randn(3, 3, requires_grad=True) * 2)
    for _ in range(4):
        z = torch.randn(2, 3, requires_grad=True) * 3          # carries a graph
        w.push(z)
        assert w.buffer.grad_fn is None and not w.buffer.requires_grad


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_soak_20000_steps_memory_flat(tmp_path):
    out = tmp_path / "soak.json"
    r = subprocess.run([sys.executable, str(ROOT / "experiments" / "soak.py"), "--steps",
                        "20000", "--out", str(out)], env=ENV, capture_output=True, text=True,
                       timeout=880)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(out.read_text())
    assert res["verdict"] == "PASS" and len(res["series"]) == 20
    assert "verdict: PASS" in r.stdout
