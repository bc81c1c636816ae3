r"""Griffe extension: a Google-style ``Example:`` section is read as ``Examples:``.

The project's docstrings head their doctests with ``Example:``, which Griffe's Google parser takes for an
admonition: its ``>>>`` lines then reach Markdown, which reads them as nested quotes. Renamed to the
``Examples`` section, they are parsed as doctests and rendered as highlighted ``pycon`` code, with the
``# doctest:`` flags trimmed (mkdocstrings-python's ``trim_doctest_flags``, on by default).

Example:
    >>> docstring = griffe.Docstring("Add.\n\nExample:\n    >>> 1 + 1  # doctest: +SKIP\n    2")
    >>> ExampleSections().on_instance(obj=griffe.Function("add", docstring=docstring))
    >>> [section.kind.value for section in docstring.parse("google")]
    ['text', 'examples']
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_HEADING = re.compile(r"^Example:[ \t]*$", flags=re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename each object's top-level ``Example:`` docstring heading to ``Examples:``."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring once it is loaded, before anything parses it."""
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE_HEADING.sub("Examples:", obj.docstring.value)
