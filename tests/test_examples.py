"""Every script in examples/ runs (at tiny sizes, ``--quick``) and reaches its own checks, so
none can rot. Each runs in this process (runpy), with its exit status and output checked."""
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# script -> (extra arguments, "{tmp}" replaced by a temporary folder; lines its output must hold)
CASES = {
    "own_cost_properties.py": ([], [
        "weighted_spread rejected: F is not permutation invariant",
        "leaky objective rejected: gradient leaks into the window",
        "mow_loss freezes the window for spread (10 hypothesis examples)"]),
    "custom_convergence_study.py": ([], [
        "shift: n=4 k=1",
        # the instrument runs on the user's problem: the wrong ODE is rejected, weak order fits
        "PASS  wrong ODE S' = -grad C rejected",
        "PASS  weak order within 1.0 +/- 0.3"]),
    "own_encoder_optimizer.py": ([], ["mean reconstruction error over the data"]),
    "train_and_resume.py": (["--out", "{tmp}"], [
        "weights identical to the uninterrupted run: True"]),
}


def test_every_example_is_tested():
    # an example is run here (CASES) or named by another test module that runs it
    others = " ".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py")
                      if p.name != Path(__file__).name)
    scripts = {p.name for p in EXAMPLES.glob("*.py")}
    untested = sorted(s for s in scripts - set(CASES) if s not in others)
    assert not untested, f"examples that no test runs: {untested}"
    assert set(CASES) <= scripts, f"CASES names missing scripts: {set(CASES) - scripts}"


@pytest.mark.parametrize("script", sorted(CASES))
def test_example_runs(script, monkeypatch, capsys, tmp_path):
    extra, expected = CASES[script]
    args = [a.replace("{tmp}", str(tmp_path / "out")) for a in extra]
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / script), "--quick", *args])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    out = capsys.readouterr().out
    assert exc.value.code == 0, out
    for line in expected:
        assert line in out, f"{script}: {line!r} not in its output:\n{out}"
