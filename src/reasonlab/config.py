"""Typed run configuration: RunConfig = task + model + train + eval + log.

Every key has a default, so a YAML file may hold only ``task:``. Unknown keys, wrong types and
impossible values are rejected by pydantic before any work starts; ``ConfigError`` carries a
one-line message that names the offending field (the CLI turns it into exit code 2).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$")


class ConfigError(ValueError):
    """Bad user input: a config key, an override, a file. Its message is one line."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# ----------------------------------------------------------------------------- tasks


class TaskConfig(StrictModel):
    """Base of every task config; subclasses register themselves by their ``kind``."""

    kind: str
    seed: int = 0
    registry: ClassVar[dict[str, type[TaskConfig]]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        kind = cls.model_fields["kind"].default
        if isinstance(kind, str):
            TaskConfig.registry[kind] = cls


CotMode = Literal["none", "after_relations", "interleaved", "restated"]
NoiseKind = Literal["none", "tail", "bridge", "both"]


class TwoHopTaskConfig(TaskConfig):
    """Two-hop (and k-hop) composition of random atomic facts (arXiv 2405.15071, 2502.04667)."""

    kind: Literal["twohop"] = "twohop"
    num_entities: int = Field(200, ge=2)
    num_relations: int = Field(20, ge=1)
    out_degree: int = Field(10, ge=1, description="distinct relations per entity")
    ood_fraction: float = Field(0.05, gt=0.0, lt=1.0, description="share of atomic facts held OOD")
    lam: float = Field(4.0, gt=0.0, description="two-hop training facts / ID atomic facts")
    cot: CotMode = "after_relations"
    noise_kind: NoiseKind = "none"
    noise_ratio: float = Field(0.0, ge=0.0, le=1.0, description="xi: share of noisy chains")
    khop: list[int] = Field(default_factory=list, description="extra k-hop test probes, k >= 3")
    id_test_fraction: float = Field(0.005, gt=0.0, lt=1.0)
    max_probe_size: int = Field(3000, ge=1, le=1_000_000)
    data_dir: str | None = Field(None, description="train on a Grokked-layout folder instead")

    @field_validator("khop")
    @classmethod
    def _khop_at_least_three(cls, value: list[int]) -> list[int]:
        for k in value:
            if not 3 <= k <= 10:
                raise ValueError(
                    f"k-hop probes need 3 <= k <= 10 (two-hop is always there), got {k}"
                )
        return sorted(set(value))

    @model_validator(mode="after")
    def _consistent(self) -> TwoHopTaskConfig:
        if self.out_degree > self.num_relations:
            raise ValueError(
                f"out_degree: {self.out_degree} exceeds num_relations={self.num_relations}"
            )
        if self.noise_kind == "none" and self.noise_ratio > 0:
            raise ValueError("noise_ratio: a ratio > 0 needs noise_kind tail, bridge or both")
        if self.noise_kind in ("bridge", "both") and self.cot == "none":
            raise ValueError(f"noise_kind: {self.noise_kind} needs a CoT pattern (cot is none)")
        return self


# ----------------------------------------------------------------------------- model


class ModelConfig(StrictModel):
    kind: Literal["gpt"] = "gpt"
    n_layers: int = Field(4, ge=1, le=1024)
    d_model: int = Field(128, ge=1)
    n_heads: int = Field(4, ge=1)
    d_mlp: int | None = Field(None, ge=1, description="default 4 * d_model")
    positions: Literal["learned", "rotary"] = "learned"
    tie_embeddings: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    max_seq_len: int | None = Field(
        None, ge=1, le=1_000_000, description="default: the task's longest sequence"
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads: d_model={self.d_model} is not divisible by {self.n_heads}")
        if self.positions == "rotary" and (self.d_model // self.n_heads) % 2:
            raise ValueError("positions: rotary positions need an even head dimension")
        return self


# ----------------------------------------------------------------------------- training


class TrainConfig(StrictModel):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(512, ge=1, le=1_048_576)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.1, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(100, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="cosine floor, times lr")
    grad_clip: float = Field(1.0, ge=0.0, description="0 disables clipping")
    seed: int = 0
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    precision: Literal["auto", "fp32", "bf16"] = "auto"

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
        raise ValueError(f"unknown device {value!r} (auto, cpu, cuda, cuda:N)")


class EvalConfig(StrictModel):
    every: int = Field(100, ge=1, description="evaluate every this many steps (and at the end)")
    threshold: float = Field(0.95, ge=0.0, le=1.0)
    batch_size: int = Field(1024, ge=1, le=1_048_576)
    at_start: bool = Field(True, description="also evaluate the untrained model at step 0")


class LogConfig(StrictModel):
    checkpoints: Literal["log", "final", "none"] = Field(
        "log",
        description="log: at evaluations 1, 2, 4, 8, ... eval intervals in, and the last step",
    )
    keep_latest: bool = Field(
        True, description="also keep the newest evaluation's checkpoint, for --resume"
    )
    progress: bool = True


class RunConfig(StrictModel):
    name: str | None = None
    task: SerializeAsAny[TaskConfig] = Field(default_factory=TwoHopTaskConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @field_validator("task", mode="before")
    @classmethod
    def _task_by_kind(cls, value: Any) -> Any:
        if isinstance(value, TaskConfig):
            return value
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ValueError("task must be a mapping")
        kind = value.get("kind", "twohop")
        task_cls = TaskConfig.registry.get(kind)
        if task_cls is None:
            known = ", ".join(sorted(TaskConfig.registry))
            raise ValueError(f"unknown task kind {kind!r} (known: {known})")
        return task_cls.model_validate(value)


# ----------------------------------------------------------------------------- loading


def _format_validation_error(error: ValidationError, prefix: str = "") -> str:
    first = error.errors()[0]
    location = ".".join(filter(None, [prefix, *(str(part) for part in first["loc"])]))
    message = first["msg"].removeprefix("Value error, ")
    # Cross-field validators start their message with the field they blame: "n_heads: ...".
    field_named = re.match(r"^([a-z_]+): (.*)$", message)
    if field_named:
        location = ".".join(filter(None, [location, field_named.group(1)]))
        message = field_named.group(2)
    extra = len(error.errors()) - 1
    more = f" (and {extra} more error{'s' if extra > 1 else ''})" if extra else ""
    return f"{location or 'config'}: {message}{more}"


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=3e-4"`` -> (["train", "lr"], 0.0003); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and NUMBER.match(value.strip()):
        value = float(value)  # YAML 1.1 reads "1e3" as text
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return data


def task_config_from_dict(data: Any) -> TaskConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("task: expected a mapping")
    kind = data.get("kind", "twohop")
    task_cls = TaskConfig.registry.get(kind) if isinstance(kind, str) else None
    if task_cls is None:
        known = ", ".join(sorted(TaskConfig.registry))
        raise ConfigError(f"task.kind: unknown task kind {kind!r} (known: {known})")
    try:
        return task_cls.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, prefix="task")) from None


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    data = dict(data)
    if "task" in data:
        data["task"] = task_config_from_dict(data["task"])
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a YAML file") from None
    except (PermissionError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read ({type(error).__name__})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: malformed YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (task, model, ...)")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    data = read_yaml(path) if path is not None else {}
    return config_from_dict(apply_overrides(data, overrides or []))
