"""The documentation agrees with the study summaries it rests on (``results/*.json``, the
summary.json of each study run that the docs quote): docs/claims.md is what ``reasonlab claims``
writes from them, RESULTS.md's claims table gives each paper claim the page's verdict, and each
study's page gives each of its claims the verdict its summary recorded. The reports are rendered
from the same summaries, so a verdict changed in one place and not the others fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reasonlab.studies.claims import (
    CANNOT,
    NOT_RUN,
    claims_page,
    decide,
    load_registry,
    read_study,
)

ROOT = Path(__file__).resolve().parents[2]
RESULTS = sorted((ROOT / "results").glob("*.json"))
VERDICTS = ("reproduces", "does not reproduce", "undecided", CANNOT, NOT_RUN)


def _table_verdicts(markdown: str) -> dict[str, str]:
    """`id` in a table row's first cell -> the verdict its second cell starts with."""
    found = {}
    for row in re.findall(r"^\|(.+)\|\s*$", markdown, re.M):
        cells = [c.strip() for c in row.split("|")]
        key = re.fullmatch(r"\[?`([\w*-]+)`\]?(?:\(.*\))?", cells[0])
        if key and len(cells) > 1:
            verdict = next((v for v in VERDICTS if cells[1].startswith(v)), cells[1])
            found[key.group(1)] = verdict
    return found


def test_results_hold_study_summaries():
    assert RESULTS, "results/ keeps the study summaries the docs quote"
    studies = [read_study(path).study for path in RESULTS]
    assert len(set(studies)) == len(studies)  # one summary a study


def test_claims_page_is_generated_from_the_results():
    page = (ROOT / "docs" / "claims.md").read_text()
    assert page == claims_page(RESULTS), "regenerate: make claims"


def test_results_page_gives_every_paper_claim_its_verdict():
    shown = _table_verdicts((ROOT / "docs" / "RESULTS.md").read_text())
    results = {r.study: r for r in map(read_study, RESULTS)}
    for claim in load_registry().claims:
        assert claim.id in shown, f"RESULTS.md: no row for `{claim.id}`"
        expected = decide(claim, results.get(claim.study)).verdict
        assert shown[claim.id] == expected, (claim.id, shown[claim.id], expected)


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.stem)
def test_study_page_gives_each_claim_its_recorded_verdict(path):
    result = read_study(path)
    page = (ROOT / "docs" / "studies" / f"{result.study}.md").read_text()
    shown = _table_verdicts(page)
    for claim in result.claims:
        if claim.verdict is None:
            continue
        assert claim.id in shown, f"docs/studies/{result.study}.md: no row for `{claim.id}`"
        assert shown[claim.id] == claim.verdict, (claim.id, shown[claim.id], claim.verdict)
