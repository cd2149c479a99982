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
# One process imports torch once (1-2 s) and says "ready"; on "write BASE" it forks a writer
# that saves versions BASE+1, BASE+2, ... in a loop, saying "start V" before and "done V" after
# each save_checkpoint; on "reap PID" it waits for that (killed) writer and says "reaped". The
# writer's lines precede "reaped" in the pipe: the test sees every write it started or finished.
PAYLOAD = 3_000_000                    # float64, 24 MB: a save takes ~40 ms here
WRITER = textwrap.dedent("""
    import os, sys
    import torch
    from mowtheory.train.checkpoint import save_checkpoint
    path, size = sys.argv[1], int(sys.argv[2])
    payload = torch.arange(size, dtype=torch.float64)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, arg = line.split()
        if cmd == "reap":
            os.waitpid(int(arg), 0)
            print("reaped", flush=True)
            continue
        pid = os.fork()
        if pid == 0:                                   # the writer, until it is killed
            try:
                print("pid", os.getpid(), flush=True)
                v = int(arg)
                while True:
                    v += 1
                    payload[0], payload[-1] = v, size - 1 + v
                    print("start", v, flush=True)
                    save_checkpoint(path, {"format": 1, "version": v, "payload": payload,
                                           "check": v})
                    print("done", v, flush=True)
            finally:
                os._exit(1)
""")


def _payload_is_version(state, v):
    p = state["payload"]
    return (state["check"] == v and p.shape == (PAYLOAD,) and float(p[0]) == v
            and float(p[-1]) == PAYLOAD - 1 + v and float(p[PAYLOAD // 2]) == PAYLOAD // 2)


@pytest.mark.timeout(120)
def test_sigkill_while_writing_never_leaves_a_broken_checkpoint(tmp_path):
    """A writer SIGKILLed at random moments, mostly mid-write, always leaves a checkpoint that
    loads and is the last completed version (or the one being written, when the kill came
    after its rename); the only debris is temporary files, which remove_stale_temporaries
    clears. Written straight to checkpoint.pt instead (no temporary file and rename), the
    first kill leaves a truncated file that does not load."""
    from mowtheory.train import checkpoint as ckpt
    path = tmp_path / "checkpoint.pt"
    first = torch.arange(PAYLOAD, dtype=torch.float64)                     # version 0
    t0 = time.perf_counter()
    ckpt.save_checkpoint(path, {"format": 1, "version": 0, "payload": first, "check": 0})
    # the kill moments are in units of one save on this machine now (~0.04 s unloaded,
    # several times that on a loaded one): fixed seconds would let no save complete there
    save_s = max(time.perf_counter() - t0, 0.04)
    server = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(PAYLOAD)], env=ENV,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def say(line):
        server.stdin.write(line + "\n")
        server.stdin.flush()

    def hear():
        line = server.stdout.readline()
        assert line, f"the writer process died (status {server.poll()})"
        return line.split()

    rng = random.Random(0)
    trials, on_disk, seen, mid_write, with_temporaries = 12, 0, {0}, 0, 0
    writer = None                                     # a writer not yet killed
    try:
        assert hear() == ["ready"]
        for trial in range(1, trials + 1):
            say(f"write {1000 * trial}")              # versions 1000 * trial + 1, + 2, ...
            tag, pid = hear()
            assert tag == "pid"
            writer = int(pid)
            time.sleep(rng.uniform(0.5, 5.0) * save_s)   # a random moment: ~0-5 saves
            os.kill(writer, signal.SIGKILL)
            writer = None
            say(f"reap {pid}")
            events = list(iter(hear, ["reaped"]))
            started = [int(v) for e, v in events if e == "start"]
            done = [int(v) for e, v in events if e == "done"]
            assert started[:len(done)] == done and len(started) - len(done) <= 1, events
            if done:
                on_disk = done[-1]
            allowed = {on_disk}
            if len(started) > len(done):              # killed between "start" and "done"
                mid_write += 1
                allowed.add(started[-1])
            state = ckpt.load_checkpoint(path)        # never raises: always a whole file
            v = state["version"]
            assert v in allowed and _payload_is_version(state, v), (v, allowed, events)
            on_disk = v
            seen.add(v)
            # the only leftovers are temporary files, never a half-written checkpoint.pt;
            # the trainer removes them when it starts (remove_stale_temporaries)
            names = sorted(f.name for f in tmp_path.iterdir())
            temporaries = [n for n in names if n != "checkpoint.pt"]
            for name in temporaries:
                assert name.startswith(".checkpoint.pt.") and name.endswith(".tmp"), names
            with_temporaries += bool(temporaries)
            ckpt.remove_stale_temporaries(path)
            assert [f.name for f in tmp_path.iterdir()] == ["checkpoint.pt"]
    finally:
        if writer is not None:
            os.kill(writer, signal.SIGKILL)
        server.stdin.close()                          # the server exits at end of input
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stdout.close()
    # the kills did land mid-write: a save was under way (nearly all of the writer's time; a
    # temporary file exists for ~60% of it: torch.save and fsync, then the rename, which frees
    # the old 24 MB, and the directory fsync), and several completed versions were read back
    assert mid_write >= trials // 2 and with_temporaries >= 1, (mid_write, with_temporaries)
    assert len(seen) > trials // 3, seen


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
    from mowtheory.train import objective as T
    bad, calls = int(sys.argv[1]), {"n": 0}
    split = T._Float32Cost.split
    def poisoned(self, *a, **kw):
        calls["n"] += 1                      # one call per training step
        v = split(self, *a, **kw)
        return v * float("nan") if calls["n"] >= bad else v
    T._Float32Cost.split = poisoned
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
