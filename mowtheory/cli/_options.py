"""Parsers generated from configuration dataclasses (one source of truth for the options).

A command declares its options as a table of :class:`Option` rows, one per field of its
configuration dataclass, grouped under titles. :func:`add_options` adds them to a parser
with the field's default and type (``Optional[X]`` -> ``X``); a bool field becomes an on/off
flag (``--no-NAME`` when it defaults to True, ``--NAME`` otherwise); choices come from the
``choices`` mapping the command builds from its registries. :func:`values` reads a parsed
namespace back into the dataclass's keyword arguments. Imports nothing heavy.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Callable, NamedTuple, Optional


class Option(NamedTuple):
    """One option: the dataclass field ``name``, its help, and optionally its flags (default
    ``--name-with-dashes``), a parse function ``type`` (default: the field's type), an
    ``action`` (``"append"``: repeatable; ``"both"``: a bool with ``--name`` and
    ``--no-name``) and a ``metavar``."""
    name: str
    help: str
    flags: tuple = ()
    type: Optional[Callable] = None
    action: Optional[str] = None
    metavar: Optional[str] = None


def option(name: str, help: str, *flags: str, **kw) -> Option:
    """``Option(name, help, flags, **kw)``, with the flags given positionally."""
    return Option(name, help, tuple(flags), **kw)


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for on/off flags, appended options and options whose default
    is None."""

    def _get_help_string(self, action):
        if action.nargs == 0 or action.default in (None, [], ()):
            return action.help
        return super()._get_help_string(action)


def field_type(config_cls, name: str):
    """The type of field ``name`` of ``config_cls``, without ``Optional``."""
    tp = typing.get_type_hints(config_cls)[name]
    if typing.get_origin(tp) is typing.Union:
        tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
    return tp


def add_option(group, config_cls, opt: Option, *, choices=None, default=dataclasses.MISSING):
    """Add the option ``opt`` of ``config_cls`` to ``group``. ``default`` overrides the
    field's (e.g. None for a value the command resolves later)."""
    name = opt.name
    base = field_type(config_cls, name)
    if default is dataclasses.MISSING:
        default = config_cls.__dataclass_fields__[name].default
    dashed = name.replace("_", "-")
    if base is bool and opt.action == "both":          # --name and --no-name
        group.add_argument(*(opt.flags or (f"--{dashed}",)), dest=name, default=default,
                           action=argparse.BooleanOptionalAction, help=opt.help)
        return
    if base is bool:
        flags = opt.flags or ((f"--no-{dashed}",) if default else (f"--{dashed}",))
        group.add_argument(*flags, dest=name, action="store_false" if default else "store_true",
                           help=opt.help)
        return
    kw = dict(dest=name, help=opt.help, metavar=opt.metavar)
    if opt.action == "append":
        kw.update(action="append", default=[], type=opt.type)
    else:
        kw.update(type=opt.type or base, default=default, choices=choices)
    group.add_argument(*(opt.flags or (f"--{dashed}",)), **kw)


def _rows(options):
    """The rows of a group as :class:`Option` (a plain ``(name, help, *flags)`` tuple too)."""
    return [o if isinstance(o, Option) else option(*o) for o in options]


def add_options(parser, config_cls, table, *, choices=None, cli_defaults=None) -> None:
    """Add every option of ``table`` (``((title, rows), ...)``, each row an :class:`Option`
    or a ``(name, help, *flags)`` tuple; a title of None adds to the parser itself) to
    ``parser``. ``choices``: field -> allowed values;
    ``cli_defaults``: field -> the default the command line shows instead of the field's."""
    choices, cli_defaults = choices or {}, cli_defaults or {}
    for title, options in table:
        group = parser.add_argument_group(title) if title else parser
        for opt in _rows(options):
            add_option(group, config_cls, opt, choices=choices.get(opt.name),
                       default=cli_defaults.get(opt.name, dataclasses.MISSING))


def values(config_cls, args) -> dict:
    """The keyword arguments of ``config_cls`` read from the parsed ``args``, field by field
    (an ``append`` option gives a list: the dataclass's validation normalises it)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)}
