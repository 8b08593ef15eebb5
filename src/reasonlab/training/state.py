"""Where one run's training stands: what was built for it (``Training``), the metrics records
so far with their final, best and threshold scores (``History``), and the summary.json a run
writes before its first step (``start_summary``, for a run alone and for a pack's member)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from reasonlab.config import RunConfig
from reasonlab.core.files import read_json
from reasonlab.runs.checkpoints import TrainingCheckpoints
from reasonlab.runs.folder import RunDir, versions
from reasonlab.runs.integrity import config_digest
from reasonlab.runs.metrics import NONFINITE_KEY
from reasonlab.runs.summary import RunSummary
from reasonlab.tasks import Task
from reasonlab.training.precision import precision_reason
from reasonlab.training.progress import Progress
from reasonlab.training.tracking import Tracking

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
    tracking: Tracking | None = None  # the experiment trackers (log.tracker), once opened

    def elapsed(self) -> float:
        return round(self.elapsed_before + time.perf_counter() - self.started, 3)


def start_summary(state: Training, notes: list[str], fingerprint: str) -> RunSummary:
    """Writes the run's summary.json as it stands before its first step (``running``, the
    scores of a resumed run so far) and returns it, to be completed when training ends."""
    config, data = state.config, state.data
    summary = RunSummary(
        status="running",
        steps=config.train.steps,
        device=str(state.device),
        precision="bf16" if state.autocast else "fp32",
        precision_reason=precision_reason(
            config, state.device, data.io().max_seq_len, state.autocast
        ),
        num_parameters=sum(p.numel() for p in state.model.parameters()),
        data_fingerprint=fingerprint,
        data_stats=data.stats,
        metric=data.metric.as_dict(),
        notes=notes,
        versions=versions(),
        # of config.json as it is on disk: a run made before a config key was added keeps
        # the file it was made with
        config_sha256=config_digest(read_json(state.run.config_path)),
    )
    if state.checkpoints.kept:
        summary.continued_from = sorted(state.checkpoints.kept)
    scores = state.history.summary(config.eval.threshold, data.metric.higher_is_better)
    update = {**scores, "step": state.start_step, "wall_s": state.elapsed_before}
    summary.model_copy(update=update).write(state.run.summary_path)
    return summary


def end_summary(
    state: Training,
    summary: RunSummary,
    status: str,
    error: str | None = None,
    failed_step: int | None = None,
) -> RunSummary:
    """The run's summary as training ends with ``status``: the scores, the step reached, the
    newest checkpoint, the skipped steps, the error and, where the run can go on, the command
    that resumes it (not after a non-finite stop: it would diverge again)."""
    config, run, history = state.config, state.run, state.history
    checkpoints = run.checkpoint_steps()
    final = summary.model_copy(
        update={
            "status": status,
            **history.summary(config.eval.threshold, state.data.metric.higher_is_better),
            "step": history.step,
            "last_checkpoint": checkpoints[-1] if checkpoints else None,
            "wall_s": state.elapsed(),
        }
    )
    if state.skipped:
        final.skipped_steps = len(state.skipped)
        final.skipped_at = state.skipped[:100]
    if status != "completed" and checkpoints and failed_step is None:
        final.resume = f"reasonlab run --resume {run.path}"
    if error:
        final.error = error
        final.failed_step = failed_step
    return final
