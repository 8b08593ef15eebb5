"""No file of the repository cites a file the repository does not contain: no design notes kept
outside it, every relative Markdown link resolves, every page under docs/ that code names exists.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE_NOTES = ("DESIGN" + ".md", "REFERENCES" + ".md")  # the team's notes, not in the repo
LINK = re.compile(r"\]\(([^)\s]+)\)")
DOCS_PATH = re.compile(r"\bdocs/[\w./-]+?\.md\b")


def tracked_text_files() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    paths = [ROOT / name for name in listed]
    return [p for p in paths if p.is_file() and p.suffix not in {".png", ".ipynb"}]


def test_no_file_cites_notes_kept_outside_the_repository():
    citing = [
        str(path.relative_to(ROOT))
        for path in tracked_text_files()
        if any(note in path.read_text(errors="ignore") for note in OUTSIDE_NOTES)
    ]
    assert citing == []


def test_every_relative_markdown_link_resolves():
    broken = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in LINK.findall(path.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue  # a web address or an anchor on the same page
            if not (path.parent / target.split("#")[0]).exists():
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_every_docs_page_named_in_the_code_exists():
    missing = sorted(
        {
            f"{path.relative_to(ROOT)}: {name}"
            for path in tracked_text_files()
            if path.suffix in {".py", ".yaml", ".sh", ".toml", ".cfg", ""}
            for name in DOCS_PATH.findall(path.read_text(errors="ignore"))
            if not (ROOT / name).exists()
        }
    )
    assert missing == []
