"""One run's trackers together (``Tracking``) and their state in the run folder,
``tracking.json``: each backend's id of the tracked run, so that ``--resume`` continues the same
tracked run, and the newest step logged, so that a resumed run never logs a step twice (the steps
it trains again after its newest checkpoint were logged before it was killed)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasonlab.config import ConfigError
from reasonlab.core.files import read_json, write_json
from reasonlab.training.tracking.base import RunInfo, Tracker, flatten, numbers
from reasonlab.training.tracking.registry import open_backend

STATE_FILE = "tracking.json"
# what of summary.json a tracker gets: the outcome and the scores, not the notes and versions
SUMMARY_KEYS = (
    "status",
    "step",
    "steps",
    "wall_s",
    "num_parameters",
    "device",
    "precision",
    "error",
    "failed_step",
    "skipped_steps",
    "final",
    "best",
    "steps_to_threshold",
)


def _read_state(folder: Path) -> tuple[dict[str, str], int]:
    """(backend -> tracked run id, newest step logged) from ``tracking.json``; a new run has
    none."""
    path = folder / STATE_FILE
    if not path.exists():
        return {}, -1
    data = read_json(path)
    runs = data.get("runs") if isinstance(data, dict) else None
    last = data.get("last_step") if isinstance(data, dict) else None
    valid_runs = isinstance(runs, dict) and all(isinstance(v, str) for v in runs.values())
    if not valid_runs or not isinstance(last, int) or isinstance(last, bool):
        raise ConfigError(f"{path}: damaged (expected runs and last_step); remove it to track anew")
    return runs, last


@dataclass
class Tracking:
    """The trackers of one run (or of a study's report), by name."""

    folder: Path
    trackers: dict[str, Tracker] = field(default_factory=dict)
    last_step: int = -1  # the newest step logged; only later ones are logged

    @classmethod
    def open(
        cls, names: list[str], folder: Path, name: str, group: str | None, config: dict[str, Any]
    ) -> Tracking:
        """Opens each tracker: the tracked run ``tracking.json`` names, or a new one that gets
        ``config`` as its hyperparameters (once: a resume keeps those of the first session)."""
        ids, last_step = _read_state(folder)
        tracking = cls(folder, last_step=last_step)
        try:
            for backend in names:
                run_id = ids.get(backend)
                tracker = open_backend(backend, RunInfo(folder, name, group, run_id))
                tracking.trackers[backend] = tracker
                if run_id is None:
                    tracker.log_params(config)
        except BaseException:
            tracking.close("failed")
            raise
        tracking._save()
        return tracking

    def _save(self) -> None:
        runs = {name: tracker.run_id for name, tracker in self.trackers.items()}
        write_json(self.folder / STATE_FILE, {"runs": runs, "last_step": self.last_step})

    def log(self, record: dict[str, Any]) -> None:
        """A metrics record, unless its step was logged already. The step is recorded as logged
        before the trackers get it: a kill in between loses that step, never doubles it."""
        step = record["step"]
        if step <= self.last_step:
            return
        self.last_step = step
        self._save()
        values = numbers(record)
        for tracker in self.trackers.values():
            tracker.log_metrics(step, values)

    def log_images(self, figures: dict[str, bytes], step: int) -> None:
        """Figures (tag -> PNG) at ``step``, unless that step was logged already."""
        if step <= self.last_step:
            return
        self.last_step = step
        self._save()
        for tag, png in figures.items():
            for tracker in self.trackers.values():
                tracker.log_image(tag, png, step)

    def finish(self, summary: dict[str, Any], status: str) -> None:
        """The final summary, then every tracker closed (``status``: completed, failed,
        interrupted)."""
        kept = flatten({key: summary[key] for key in SUMMARY_KEYS if key in summary})
        step = max(self.last_step, 0)
        for name, tracker in self.trackers.items():
            warn_on_error(name, "the summary", lambda t=tracker: t.log_summary(kept, step))
        self.close(status)

    def close(self, status: str) -> None:
        for name, tracker in self.trackers.items():
            warn_on_error(name, "closing", lambda t=tracker: t.close(status))
        self.trackers = {}


def warn_on_error(name: str, what: str, action: Any) -> None:
    # A run ending (perhaps on an error of its own) is not failed again by its tracker
    try:
        action()
    except Exception as error:
        print(f"warning: log.tracker: {name}: {what} failed: {error}", file=sys.stderr)


def names_of(config_name: str | None, folder: Path) -> tuple[str, str | None]:
    """A tracked run's display name (the run's name, else its folder's) and its group: the
    study or sweep a run belongs to, the part of its name before '/' (``study/variant-s0``)."""
    name = config_name or folder.name
    return name, (name.split("/", 1)[0] if "/" in name else None)


def open_tracking(
    names: list[str],
    folder: Path,
    config_name: str | None,
    config: dict[str, Any],
    done: list[dict[str, Any]],
) -> Tracking | None:
    """The trackers of a run in ``folder`` (None when it has none), with the records ``done``
    (a resumed run's records so far) logged where a tracker has not got them yet."""
    if not names:
        return None
    name, group = names_of(config_name, folder)
    tracking = Tracking.open(names, folder, name, group, config)
    for record in done:
        tracking.log(record)
    return tracking
