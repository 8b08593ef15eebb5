"""The study report: spread over seeds, curves with a band, every table and figure of a study's
analysis rendered, the paper cited (never a file users do not have), figures that keep apart."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from helpers import tiny_config
from reasonlab.experiments.study_spec import STUDIES, STUDY_DIR
from reasonlab.reporting import curves as curves_module
from reasonlab.reporting.content import (
    Bullets,
    Claim,
    Figure,
    Item,
    Paragraph,
    Section,
    Table,
)
from reasonlab.reporting.curves import plot_curves, seed_curve
from reasonlab.reporting.html import render
from reasonlab.reporting.seeds import spread
from reasonlab.reporting.study_report import write_study_report
from reasonlab.runs.folder import RunDir
from reasonlab.runs.summary import StudyResult

ROOT = Path(__file__).resolve().parents[2]

# Final OOD accuracy of three seeds of one variant and of one seed of another, as in a real study.
COT_OOD = [1.0, 0.939, 0.985]
COT_OOD_STEPS = [350, 350, None]  # the third seed never reached the threshold


def _records(ood: list[float]) -> list[dict[str, Any]]:
    return [
        {"step": 50 * i, "test_inferred_iid": min(1.0, 0.4 * i), "test_inferred_ood": value}
        for i, value in enumerate(ood)
    ]


def fake_study(folder: Path, positions: str = "learned", khop: bool = True) -> StudyResult:
    """A study folder with metrics and the result run_study would pass to the report."""
    config = tiny_config(
        f"model.positions={positions}", f"task.khop={[3] if khop else []}", "task.cot=interleaved"
    ).model_dump(mode="json")
    curves = {
        "cot-s0": [0.0, 0.5, 1.0],
        "cot-s1": [0.0, 0.3, 0.939],
        "cot-s2": [0.0, 0.4],  # stopped early: its last evaluation is missing
        "none-s0": [0.0, 0.0, 0.02],
    }
    finals = {"cot-s0": 1.0, "cot-s1": 0.939, "cot-s2": 0.985, "none-s0": 0.02}
    steps = {"cot-s0": 350, "cot-s1": 350, "cot-s2": None, "none-s0": None}
    runs = {}
    for name, ood in curves.items():
        run = RunDir(folder / "runs" / name)
        run.path.mkdir(parents=True)
        for record in _records(ood):
            run.append_metrics(record)
        final = {"test_inferred_iid": 1.0, "test_inferred_ood": finals[name]}
        if khop:
            final |= {
                "test_inferred_3hop_iid": 0.0,
                "test_inferred_3hop_ood": 0.0,
                "test_inferred_3hop_ood.bridge1": 0.75,
                "test_inferred_3hop_ood.bridge2": 0.5,
                "test_inferred_3hop_ood.tail": 0.0,
            }
        runs[name] = {
            "status": "completed",
            "final": final,
            "best": final,
            "steps_to_threshold": {"test_inferred_iid": 100, "test_inferred_ood": steps[name]},
            "wall_s": 1.0,
            "device": "cpu",
            "config": config,
        }
    if khop:  # the k-hop probe's curve, so that the report lists it as a probe
        for name in runs:
            run = RunDir(folder / "runs" / name)
            run.append_metrics({"step": 150, "test_inferred_3hop_ood": 0.0})
    return StudyResult.model_validate(
        {"study": "cot-twohop", "preset": "cpu", "seeds": 3, "runs": runs}
    )


def render_study(tmp_path: Path, items: list[Item] | None = None, **kwargs: Any) -> str:
    result = fake_study(tmp_path, **kwargs)
    return write_study_report(tmp_path, STUDIES["cot-twohop"], result, items).read_text()


def tables_and_figures(items: list[Item]) -> Iterator[Table | Figure]:
    """Every table and figure among the items, sections opened."""
    for item in items:
        if isinstance(item, Section):
            yield from tables_and_figures(item.items)
        elif isinstance(item, (Table, Figure)):
            yield item


def assert_rendered(page: str, items: list[Item]) -> None:
    """Each table of the items is in the page with its header and its first column, each figure
    with its image and its caption."""
    for shown in tables_and_figures(items):
        if isinstance(shown, Table):
            head = "".join(f"<th>{escape(h)}</th>" for h in shown.header)
            assert f"<table><thead><tr>{head}</tr></thead>" in page, shown.header
            assert all(f"<tr><td>{escape(row[0])}</td>" in page for row in shown.rows)
        else:
            assert base64.b64encode(shown.png()).decode() in page, shown.alt
            assert escape(shown.caption) in page


# ----------------------------------------------------------------------------- spread


def test_spread_gives_mean_std_range_and_counts():
    values = np.array(COT_OOD)
    expected = (
        f"{values.mean():.3f} ± {values.std(ddof=1):.3f} ({values.min():.3f}–{values.max():.3f})"
    )
    assert spread(COT_OOD) == expected == "0.975 ± 0.032 (0.939–1.000)"
    assert spread([0.5]) == "0.500"
    assert spread(COT_OOD_STEPS, 0, "reached") == "350 ± 0 (350–350), 2/3 reached"
    assert spread([None, None], 0, "reached") == "– (0/2 reached)"
    assert spread([None]) == "–"


def test_report_shows_the_spread_over_seeds_and_how_many(tmp_path):
    page = render_study(tmp_path)
    row = page.split("<td>cot</td>")[1].split("</tr>")[0]
    cells = [cell.split("</td>")[0] for cell in row.split("<td>")[1:]]
    # seeds, final ID, final OOD, steps to threshold ID, steps to threshold OOD
    assert cells == [
        "3",
        "1.000 ± 0.000 (1.000–1.000)",
        "0.975 ± 0.032 (0.939–1.000)",
        "100 ± 0 (100–100)",
        "350 ± 0 (350–350), 2/3 reached",
    ]
    none_row = page.split("<td>none</td>")[1].split("</tr>")[0]
    assert "<td>1</td><td>1.000</td><td>0.020</td>" in none_row
    assert "standard deviation" in page and "shaded band" in page


def test_curves_draw_the_mean_over_seeds_and_a_min_max_band(tmp_path, monkeypatch):
    histories = {
        name: RunDir(tmp_path / "runs" / name).read_metrics()
        for name in fake_study(tmp_path, khop=False).runs
    }
    steps, values = seed_curve([histories[f"cot-s{i}"] for i in range(3)], "test_inferred_ood")
    assert steps == [0, 50]  # the steps every seed reached
    assert values.tolist() == [[0.0, 0.5], [0.0, 0.3], [0.0, 0.4]]
    figures = []
    monkeypatch.setattr(curves_module.plt, "close", figures.append)
    plot_curves(histories, ["test_inferred_ood"], "title")
    axis = figures[0].axes[0]
    lines = {line.get_label(): line for line in axis.get_lines()}
    assert set(lines) == {"cot (mean of 3 seeds)", "none"}
    assert lines["cot (mean of 3 seeds)"].get_ydata().tolist() == pytest.approx([0.0, 0.4])
    assert lines["none"].get_ydata().tolist() == [0.0, 0.0, 0.02]
    bands = [c for c in axis.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1  # the one-seed variant has no band
    heights = bands[0].get_paths()[0].vertices[:, 1]
    assert heights.min() == 0.0 and heights.max() == pytest.approx(0.5)


# ----------------------------------------------------------------------------- analysis items


def test_report_renders_every_table_and_figure_an_analysis_returns(tmp_path):
    png = plot_curves({"a-s0": [{"step": 0, "x": 0.5}]}, ["x"], "a figure")
    (tmp_path / "written.png").write_bytes(png[::-1])  # another image, read from its file
    items: list[Item] = [
        Section(
            "Analysis & more",
            "What it measures.",
            [
                Table(["variant", "score <1>"], [["cot", 0.25], ["none", None]]),
                Figure(png, "made in memory", "caption one"),
                Section(
                    "Deeper",
                    items=[
                        Table(["probe", "n"], [["ood", 3]]),
                        Figure(tmp_path / "written.png", "read from a file", "caption two"),
                        Paragraph("a note"),
                    ],
                ),
            ],
        ),
        Section(
            "Claims, checked",
            items=[
                Claim("first claim", "reproduces"),
                Claim("second claim", "does not reproduce"),
                Claim("a measurement"),
                Bullets(["a plain line"]),
            ],
        ),
    ]
    page = render_study(tmp_path, items, khop=False)
    assert_rendered(page, items)
    assert "<h2>Analysis &amp; more</h2><p>What it measures.</p>" in page
    assert "<td>cot</td><td>0.250</td>" in page and "<td>none</td><td>–</td>" in page
    assert "<h3>Deeper</h3>" in page and "<p>a note</p>" in page
    assert (
        '<ul><li class="reproduces">first claim</li><li class="does-not-reproduce">second claim'
        "</li><li>a measurement</li></ul><ul><li>a plain line</li></ul>"
    ) in page
    # the analysis comes after the standard tables, before the paper's numbers
    assert page.index("Every probe, final") < page.index("Analysis &amp; more")
    assert page.index("Claims, checked") < page.index("The paper&#x27;s numbers")


# ----------------------------------------------------------------------------- citations


def test_reports_docs_and_studies_cite_the_paper_not_a_private_file(tmp_path):
    texts = {path.name: path.read_text() for path in STUDY_DIR.glob("*.yaml")}
    texts |= {name: (ROOT / name).read_text() for name in ("README.md", "docs/RESULTS.md")}
    texts["report.html"] = render_study(tmp_path)
    for name, text in texts.items():
        assert "REFERENCES" not in text, name
    for name, spec in STUDIES.items():
        if spec.paper:  # a public paper by its arXiv id: the CoT paper, or Mamba's / Feng et al.'s
            assert re.search(r"arXiv \d{4}\.\d{5}", spec.paper["source"]), name
            twohop = spec.presets["cpu"]["task"].get("kind", "twohop") == "twohop"
            assert not twohop or "arXiv 2502.04667" in spec.paper["source"], name
    assert "arXiv 2502.04667" in texts["report.html"]


def test_figures_are_boxed_with_a_caption_and_a_margin(tmp_path):
    html = render([Figure(b"\x89PNG", "alt <text>", "caption & more")])
    assert html.startswith('<figure><img alt="alt &lt;text&gt;"')
    assert html.endswith("<figcaption>caption &amp; more</figcaption></figure>")
    style = render_study(tmp_path, khop=False).split("<style>")[1].split("</style>")[0]
    rule = style.split("figure{")[1].split("}")[0]
    assert "inline-block" in rule and "margin" in rule


@pytest.mark.parametrize("count", [3, 15, 28])
def test_every_variant_gets_its_own_colour(count):
    from reasonlab.reporting.curves import distinct_colours

    colours = distinct_colours([f"variant-{i}" for i in range(count)])
    assert len(colours) == count and len(set(colours.values())) == count
