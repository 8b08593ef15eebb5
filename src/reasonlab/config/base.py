"""The bases of every config class: strict pydantic models, and the two sections keyed by
``kind`` (task, model), whose classes register themselves so that a new kind is one class."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """Unknown keys, NaN and infinity are refused; assignments are validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class TaskConfig(StrictModel):
    """Base of every task config; subclasses register themselves by their ``kind``."""

    kind: str
    seed: int = Field(0, ge=0, description="seed of the generated data (graph, splits, noise)")
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
    d_model: int = Field(128, ge=1, description="width of the residual stream")
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
