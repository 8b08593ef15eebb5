"""The config hash of a checkpoint: which sections of a run's config it was trained on, so that a
resume refuses a checkpoint of another config but not one of a moved or continued run."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from reasonlab.config import RunConfig

# Keys added after checkpoints were first written, with the value that means "as before": at that
# value they are left out of the hash, so that older checkpoints stay resumable.
ADDED_MODEL_KEYS = {
    "attention": "softmax",
    "attention_reg": 0.5,
    "attention_hidden": 16,
    "attention_beta": 0.1,
}


def _hashed_sections(config: RunConfig) -> dict[str, Any]:
    data = config.model_dump(mode="json", include={"task", "model", "train"})
    data["train"].pop("device", None)
    data["train"].pop("on_nonfinite", None)  # what to do on a NaN: not what was trained
    if data["model"].get("attention", "softmax") == "softmax":
        for key in ADDED_MODEL_KEYS:
            data["model"].pop(key, None)
    return data


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def config_hash(config: RunConfig) -> str:
    """Identifies what a checkpoint was trained on (the task, the model and the optimizer); the
    device and the number of steps are left out, so a run can move or be continued."""
    data = _hashed_sections(config)
    data["train"].pop("steps", None)
    return _digest(data)


def legacy_config_hash(config: RunConfig) -> str:
    """The hash of reasonlab 0.1.0 checkpoints, which counted the steps in: still resumable."""
    return _digest(_hashed_sections(config))
