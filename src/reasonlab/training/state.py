"""Where one run's training stands: what was built for it (``Training``) and the metrics records
so far with their final, best and threshold scores (``History``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from reasonlab.config import RunConfig
from reasonlab.runs.checkpoints import TrainingCheckpoints
from reasonlab.runs.folder import RunDir
from reasonlab.runs.metrics import NONFINITE_KEY
from reasonlab.tasks import Task
from reasonlab.training.progress import Progress

RESERVED_KEYS = ("step", "loss", "lr", "tokens", "elapsed_s", NONFINITE_KEY)


@dataclass
class History:
    records: list[dict[str, Any]] = field(default_factory=list)
    step: int = 0  # the last optimizer step completed

    def probe_keys(self) -> list[str]:
        keys: dict[str, None] = {}
        for record in self.records:
            keys.update({k: None for k in record if k not in RESERVED_KEYS})
        return list(keys)

    def summary(self, threshold: float, higher_is_better: bool = True) -> dict[str, Any]:
        """Final and best value of every probe key, and the first step each reached the
        threshold: at or above it for an accuracy, at or below it for an error."""
        keys = self.probe_keys()
        final = {k: self.records[-1].get(k) for k in keys} if self.records else {}
        pick = max if higher_is_better else min
        best = {
            k: pick((r[k] for r in self.records if r.get(k) is not None), default=None)
            for k in keys
        }

        def reached(value: float | None) -> bool:
            if value is None:
                return False
            return value >= threshold if higher_is_better else value <= threshold

        steps = {
            k: next((r["step"] for r in self.records if reached(r.get(k))), None) for k in keys
        }
        return {"final": final, "best": best, "steps_to_threshold": steps}


@dataclass
class Training:
    """Everything the loop of one run works with: what was built, and where training stands."""

    config: RunConfig
    run: RunDir
    data: Task
    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    autocast: bool
    checkpoints: TrainingCheckpoints
    history: History
    progress: Progress | None = None
    start_step: int = 0
    elapsed_before: float = 0.0  # wall seconds of the run before this process took it over
    tokens_seen: int = 0
    skipped: list[int] = field(default_factory=list)  # steps not applied (non-finite, skip_step)
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return round(self.elapsed_before + time.perf_counter() - self.started, 3)
