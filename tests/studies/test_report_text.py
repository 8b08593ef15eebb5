"""What the reports say is true today: the cot-twohop report checks the paper's claim with a
verdict, every panel's probe is explained from one table of descriptions (COPY's ``.first`` and
``.last`` included), and the k-hop note says that reasonlab chains queries (cot-khop, analyze
khop)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import tiny_config
from reasonlab.experiments.study_spec import STUDIES
from reasonlab.reporting.content import Claim, Paragraph, Section
from reasonlab.reporting.probes import describe, legend
from reasonlab.reporting.study_report import write_study_report
from reasonlab.runs.folder import RunDir
from reasonlab.runs.summary import StudyResult
from reasonlab.studies import cot_khop
from reasonlab.studies.cot_twohop import analyze, claim, speed_claim
from reasonlab.studies.khop_probes import khop_section

ROOT = Path(__file__).resolve().parents[2]


def study(ood: dict[str, float | None], khop: bool = False) -> StudyResult:
    """A cot-twohop result: run name -> final OOD accuracy (None: the run failed)."""
    runs = {}
    for name, value in ood.items():
        cot = "none" if name.startswith("no-cot") else "interleaved"
        config = tiny_config(f"task.cot={cot}").model_dump(mode="json")
        final = {"test_inferred_iid": 1.0} | ({} if value is None else {"test_inferred_ood": value})
        if khop:
            final |= {"test_inferred_3hop_ood": 0.0, "test_inferred_3hop_ood.tail": 0.0}
        status = "failed" if value is None else "completed"
        runs[name] = {"status": status, "final": final, "config": config}
    return StudyResult.model_validate({"study": "cot-twohop", "preset": "cpu", "runs": runs})


@pytest.mark.parametrize(
    ("ood", "verdict"),
    [
        ({"no-cot-s0": 0.0, "cot-s0": 0.95, "cot-s1": 1.0}, "reproduces"),
        ({"no-cot-s0": 0.0, "cot-s0": 0.5, "cot-s1": 1.0}, "undecided"),  # seeds disagree
        ({"no-cot-s0": 0.0, "no-cot-s1": 0.0, "cot-s0": 0.5, "cot-s1": 0.6}, "does not reproduce"),
        ({"no-cot-s0": 0.0, "no-cot-s1": 0.3, "cot-s0": 0.95, "cot-s1": 1.0}, "undecided"),
        ({"no-cot-s0": 0.6, "cot-s0": 1.0}, "does not reproduce"),
        ({"no-cot-s0": 0.0, "cot-s0": None}, "undecided"),
        ({"cot-s0": 1.0}, "undecided"),
    ],
)
def test_the_cot_twohop_claim_gets_a_verdict(ood, verdict):
    checked = claim(study(ood))
    assert checked.verdict == verdict
    assert ("undecided" in checked.text) == (verdict == "undecided")


def steps_study(steps: dict[str, int | None]) -> StudyResult:
    """A cot-twohop result: run name -> first evaluated step at the ID threshold (None: never)."""
    result = study({name: 0.0 for name in steps})
    for name, step in steps.items():
        result.runs[name].steps_to_threshold = {"test_inferred_iid": step}
    return result


@pytest.mark.parametrize(
    ("steps", "verdict"),
    [
        ({"no-cot-s0": None, "no-cot-s1": None, "cot-s0": 100, "cot-s1": 150}, "reproduces"),
        ({"no-cot-s0": 400, "no-cot-s1": 450, "cot-s0": 100, "cot-s1": 150}, "reproduces"),
        ({"no-cot-s0": 100, "no-cot-s1": None, "cot-s0": 100, "cot-s1": 150}, "undecided"),
        ({"no-cot-s0": 50, "no-cot-s1": 50, "cot-s0": 100, "cot-s1": None}, "does not reproduce"),
        ({"no-cot-s0": None, "cot-s0": 100}, "reproduces"),  # one seed decides the report
        ({"no-cot-s0": None, "no-cot-s1": None, "cot-s0": 0, "cot-s1": 0}, "reproduces"),
    ],
)
def test_the_cot_speed_claim_is_decided_seed_by_seed(steps, verdict):
    checked = speed_claim(steps_study(steps))
    assert checked.verdict == verdict and checked.key == "speed"
    assert ("never" in checked.text) == (None in steps.values())


def test_the_cot_twohop_study_runs_the_check_and_its_report_shows_it(tmp_path):
    assert STUDIES["cot-twohop"].analysis == "cot_twohop"
    result = study({"no-cot-s0": 0.0, "cot-s0": 1.0})
    data, items = analyze(tmp_path, result)
    assert data["verdict"] == "reproduces"
    [section] = items
    assert isinstance(section, Section) and isinstance(section.items[0], Claim)
    for name in result.runs:
        RunDir(tmp_path / "runs" / name).path.mkdir(parents=True)
        RunDir(tmp_path / "runs" / name).append_metrics(
            {"step": 0, "test_inferred_iid": 0.5, "test_inferred_ood": 0.25}
        )
    page = write_study_report(tmp_path, STUDIES["cot-twohop"], result, items).read_text()
    assert "reproduces" in page and "The paper&#x27;s claims, checked" in page
    # the panels' probes, explained under the curves
    assert f"test_inferred_ood: {describe('test_inferred_ood')}" in page.replace("&#x27;", "'")


@pytest.mark.parametrize(
    "key",
    [
        "id_atomic",
        "ood_atomic",
        "train_inferred",
        "test_inferred_iid",
        "test_inferred_ood",
        "test_inferred_3hop_ood",
        "test_inferred_ood.bridge",
        "test_inferred_ood.tail_given_true_bridge",
        "len5",
        "len5.first",
        "len20.last",
        "test",
        "test.k10",
        "test_len12.answer",
    ],
)
def test_every_probe_name_the_reports_draw_is_described(key):
    assert describe(key)


def test_copy_first_and_last_say_which_symbol():
    first, last = legend(["len5.first", "len5.last"])
    assert "first copied symbol" in first and "last copied symbol" in last
    assert "len5" in first and "OOD" in describe("len30")  # type: ignore[operator]
    page = (ROOT / "docs" / "studies" / "mamba-copy.md").read_text()
    assert "`len5.first`" in page and "`.last`" in page


def test_the_khop_note_says_queries_are_chained():
    [section] = khop_section(study({"cot-s0": 1.0}, khop=True))
    text = " ".join(item.text for item in section.items if isinstance(item, Paragraph))
    assert "does not chain" not in text
    assert "cot-khop" in text and "analyze khop" in text


def test_no_doc_or_report_says_queries_are_not_chained():
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    texts += sorted((ROOT / "src" / "reasonlab" / "studies").glob("*.py"))
    stale = [p.name for p in texts if "does not chain" in p.read_text()]
    assert stale == []


@pytest.mark.parametrize(
    ("chained", "verdict"),
    [
        ([0.95, 0.92, 1.0], "reproduces"),
        ([0.95, 0.85, 1.0], "undecided"),  # a seed under the bar
        ([0.5, 0.6, 0.7], "does not reproduce"),
        ([0.95], "undecided"),  # one seed
    ],
)
def test_the_khop_claim_is_decided_seed_by_seed(chained, verdict):
    assert cot_khop._verdict(chained)[0] == verdict
