"""The bases of every config class: strict pydantic models, and the two sections keyed by
``kind`` (task, model), whose classes register themselves so that a new kind is one class."""

from __future__ import annotations

from typing import Any, ClassVar, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reasonlab.config.limits import MAX_SEED, MAX_WIDTH, shown


def _wants_number(annotation: Any) -> bool:
    """Whether a field holds numbers (int, float, optional, or a list or tuple of them)."""
    if annotation in (int, float):
        return True
    return any(_wants_number(arg) for arg in get_args(annotation))


def _has_bool(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return any(isinstance(item, bool) for item in value)
    return isinstance(value, bool)


class StrictModel(BaseModel):
    """Unknown keys, NaN and infinity are refused; assignments are validated too. A boolean
    where a number is expected (``steps: true``, which pydantic would read as 1) is refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name) if isinstance(name, str) else None
                if field is not None and _wants_number(field.annotation) and _has_bool(value):
                    raise ValueError(
                        f"{name}: expected a number, not a boolean (got {shown(value)})"
                    )
        return data


class TaskConfig(StrictModel):
    """Base of every task config; subclasses register themselves by their ``kind``."""

    kind: str
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="seed of the generated data (graph, splits, noise)"
    )
    registry: ClassVar[dict[str, type[TaskConfig]]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        kind = cls.model_fields["kind"].default
        if isinstance(kind, str):
            TaskConfig.registry[kind] = cls


class ModelConfig(StrictModel):
    """Base of every model config; subclasses register themselves by their ``kind``."""

    kind: str
    n_layers: int = Field(4, ge=1, le=1024, description="blocks")
    d_model: int = Field(128, ge=1, le=MAX_WIDTH, description="width of the residual stream")
    tie_embeddings: bool = Field(False, description="the unembedding reuses the embedding")
    max_seq_len: int | None = Field(
        None, ge=1, le=1_000_000, description="longest sequence (null: the task's longest)"
    )
    registry: ClassVar[dict[str, type[ModelConfig]]] = {}

    def describe(self) -> str:
        """One line for reports: the family and its shape."""
        raise NotImplementedError

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        kind = cls.model_fields["kind"].default
        if isinstance(kind, str):
            ModelConfig.registry[kind] = cls


# The sections keyed by ``kind``: (base class, default kind).
KIND_SECTIONS: dict[str, tuple[type[StrictModel], str]] = {
    "task": (TaskConfig, "twohop"),
    "model": (ModelConfig, "gpt"),
}
