"""The ``mowtheory`` command: every subcommand lives in this package, one module each
(:mod:`~mowtheory.cli.flow`, :mod:`~mowtheory.cli.check`, :mod:`~mowtheory.cli.train`,
:mod:`~mowtheory.cli.bench`); the flow and train parsers are generated from their
configuration dataclasses (:mod:`mowtheory.cli._options`). Each module exposes two functions::

    register(subparsers) -> argparse.ArgumentParser   # adds its parser
    run(args) -> int                                   # exit status (EXIT_* below)

This module only assembles them and turns ``ValueError``/``OSError`` raised for
bad input or I/O (a path, a full disk), and ``ImportError`` for a missing optional dependency, into a one-line message on
stderr and exit status 2, without a traceback.

Start-up cost: only the module of the subcommand being run is imported, and only once the
command line names it; ``mowtheory --version``, ``mowtheory --help`` and errors in the
top-level arguments (an unknown command) answer without importing torch. (A subcommand's own
``--help`` costs what its ``register`` imports: ``check`` and ``train`` are light, ``flow``
and ``bench`` list choices that their torch modules define.)
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__

# subcommand name -> (module that provides register(subparsers) and run(args), one-line help;
# the help must equal the one the module registers: tests/test_package_face.py compares them)
SUBCOMMANDS = {
    "flow": ("mowtheory.cli.flow", "convergence-rate study of MoW against its gradient-flow ODE"),
    "check": ("mowtheory.cli.check",
              "run the sympy/numeric proof checks of Theorem 1 and of the errata"),
    "train": ("mowtheory.cli.train", "train an autoencoder (CWAE, WAE, SWAE, ...) with MoW_k(n) "
                                     "(or --method minibatch / gradcache)"),
    "bench": ("mowtheory.cli.bench", "performance benchmarks (ratios measured side by side)"),
}


#: The exit statuses every subcommand shares: 0 done (and every claim it decided passed), 1 a
#: claim it decided FAILED (``check``, ``flow``; with ``--strict`` also one INCONCLUSIVE),
#: 2 bad input or an I/O error (one line on stderr, before any work where it can be known),
#: 3 a training run stopped on a non-finite loss, 128 + signum after SIGTERM/SIGINT.
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_NON_FINITE = 0, 1, 2, 3


def verdict_exit_status(statuses, *, strict: bool = False) -> int:
    """The exit status of a command that decides claims (``check``, ``flow``), from their
    statuses (``"PASS" | "FAIL" | "INCONCLUSIVE"``): :data:`EXIT_FAILED` when one FAILED, or
    with ``strict`` when one is INCONCLUSIVE (it could not be computed); else
    :data:`EXIT_OK`."""
    statuses = list(statuses)
    unknown = sorted(set(statuses) - {"PASS", "FAIL", "INCONCLUSIVE"})
    if unknown:
        raise ValueError(f"a verdict status must be PASS, FAIL or INCONCLUSIVE; got {unknown}")
    if "FAIL" in statuses or (strict and "INCONCLUSIVE" in statuses):
        return EXIT_FAILED
    return EXIT_OK


def _command(argv) -> str | None:
    """The subcommand named on the command line (its first positional word), if any."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word if word in SUBCOMMANDS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``mowtheory`` parser. Every subcommand is listed with its one-line help; only
    ``command`` (when given) gets its full parser, which imports its module. ``command="*"``
    imports and registers them all."""
    parser = argparse.ArgumentParser(
        prog="mowtheory",
        description=(
            "MoW (one-element batch training by moving window): gradient-flow studies of its "
            "convergence theorem, proof checks, and autoencoder training."
        ),
        epilog="Run 'mowtheory COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"mowtheory {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (modname, help_text) in SUBCOMMANDS.items():
        if command in (name, "*"):
            mod = importlib.import_module(modname)
            p = mod.register(sub)
            p.set_defaults(_run=mod.run)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command(argv))
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except (ValueError, OSError) as exc:     # OSError: a path, a full disk (one line)
        if isinstance(exc, OSError) and exc.strerror and exc.filename:
            msg = f"{exc.strerror}: {exc.filename}"          # e.g. a read-only folder
        else:
            msg = " ".join(str(exc).split())
        print(f"mowtheory {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ImportError as exc:  # an optional dependency (e.g. the `data` extra) is missing
        print(f"mowtheory {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"mowtheory {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
