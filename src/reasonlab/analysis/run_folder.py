"""What every analysed run folder offers, whatever its task: the checkpoints an analysis takes,
their models, the hooks tracing can patch, the folder analyses write to, and the rows and labels
of a heatmap grid. ``runs.py`` (two-hop) and ``token_runs.py`` (every other token task) build on
it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from reasonlab.analysis.patching import hook_kinds, patch_grid
from reasonlab.config import ConfigError, RunConfig
from reasonlab.core.files import write_json
from reasonlab.models.base import LanguageModel
from reasonlab.models.build import build_model
from reasonlab.reporting.plots import trace_over_training
from reasonlab.runs.folder import RunDir


def select_steps(run: RunDir, checkpoint: str) -> list[int]:
    """'last', 'all' or a step number -> checkpoint steps that exist."""
    steps = run.checkpoint_steps()
    if not steps:
        raise ConfigError(f"{run.checkpoint_dir}: no checkpoint to analyze")
    if checkpoint == "last":
        return steps[-1:]
    if checkpoint == "all":
        return steps
    if not checkpoint.isdigit() or int(checkpoint) not in steps:
        raise ConfigError(f"--checkpoint: {checkpoint!r} is not one of last, all, {steps}")
    return [int(checkpoint)]


class AnalysedRun:
    """What every analysed run folder offers: its checkpoints' models, the hooks tracing can
    patch, and the folder analyses write to. Subclasses set ``run``, ``config``,
    ``vocab_size`` and ``seq_len``."""

    run: RunDir
    config: RunConfig
    vocab_size: int
    seq_len: int

    def model(self, step: int) -> LanguageModel:
        return self.run.load_model(step, self.config)

    def hook_kinds(self) -> list[str]:
        """What tracing can patch in this run's model family: the residual stream and each
        per-layer component (built on the meta device: no weights are read)."""
        with torch.device("meta"):
            model = build_model(self.config.model, self.vocab_size, self.seq_len)
        return hook_kinds(model)

    @property
    def out_dir(self) -> Path:
        path = self.run.path / "analysis"
        path.mkdir(exist_ok=True)
        return path


def check_hook(subject: AnalysedRun, hook: str) -> None:
    """A ConfigError naming the hooks of the run's family when ``hook`` is not one of them."""
    kinds = subject.hook_kinds()
    if hook not in kinds:
        known = ", ".join(kinds)
        raise ConfigError(f"--hook: {hook!r} is not one of {known} ({subject.config.model.kind})")


def layer_labels(rows: int, hook: str) -> list[str]:
    """Row labels: 'embed', 'L1', ... for the residual stream; 'L1', ... per block otherwise."""
    if hook == "resid":
        return ["embed", *(f"L{i}" for i in range(1, rows))]
    return [f"L{i}" for i in range(1, rows + 1)]


def grid_rows(grid: torch.Tensor) -> list[list[float | None]]:
    return [[None if np.isnan(v) else round(float(v), 5) for v in row] for row in grid.tolist()]


def trace_steps(
    subject: AnalysedRun,
    steps: list[int],
    tokens: tuple[torch.Tensor, torch.Tensor],
    targets: tuple[torch.Tensor, torch.Tensor],
    read: int,
    hook: str,
) -> list[dict[str, object]]:
    """The patching grid of each checkpoint: clean and corrupt (tokens, targets), the target
    read at position ``read``, ``hook`` patched; as the JSON an analysis writes."""
    results = []
    for step in steps:
        grid = patch_grid(subject.model(step), *tokens, *targets, read, hook=hook)
        results.append(
            {
                "step": step,
                "clean_top1": grid.clean_top1,
                "corrupt_top1": grid.corrupt_top1,
                "top1": grid_rows(grid.top1),
                "rank": grid_rows(grid.rank),
                "prob": grid_rows(grid.prob),
                "logit_diff": grid_rows(grid.logit_diff),
            }
        )
    return results


def write_trace_over_training(
    stem: Path, output: dict[str, Any], labels: list[str], title: str
) -> list[Path]:
    """``--checkpoint all`` of a trace: the JSON of every step and the plot of the clean answer's
    top-1 over training, at ``stem``.json / .png; returns the two paths."""
    results = output["checkpoints"]
    write_json(stem.with_suffix(".json"), output)
    trace_over_training(
        [r["step"] for r in results],
        np.array([r["top1"] for r in results], dtype=float),
        [r["clean_top1"] for r in results],
        output["layers"],
        labels,
        title,
        stem.with_suffix(".png"),
    )
    return [stem.with_suffix(".json"), stem.with_suffix(".png")]
