"""TensorBoard: event files in ``RUN/tensorboard`` (``tensorboard --logdir`` on a study folder
shows its runs side by side). The config goes in as hyperparameters (the HParams dashboard) and
as JSON text; the summary as JSON text at the last step. A resumed run writes a new event file
into the same folder, which TensorBoard reads as one run."""

from __future__ import annotations

import json
from typing import Any

from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from reasonlab.training.tracking.base import RunInfo, Scalar, flatten, png_size

FOLDER = "tensorboard"


class TensorBoardTracker:
    def __init__(self, info: RunInfo) -> None:
        self.run_id = FOLDER  # the run is its folder, relative to the run folder
        self.writer = SummaryWriter(str(info.folder / FOLDER))

    def log_params(self, config: dict[str, Any]) -> None:
        # written into this run's own file (add_hparams would make a run of its own)
        for event in hparams(flatten(config), {}):
            self.writer.file_writer.add_summary(event)
        self.writer.add_text("config", _as_code(config), 0)
        self.writer.flush()

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # a kill loses no record that tracking.json counts as logged

    def log_summary(self, summary: dict[str, Scalar], step: int) -> None:
        self.writer.add_text("summary", _as_code(summary), step)
        self.writer.flush()

    def log_image(self, tag: str, png: bytes, step: int) -> None:
        height, width, channels = png_size(png)
        image = Summary.Image(
            height=height, width=width, colorspace=channels, encoded_image_string=png
        )
        self.writer.file_writer.add_summary(
            Summary(value=[Summary.Value(tag=tag, image=image)]), step
        )
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()


def _as_code(data: dict[str, Any]) -> str:
    # TensorBoard renders text as Markdown: indent four spaces for a code block
    return "\n".join("    " + line for line in json.dumps(data, indent=2).splitlines())


def open_tracker(info: RunInfo) -> TensorBoardTracker:
    return TensorBoardTracker(info)
