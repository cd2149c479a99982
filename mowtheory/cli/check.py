"""``mowtheory check``: run the machine checks of Theorem 1 and of the paper's errata.

Examples::

    mowtheory check                                   # all checks, a table, exit 1 if any fails
    mowtheory check --list                            # ids and claims
    mowtheory check --only expected-gradient --only errata-sign --json out.json

The checks live in the ``mowtheory.proofs`` package (imported lazily: ``mowtheory --help`` does not
pay for sympy). The JSON file is a list of ``{id, claim, passed, evidence, seconds}``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap

from . import verdict_exit_status


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``check`` subcommand to ``subparsers`` and return its parser."""
    p = subparsers.add_parser(
        "check",
        help="run the sympy/numeric proof checks of Theorem 1 and of the errata",
        description=(
            "Run the machine checks of the steps of Theorem 1 (MoW converges to the flow "
            "S' = -(k/n) grad C) and of the paper's errata. Prints a table; exit status 1 if "
            "any check fails. See mowtheory/proofs/README.md for the claims."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  mowtheory check\n  mowtheory check --list\n"
               "  mowtheory check --only expected-gradient --json out.json",
    )
    p.add_argument("--only", action="append", metavar="ID", default=None,
                   help="run only this check (repeatable); see --list for the ids")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="write the results as a JSON list of {id, claim, passed, evidence, seconds}")
    p.add_argument("--list", action="store_true", help="list the check ids and claims, then exit")
    p.add_argument("--strict", action="store_true",
                   help="also exit 1 when a check is INCONCLUSIVE (as `mowtheory flow`; a proof "
                        "check is exact and never is, so this changes nothing today)")
    return p


def _cut(s: str, width: int) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= width else s[: max(1, width - 1)] + "…"


def _table(results, width: int) -> str:
    idw = max([len("id")] + [len(r.id) for r in results])
    rest = max(40, width - idw - 3 - 6 - 3 - 8 - 3)
    claim_w = rest * 2 // 5
    ev_w = rest - claim_w - 3
    head = f"{'id':<{idw}} | {'passed':<6} | {'seconds':>7} | {'claim':<{claim_w}} | evidence"
    lines = [head, "-" * min(width, len(head) + ev_w - len("evidence"))]
    for r in results:
        lines.append(f"{r.id:<{idw}} | {'PASS' if r.passed else 'FAIL':<6} | {r.seconds:7.2f} | "
                     f"{_cut(r.claim, claim_w):<{claim_w}} | {_cut(r.summary, ev_w)}")
    return "\n".join(lines)


def run(args) -> int:
    """Run the selected checks; print the table (and evidence of failures); write ``--json``.
    Returns :func:`mowtheory.cli.verdict_exit_status` of the results (0 if all passed, 1
    otherwise). Raises ``ValueError`` for an unknown ``--only`` id."""
    import mowtheory.proofs as pc

    from .._io import atomic_write_json, check_output_file

    ids = pc.resolve_ids(args.only)           # ValueError with the valid ids
    width = shutil.get_terminal_size((120, 20)).columns
    if getattr(args, "list", False):
        for i in ids:
            mod = sys.modules[pc.CHECKS[i].__module__]
            print(f"{i}\n" + textwrap.indent(textwrap.fill(getattr(mod, "CLAIM", ""), max(40, width - 4)), "    "))
        return 0
    if args.json:                            # checked before the checks run
        parent = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(parent):
            raise FileNotFoundError(f"--json: directory {parent!r} does not exist")
        check_output_file("--json", args.json)
    results = []
    for i in ids:
        r = pc.run_check(i)
        results.append(r)
    print(_table(results, width))
    failed = [r for r in results if not r.passed]
    for r in failed:
        print(f"\n{r.id} FAILED:\n" + textwrap.indent(r.evidence, "  "))
    total = sum(r.seconds for r in results)
    print(f"\n{len(results) - len(failed)}/{len(results)} checks passed in {total:.1f} s")
    if args.json:
        atomic_write_json(args.json, [r.to_dict() for r in results], indent=2)
        print(f"wrote {args.json}")
    return verdict_exit_status([r.status for r in results], strict=args.strict)
