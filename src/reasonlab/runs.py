"""The run folder: config.json, metrics.jsonl, checkpoints/step-<N>.safetensors, summary.json.

Every file is written atomically (temporary file, flush, fsync, rename), so a killed run never
leaves half a checkpoint or half a summary; ``metrics.jsonl`` is appended line by line and a torn
last line is dropped when the run is resumed. Checkpoints hold the model, the optimizer state and
the RNG states in one safetensors file (no pickle); small scalars go to its string metadata.
"""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from reasonlab.config import ConfigError, RunConfig, config_from_dict
from reasonlab.io import atomic_path, make_dir, read_json, write_json

CHECKPOINT = re.compile(r"^step-(\d+)\.safetensors$")


def versions() -> dict[str, str]:
    import numpy

    from reasonlab import __version__

    return {
        "reasonlab": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


# ----------------------------------------------------------------------------- the run folder


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    summary_path = property(lambda self: self.path / "summary.json")
    checkpoint_dir = property(lambda self: self.path / "checkpoints")

    # -- creation and reading

    def create(self, config: RunConfig) -> None:
        """Makes a new run folder; refuses a folder that already holds anything."""
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            what = "a run (config.json)" if self.config_path.exists() else "other files"
            raise ConfigError(
                f"--out {self.path}: already holds {what}; choose another folder"
                + (" or --resume it" if self.config_path.exists() else "")
            )
        make_dir(self.checkpoint_dir)
        write_json(self.config_path, config.model_dump(mode="json"))

    def load_config(self) -> RunConfig:
        if not self.path.is_dir():
            raise ConfigError(f"{self.path}: no such run folder")
        data = read_json(self.config_path)
        if not isinstance(data, dict):
            raise ConfigError(f"{self.config_path}: expected a JSON object")
        try:
            return config_from_dict(data)
        except ConfigError as error:
            raise ConfigError(f"{self.config_path}: {error}") from None

    def summary(self) -> dict[str, Any] | None:
        return read_json(self.summary_path) if self.summary_path.exists() else None

    # -- metrics

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        """All complete records; a torn last line (from a killed process) is skipped."""
        if not self.metrics_path.exists():
            return []
        records = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "step" in record:
                records.append(record)
        return records

    def truncate_metrics(self, last_step: int) -> list[dict[str, Any]]:
        """Keeps records up to ``last_step`` (dropping torn lines); used on resume."""
        records = [r for r in self.read_metrics() if r["step"] <= last_step]
        with atomic_path(self.metrics_path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        return records

    # -- checkpoints

    def checkpoint_steps(self) -> list[int]:
        if not self.checkpoint_dir.is_dir():
            return []
        steps = [
            int(m.group(1))
            for p in self.checkpoint_dir.iterdir()
            if (m := CHECKPOINT.match(p.name))
        ]
        return sorted(steps)

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoint_dir / f"step-{step}.safetensors"

    def save_checkpoint(
        self, step: int, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]
    ) -> Path:
        path = self.checkpoint_path(step)
        path.parent.mkdir(parents=True, exist_ok=True)  # a resumed run may have lost the folder
        meta = {key: json.dumps(value) for key, value in {**metadata, "step": step}.items()}
        with atomic_path(path) as tmp:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                str(tmp),
                metadata=meta,
            )
        return path

    def load_checkpoint(self, step: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return load_checkpoint_file(self.checkpoint_path(step))

    def delete_checkpoint(self, step: int) -> None:
        self.checkpoint_path(step).unlink(missing_ok=True)

    def remove_temporary_files(self) -> None:
        """Deletes the temporary files of atomic writes that a killed process left behind."""
        for folder in (self.path, self.checkpoint_dir):
            if folder.is_dir():
                for tmp in folder.glob(".*.tmp-*"):
                    tmp.unlink(missing_ok=True)


def load_checkpoint_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a checkpoint; a corrupt or foreign file is a ConfigError."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
        tensors = load_file(str(path))
        metadata = {key: json.loads(value) for key, value in raw.items()}
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as error:
        reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise ConfigError(f"{path}: not a readable safetensors checkpoint ({reason})") from None
    return tensors, metadata


def is_log_spaced(step: int, every: int) -> bool:
    """True at evaluation steps 1, 2, 4, 8, ... intervals of ``every`` into training."""
    if step % every:
        return False
    n = step // every
    return n > 0 and n & (n - 1) == 0
