"""Studies return data: no study module writes markup, the reporting layer renders it."""

from __future__ import annotations

import re
from pathlib import Path

import reasonlab.studies

STUDIES_DIR = Path(reasonlab.studies.__file__).parent
HTML_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(\s[^<>]*)?/?>")


def test_no_html_tag_in_the_studies_code():
    found = {
        f"{path.name}:{number}": line.strip()
        for path in sorted(STUDIES_DIR.glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if HTML_TAG.search(line)
    }
    assert not found, found


def test_the_check_sees_a_tag():
    assert HTML_TAG.search('"<h2>Claims</h2>"') and HTML_TAG.search("f'<td class=\"x\">'")
    assert not HTML_TAG.search("if a < b and c > d:")
