"""A griffe extension for the API reference: the docstrings of this package use Sphinx roles
(``:func:`name```, ``:class:`~mod.Name```), which Markdown would show literally; this turns each
into inline code (``name``; a leading ``~`` keeps the last component only, as Sphinx does).
It changes how the docs show docstrings, never the docstrings themselves."""
from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|obj|exc|const):`(~?)([^`]+)`")


def _plain(match: re.Match) -> str:
    target = match.group(2)
    if match.group(1):
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


class RstRoles(griffe.Extension):
    """Replace Sphinx cross-reference roles in every docstring by inline code."""

    def on_object(self, *, obj, loader, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_plain, obj.docstring.value)
