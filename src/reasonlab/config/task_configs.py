"""The task configs, one class per ``task.kind``: twohop, copy, dp and icl."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from reasonlab.config.base import TaskConfig
from reasonlab.config.limits import MAX_ENTITIES, MAX_ITEMS, MAX_LIST, MAX_STEPS, shown

CotMode = Literal["none", "after_relations", "interleaved", "restated"]
NoiseKind = Literal["none", "tail", "bridge", "both"]


class TwoHopTaskConfig(TaskConfig):
    """Two-hop (and k-hop) composition of random atomic facts (arXiv 2405.15071, 2502.04667)."""

    kind: Literal["twohop"] = Field("twohop", description="which task: twohop, copy, dp or icl")
    num_entities: int = Field(
        200, ge=2, le=MAX_ENTITIES, description="entities of the knowledge graph"
    )
    num_relations: int = Field(20, ge=1, le=MAX_ENTITIES, description="relation types")
    out_degree: int = Field(10, ge=1, le=MAX_ENTITIES, description="distinct relations per entity")
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
    khop: list[int] = Field(
        default_factory=list, description="extra k-hop test probes, 3 <= k <= 10"
    )
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
                    f"k-hop probes need 3 <= k <= 10 (two-hop is always there), got {shown(k)}"
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
        description="a test probe per string length (longer than max_length: OOD); lengths "
        "up to 100,000",
    )
    variant: Literal["copy", "selective"] = Field(
        "copy", description="copy, or selective: the string scattered among noise tokens"
    )
    noise_tokens: int = Field(
        0, ge=0, le=100_000, description="selective: noise tokens mixed into each input"
    )
    num_train: int = Field(50_000, ge=1, le=MAX_ITEMS, description="training strings")
    num_test: int = Field(200, ge=1, le=1_000_000, description="test strings per test length")

    @field_validator("test_lengths")
    @classmethod
    def _positive_lengths(cls, value: list[int]) -> list[int]:
        if not value or min(value) < 1 or max(value) > 100_000 or len(value) > MAX_LIST:
            raise ValueError(
                f"needs 1 to {MAX_LIST:,} lengths from 1 to 100,000, got {shown(value)}"
            )
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
        default_factory=list, description="extra test probes at these sizes (OOD), up to 1,000"
    )
    value_range: int = Field(250, ge=2, le=100_000, description="lis: values in [0, value_range)")
    alphabet_size: int = Field(8, ge=2, le=26, description="ed: letters of the two strings")
    modulus: int = Field(11, ge=2, le=1000, description="arithmetic and local: values mod this")
    locality: int = Field(
        2, ge=1, le=1000, description="local: step t reads x_t and step t-m (dp_t = x_t + dp_{t-m})"
    )
    num_train: int = Field(20_000, ge=1, le=MAX_ITEMS, description="training examples")
    num_test: int = Field(500, ge=1, le=1_000_000, description="test examples per probe")

    @field_validator("test_lengths")
    @classmethod
    def _positive_lengths(cls, value: list[int]) -> list[int]:
        if any(n < 1 or n > 1000 for n in value) or len(value) > MAX_LIST:
            raise ValueError(f"needs sizes from 1 to 1,000, got {shown(value)}")
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
        0,
        ge=0,
        le=MAX_STEPS,
        description="icl curriculum: grow dim and points every this many steps (0: off)",
    )
    dim_start: int | None = Field(
        None, ge=1, le=1024, description="icl curriculum: first dimension (null: dim, no growth)"
    )
    dim_step: int = Field(1, ge=1, le=1024, description="icl curriculum: dimension added per stage")
    points_start: int | None = Field(
        None, ge=1, le=10_000, description="icl curriculum: first number of points (null: n_points)"
    )
    points_step: int = Field(
        2, ge=1, le=10_000, description="icl curriculum: points added per stage"
    )
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
