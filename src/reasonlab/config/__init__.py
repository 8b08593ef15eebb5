"""Typed run configuration: RunConfig = task + model + train + eval + log.

Every key has a default, so a YAML file may hold only ``task:``. Unknown keys, wrong types and
impossible values are rejected by pydantic before any work starts; ``ConfigError`` carries a
one-line message that names the offending field (the CLI turns it into exit code 2).
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

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

from reasonlab.core.errors import ConfigError

NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# ----------------------------------------------------------------------------- tasks


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


CotMode = Literal["none", "after_relations", "interleaved", "restated"]
NoiseKind = Literal["none", "tail", "bridge", "both"]


class TwoHopTaskConfig(TaskConfig):
    """Two-hop (and k-hop) composition of random atomic facts (arXiv 2405.15071, 2502.04667)."""

    kind: Literal["twohop"] = Field("twohop", description="which task: twohop, copy, dp or icl")
    num_entities: int = Field(200, ge=2, description="entities of the knowledge graph")
    num_relations: int = Field(20, ge=1, description="relation types")
    out_degree: int = Field(10, ge=1, description="distinct relations per entity")
    ood_fraction: float = Field(0.05, gt=0.0, lt=1.0, description="share of atomic facts held OOD")
    lam: float = Field(4.0, gt=0.0, description="two-hop training facts / ID atomic facts")
    cot: CotMode = Field(
        "after_relations",
        description="CoT pattern of two-hop chains: none = h r1 r2 t, after_relations = "
        "h r1 r2 b t, interleaved = h r1 b r2 t, restated = given h r1 r2, write h r1 b r2 t",
    )
    noise_kind: NoiseKind = Field(
        "none", description="none, or what noise corrupts in a noisy chain: tail, bridge or both"
    )
    noise_ratio: float = Field(
        0.0, ge=0.0, le=1.0, description="xi: share of training chains made noisy (tests clean)"
    )
    khop: list[int] = Field(default_factory=list, description="extra k-hop test probes, k >= 3")
    id_test_fraction: float = Field(
        0.005, gt=0.0, lt=1.0, description="share of ID two-hop chains held out as the ID test"
    )
    max_probe_size: int = Field(
        3000, ge=1, le=1_000_000, description="most items per test probe (larger ones sampled)"
    )
    data_dir: str | None = Field(
        None, description="train on this folder (Grokked / explicit-CoT JSON layout) instead"
    )

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


class CopyTaskConfig(TaskConfig):
    """COPY (Jelassi et al.): a random string, ``<sep>``, the same string, ``<eos>``; or the
    selective variant, where the string's tokens are scattered among noise tokens."""

    kind: Literal["copy"] = Field("copy", description="which task: twohop, copy, dp or icl")
    vocab_size: int = Field(26, ge=2, le=10_000, description="symbols the strings are drawn from")
    min_length: int = Field(1, ge=1, le=100_000, description="shortest training string")
    max_length: int = Field(20, ge=1, le=100_000, description="longest training string")
    test_lengths: list[int] = Field(
        default_factory=lambda: [5, 10, 20, 30, 40],
        description="a test probe per string length (longer than max_length: OOD)",
    )
    variant: Literal["copy", "selective"] = Field(
        "copy", description="copy, or selective: the string scattered among noise tokens"
    )
    noise_tokens: int = Field(
        0, ge=0, le=100_000, description="selective: noise tokens mixed into each input"
    )
    num_train: int = Field(50_000, ge=1, le=10_000_000, description="training strings")
    num_test: int = Field(200, ge=1, le=1_000_000, description="test strings per test length")

    @field_validator("test_lengths")
    @classmethod
    def _positive_lengths(cls, value: list[int]) -> list[int]:
        if not value or min(value) < 1:
            raise ValueError(f"needs one or more positive lengths, got {value}")
        return sorted(set(value))

    @model_validator(mode="after")
    def _consistent(self) -> CopyTaskConfig:
        if self.min_length > self.max_length:
            raise ValueError(f"min_length: {self.min_length} exceeds max_length={self.max_length}")
        if self.variant == "selective" and self.noise_tokens < 1:
            raise ValueError("noise_tokens: the selective variant needs at least 1")
        if self.variant == "copy" and self.noise_tokens:
            raise ValueError("noise_tokens: only the selective variant has noise tokens")
        return self


DPProblem = Literal["lis", "ed", "arithmetic", "local"]


class DPTaskConfig(TaskConfig):
    """Dynamic programs (Feng et al. 2023's formats), answered directly or with the DP's trace
    as chain of thought: input ``<sep>`` trace ``<sep>`` answer (direct: input ``<sep>`` answer)."""

    kind: Literal["dp"] = Field("dp", description="which task: twohop, copy, dp or icl")
    problem: DPProblem = Field(
        "lis",
        description="lis (longest increasing subsequence), ed (edit distance), arithmetic "
        "(mod modulus), local (a DP whose step reads the last `locality` steps)",
    )
    mode: Literal["cot", "direct", "stream"] = Field(
        "cot",
        description="cot: write the DP's trace before the answer; direct: the answer only; "
        "stream (lis, local): each input given just before the trace step that reads it",
    )
    length: int = Field(
        8,
        ge=1,
        le=1000,
        description="problem size: LIS sequence length, edit distance's first string, "
        "arithmetic operators, local DP steps",
    )
    test_lengths: list[int] = Field(
        default_factory=list, description="extra test probes at these sizes (OOD)"
    )
    value_range: int = Field(250, ge=2, le=100_000, description="lis: values in [0, value_range)")
    alphabet_size: int = Field(8, ge=2, le=26, description="ed: letters of the two strings")
    modulus: int = Field(11, ge=2, le=1000, description="arithmetic and local: values mod this")
    locality: int = Field(
        2, ge=1, le=1000, description="local: step t reads x_t and step t-m (dp_t = x_t + dp_{t-m})"
    )
    num_train: int = Field(20_000, ge=1, le=10_000_000, description="training examples")
    num_test: int = Field(500, ge=1, le=1_000_000, description="test examples per probe")

    @field_validator("test_lengths")
    @classmethod
    def _positive_lengths(cls, value: list[int]) -> list[int]:
        if any(n < 1 for n in value):
            raise ValueError(f"needs positive sizes, got {value}")
        return sorted(set(value))

    @model_validator(mode="after")
    def _consistent(self) -> DPTaskConfig:
        longest = max([self.length, *self.test_lengths])
        if self.mode == "stream" and self.problem not in ("lis", "local"):
            raise ValueError(
                f"mode: stream needs one trace step per input value (lis, local), not "
                f"{self.problem}"
            )
        if self.problem == "local" and self.locality >= longest:
            raise ValueError(
                f"locality: {self.locality} is not smaller than the sequence (length {longest})"
            )
        if self.problem == "lis" and self.value_range < longest:
            raise ValueError(
                f"value_range: values below {self.value_range} cannot hold an increasing "
                f"sequence of length {longest}"
            )
        return self


FunctionClass = Literal["linear", "sparse_linear", "noisy_linear", "relu2nn", "decision_tree"]


class ICLTaskConfig(TaskConfig):
    """In-context regression (Garg et al. 2022): a prompt interleaves x_1, f(x_1), ..., x_n,
    f(x_n) for a function f drawn afresh per prompt; the model predicts each f(x_i) from the
    pairs before it and x_i. Vectors in, a number out, scored by squared error. Training prompts
    are drawn fresh every step; a curriculum can grow the dimension and the number of points."""

    kind: Literal["icl"] = Field("icl", description="which task: twohop, copy, dp or icl")
    function_class: FunctionClass = Field(
        "linear",
        description="linear (w.x), sparse_linear (sparsity nonzero weights), noisy_linear "
        "(w.x + noise), relu2nn (a two-layer ReLU network), decision_tree (depth `depth`)",
    )
    dim: int = Field(5, ge=1, le=1024, description="icl: dimension d of the inputs x")
    n_points: int = Field(
        11, ge=1, le=10_000, description="icl: (x, f(x)) pairs per prompt (Garg et al.: 2d + 1)"
    )
    sparsity: int = Field(3, ge=1, le=1024, description="sparse_linear: nonzero weights")
    noise_std: float = Field(1.0, ge=0.0, le=1e3, description="noisy_linear: noise std")
    hidden: int = Field(100, ge=1, le=100_000, description="relu2nn: hidden units")
    depth: int = Field(4, ge=1, le=16, description="decision_tree: depth")
    curriculum_every: int = Field(
        0, ge=0, description="icl curriculum: grow dim and points every this many steps (0: off)"
    )
    dim_start: int | None = Field(
        None, ge=1, description="icl curriculum: first dimension (null: dim, no growth)"
    )
    dim_step: int = Field(1, ge=1, description="icl curriculum: dimension added per stage")
    points_start: int | None = Field(
        None, ge=1, description="icl curriculum: first number of points (null: n_points)"
    )
    points_step: int = Field(2, ge=1, description="icl curriculum: points added per stage")
    num_test: int = Field(1000, ge=1, le=1_000_000, description="icl: test prompts")

    @model_validator(mode="after")
    def _consistent(self) -> ICLTaskConfig:
        if self.function_class == "sparse_linear" and self.sparsity > self.dim:
            raise ValueError(f"sparsity: {self.sparsity} exceeds dim={self.dim}")
        if self.dim_start is not None and self.dim_start > self.dim:
            raise ValueError(
                f"dim_start: the curriculum starts at {self.dim_start}, beyond dim={self.dim}"
            )
        if self.points_start is not None and self.points_start > self.n_points:
            raise ValueError(
                f"points_start: the curriculum starts at {self.points_start}, beyond "
                f"n_points={self.n_points}"
            )
        grows = (self.dim_start or self.dim) < self.dim or (
            self.points_start or self.n_points
        ) < self.n_points
        if grows and not self.curriculum_every:
            raise ValueError(
                "curriculum_every: dim_start or points_start set, but the curriculum is off (0)"
            )
        return self

    def stage(self, step: int) -> tuple[int, int]:
        """(dimension, points) of the training prompts at optimizer step ``step``."""
        if not self.curriculum_every:
            return self.dim, self.n_points
        stages = step // self.curriculum_every
        dim = min(self.dim, (self.dim_start or self.dim) + self.dim_step * stages)
        points = min(
            self.n_points, (self.points_start or self.n_points) + self.points_step * stages
        )
        return dim, points


# ----------------------------------------------------------------------------- model


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


AttentionKind = Literal["softmax", "linear", "regularized", "augmented", "negative"]


class GPTModelConfig(ModelConfig):
    """A GPT-2-style decoder (pre-LN, learned or rotary positions)."""

    kind: Literal["gpt"] = Field("gpt", description="model family: gpt or mamba")
    n_heads: int = Field(4, ge=1, description="attention heads per block (divides d_model)")
    d_mlp: int | None = Field(None, ge=1, description="MLP hidden width (null: 4 * d_model)")
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
        "auto", description="rank of the delta projection (auto: ceil(d_model / 16))"
    )

    @field_validator("dt_rank", mode="before")
    @classmethod
    def _auto_or_positive(cls, value: Any) -> Any:
        if value == "auto" or (
            isinstance(value, int) and not isinstance(value, bool) and value > 0
        ):
            return value
        raise ValueError(f"must be 'auto' or a positive integer, not {value!r}")

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


# ----------------------------------------------------------------------------- training


class TrainConfig(StrictModel):
    steps: int = Field(1000, ge=1, description="optimizer steps")
    batch_size: int = Field(512, ge=1, le=1_048_576, description="sequences per step")
    lr: float = Field(1e-3, gt=0.0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(
        0.1, ge=0.0, description="AdamW weight decay (none on norms and biases)"
    )
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    warmup_steps: int = Field(100, ge=0, description="steps of linear warm-up to lr")
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="after warm-up: constant, or cosine down to min_lr_ratio * lr"
    )
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="cosine floor, times lr")
    grad_clip: float = Field(1.0, ge=0.0, description="largest gradient norm; 0 disables clipping")
    seed: int = Field(0, description="seed of the initialization and the batch order")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="auto: bf16 autocast on CUDA and on a CPU with bf16 matrix units (AMX, "
        "AVX512-BF16), else fp32; bf16: autocast anywhere; fp32: none",
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
        raise ValueError(f"unknown device {value!r} (auto, cpu, cuda, cuda:N)")


class EvalConfig(StrictModel):
    every: int = Field(100, ge=1, description="evaluate every this many steps (and at the end)")
    threshold: float = Field(
        0.95,
        ge=0.0,
        le=1.0,
        description="accuracy counted as reached (steps_to_threshold); for a task scored by "
        "error (icl), the error at or below which it counts",
    )
    batch_size: int = Field(1024, ge=1, le=1_048_576, description="sequences per eval batch")
    sample: int | None = Field(
        None,
        ge=1,
        description="rows per probe scored at the evaluations before the last (a fixed random "
        "subset, the same each time); null: every row. The last evaluation scores every row",
    )
    at_start: bool = Field(True, description="also evaluate the untrained model at step 0")


class LogConfig(StrictModel):
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


class RunConfig(StrictModel):
    name: str | None = Field(
        None, description="run name, used for the run folder (null: the config file's name)"
    )
    task: SerializeAsAny[TaskConfig] = Field(
        default_factory=TwoHopTaskConfig, description="the task: its data and probes"
    )
    model: SerializeAsAny[ModelConfig] = Field(
        default_factory=GPTModelConfig, description="the model: its family and shape"
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="optimization")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="evaluation")
    log: LogConfig = Field(default_factory=LogConfig, description="checkpoints and progress")

    @field_validator("task", mode="before")
    @classmethod
    def _task_by_kind(cls, value: Any) -> Any:
        return _by_kind(TaskConfig, TaskConfig.registry, "twohop", "task", value)

    @field_validator("model", mode="before")
    @classmethod
    def _model_by_kind(cls, value: Any) -> Any:
        return _by_kind(ModelConfig, ModelConfig.registry, "gpt", "model", value)


# ----------------------------------------------------------------------------- loading


def section_models(annotation: Any) -> list[type[BaseModel]]:
    """The config classes a field holds: its own, the members of a union, or every registered
    task kind for ``task``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation is TaskConfig:
            return list(TaskConfig.registry.values())
        if annotation is ModelConfig:
            return list(ModelConfig.registry.values())
        return [annotation]
    return [model for arg in get_args(annotation) for model in section_models(arg)]


def _models_at(root: type[BaseModel], path: list[str]) -> list[type[BaseModel]]:
    """The config classes of the section at ``path`` below ``root`` (none: not a section)."""
    models = [root]
    for part in path:
        fields = [model.model_fields[part] for model in models if part in model.model_fields]
        models = [model for field in fields for model in section_models(field.annotation)]
    return models


def key_paths(root: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """Every leaf key below ``root`` (default RunConfig), dotted: name, task.kind, ..."""
    paths: dict[str, None] = {}
    for name, field in (root or RunConfig).model_fields.items():
        path = f"{prefix}{name}"
        sections = section_models(field.annotation)
        if not sections:
            paths[path] = None
        for section in sections:
            paths.update(dict.fromkeys(key_paths(section, path + ".")))
    return list(paths)


def _unknown_key(root: type[BaseModel], section: list[str], key: str) -> str:
    """'unknown key' and the closest valid key: in the same section, else the same name in
    another section, else the section's keys."""
    models = _models_at(root, section)
    keys = list(dict.fromkeys(name for model in models for name in model.model_fields))
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if close:
        return f"unknown key (did you mean {close[0]}?)"
    elsewhere = [path for path in key_paths() if path.rsplit(".", 1)[-1] == key]
    if elsewhere:
        return f"unknown key (did you mean {' or '.join(elsewhere)}?)"
    where = f"keys of {'.'.join(section)}" if section else "top-level keys"
    return f"unknown key ({where}: {', '.join(keys)})"


def _section_not_a_mapping(path: str, models: list[type[BaseModel]], value: Any) -> str:
    """A section given a value (``--set train=5``): say it is a section and how to set a key."""
    example = next(
        (
            f"{path}.{name}={field.default}"
            for model in models
            for name, field in model.model_fields.items()
            if name not in ("kind", "seed") and isinstance(field.default, (bool, int, float, str))
        ),
        f"{path}.KEY=VALUE",
    )
    if value is None:
        return f"{path}: is an empty section; leave it out or set a key in it (e.g. {example})"
    return f"{path}: is a section, not a value; set a key in it (e.g. --set {example})"


def _format_validation_error(
    error: ValidationError, prefix: str = "", root: type[BaseModel] | None = None
) -> str:
    """One line naming the field: pydantic's first error, in reasonlab's words. ``root`` is the
    class validated (default RunConfig) and ``prefix`` its path in the config."""
    root = root or RunConfig
    first = error.errors()[0]
    loc = [str(part) for part in first["loc"]]
    location = ".".join(filter(None, [prefix, *loc]))
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = _unknown_key(root, loc[:-1], loc[-1])
    elif first["type"] == "model_type" and _models_at(root, loc):
        return _section_not_a_mapping(location, _models_at(root, loc), first.get("input"))
    else:
        # Cross-field validators start their message with the field they blame: "n_heads: ...".
        field_named = re.match(r"^([a-z_]+): (.*)$", message)
        if field_named:
            location = ".".join(filter(None, [location, field_named.group(1)]))
            message = field_named.group(2)
        message = re.sub(r" or instance of \w+", "", message)  # no internal class names
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
    """Applies ``--set`` texts (``key.sub=value``, the value read as YAML) to ``data``."""
    for text in overrides:
        path, value = parse_override(text)
        set_key(data, path, value, f"--set {text!r}")
    return data


def set_key(data: dict[str, Any], path: list[str], value: Any, where: str) -> dict[str, Any]:
    """``data[path[0]][path[1]]... = value`` with typed values (None stays None), making
    sections on the way; ``where`` names the source in errors.

    Setting ``task.kind`` or ``model.kind`` to another kind switches the section's family: the
    keys the new kind does not have are dropped (``--set model.kind=mamba`` on a GPT config
    keeps n_layers and d_model and drops n_heads); the rest of the section stays."""
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: {part} is not a section")
        node = child
    if len(path) == 2 and path[0] in KIND_SECTIONS and path[1] == "kind":
        _switch_kind(node, path[0], value)
    node[path[-1]] = value
    return data


def _switch_kind(section: dict[str, Any], name: str, kind: Any) -> None:
    base, default = KIND_SECTIONS[name]
    cls = base.registry.get(kind) if isinstance(kind, str) else None  # type: ignore[attr-defined]
    if cls is None or section.get("kind", default) == kind:
        return  # an unknown kind is reported when the config is validated
    for key in [key for key in section if key not in cls.model_fields]:
        del section[key]


KIND_SECTIONS: dict[str, tuple[type[StrictModel], str]] = {
    "task": (TaskConfig, "twohop"),
    "model": (ModelConfig, "gpt"),
}


def kind_section_from_dict(section: str, data: Any) -> Any:
    """The ``task`` or ``model`` section: the class registered for its ``kind``, validated, with
    errors named by their path in the config (``model.d_state: ...``)."""
    base, default = KIND_SECTIONS[section]
    if data is None and section == "task":
        data = {}  # ``task:`` alone has always meant the default task
    if not isinstance(data, dict):
        raise ConfigError(_section_not_a_mapping(section, _models_at(RunConfig, [section]), data))
    kind = data.get("kind", default)
    cls = base.registry.get(kind) if isinstance(kind, str) else None  # type: ignore[attr-defined]
    if cls is None:
        known = ", ".join(sorted(base.registry))  # type: ignore[attr-defined]
        raise ConfigError(f"{section}.kind: unknown {section} kind {kind!r} (known: {known})")
    for key in data:
        owners = [k for k, c in base.registry.items() if key in c.model_fields]  # type: ignore[attr-defined]
        if key not in cls.model_fields and owners:
            raise ConfigError(
                f"{section}.{key}: a key of {section}.kind {' or '.join(owners)}, not of {kind} "
                f"(its keys: {', '.join(k for k in cls.model_fields if k != 'kind')})"
            )
    try:
        return cls.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, prefix=section, root=cls)) from None


def task_config_from_dict(data: Any) -> TaskConfig:
    return kind_section_from_dict("task", data)


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    data = dict(data)
    for section in KIND_SECTIONS:
        if section in data:
            data[section] = kind_section_from_dict(section, data[section])
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
