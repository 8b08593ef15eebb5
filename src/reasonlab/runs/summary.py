"""What a run's ``summary.json`` and a study's ``summary.json`` hold, as typed models.

Both live here, in ``runs``: training (below reporting) writes ``RunSummary``; experiments write
``StudyResult``, a set of run summaries with their configs; reporting, the studies and the runs
table read both. ``runs`` is the lowest layer that all of them may import, and a study result is
made of run summaries, so the two stay side by side.

The JSON on disk is the one written before these models existed: a model writes only the keys it
was given (``exclude_unset``), in the order of its fields, which is the order training and the
study runner always wrote them in. Keys that a model does not know (from another version) are
kept (``extra="allow"``) and written after the known ones.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from reasonlab.config import ConfigError
from reasonlab.core.files import read_json, write_json

RunStatus = Literal["running", "completed", "failed", "interrupted"]
Scores = dict[str, float | None]  # probe name (or probe.stage) -> value
Model = TypeVar("Model", bound="_Written")


class _Written(BaseModel):
    """A model read from and written to one JSON file, key for key."""

    model_config = ConfigDict(extra="allow")

    def as_json(self) -> dict[str, Any]:
        """The JSON object as written: the keys that were given, in the order of the fields."""
        return self.model_dump(exclude_unset=True)

    def write(self, path: Path) -> None:
        write_json(path, self.as_json())

    def write_if_possible(self, path: Path) -> OSError | None:
        """Writes the file; on a full disk in place, if the new text fits the blocks the old
        file holds (a failure must be recorded even where no new file can be made). Returns
        the error when it could not be written at all (None when it was)."""
        try:
            self.write(path)
            return None
        except OSError as error:
            failure = error
        if failure.errno not in (errno.ENOSPC, errno.EDQUOT):
            return failure
        text = (json.dumps(self.as_json(), indent=2) + "\n").encode()
        try:
            if len(text) > -(-path.stat().st_size // 4096) * 4096:
                return failure
            with open(path, "r+b") as handle:
                handle.write(text)
                handle.truncate()
                handle.flush()
                os.fsync(handle.fileno())
            return None
        except OSError:
            return failure

    @classmethod
    def parse(cls: type[Model], data: Any, source: Path | str) -> Model:
        """The model of ``data`` (read from ``source``); a ConfigError naming the source and the
        first wrong key otherwise."""
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "top level"
            raise ConfigError(f"{source}: {where}: {first['msg']}") from None

    @classmethod
    def read(cls: type[Model], path: Path) -> Model:
        return cls.parse(read_json(path), path)


class RunMetric(BaseModel):
    """What a task's probes measure: its label and whether higher is better."""

    label: str
    higher_is_better: bool = True


class RunSummary(_Written):
    """A run's ``summary.json``, rewritten by training at its start and at its end. A failed
    trial of a study or a sweep that never reached training holds only ``status`` and
    ``error``; summaries of older versions may lack any key, so every field has a default."""

    status: RunStatus | None = None
    steps: int | None = None  # train.steps
    device: str | None = None
    precision: str | None = None  # bf16 or fp32
    precision_reason: str | None = None  # why (training.precision.choose_precision)
    num_parameters: int | None = None
    data_fingerprint: str | None = None
    data_stats: dict[str, Any] = {}
    metric: RunMetric | None = None
    notes: list[str] = []
    versions: dict[str, str] = {}
    continued_from: list[int] = []  # steps whose checkpoints a longer run continued from
    final: Scores = {}
    best: Scores = {}
    steps_to_threshold: dict[str, int | None] = {}  # first evaluated step at the threshold
    step: int | None = None  # the last optimizer step completed
    last_checkpoint: int | None = None
    wall_s: float | None = None
    resume: str | None = None  # the command that resumes a stopped run
    error: str | None = None
    failed_step: int | None = None  # where a non-finite loss or gradient stopped the run
    skipped_steps: int | None = None  # steps not applied (non-finite, train.on_nonfinite: skip)
    skipped_at: list[int] = []  # the first 100 of them
    config_sha256: str | None = None  # of config.json as written; checked when it is read

    @classmethod
    def read_if_present(cls, path: Path) -> RunSummary | None:
        """The summary at ``path``, None where the run has none yet."""
        return cls.read(path) if path.exists() else None


class StudyRun(RunSummary):
    """A run of a study as its ``summary.json`` lists it: the run's summary and its resolved
    config (``RunConfig.model_dump(mode="json")``)."""

    config: dict[str, Any] = {}


class StudyClaim(BaseModel):
    """A claim the study's analysis checked (``reporting.content.Claim``): its stable ``id``
    (the claim's key, or STUDY-N by position), its sentence with the numbers, its verdict
    (None: the sentence states the measurement alone) and each seed's values where recorded."""

    model_config = ConfigDict(extra="allow")

    id: str
    text: str
    verdict: str | None = None
    per_seed: dict[str, list[float | None]] | None = None


class StudyResult(_Written):
    """A study's ``summary.json``, rewritten after every run: the runs in the study's order,
    then the analysis data the study's analysis returned (JSON as it returned it), the claims
    its report checks, the machine it ran on and the UTC date of the last write."""

    study: str
    preset: str
    seeds: int = 1
    overrides: list[str] = []
    status: RunStatus | None = None
    runs: dict[str, StudyRun] = {}
    wall_s: float | None = None
    analysis: Any = None
    claims: list[StudyClaim] = []
    machine: dict[str, Any] = {}  # cpu, cores, device (name), platform
    date: str | None = None  # UTC, of the last write
