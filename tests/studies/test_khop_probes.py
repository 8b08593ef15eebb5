"""The k-hop probes explained in a two-hop study's report (studies/khop_probes.py): what they
ask, why they fail with learned positions, their per-stage scores; nothing without them."""

from __future__ import annotations

from helpers import tiny_config
from reasonlab.reporting.html import render
from reasonlab.runs.summary import StudyResult
from reasonlab.studies.khop_probes import khop_section


def khop_result(positions: str = "learned", khop: bool = True) -> StudyResult:
    """Two runs of an interleaved-CoT study, with or without three-hop probes."""
    config = tiny_config(
        f"model.positions={positions}", f"task.khop={[3] if khop else []}", "task.cot=interleaved"
    ).model_dump(mode="json")
    final = {"test_inferred_iid": 1.0, "test_inferred_ood": 0.5}
    if khop:
        final |= {
            "test_inferred_3hop_iid": 0.0,
            "test_inferred_3hop_ood": 0.0,
            "test_inferred_3hop_ood.bridge1": 0.75,
            "test_inferred_3hop_ood.bridge2": 0.5,
            "test_inferred_3hop_ood.tail": 0.0,
        }
    runs = {name: {"status": "completed", "final": final, "config": config} for name in ("a", "b")}
    return StudyResult.model_validate({"study": "cot-twohop", "preset": "cpu", "runs": runs})


def test_report_explains_the_three_hop_probes():
    [section] = khop_section(khop_result())
    assert section.title == "The k-hop probes"
    page = render([section])
    assert "in one pass" in page
    assert "longer than any training sequence" in page
    assert "interleaved: 8 tokens against 6" in page  # h r1 b1 r2 b2 r3 t </a>
    assert "two chained two-hop CoT queries" in page and "arXiv 2502.04667" in page
    assert "rotary" in page
    assert "<th>ood bridge1</th><th>ood bridge2</th><th>ood tail</th>" in page
    assert "<td>0.750</td><td>0.500</td><td>0.000</td>" in page


def test_rotary_runs_are_not_told_their_positions_were_never_trained():
    page = render(khop_section(khop_result(positions="rotary")))
    assert "The k-hop probes" in page and "longer than any training sequence" not in page


def test_no_khop_section_without_khop_probes():
    assert khop_section(khop_result(khop=False)) == []
