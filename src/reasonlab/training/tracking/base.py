"""What every experiment tracker offers (``Tracker``), what it is told about the run it mirrors
(``RunInfo``), and the flattening of nested config and summary data into the flat keys that
TensorBoard's hyperparameters and MLflow's params and tags take."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

Scalar = str | int | float | bool


@dataclass(frozen=True)
class RunInfo:
    """The run a tracker mirrors: its folder (the tracker's files go under it), its display
    name, its group (the study or sweep, None for a run alone) and, for a resumed run, the id
    the tracker gave it before (None: a new tracked run)."""

    folder: Path
    name: str
    group: str | None
    run_id: str | None


class Tracker(Protocol):
    """One backend's tracked run. ``run_id`` is what ``tracking.json`` keeps, so that a resume
    reopens the same tracked run."""

    run_id: str

    def log_params(self, config: dict[str, Any]) -> None:
        """The resolved config (nested, as config.json holds it) as hyperparameters."""

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """One metrics record's numbers at its step."""

    def log_summary(self, summary: dict[str, Scalar], step: int) -> None:
        """The run's final summary (flat keys), as it stands at ``step``."""

    def log_image(self, tag: str, png: bytes, step: int) -> None:
        """A figure (PNG bytes) under ``tag``."""

    def close(self, status: str) -> None:
        """Ends this process's share of the tracked run (completed, failed or interrupted)."""


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """Nested mappings as dotted keys; a list becomes its JSON text and None the text "null"
    (the trackers' parameters take only scalars)."""
    flat: dict[str, Scalar] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, path + "."))
        elif value is None or isinstance(value, (list, tuple)):
            flat[path] = json.dumps(value)
        else:
            flat[path] = value
    return flat


def numbers(record: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics record but its step (a null written for a NaN, and the
    ``nonfinite`` note, are left out: a tracker plots numbers)."""
    return {
        key: float(value)
        for key, value in record.items()
        if key != "step"
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    }


def png_size(png: bytes) -> tuple[int, int, int]:
    """(height, width, channels) of a PNG, read from its header."""
    width = int.from_bytes(png[16:20], "big")
    height = int.from_bytes(png[20:24], "big")
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(png[25], 3)
    return height, width, channels
