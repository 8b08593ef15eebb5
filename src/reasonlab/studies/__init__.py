"""The ready studies: a YAML file each (read by ``reasonlab.experiments.study_spec``) and, for
those that have one, the analysis run after training (a module here with ``analyze(out,
result)``). ``run_study`` trains a study through ``reasonlab.experiments.study`` and hands it
its analysis and the report writer.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from reasonlab.experiments import study as _study
from reasonlab.experiments.study_spec import STUDIES, StudySpec, study_configs
from reasonlab.reporting.study_report import write_study_report

__all__ = ["STUDIES", "StudySpec", "run_study", "study_configs"]


def run_study(
    name: str,
    preset: str = "cpu",
    seeds: int | None = None,
    out: str | Path = "runs/study",
    overrides: list[str] | None = None,
    reuse: str | Path | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Trains (or skips, or resumes) every run of a study, then its analysis and its report
    (``reasonlab.experiments.study.run_study``)."""
    spec = STUDIES.get(name)
    analyze = None
    if spec is not None and spec.analysis is not None:
        analyze = importlib.import_module(f"{__name__}.{spec.analysis}").analyze
    return _study.run_study(
        name, preset, seeds, out, overrides, reuse, jobs, analyze=analyze, report=write_study_report
    )
