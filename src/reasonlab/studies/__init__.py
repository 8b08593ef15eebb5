"""The ready studies: a YAML file each (read by ``reasonlab.experiments.study_spec``) and, for
those that have one, the analysis run after training (a module here with ``analyze(out,
result)`` returning the analysis data for summary.json and the report items). ``run_study``
trains a study through ``reasonlab.experiments.study`` and hands it its analysis and the report
writer.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from reasonlab.experiments import study as _study
from reasonlab.experiments.study_spec import STUDIES, StudySpec, study_configs
from reasonlab.reporting.content import Item
from reasonlab.reporting.study_report import write_study_report
from reasonlab.runs.summary import StudyResult
from reasonlab.studies.khop_probes import khop_section

__all__ = ["STUDIES", "StudySpec", "run_study", "study_configs"]


def _write_report(folder: Path, spec: StudySpec, result: StudyResult, items: list[Item]) -> Path:
    """A ready study's report: the standard sections, the k-hop probes explained (two-hop
    studies that ask them), then the items of the study's analysis."""
    return write_study_report(folder, spec, result, [*khop_section(result), *items])


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
