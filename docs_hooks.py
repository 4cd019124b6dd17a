"""MkDocs hook: the Sphinx roles of dnas' docstrings (``:class:`~dnas.data.ImageDataset```) become
code in the API pages (``ImageDataset``; the full path without the ``~``), as Sphinx would show them."""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):<code>(~?)([\w.]+)</code>")


def on_page_content(html: str, **kwargs: Any) -> str:
    return ROLE.sub(lambda m: f"<code>{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}</code>", html)
