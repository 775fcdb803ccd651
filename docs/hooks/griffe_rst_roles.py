"""Griffe extension for the API page: reST roles in docstrings (:meth:`from_dir`, :class:`x.Y`) as Markdown code.

The code's docstrings use Sphinx roles; mkdocstrings renders Markdown, where a role would show as
``:meth:from_dir``. Loaded by mkdocstrings (``extensions`` in mkdocs.yml); the source is not changed.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|data|attr|exc|obj):`~?([^`]+)`")


class RstRoles(Extension):
    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ":" in obj.docstring.value:
            obj.docstring.value = ROLE.sub(r"`\1`", obj.docstring.value)
