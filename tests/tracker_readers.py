"""Readers of what each experiment tracker wrote into a run folder, straight from its files: the
TensorBoard event files, the offline W&B run files (``.wandb``: a LevelDB-style log of protobuf
records) and the MLflow file store. Each returns a ``Tracked``: the tracked run ids, the
hyperparameters, every metric value with its step in the order written, the summary and the
image tags. Used by tests/training/test_tracking*.py."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Tracked:
    run_ids: list[str] = field(default_factory=list)  # one per session (a resume adds one)
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # as written
    summary: dict[str, Any] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)
    group: str | None = None
    name: str | None = None
    experiment: str | None = None  # MLflow's

    def value_at(self, key: str, step: int) -> float:
        values = [value for at, value in self.metrics[key] if at == step]
        assert len(values) == 1, (key, step, self.metrics[key])
        return values[0]

    def steps(self, key: str) -> list[int]:
        return [step for step, _ in self.metrics[key]]


# ----------------------------------------------------------------------------- TensorBoard


def read_tensorboard(folder: Path) -> Tracked:
    """``folder`` (a run's ``tensorboard/``), every event file in the order written; orphaned
    steps are kept (not purged), so a step written twice shows twice."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    events = EventAccumulator(
        str(folder),
        size_guidance={"scalars": 0, "tensors": 0, "images": 0},
        purge_orphaned_data=False,
    )
    events.Reload()
    tags = events.Tags()
    tracked = Tracked(run_ids=[folder.name])  # a TensorBoard run is its folder
    for tag in tags["scalars"]:
        tracked.metrics[tag] = [(e.step, e.value) for e in events.Scalars(tag)]
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    for key, value in hparams.items():
        tracked.params[key] = getattr(value, value.WhichOneof("kind"))
    texts = events.Tensors("summary/text_summary")
    text = texts[-1].tensor_proto.string_val[0].decode()
    tracked.summary = json.loads("\n".join(line[4:] for line in text.splitlines()))
    tracked.images = list(tags["images"])
    return tracked


# ----------------------------------------------------------------------------- W&B

BLOCK, HEADER = 32768, 7  # the log's block size and record header: crc32, length, type


def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of one offline ``.wandb`` file (records may span blocks: FULL,
    or FIRST, MIDDLE..., LAST)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), path
    records, pos, pending = [], HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # the rest of a block too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if len(chunk) < length:  # torn by a kill
            break
        if kind in (1, 2):  # FULL, FIRST
            pending = chunk
        elif kind in (3, 4):  # MIDDLE, LAST
            pending += chunk
        else:
            continue
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _items(updates: Any) -> dict[str, Any]:
    return {
        ".".join(item.nested_key) or item.key: json.loads(item.value_json)
        for item in updates
        if not (item.key or item.nested_key[0]).startswith("_")
    }


def read_wandb(folder: Path) -> Tracked:
    """Every offline session under ``folder`` (a run's ``wandb/``), oldest first."""
    tracked = Tracked()
    sessions = sorted(folder.glob("offline-run-*/run-*.wandb"), key=lambda p: p.parent.name)
    for path in sessions:
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                tracked.run_ids.append(record.run.run_id)
                tracked.group, tracked.name = record.run.run_group, record.run.display_name
                tracked.params.update(_items(record.run.config.update))
            elif kind == "config":
                tracked.params.update(_items(record.config.update))
            elif kind == "history":
                values = {
                    ".".join(item.nested_key) or item.key: json.loads(item.value_json)
                    for item in record.history.item
                }
                step = values.pop("_step")
                # an image is logged as nested keys: TAG._type = "image-file", TAG.path, ...
                images = [k[: -len("._type")] for k, v in values.items() if v == "image-file"]
                tracked.images += images
                for key, value in values.items():
                    if key.startswith("_") or any(key.startswith(f"{i}.") for i in images):
                        continue
                    tracked.metrics.setdefault(key, []).append((step, value))
            elif kind == "summary":
                tracked.summary.update(_items(record.summary.update))
    return tracked


# ----------------------------------------------------------------------------- MLflow


def read_mlflow(store: Path) -> list[Tracked]:
    """Every run of the file store ``store`` (a run's ``mlruns/``)."""
    import os

    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    found: list[Tracked] = []
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            run_id = run.info.run_id
            tracked = Tracked(
                run_ids=[run_id], params=dict(run.data.params), experiment=experiment.name
            )
            for key in run.data.metrics:
                history = client.get_metric_history(run_id, key)
                tracked.metrics[key] = [(m.step, m.value) for m in history]
            tags = run.data.tags
            tracked.summary = {
                k.removeprefix("summary."): v for k, v in tags.items() if k.startswith("summary.")
            }
            tracked.summary["_run_status"] = run.info.status
            tracked.group, tracked.name = tags.get("group"), run.info.run_name
            artifacts = client.list_artifacts(run_id, "figures")
            tracked.images = [Path(a.path).stem for a in artifacts]
            found.append(tracked)
    return found
