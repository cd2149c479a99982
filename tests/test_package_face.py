"""The package's face: a CLI that answers --version/--help without importing torch, argument
errors that name the value, docs and metadata that point only inside the repository."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_PROBE = """
import json, sys
{pre}
from mowtheory.cli import main
try:
    code = main({argv!r})
except SystemExit as exc:
    code = exc.code
print(json.dumps({{"code": code, "torch": "torch" in sys.modules}}))
"""


def _probe(argv, pre=""):
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(argv=argv, pre=pre)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc


@pytest.mark.parametrize("argv, code, text", [
    (["--version"], 0, "mowtheory 0."),
    (["--help"], 0, "flow"),
    ([], 0, "COMMAND"),
    (["nosuch"], 2, "invalid choice: 'nosuch'"),
    (["train", "--help"], 0, "--init {encode,prior,prior-once}"),
    (["train", "--n", "x"], 2, "argument --n/--batch-n: invalid int value: 'x'"),
    (["check", "--help"], 0, "--only ID"),
])
def test_cli_answers_without_importing_torch(argv, code, text):
    result, proc = _probe(argv)
    assert result == {"code": code, "torch": False}, (proc.stdout, proc.stderr)
    assert text in proc.stdout + proc.stderr


def test_the_probe_sees_torch_when_it_is_imported():
    result, proc = _probe(["--version"], pre="import mowtheory.costs")
    assert result == {"code": 0, "torch": True}, proc.stderr


def test_listed_help_matches_each_subcommand():
    from mowtheory import cli
    light = cli.build_parser()
    full = cli.build_parser("*")

    def helps(parser):
        sub = next(a for a in parser._actions if a.dest == "command")
        return {a.dest: a.help for a in sub._choices_actions}
    assert helps(light) == helps(full) and set(helps(light)) == set(cli.SUBCOMMANDS)


@pytest.mark.parametrize("etas", ["0.01,,0.005", ",0.01", "0.01,", "", "0.01,x"])
def test_etas_with_an_empty_or_bad_item_is_an_error_naming_it(etas, capsys):
    from mowtheory.cli import main
    with pytest.raises(SystemExit) as exc:
        main(["flow", "--etas", etas, "--no-plot"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"got {etas!r}" in err and "--etas" in err


def _repo_files():
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / p for p in out.splitlines() if (ROOT / p).is_file()]


def test_no_file_points_outside_the_repository():
    # the theory lives in docs/; nothing may send a reader to a file the repo does not hold
    bad = re.compile("DESIGN" + r"\.md|" + "shared " + "folder|/work/" + "shared")
    me = Path(__file__).resolve()
    hits = []
    for path in _repo_files():
        if path.resolve() == me or path.suffix in (".png", ".pt", ".json"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        hits += [f"{path.relative_to(ROOT)}:{i}" for i, line in enumerate(text.splitlines(), 1)
                 if bad.search(line)]
    assert not hits, f"references to files outside the repository: {hits}"


def test_docs_pages_cited_in_the_code_exist():
    cited = set()
    for path in _repo_files():
        if path.suffix in (".py", ".md"):
            cited |= set(re.findall(r"docs/[\w/.-]+\.md", path.read_text(encoding="utf-8")))
    assert cited, "no docs page is cited"
    missing = sorted(c for c in cited if not (ROOT / c).is_file())
    assert not missing, f"cited docs pages that do not exist: {missing}"


def test_version_metadata_agree():
    tomllib = pytest.importorskip("tomllib")        # Python >= 3.11

    import mowtheory
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["version"] == mowtheory.__version__
    assert "py.typed" in meta["tool"]["setuptools"]["package-data"]["mowtheory"]
    assert (ROOT / "mowtheory" / "py.typed").is_file()
    cff = (ROOT / "CITATION.cff").read_text()
    assert re.search(rf"^version: \"?{re.escape(mowtheory.__version__)}\"?$", cff, re.M)
    assert "One-element Batch Training by Moving Window" in cff
    assert re.search(rf"^## \[?{re.escape(mowtheory.__version__)}\]?", (ROOT / "CHANGELOG.md")
                     .read_text(), re.M)


def test_api_reference_covers_every_public_module():
    documented = set()
    for page in (ROOT / "docs" / "api").glob("*.md"):
        documented |= set(re.findall(r"^::: ([\w.]+)", page.read_text(), re.MULTILINE))
    public = set()
    for path in (ROOT / "mowtheory").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(p.startswith("_") for p in parts):
            public.add(".".join(parts))
    missing = sorted(public - documented)
    assert not missing, f"public modules missing from docs/api/*.md: {missing}"
    assert not documented - public, f"docs/api/*.md names modules that do not exist: " \
                                     f"{sorted(documented - public)}"


def test_sympy_is_needed_by_the_proof_checks_only():
    """sympy is the `proofs` extra: the library works without it, and `mowtheory check`
    says which extra to install (exit 2, one line)."""
    code = ("import sys; sys.modules['sympy'] = None\n"
            "import mowtheory.costs, mowtheory.flow, mowtheory.train.trainer, mowtheory.mow\n"
            "from mowtheory.cli import main\n"
            "sys.exit(main(['check', '--list']))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "mowtheory[proofs]" in lines[0] and "sympy" in lines[0], lines
    tomllib = pytest.importorskip("tomllib")        # Python >= 3.11
    with open(ROOT / "pyproject.toml", "rb") as fh:
        meta = tomllib.load(fh)["project"]
    assert not any(d.startswith("sympy") for d in meta["dependencies"])
    assert meta["optional-dependencies"]["proofs"] == ["sympy"]


def _imports(path: Path) -> set:
    """The absolute module names ``path`` imports (relative imports resolved)."""
    import ast
    pkg = list(path.relative_to(ROOT).parts[:-1])          # the package the file is in
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = pkg[:len(pkg) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


@pytest.mark.parametrize("layer,forbidden,allowed", [
    ("costs", ("mowtheory.mow", "mowtheory.train", "mowtheory.flow", "mowtheory.cli"), ()),
    ("window.py", ("mowtheory.mow", "mowtheory.train", "mowtheory.flow", "mowtheory.cli"), ()),
    ("flow", ("mowtheory.train", "mowtheory.cli"), ("mowtheory.train.data",)),
    ("train", ("mowtheory.flow", "mowtheory.cli"), ()),
    ("proofs", ("mowtheory.train", "mowtheory.cli"), ()),
    ("bench", ("mowtheory.cli",), ()),
])
def test_imports_flow_one_way(layer, forbidden, allowed):
    """costs and window know nothing of training; the instruments (flow) use the datasets of
    train and nothing else of it, train nothing of flow; nothing in the library imports the
    command line (only the entry point does)."""
    root = ROOT / "mowtheory" / layer
    files = [root] if root.suffix == ".py" else sorted(root.rglob("*.py"))
    bad = {str(f.relative_to(ROOT)): sorted(m for m in _imports(f) if m.startswith(forbidden)
                                             and not m.startswith(allowed or ("\0",)))
           for f in files}
    assert not {f: m for f, m in bad.items() if m}, bad
