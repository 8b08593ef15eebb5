"""A study's own tracked run, beside its runs' (in the study's group, named ``STUDY/report``):
its settings as hyperparameters, its report's figures as images, its outcome and the verdict of
each claim as its summary. Its ``tracking.json`` is in the study folder."""

from __future__ import annotations

from pathlib import Path

from reasonlab.config import tracker_names
from reasonlab.runs.summary import StudyResult
from reasonlab.training.tracking.base import Scalar
from reasonlab.training.tracking.registry import require_trackers
from reasonlab.training.tracking.session import Tracking, warn_on_error


def study_trackers(result: StudyResult) -> list[str]:
    """Every tracker that one of the study's runs chose (``log.tracker``), in order."""
    names: dict[str, None] = {}
    for run in result.runs.values():
        names.update(dict.fromkeys(tracker_names(run.config.get("log", {}).get("tracker", "none"))))
    return list(names)


def track_study(folder: Path, result: StudyResult, figures: dict[str, bytes]) -> None:
    """Mirrors a finished study into the trackers its runs chose (none: nothing). The figures
    are logged at the step that counts the study's runs, once for each count."""
    names = study_trackers(result)
    if not names:
        return
    require_trackers(names)
    params = {
        "study": result.study,
        "preset": result.preset,
        "seeds": result.seeds,
        "overrides": result.overrides,
        "runs": list(result.runs),
    }
    summary: dict[str, Scalar] = {"status": result.status or "completed", "runs": len(result.runs)}
    if result.wall_s is not None:
        summary["wall_s"] = result.wall_s
    for claim in result.claims:
        summary[f"claim.{claim.id}"] = claim.verdict or "measured"
    tracking = Tracking.open(names, Path(folder), f"{result.study}/report", result.study, params)
    step = len(result.runs)
    try:
        tracking.log_images(figures, step)
    finally:
        for name, tracker in tracking.trackers.items():
            warn_on_error(name, "the summary", lambda t=tracker: t.log_summary(summary, step))
        tracking.close(str(summary["status"]))
