"""RunConfig = task + model + train + eval + log: the typed run configuration.

Every key has a default, so a YAML file may hold only ``task:``. The task and model sections are
keyed by ``kind`` (their classes in task_configs.py and model_configs.py); train, eval and log
have one class each.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializeAsAny, field_validator

from reasonlab.config.base import ModelConfig, StrictModel, TaskConfig
from reasonlab.config.limits import MAX_BATCH, MAX_ITEMS, MAX_NAME, MAX_SEED, MAX_STEPS, shown
from reasonlab.config.model_configs import GPTModelConfig
from reasonlab.config.task_configs import TwoHopTaskConfig


def _by_kind(
    base: type[StrictModel], registry: dict[str, Any], default: str, section: str, value: Any
) -> Any:
    """A section keyed by ``kind`` (task, model): the registered class of that kind, validated."""
    if isinstance(value, base):
        return value
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ValueError(f"{section} must be a mapping")
    kind = value.get("kind", default)
    cls = registry.get(kind) if isinstance(kind, str) else None
    if cls is None:
        known = ", ".join(sorted(registry))
        raise ValueError(f"unknown {section} kind {kind!r} (known: {known})")
    return cls.model_validate(value)


class TrainConfig(StrictModel):
    """The ``train`` section: optimizer, schedule, seed, device and precision."""

    steps: int = Field(1000, ge=1, le=MAX_STEPS, description="optimizer steps")
    batch_size: int = Field(512, ge=1, le=MAX_BATCH, description="sequences per step")
    lr: float = Field(1e-3, gt=0.0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(
        0.1, ge=0.0, description="AdamW weight decay (none on norms and biases)"
    )
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    warmup_steps: int = Field(100, ge=0, le=MAX_STEPS, description="steps of linear warm-up to lr")
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="after warm-up: constant, or cosine down to min_lr_ratio * lr"
    )
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="cosine floor, times lr")
    grad_clip: float = Field(1.0, ge=0.0, description="largest gradient norm; 0 disables clipping")
    seed: int = Field(
        0, ge=-MAX_SEED, le=MAX_SEED, description="seed of the initialization and the batch order"
    )
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="auto: bf16 autocast on CUDA, and on a CPU with bf16 matrix units (AMX, "
        "AVX512-BF16) for a model of d_model >= 128 and >= 2560 tokens a batch (smaller ones "
        "are faster in fp32 there), else fp32; bf16: autocast anywhere; fp32: none",
    )
    on_nonfinite: Literal["stop", "skip_step"] = Field(
        "stop",
        description="a NaN or infinite loss or gradient norm: stop (the run fails at that step, "
        "its last finite checkpoint kept) or skip_step (the step is not applied; counted in "
        "summary.json)",
    )

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in value):
            raise ValueError(f"betas must lie in [0, 1), got {list(value)}")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError(f"unknown device {shown(value)} (auto, cpu, cuda, cuda:N)")


class EvalConfig(StrictModel):
    """The ``eval`` section: when the probes are scored, and on how many rows."""

    every: int = Field(
        100, ge=1, le=MAX_STEPS, description="evaluate every this many steps (and at the end)"
    )
    threshold: float = Field(
        0.95,
        ge=0.0,
        le=1.0,
        description="accuracy counted as reached (steps_to_threshold); for a task scored by "
        "error (icl), the error at or below which it counts",
    )
    batch_size: int = Field(1024, ge=1, le=MAX_BATCH, description="sequences per eval batch")
    sample: int | None = Field(
        None,
        ge=1,
        le=MAX_ITEMS,
        description="rows per probe scored at the evaluations before the last (a fixed random "
        "subset, the same each time); null: every row. The last evaluation scores every row",
    )
    at_start: bool = Field(True, description="also evaluate the untrained model at step 0")


TRACKERS = ("none", "tensorboard", "wandb", "mlflow")  # log.tracker's choices


def tracker_names(value: str | list[str]) -> list[str]:
    """The trackers a ``log.tracker`` value chooses, in its order (none: an empty list)."""
    names = [value] if isinstance(value, str) else list(value)
    return [name for name in names if name != "none"]


class LogConfig(StrictModel):
    """The ``log`` section: which checkpoints are kept, the progress shown, and the experiment
    trackers that mirror the run."""

    checkpoints: Literal["log", "final", "none"] = Field(
        "log",
        description="checkpoints kept: log = at 1, 2, 4, 8, ... eval intervals and the last "
        "step; final = the last step; none",
    )
    keep_latest: bool = Field(
        True, description="also keep the newest evaluation's checkpoint, for --resume"
    )
    progress: bool = Field(
        True, description="show progress (a live bar in a terminal, else a line per evaluation)"
    )
    tracker: str | list[str] = Field(
        "none",
        description="experiment tracking: none, tensorboard, wandb or mlflow, or a list naming "
        "several; each gets the config, every metrics record at its step, the final summary "
        "(and a study's report figures). Files go under the run folder: tensorboard/, wandb/ "
        "(offline unless WANDB_MODE or WANDB_API_KEY is set), mlruns/ (unless "
        "MLFLOW_TRACKING_URI is set). Each needs its extra: pip install 'reasonlab[wandb]'",
    )

    @field_validator("tracker", mode="before")
    @classmethod
    def _known_trackers(cls, value: Any) -> Any:
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise ValueError(f"expected a tracker or a list of trackers, got {shown(value)}")
        for name in names:
            if name not in TRACKERS:
                raise ValueError(f"unknown tracker {shown(name)} (known: {', '.join(TRACKERS)})")
        if "none" in names and len(names) > 1:
            raise ValueError("none cannot be listed with other trackers")
        if len(set(names)) < len(names):
            raise ValueError(f"a tracker is named twice in {names}")
        return value

    def trackers(self) -> list[str]:
        """The trackers chosen, in the order given (none: an empty list)."""
        return tracker_names(self.tracker)


class RunConfig(StrictModel):
    """A run's whole config; ``task`` and ``model`` are validated as the class of their
    ``kind``."""

    name: str | None = Field(
        None,
        max_length=MAX_NAME,
        description="run name; without --out the run folder is runs/NAME-YYYYMMDD-HHMMSS "
        f"(null: the config file's name); at most {MAX_NAME} characters",
    )
    task: SerializeAsAny[TaskConfig] = Field(
        default_factory=TwoHopTaskConfig, description="the task: its data and probes"
    )
    model: SerializeAsAny[ModelConfig] = Field(
        default_factory=GPTModelConfig, description="the model: its family and shape"
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="optimization")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="evaluation")
    log: LogConfig = Field(
        default_factory=LogConfig, description="checkpoints, progress and experiment tracking"
    )

    @field_validator("task", mode="before")
    @classmethod
    def _task_by_kind(cls, value: Any) -> Any:
        return _by_kind(TaskConfig, TaskConfig.registry, "twohop", "task", value)

    @field_validator("model", mode="before")
    @classmethod
    def _model_by_kind(cls, value: Any) -> Any:
        return _by_kind(ModelConfig, ModelConfig.registry, "gpt", "model", value)
