"""Task registry: a task kind maps to a builder (config -> TaskData) and a dataset writer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from reasonlab.config import ConfigError, TaskConfig
from reasonlab.tasks.base import Probe, TaskData
from reasonlab.tasks.grokked_folder import write_folder
from reasonlab.tasks.twohop import build_twohop

BUILDERS: dict[str, Callable[..., TaskData]] = {"twohop": build_twohop}
WRITERS: dict[str, Callable[..., dict[str, int]]] = {"twohop": write_folder}


def build_task(cfg: TaskConfig) -> TaskData:
    builder = BUILDERS.get(cfg.kind)
    if builder is None:
        raise ConfigError(f"task.kind: no builder for {cfg.kind!r}")
    return builder(cfg)


def write_dataset(cfg: TaskConfig, out: Path) -> dict[str, int]:
    if cfg.kind not in WRITERS:
        raise ConfigError(f"task.kind: {cfg.kind!r} has no dataset writer")
    return WRITERS[cfg.kind](cfg, Path(out))


__all__ = ["Probe", "TaskData", "build_task", "write_dataset"]
