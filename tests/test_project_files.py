"""The files a project carries (issue 24): CITATION.cff (how to cite reasonlab, with the three
papers it reproduces as references), CHANGELOG.md, and a pre-commit configuration that runs the
checks `make test` runs. The LICENSE and the version are checked in test_packaging.py.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import reasonlab

ROOT = Path(__file__).resolve().parents[1]
ARXIV_ID = re.compile(r"\barXiv[: ](\d{4}\.\d{4,5})\b")


def citation() -> dict:
    return yaml.safe_load((ROOT / "CITATION.cff").read_text())


def test_citation_cff_has_the_required_keys_and_the_package_version():
    cff = citation()
    assert cff["cff-version"] == "1.2.0"
    assert cff["type"] == "software"
    for key in ("message", "title", "abstract"):
        assert isinstance(cff[key], str) and cff[key].strip(), key
    assert "reasonlab" in cff["title"]
    assert cff["authors"] == [{"name": "the reasonlab authors"}]
    assert cff["version"] == reasonlab.__version__  # a string, not a YAML number
    assert cff["license"] == "MIT"


def test_citation_references_are_the_three_papers_of_the_claims_registry():
    """The references are the papers studies/claims.yaml registers, by arXiv id, each with a
    title, authors, a year and its arXiv address."""
    claims = yaml.safe_load((ROOT / "src/reasonlab/studies/claims.yaml").read_text())
    registered = {ARXIV_ID.search(title).group(1) for title in claims["papers"].values()}
    assert len(registered) == 3

    cited = set()
    for reference in citation()["references"]:
        assert reference["type"] == "article"
        assert isinstance(reference["title"], str) and reference["title"].strip()
        assert reference["authors"], reference["title"]
        for author in reference["authors"]:
            assert author["family-names"].strip() and author["given-names"].strip(), author
        found = re.fullmatch(r"https://arxiv\.org/abs/(\d{4}\.\d{4,5})(v\d+)?", reference["url"])
        assert found, reference["url"]
        arxiv = found.group(1)
        # the arXiv id's year and month, 2502 = 2025-02: the year the paper first appeared
        assert reference["year"] == 2000 + int(arxiv[:2]), reference["title"]
        assert ARXIV_ID.search(reference["notes"]).group(1) == arxiv
        cited.add(arxiv)
    assert cited == registered


def test_changelog_has_a_section_for_the_current_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n")
    assert "## [Unreleased]" in text
    assert re.search(
        rf"^## \[{re.escape(reasonlab.__version__)}\] - \d{{4}}-\d\d-\d\d$", text, re.M
    )


# ----------------------------------------------------------------------------- pre-commit


def makefile_commands(target: str) -> list[str]:
    """The recipe lines of a Makefile target."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def hook_commands() -> dict[str, str]:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    commands = {}
    for repo in config["repos"]:
        assert repo["repo"] == "local", "hooks fetched from elsewhere would not be CI's versions"
        for hook in repo["hooks"]:
            assert hook["language"] == "system", hook["id"]
            assert hook["pass_filenames"] is False, hook["id"]  # the whole tree, as make test
            commands[hook["id"]] = shlex.join([*shlex.split(hook["entry"]), *hook.get("args", [])])
    return commands


def test_precommit_hooks_run_the_checks_of_make_test():
    """Every ruff and lint-imports line of `make test` is a hook, word for word, and every hook
    is one of those lines."""
    checks = [
        line
        for line in makefile_commands("test")
        if shlex.split(line)[0].rsplit("/", 1)[-1] in {"ruff", "lint-imports"}
    ]
    assert len(checks) == 3  # ruff check, ruff format --check, lint-imports
    assert sorted(hook_commands().values()) == sorted(shlex.join(shlex.split(c)) for c in checks)


def test_precommit_configuration_is_valid():
    pre_commit = Path(sys.executable).parent / "pre-commit"
    if not pre_commit.exists():
        pytest.skip("pre-commit is not installed (the dev extra installs it)")
    done = subprocess.run(
        [str(pre_commit), "validate-config", ".pre-commit-config.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
