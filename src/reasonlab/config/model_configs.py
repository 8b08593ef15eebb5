"""The model configs, one class per ``model.kind``: gpt and mamba."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from reasonlab.config.base import ModelConfig
from reasonlab.config.limits import MAX_MLP, MAX_WIDTH, shown

AttentionKind = Literal["softmax", "linear", "regularized", "augmented", "negative"]


class GPTModelConfig(ModelConfig):
    """A GPT-2-style decoder (pre-LN, learned or rotary positions)."""

    kind: Literal["gpt"] = Field("gpt", description="model family: gpt or mamba")
    n_heads: int = Field(
        4, ge=1, le=MAX_WIDTH, description="attention heads per block (divides d_model)"
    )
    d_mlp: int | None = Field(
        None, ge=1, le=MAX_MLP, description="MLP hidden width (null: 4 * d_model)"
    )
    positions: Literal["learned", "rotary"] = Field(
        "learned", description="position encoding: a learned table or rotary (RoPE)"
    )
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="dropout on embeddings, attention and MLP outputs"
    )
    attention: AttentionKind = Field(
        "softmax",
        description="softmax; linear (no softmax, scores averaged); regularized (the query's own "
        "term scaled by 1 - attention_reg); augmented (residual MLPs on keys and values); "
        "negative (beta times the mean of the other values subtracted)",
    )
    attention_reg: float = Field(
        0.5, ge=0.0, le=1.0, description="regularized: the own term's weight is 1 - this"
    )
    attention_hidden: int = Field(
        16, ge=1, le=65_536, description="augmented: hidden width of the key and value MLPs"
    )
    attention_beta: float = Field(
        0.1, ge=0.0, le=10.0, description="negative: weight of the other values' mean"
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> GPTModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads: d_model={self.d_model} is not divisible by {self.n_heads}")
        if self.positions == "rotary" and (self.d_model // self.n_heads) % 2:
            raise ValueError("positions: rotary positions need an even head dimension")
        return self

    def describe(self) -> str:
        mlp = f", MLP {self.d_mlp}" if self.d_mlp else ""
        attention = {
            "softmax": "",
            "linear": ", linear attention",
            "regularized": f", regularized attention ({self.attention_reg:g})",
            "augmented": f", augmented attention (MLP {self.attention_hidden})",
            "negative": f", attention with negatives (beta {self.attention_beta:g})",
        }[self.attention]
        return (
            f"gpt {self.n_layers} layers x {self.d_model}, {self.n_heads} heads{mlp}, "
            f"{self.positions} positions{attention}"
        )


class MambaModelConfig(ModelConfig):
    """A Mamba-1 language model (pre-norm RMSNorm residual blocks around a selective SSM)."""

    kind: Literal["mamba"] = Field("mamba", description="model family: gpt or mamba")
    d_state: int = Field(16, ge=1, le=4096, description="SSM state size N per channel")
    expand: int = Field(2, ge=1, le=64, description="inner width = expand * d_model")
    d_conv: int = Field(4, ge=1, le=64, description="width of the causal depthwise convolution")
    dt_rank: Literal["auto"] | int = Field(
        "auto",
        description="rank of the delta projection (auto: ceil(d_model / 16)); at most "
        f"{MAX_WIDTH:,}",
    )

    @field_validator("dt_rank", mode="before")
    @classmethod
    def _auto_or_positive(cls, value: Any) -> Any:
        if value == "auto" or (
            isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_WIDTH
        ):
            return value
        raise ValueError(
            f"must be 'auto' or an integer from 1 to {MAX_WIDTH:,}, not {shown(value)}"
        )

    def describe(self) -> str:
        return (
            f"mamba {self.n_layers} layers x {self.d_model}, d_state {self.d_state}, "
            f"expand {self.expand}, d_conv {self.d_conv}, dt_rank {self.resolved_dt_rank}"
        )

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def resolved_dt_rank(self) -> int:
        return math.ceil(self.d_model / 16) if self.dt_rank == "auto" else int(self.dt_rank)
