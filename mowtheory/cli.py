"""The ``mowtheory`` command.

Each subcommand lives next to the code it drives and exposes two functions::

    register(subparsers) -> argparse.ArgumentParser   # adds its parser
    run(args) -> int                                   # exit status

This module only assembles them and turns ``ValueError``/``FileNotFoundError`` raised for
bad input, and ``ImportError`` for a missing optional dependency, into a one-line message on
stderr and exit status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

# subcommand name -> module that provides register(subparsers) and run(args)
SUBCOMMANDS = {
    "flow": "mowtheory.flow.cli",
    "check": "mowtheory.checks_cli",
    "train": "mowtheory.train.cli",
    "bench": "mowtheory.bench",
}


def _available():
    mods = {}
    for name, modname in SUBCOMMANDS.items():
        try:
            mods[name] = importlib.import_module(modname)
        except ModuleNotFoundError as exc:  # a subcommand whose module has not landed yet
            if exc.name is not None and modname.startswith(exc.name):
                continue
            raise
    return mods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mowtheory",
        description=(
            "MoW (one-element batch training by moving window): gradient-flow studies of its "
            "convergence theorem, proof checks, and autoencoder training."
        ),
    )
    parser.add_argument("--version", action="version", version=f"mowtheory {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in _available().items():
        p = mod.register(sub)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"mowtheory {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # an optional dependency (e.g. the `data` extra) is missing
        print(f"mowtheory {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mowtheory {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
