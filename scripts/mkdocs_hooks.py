"""mkdocs hook (mkdocs.yml): the site's home page is README.md itself, so that the two never
drift apart. Its links point into docs/ from the repository root (``docs/RESULTS.md``), which
is right on GitHub; in the site the page sits in docs/, so the prefix is dropped."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[1] / "README.md"
DOCS_LINK = re.compile(r"(\]\()docs/")


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """docs/index.md is replaced by the README, its ``](docs/...)`` links made relative to docs/."""
    if page.file.src_uri != "index.md":
        return markdown
    return DOCS_LINK.sub(r"\1", README.read_text(encoding="utf-8"))
