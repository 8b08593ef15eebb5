"""A study's report: the sections every study has (curves over training, final values and their
spread over seeds, the paper's numbers, notes, configurations) around the items its analysis
returned, written as one self-contained HTML page (``html.py``)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Protocol

from reasonlab.config import kind_section_from_dict
from reasonlab.core.files import atomic_path
from reasonlab.reporting.content import (
    Bullets,
    Figure,
    Item,
    Paragraph,
    Section,
    StageCurves,
    Table,
)
from reasonlab.reporting.curves import plot_curves
from reasonlab.reporting.html import render_page
from reasonlab.reporting.probes import legend
from reasonlab.reporting.seeds import spread, variant_of
from reasonlab.runs.folder import RunDir
from reasonlab.runs.summary import RunMetric, StudyResult, StudyRun

PAPER_HEADERS = {"setting": "setting", "id": "ID", "ood": "OOD"}
NOT_CURVES = ("loss", "lr", "elapsed_s")  # recorded floats that are not probes


class ReportedStudy(Protocol):
    """What the report reads of a study's spec (``experiments.study_spec.StudySpec``)."""

    name: str
    description: str
    headline: dict[str, str]
    stages: StageCurves | None
    paper: dict[str, Any]


def _curve_keys(histories: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Every recorded key with a float value that is a probe or a probe's stage, in order of
    first appearance."""
    keys: list[str] = []
    for records in histories.values():
        for record in records:
            keys += [
                k
                for k in record
                if k not in keys and isinstance(record[k], float) and k not in NOT_CURVES
            ]
    return keys


def _legend(keys: list[str]) -> list[Item]:
    """What each panel's probe measures (``reporting/probes.py``), under its figure."""
    lines = legend(keys)
    return [Paragraph("Each panel is a probe:"), Bullets(lines)] if lines else []


def _paper_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The columns of a study's paper table: every key its rows use, in order of first use."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    return columns


def _describe(config: dict[str, Any]) -> str:
    task, model, train = config["task"], config["model"], config["train"]
    task_text = ", ".join(f"{k} {v}" for k, v in task.items() if k not in ("seed", "data_dir"))
    return (
        f"task: {task_text}. model: {kind_section_from_dict('model', model).describe()}. "
        f"train: {train['steps']} steps, batch {train['batch_size']}, lr {train['lr']}, "
        f"weight decay {train['weight_decay']}, warm-up {train['warmup_steps']}, "
        f"{train['schedule']} schedule."
    )


def _finals(
    runs: dict[str, StudyRun], headline: dict[str, str], probes: list[str], threshold: float
) -> list[Item]:
    """Per run: final headline values, steps to the threshold, wall time and status; per
    variant the same over seeds; per run the final value of every probe."""
    steps_to = [f"steps to {threshold:g} ({label})" for label in headline]
    rows = [
        [
            name,
            *(run.final.get(k) for k in headline.values()),
            *(run.steps_to_threshold.get(k) for k in headline.values()),
            None if run.wall_s is None else f"{run.wall_s:.1f}",
            run.status,
        ]
        for name, run in runs.items()
    ]
    by_variant: dict[str, list[StudyRun]] = defaultdict(list)
    for name, run in runs.items():
        by_variant[variant_of(name)].append(run)
    spread_rows = [
        [
            variant,
            len(seeds),
            *(spread([r.final.get(k) for r in seeds]) for k in headline.values()),
            *(
                spread([r.steps_to_threshold.get(k) for r in seeds], 0, "reached")
                for k in headline.values()
            ),
        ]
        for variant, seeds in by_variant.items()
    ]
    finals = [f"final {label}" for label in headline]
    return [
        Table(["run", *finals, *steps_to, "wall s", "status"], rows),
        Section(
            "Over seeds",
            "Per variant: mean ± sample standard deviation over its seeds (n − 1 in the "
            "denominator; none with one seed) and, in brackets, the lowest and highest seed. Runs "
            "without a value (never reached the threshold, or failed) are left out and counted.",
            [Table(["variant", "seeds", *finals, *steps_to], spread_rows)],
        ),
        Section(
            "Every probe, final",
            items=[
                Table(
                    ["run", *probes],
                    [[name, *(run.final.get(k) for k in probes)] for name, run in runs.items()],
                )
            ],
        ),
    ]


def _paper(paper: dict[str, Any]) -> list[Section]:
    """The paper's numbers and its description of the circuit, where the study quotes them."""
    sections = []
    rows = paper.get("rows", [])
    if rows:
        columns = _paper_columns(rows)
        sections.append(
            Section(
                "The paper's numbers",
                f"{paper.get('source', '')}. Paper scale, not this preset's.",
                [
                    Table(
                        [PAPER_HEADERS.get(c, c) for c in columns],
                        [[row.get(column) for column in columns] for row in rows],
                    )
                ],
            )
        )
    if paper.get("circuit"):
        sections.append(
            Section(
                "The paper's description of the circuit",
                f"{paper.get('source', '')}.",
                [Bullets(list(paper["circuit"]))],
            )
        )
    return sections


def write_study_report(
    folder: Path, spec: ReportedStudy, result: StudyResult, items: list[Item] | None = None
) -> Path:
    """Writes ``folder/report.html`` (and the curves it draws as PNG files beside it): the
    standard sections with the analysis's ``items`` after the final values."""
    folder = Path(folder)
    runs = result.runs
    histories = {name: RunDir(folder / "runs" / name).read_metrics() for name in runs}
    keys = _curve_keys(histories)
    probes = [k for k in keys if "." not in k]
    first_run = next(iter(runs.values()))
    threshold = first_run.config["eval"]["threshold"]
    metric = first_run.metric or RunMetric(label="exact-match accuracy")
    measure = "accuracy" if metric.higher_is_better else "error"
    title = f"{spec.name} ({result.preset}): {measure} vs step"
    curves = plot_curves(histories, probes, title, folder / "curves.png", threshold, metric)
    scale = (
        "Exact match of the whole completion under greedy decoding"
        if metric.higher_is_better
        else f"{metric.label}, lower is better (log scale)"
    )
    sections: list[Item] = [
        Section(
            f"{measure.capitalize()} over training",
            items=[
                Figure(
                    curves,
                    f"{measure} curves",
                    f"{scale}; the dotted line is the threshold {threshold:g}. One colour per "
                    "variant; with several seeds its line is the mean over seeds and the shaded "
                    "band spans the lowest to the highest seed.",
                ),
                *_legend(probes),
            ],
        )
    ]
    stages = spec.stages
    stage_keys = [k for k in keys if stages and k.split(".")[0] in stages.probes and "." in k]
    if stages and stage_keys:
        png = plot_curves(histories, stage_keys, stages.title, folder / "stages.png", threshold)
        sections.append(
            Section(
                "Per CoT stage",
                items=[Figure(png, "per-stage accuracy"), *_legend(stage_keys)],
            )
        )
    headline = spec.headline or {k: k for k in probes[:2]}
    sections.append(
        Section(
            f"Final {measure} and steps to threshold",
            items=_finals(runs, headline, probes, threshold),
        )
    )
    sections += items or []
    sections += _paper(spec.paper)
    notes = sorted({note for run in runs.values() for note in run.notes})
    if notes:
        sections.append(Section("Notes", items=[Bullets(notes)]))
    configs = {variant_of(name): run.config for name, run in runs.items()}
    sections.append(
        Section(
            "Configurations",
            items=[Bullets([f"{v}: {_describe(c)}" for v, c in configs.items()])],
        )
    )
    intro = (
        f"{spec.description}. {len(runs)} runs, {result.seeds} seed(s) per variant, "
        f"device {first_run.device or '?'}."
    )
    path = folder / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(render_page(f"{spec.name} — preset {result.preset}", intro, sections))
    return path
