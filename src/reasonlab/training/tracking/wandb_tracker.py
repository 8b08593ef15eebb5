"""Weights & Biases: offline (files under ``RUN/wandb``, uploaded later by ``wandb sync``)
unless the user configured W&B (``WANDB_MODE``, or ``WANDB_API_KEY`` to log in). The run id is
ours, kept in ``tracking.json``: a resume opens the same id with ``resume="allow"``, which W&B
merges into one run. Several runs may be open in one process (a pack's members)."""

from __future__ import annotations

import io
import os
import secrets
import time
from pathlib import Path
from typing import Any

import wandb

from reasonlab.training.tracking.base import RunInfo, Scalar


def _mode() -> str | None:
    # None: W&B's own settings decide (the user chose a mode, or gave a key to log in with)
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return None
    return "offline"


def _after_last_session(folder: Path, run_id: str) -> None:
    """An offline session's folder is named by its start second and the run id; a session of
    the same run started within the same second would write into the previous one's."""
    while list((folder / "wandb").glob(f"offline-run-{time.strftime('%Y%m%d_%H%M%S')}-{run_id}")):
        time.sleep(0.05)


class WandbTracker:
    def __init__(self, info: RunInfo) -> None:
        self.run_id = info.run_id or secrets.token_hex(4)  # 8 characters, as W&B makes them
        mode = _mode()
        if mode == "offline":
            _after_last_session(info.folder, self.run_id)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "reasonlab"),
            dir=str(info.folder),
            id=self.run_id,
            resume="allow",
            name=info.name,
            group=info.group,
            mode=mode,
            reinit="create_new",  # a pack's members are runs open side by side
            settings=wandb.Settings(console="off", silent=True),
        )

    def log_params(self, config: dict[str, Any]) -> None:
        self.run.config.update(config, allow_val_change=True)

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def log_summary(self, summary: dict[str, Scalar], step: int) -> None:
        self.run.summary.update(summary)

    def log_image(self, tag: str, png: bytes, step: int) -> None:
        from PIL import Image

        self.run.log({tag: wandb.Image(Image.open(io.BytesIO(png)))}, step=step)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "completed" else 1)


def open_tracker(info: RunInfo) -> WandbTracker:
    return WandbTracker(info)
