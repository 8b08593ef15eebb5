"""The ready studies: a YAML file each (read by ``reasonlab.experiments.study_spec``) and, for
those that have one, the analysis run after training (a module here with ``analyze(out,
result)`` returning the analysis data for summary.json and the report items). ``run_study``
trains a study through ``reasonlab.experiments.study`` and hands it its analysis and the report
writer.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

from reasonlab.experiments import study as _study
from reasonlab.experiments.study_spec import STUDIES, StudySpec, study_configs
from reasonlab.reporting.content import Item, figures_in
from reasonlab.reporting.study_report import write_study_report
from reasonlab.runs.summary import StudyResult
from reasonlab.studies.khop_probes import khop_section
from reasonlab.training.tracking.study import track_study

__all__ = ["STUDIES", "StudySpec", "run_study", "study_configs"]


def _write_report(folder: Path, spec: StudySpec, result: StudyResult, items: list[Item]) -> Path:
    """A ready study's report: the standard sections, the k-hop probes explained (two-hop
    studies that ask them), then the items of the study's analysis; its figures go to the
    experiment trackers its runs chose (``log.tracker``)."""
    path = write_study_report(folder, spec, result, [*khop_section(result), *items])
    track_study(folder, result, report_figures(folder, items))
    return path


def report_figures(folder: Path, items: list[Item]) -> dict[str, bytes]:
    """The report's figures by tag: the curves it drew (PNG files beside it), then those of the
    study's analysis, tagged by their alt text."""
    figures = {
        f"report/{name}": (folder / f"{name}.png").read_bytes()
        for name in ("curves", "stages")
        if (folder / f"{name}.png").is_file()
    }
    for figure in figures_in(items):
        tag = "report/" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", figure.alt).strip("_") or "figure")
        while tag in figures:
            tag += "_"
        figures[tag] = figure.png()
    return figures


def run_study(
    name: str,
    preset: str = "cpu",
    seeds: int | None = None,
    out: str | Path = "runs/study",
    overrides: list[str] | None = None,
    reuse: str | Path | None = None,
    jobs: int = 1,
    pack: str | int = "auto",
) -> dict[str, Any]:
    """Trains (or skips, or resumes) every run of a study, then its analysis and its report
    (``reasonlab.experiments.study.run_study``); ``pack``: auto, off or K runs trained together
    (``training/pack.py``). Returns what the study's summary.json holds (``StudyResult``, as
    JSON)."""
    spec = STUDIES.get(name)
    analyze = None
    if spec is not None and spec.analysis is not None:
        analyze = importlib.import_module(f"{__name__}.{spec.analysis}").analyze
    result = _study.run_study(
        name,
        preset,
        seeds,
        out,
        overrides,
        reuse,
        jobs,
        analyze=analyze,
        report=_write_report,
        pack=pack,
    )
    return result.as_json()
