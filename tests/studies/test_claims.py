"""The claims page (``reasonlab claims``): study claims kept in summary.json with stable ids,
the paper claims registry, the page agreeing with the study summaries, bad input, and the
verdict rule over seeds with the spread."""

from __future__ import annotations

import json
import re

import pytest

from helpers import STUDY_TINY, run_cli
from reasonlab.config import ConfigError
from reasonlab.experiments.study import study_claims
from reasonlab.experiments.study_spec import STUDY_DIR
from reasonlab.reporting.content import Claim, Paragraph, Section, claims_in
from reasonlab.runs.summary import StudyResult
from reasonlab.studies import mamba_dp, run_study
from reasonlab.studies.claims import (
    CANNOT,
    NOT_RUN,
    REGISTRY,
    claims_page,
    decide,
    load_registry,
)
from reasonlab.studies.verdicts import verdict_every_seed, verdict_from_seeds


def _page_verdicts(page: str) -> dict[str, str]:
    """claim id -> the verdict line's text, from the page."""
    found = re.findall(r"^### ([\w-]+): .*?\n\n- \*\*Verdict:\*\* (.*)$", page, re.M)
    return dict(found)


def test_rule_checked_on_the_means_and_every_seed():
    assert verdict_every_seed(True, [True, True, True])[0] == "reproduces"
    assert verdict_every_seed(False, [False, False])[0] == "does not reproduce"
    assert verdict_every_seed(True, [True, False, True]) == ("undecided", " (the seeds disagree)")
    assert verdict_every_seed(False, [True, True])[0] == "undecided"  # the means disagree
    assert verdict_every_seed(True, [True]) == ("undecided", " (fewer than 2 seeds)")
    assert verdict_every_seed(True, [True], min_seeds=1)[0] == "reproduces"
    assert verdict_every_seed(None, [False, False])[0] == "does not reproduce"  # seeds only
    assert verdict_every_seed(None, [True, True])[0] == "reproduces"


def test_verdict_rule_needs_the_means_and_apart_ranges():
    assert verdict_from_seeds([0.8, 0.7, 0.9], [0.1, 0.2, 0.3])[0] == "reproduces"
    assert verdict_from_seeds([0.1, 0.2, 0.3], [0.8, 0.7, 0.9])[0] == "does not reproduce"
    # means apart but one seed of a below one of b: the ranges overlap
    assert verdict_from_seeds([0.9, 0.9, 0.25], [0.3, 0.2, 0.2]) == (
        "undecided",
        " (the seeds' ranges overlap)",
    )
    assert verdict_from_seeds([0.9], [0.1])[0] == "undecided"  # one seed: no spread
    # a margin shifts b: a exceeds b by 0.2 in every seed, but not by 0.3
    assert verdict_from_seeds([0.5, 0.6], [0.2, 0.25], margin=0.2)[0] == "reproduces"
    assert verdict_from_seeds([0.5, 0.6], [0.2, 0.25], margin=0.3)[0] == "undecided"


def test_claims_are_collected_from_sections_with_stable_ids():
    items = [
        Paragraph("text"),
        Section("a", items=[Claim("one", "reproduces"), Section("b", items=[Claim("two")])]),
        Claim("three", "undecided", key="mine", per_seed={"x": [1.0, 2.0]}),
    ]
    assert [c.text for c in claims_in(items)] == ["one", "two", "three"]
    collected = [c.model_dump(exclude_unset=True) for c in study_claims("s", items)]
    assert collected == [
        {"id": "s-1", "text": "one", "verdict": "reproduces"},
        {"id": "s-2", "text": "two", "verdict": None},
        {"id": "mine", "text": "three", "verdict": "undecided", "per_seed": {"x": [1.0, 2.0]}},
    ]


def test_registry_names_known_studies_presets_and_unique_ids():
    registry = load_registry()
    assert set(registry.papers) == {"cot", "mamba", "icl"}
    assert {c.paper for c in registry.claims} == set(registry.papers)
    for claim in registry.claims:
        assert claim.keys or claim.cannot_decide_here or claim.study, claim.id
        if claim.cannot_decide_here:
            assert claim.gpu.startswith("reasonlab "), claim.id
        # each key names a claim id the study's analysis gives (a typo would never match)
        source = "".join(p.read_text() for p in STUDY_DIR.glob("*.py")) if claim.keys else ""
        for key in claim.keys:
            stem = key.split("*")[0]
            assert stem in source or stem.rpartition("-")[0] + "-" in source, (claim.id, key)


def _mamba_dp_folder(tmp_path):
    """A mamba-dp study folder from the analysis of made-up runs (3 seeds): the GPT's gain
    beats the Mamba's in every seed on arithmetic, the ranges overlap on LIS."""
    scores = {
        "arithmetic": {
            "gpt": ([1.0, 0.98, 0.97], [0.2, 0.3, 0.1]),
            "mamba": ([0.5] * 3, [0.2] * 3),
        },
        "lis": {"gpt": ([1.0, 0.6, 0.9], [0.2, 0.3, 0.1]), "mamba": ([0.7] * 3, [0.2] * 3)},
    }
    runs = {}
    for problem, families in scores.items():
        for family, (cot, direct) in families.items():
            for mode, values in (("cot", cot), ("direct", direct)):
                for seed, value in enumerate(values):
                    runs[f"{family}-{problem}-{mode}-s{seed}"] = {
                        "final": {"test": value},
                        "config": {
                            "model": {"kind": family},
                            "task": {"problem": problem, "mode": mode, "length": 2},
                        },
                        "num_parameters": 1000,
                    }
    result = StudyResult.model_validate(
        {"study": "mamba-dp", "preset": "cpu", "seeds": 3, "runs": runs}
    )
    result.analysis, items = mamba_dp.analyze(tmp_path, result)
    result.claims = study_claims("mamba-dp", items)
    folder = tmp_path / "mamba-dp"
    folder.mkdir()
    result.write(folder / "summary.json")
    return folder, result


def test_dp_gain_claim_uses_the_spread(tmp_path):
    _, result = _mamba_dp_folder(tmp_path)
    by_id = {c.id: c for c in result.claims}
    assert by_id["gain-arithmetic"].verdict == "reproduces"
    assert by_id["gain-lis"].verdict == "undecided"  # GPT gains 0.8 / 0.3 / 0.8 vs 0.5 each
    assert "(the seeds' ranges overlap)" in by_id["gain-lis"].text
    per_seed = by_id["gain-lis"].per_seed or {}
    assert per_seed["gpt"] == pytest.approx([0.8, 0.3, 0.8])
    assert per_seed["mamba"] == pytest.approx([0.5, 0.5, 0.5])


@pytest.mark.slow
def test_page_agrees_with_the_study_summaries(tmp_path, capsys):
    cot = tmp_path / "cot-twohop"
    run_study("cot-twohop", preset="cpu", seeds=1, out=cot, overrides=STUDY_TINY)
    dp, _ = _mamba_dp_folder(tmp_path)
    summaries = {
        s["study"]: s for s in (json.loads((f / "summary.json").read_text()) for f in (cot, dp))
    }
    assert [c["id"] for c in summaries["cot-twohop"]["claims"]] == ["ood", "speed"]
    assert summaries["cot-twohop"]["machine"]["cores"] >= 1 and summaries["cot-twohop"]["date"]
    out = tmp_path / "docs" / "claims.md"
    code, stdout, _ = run_cli(["claims", str(cot), str(dp), "--out", str(out)], capsys)
    assert code == 0 and str(out) in stdout
    page = out.read_text()
    verdicts = _page_verdicts(page)
    registry = load_registry()
    assert set(verdicts) == {c.id for c in registry.claims}  # every registry claim, once
    for claim in registry.claims:
        summary = summaries.get(claim.study)
        shown = verdicts[claim.id]
        if summary is None:
            assert shown == (
                f"{CANNOT} ({claim.cannot_decide_here})" if claim.cannot_decide_here else NOT_RUN
            ), claim.id
            continue
        expected = decide(claim, StudyResult.model_validate(summary)).verdict
        assert shown.startswith(expected), (claim.id, shown)
        recorded = {c["id"]: c["verdict"] for c in summary["claims"]}
        for key in claim.keys:  # the study's own verdict, as its summary holds it
            if key in recorded and len(claim.keys) == 1:
                decided = recorded[key] != "undecided"
                if decided and summary["seeds"] < claim.seeds:  # quoted, not a verdict here
                    assert shown.startswith("undecided (the study's verdict, "), claim.id
                    assert f"{recorded[key]}, rests on {summary['seeds']} seed(s)" in shown
                else:
                    assert shown.startswith(str(recorded[key])), claim.id
    # mamba-dp: the gain claims (one reproduces, one undecided) make the paper claim undecided
    assert verdicts["mamba-cot-gain"] == "undecided"
    assert "gain-lis: gpt 0.800, 0.300, 0.800" in page
    assert "reasonlab study cot-noise --preset paper --seeds 3" in page
    ood = summaries["cot-twohop"]["claims"][0]["text"]
    assert ood in page


def test_bad_study_folder_exits_2_in_one_line(tmp_path, capsys):
    code, _, err = run_cli(["claims", str(tmp_path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "not a study folder" in err
    run_folder = tmp_path / "run"
    run_folder.mkdir()
    (run_folder / "summary.json").write_text(json.dumps({"status": "completed", "steps": 3}))
    code, _, err = run_cli(["claims", str(run_folder)], capsys)
    assert code == 2 and err.count("\n") == 1 and "is not a study's" in err
    code, _, err = run_cli(["claims", str(tmp_path / "missing")], capsys)
    assert code == 2 and "not a folder or a study's summary.json" in err
    code, _, err = run_cli(["claims", str(run_folder / "summary.json")], capsys)
    assert code == 2 and err.count("\n") == 1 and "is not a study's" in err


def test_page_without_folders_lists_every_claim_as_not_run_here_or_why_it_cannot_be():
    page = claims_page([])
    verdicts = _page_verdicts(page)
    registry = load_registry()
    assert len(verdicts) == len(registry.claims)
    for claim in registry.claims:
        expected = f"{CANNOT} ({claim.cannot_decide_here})" if claim.cannot_decide_here else NOT_RUN
        assert verdicts[claim.id] == expected
        assert claim.keys or claim.cannot_decide_here  # a verdict, or why none here
        if claim.cannot_decide_here:
            assert f"- **On a GPU:** `{claim.gpu}`" in page  # the command that would decide it


def test_registry_refuses_a_claim_with_neither_key_nor_reason(tmp_path):
    text = REGISTRY.read_text().replace("    key: speed\n", "    key: null\n", 1)
    assert text != REGISTRY.read_text()
    (tmp_path / "claims.yml").write_text(text)
    with pytest.raises(ConfigError, match=r"claims\[1\]: key: null needs cannot_decide_here"):
        load_registry(tmp_path / "claims.yml")
