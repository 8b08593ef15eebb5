"""The trackers by name: the module of each backend, the package it needs and the extra that
installs it. A backend's module (and its package) is imported only when a run chooses it."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from reasonlab.config import ConfigError
from reasonlab.training.tracking.base import RunInfo, Tracker


@dataclass(frozen=True)
class Backend:
    module: str  # reasonlab's module for it, with ``open_tracker(info) -> Tracker``
    package: str  # the module it imports, whose absence is reported
    extra: str  # pip install 'reasonlab[EXTRA]'


BACKENDS = {
    "tensorboard": Backend("tensorboard_tracker", "tensorboard", "tensorboard"),
    "wandb": Backend("wandb_tracker", "wandb", "wandb"),
    "mlflow": Backend("mlflow_tracker", "mlflow", "mlflow"),
}


def require_trackers(names: list[str]) -> None:
    """Refuses, before anything is trained or written, a tracker whose package is missing: one
    line naming the field and the pip command that installs it."""
    for name in names:
        backend = BACKENDS[name]
        try:
            importlib.import_module(backend.package)
        except ImportError:
            raise ConfigError(
                f"log.tracker: {name} needs the {backend.package} package, which is not "
                f"installed: pip install 'reasonlab[{backend.extra}]'"
            ) from None


def open_backend(name: str, info: RunInfo) -> Tracker:
    """Backend ``name``'s tracked run for ``info`` (new, or reopened by ``info.run_id``)."""
    require_trackers([name])
    module = importlib.import_module(f"{__package__}.{BACKENDS[name].module}")
    tracker: Tracker = module.open_tracker(info)
    return tracker
