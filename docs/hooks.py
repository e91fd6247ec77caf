"""MkDocs hooks of the documentation site (mkdocs.yml ``hooks:``).

wframe's docstrings name other objects with Sphinx roles (``:func:`save_weights```), which
mkdocstrings renders as Markdown: the role would show as text before the code span. This hook
drops the role and keeps the name (``~a.b.c`` shows as ``c``, as Sphinx shows it).
"""

from __future__ import annotations

import re

_ROLE = re.compile(
    r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj|const):<code>(~?)([^<]*)</code>"
)


def _name(match: re.Match) -> str:
    tilde, name = match.groups()
    return f"<code>{name.rsplit('.', 1)[-1] if tilde else name}</code>"


def on_page_content(html: str, **kwargs) -> str:
    """The page's HTML with Sphinx roles before code spans removed."""
    return _ROLE.sub(_name, html)
