"""Task registry: a task kind maps to a builder (config -> Task) and a dataset writer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from reasonlab.config import ConfigError, TaskConfig
from reasonlab.tasks.base import Probe, Task, TaskData
from reasonlab.tasks.twohop.folder import write_folder
from reasonlab.tasks.twohop.task import build_twohop


def _build_copy(cfg: TaskConfig) -> TaskData:
    from reasonlab.tasks.copy import build_copy

    return build_copy(cfg)  # type: ignore[arg-type]


def _build_dp(cfg: TaskConfig) -> TaskData:
    from reasonlab.tasks.dp.task import build_dp

    return build_dp(cfg)  # type: ignore[arg-type]


def _build_icl(cfg: TaskConfig) -> Task:
    from reasonlab.tasks.icl import build_icl

    return build_icl(cfg)  # type: ignore[arg-type]


def _write_icl(cfg: TaskConfig, out: Path) -> dict[str, int]:
    from reasonlab.tasks.icl import write_icl_dataset

    return write_icl_dataset(cfg, out)  # type: ignore[arg-type]


def _write_text(cfg: TaskConfig, out: Path) -> dict[str, int]:
    from reasonlab.tasks.text_files import write_text_dataset

    data = build_task(cfg)
    assert isinstance(data, TaskData)  # only token tasks have text writers
    return write_text_dataset(data, out)


BUILDERS: dict[str, Callable[..., Task]] = {
    "twohop": build_twohop,
    "copy": _build_copy,
    "dp": _build_dp,
    "icl": _build_icl,
}
# Tasks whose models read and write vectors, not tokens: no vocabulary, no text of tokens.
VECTOR_TASKS = frozenset({"icl"})
WRITERS: dict[str, Callable[..., dict[str, int]]] = {
    "twohop": write_folder,
    "copy": _write_text,
    "dp": _write_text,
    "icl": _write_icl,
}


def build_task(cfg: TaskConfig) -> Task:
    builder = BUILDERS.get(cfg.kind)
    if builder is None:
        raise ConfigError(f"task.kind: no builder for {cfg.kind!r}")
    return builder(cfg)


def write_dataset(cfg: TaskConfig, out: Path) -> dict[str, int]:
    if cfg.kind not in WRITERS:
        raise ConfigError(f"task.kind: {cfg.kind!r} has no dataset writer")
    return WRITERS[cfg.kind](cfg, Path(out))


__all__ = ["VECTOR_TASKS", "Probe", "Task", "TaskData", "build_task", "write_dataset"]
