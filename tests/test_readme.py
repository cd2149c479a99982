"""The README's two commands are the ones CI and users run."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)[:2]


def test_readme_starts_with_install_and_test_commands():
    main, tests = _commands()
    assert main.startswith("pip install torch==2.13.0") and main.endswith("mowtheory flow")
    assert "pytest" in tests and tests.startswith("pip install torch==2.13.0")


def test_ci_runs_the_readme_test_command():
    test_cmd = _commands()[1].split("&&")[-1].strip()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in [line.strip() for line in ci], f"{test_cmd!r} not a line of .ci/run"
    assert any("torch==2.13.0" in line for line in ci)
