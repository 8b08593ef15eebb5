"""MLflow: a file store under the run folder (``RUN/mlruns``; ``mlflow ui --backend-store-uri
RUN/mlruns``) unless ``MLFLOW_TRACKING_URI`` names another. The experiment is the run's group
(its study or sweep; ``MLFLOW_EXPERIMENT_NAME``, else "reasonlab", for a run alone). The config
goes in as params, each record's numbers as metrics at its step, the summary as ``summary.*``
tags, figures as artifacts under ``figures/``. Through ``MlflowClient`` with explicit run ids
(no active run), so a pack's members are tracked side by side."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from reasonlab.config import ConfigError
from reasonlab.training.tracking.base import RunInfo, Scalar, flatten

BATCH = 100  # MLflow's limit of params in one log_batch call
ENDED = {"completed": "FINISHED", "failed": "FAILED"}  # else KILLED (interrupted)


def _tracking_uri(folder: Path) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    # MLflow 3 refuses a file store unless asked for one; a run folder's store is that request
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (folder / "mlruns").resolve().as_uri()


class MlflowTracker:
    def __init__(self, info: RunInfo) -> None:
        self.client = MlflowClient(tracking_uri=_tracking_uri(info.folder))
        if info.run_id is not None:
            try:
                self.client.update_run(info.run_id, status="RUNNING")
            except MlflowException as error:
                raise ConfigError(
                    f"log.tracker: mlflow: the run's tracked run {info.run_id} is not in the "
                    f"tracking store ({error.message.splitlines()[0]})"
                ) from None
            self.run_id = info.run_id
            return
        default = os.environ.get("MLFLOW_EXPERIMENT_NAME", "reasonlab")
        experiment = info.group or default
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        tags = {"group": info.group} if info.group else {}
        run = self.client.create_run(experiment_id, run_name=info.name, tags=tags)
        self.run_id = run.info.run_id

    def log_params(self, config: dict[str, Any]) -> None:
        params = [Param(key, str(value)) for key, value in flatten(config).items()]
        for start in range(0, len(params), BATCH):
            self.client.log_batch(self.run_id, params=params[start : start + BATCH])

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(key, value, now, step) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_summary(self, summary: dict[str, Scalar], step: int) -> None:
        tags = [RunTag(f"summary.{key}", str(value)) for key, value in summary.items()]
        for start in range(0, len(tags), BATCH):
            self.client.log_batch(self.run_id, tags=tags[start : start + BATCH])

    def log_image(self, tag: str, png: bytes, step: int) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{tag.rsplit('/', 1)[-1]}.png"
            path.write_bytes(png)
            self.client.log_artifact(self.run_id, str(path), "figures")

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, ENDED.get(status, "KILLED"))


def open_tracker(info: RunInfo) -> MlflowTracker:
    return MlflowTracker(info)
