"""Studies over a knob: scale variants per preset, preset changes, and the analysis that plots
final accuracy against the knob (studies/knob_curves.py)."""

from __future__ import annotations

import pytest

from reasonlab.reporting.content import Figure, Section, Table
from reasonlab.reporting.html import render
from reasonlab.runs.summary import StudyResult, StudyRun
from reasonlab.studies import STUDIES, study_configs
from reasonlab.studies.knob_curves import analyze, curve_points, paper_points

HEADLINE = {"ID two-hop": "test_inferred_iid", "OOD two-hop": "test_inferred_ood"}


def test_scale_variants_follow_each_presets_own_scale():
    spec = STUDIES["cot-pattern"]
    for preset in ("cpu", "paper"):
        base = spec.presets[preset]
        configs = study_configs(spec, preset, seeds=1)
        assert len(configs) == 4 * (1 + 3 * 2)  # 4 patterns, 3 axes halved and doubled
        for pattern in ("no-cot", "cot-after-relations", "cot-interleaved", "cot-restated"):
            plain = configs[f"{pattern}-s0"]
            doubled = configs[f"{pattern}-num_entities-x2-s0"]
            halved = configs[f"{pattern}-out_degree-x0.5-s0"]
            wide = configs[f"{pattern}-d_model-x2-s0"]
            assert plain.task.cot == doubled.task.cot == halved.task.cot == wide.task.cot
            assert doubled.task.num_entities == 2 * base["task"]["num_entities"]
            assert halved.task.out_degree == round(base["task"]["out_degree"] / 2)
            assert wide.model.d_model == 2 * base["model"]["d_model"]
            # one axis at a time: the others keep the preset's values
            assert doubled.task.out_degree == plain.task.out_degree
            assert doubled.model.d_model == plain.model.d_model
            assert wide.task.num_entities == plain.task.num_entities
        for config in configs.values():
            assert config.model.d_model % config.model.n_heads == 0


def test_preset_changes_apply_to_that_preset_only():
    noise, twohop = STUDIES["cot-noise"], STUDIES["cot-twohop"]
    assert noise.presets["paper"]["train"]["steps"] == 20000  # the paper's noise runs
    assert twohop.presets["paper"]["train"]["steps"] == 8000  # not changed in place
    assert noise.presets["cpu"] == twohop.presets["cpu"]


def test_noise_study_covers_every_kind_and_ratio_with_three_seeds():
    configs = study_configs(STUDIES["cot-noise"], "cpu", seeds=STUDIES["cot-noise"].seeds)
    settings = {(c.task.noise_kind, c.task.noise_ratio, c.train.seed) for c in configs.values()}
    assert settings == {
        (kind, xi, seed)
        for kind in ("tail", "bridge", "both")
        for xi in (0.05, 0.2, 0.4, 0.6, 0.8)
        for seed in range(3)
    }
    assert all(c.task.cot == "after_relations" for c in configs.values())


def _run(ood: float | None, iid: float, status: str = "completed", **config) -> StudyRun:
    task = {"noise_kind": config.get("kind", "tail"), "noise_ratio": config.get("xi", 0.2)}
    return StudyRun.model_validate(
        {
            "status": status,
            "config": {
                "task": {**task, "num_entities": config.get("entities", 200)},
                "model": {"d_model": config.get("width", 128)},
                "eval": {"threshold": 0.95},
            },
            "final": {"test_inferred_iid": iid, "test_inferred_ood": ood},
            "steps_to_threshold": {"test_inferred_iid": 100, "test_inferred_ood": None},
        }
    )


def test_curve_points_group_by_series_and_knob_and_keep_every_seed():
    runs = {
        "a": _run(0.5, 0.9, kind="tail", xi=0.2),
        "b": _run(0.7, 1.0, kind="tail", xi=0.2),
        "c": _run(0.1, 0.6, kind="bridge", xi=0.2),
        "d": _run(0.3, 0.8, kind="tail", xi=0.4),
        "e": _run(0.9, 0.9, kind="tail", xi=0.4, status="failed"),  # left out
        "f": _run(0.2, 0.2, kind="tail", xi=0.4, width=64),  # not at the base width
    }
    curve = {"x": "task.noise_ratio", "series": "task.noise_kind", "where": {"model.d_model": 128}}
    points = curve_points(curve, runs, HEADLINE)
    by = {(p["series"], p["x"]): p for p in points}
    assert set(by) == {("tail", 0.2), ("bridge", 0.2), ("tail", 0.4)}
    assert by[("tail", 0.2)]["OOD two-hop"] == [0.5, 0.7]
    assert by[("tail", 0.2)]["ID two-hop"] == [0.9, 1.0]
    assert by[("tail", 0.2)]["steps ID two-hop"] == [100, 100]
    assert by[("tail", 0.4)]["seeds"] == 1 and by[("tail", 0.4)]["OOD two-hop"] == [0.3]


def test_paper_points_are_the_rows_naming_the_knob():
    rows = STUDIES["cot-noise"].paper["rows"]
    curve = STUDIES["cot-noise"].curves[0]
    points = paper_points(curve, rows)
    assert [(r["task.noise_kind"], r["task.noise_ratio"], r["ood"]) for r in points][:2] == [
        ("tail", 0.05, 0.978),
        ("tail", 0.2, 0.776),
    ]
    assert paper_points({"x": "task.lam"}, rows) == []


def test_analysis_of_a_noise_study_plots_and_tabulates_means(tmp_path):
    runs = {
        f"{kind}-{xi}-s{seed}": _run(ood, 0.9, kind=kind, xi=xi)
        for kind, xi, seed, ood in [
            ("tail", 0.2, 0, 0.4),
            ("tail", 0.2, 1, 0.6),
            ("bridge", 0.2, 0, 0.1),
            ("tail", 0.4, 0, 0.2),
        ]
    }
    result = StudyResult(study="cot-noise", preset="cpu", overrides=[], runs=runs)
    analysis, items = analyze(tmp_path, result)
    [curve] = analysis["curves"]
    tail = {p["x"]: p for p in curve["points"] if p["series"] == "tail"}
    assert tail[0.2]["OOD two-hop"] == pytest.approx(0.5)
    assert tail[0.2]["per_seed"]["OOD two-hop"] == [0.4, 0.6]
    assert (tmp_path / "curve-0-noise_ratio.png").stat().st_size > 1000
    [section] = items
    [knob] = section.items
    assert isinstance(knob, Section) and knob.title == "noise ratio xi"
    assert [type(item) for item in knob.items] == [Figure, Table]
    page = render(items)
    assert "noise ratio xi" in page and "0.500 ± 0.141 (0.400–0.600)" in page
    assert "0.776" in page  # the paper's OOD at xi 0.2 (tail) beside ours


def test_base_curves_take_the_presets_value_after_overrides(tmp_path):
    runs = {
        "w128": _run(0.9, 1.0, width=128, entities=400),
        "w64": _run(0.1, 1.0, width=64, entities=400),
    }
    result = StudyResult(
        study="cot-pattern", preset="cpu", overrides=["model.d_model=64"], runs=runs
    )
    for run in runs.values():
        run.config["task"].update(out_degree=10, cot="interleaved")
    analysis, _ = analyze(tmp_path, result)
    entities = analysis["curves"][0]  # x = entities at the base relations and width
    assert [(p["x"], p["OOD two-hop"]) for p in entities["points"]] == [(400, 0.1)]
