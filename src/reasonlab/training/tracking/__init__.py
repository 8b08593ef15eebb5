"""Experiment tracking (``log.tracker``): TensorBoard, Weights & Biases and MLflow mirror a run's
config, its metrics records and its summary, and a study's report figures. The run folder stays
the record; a tracker is a view of it. Each backend is a module here, imported only when a run
chooses it (``registry.py``); ``session.py`` holds one run's trackers and ``tracking.json``."""

from reasonlab.training.tracking.registry import BACKENDS, require_trackers
from reasonlab.training.tracking.session import STATE_FILE, Tracking, names_of, open_tracking

__all__ = [
    "BACKENDS",
    "STATE_FILE",
    "Tracking",
    "names_of",
    "open_tracking",
    "require_trackers",
]
