"""Model registry: ``model.kind`` -> a constructor from (model config, vocabulary size, length)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from reasonlab.config import ConfigError, GPTModelConfig, MambaModelConfig, ModelConfig
from reasonlab.models.base import LanguageModel


def _build_gpt(
    cfg: GPTModelConfig, vocab_size: int, max_seq_len: int, **vector_io: int | None
) -> LanguageModel:
    from reasonlab.models.gpt import GPT, GPTConfig

    fields = cfg.model_dump(exclude={"kind", "max_seq_len"})
    return GPT(GPTConfig(vocab_size=vocab_size, max_seq_len=max_seq_len, **fields, **vector_io))


def _build_mamba(
    cfg: MambaModelConfig, vocab_size: int, max_seq_len: int, **vector_io: int | None
) -> LanguageModel:
    from reasonlab.models.mamba import Mamba, MambaConfig

    fields = cfg.model_dump(exclude={"kind", "max_seq_len", "dt_rank"})
    resolved = MambaConfig(
        vocab_size=vocab_size, dt_rank=cfg.resolved_dt_rank, **fields, **vector_io
    )
    return Mamba(resolved)


MAX_PARAMETERS = 2_000_000_000

BUILDERS: dict[str, Callable[..., LanguageModel]] = {"gpt": _build_gpt, "mamba": _build_mamba}


def build_model(
    cfg: ModelConfig,
    vocab_size: int,
    task_seq_len: int,
    input_dim: int | None = None,
    output_dim: int | None = None,
) -> LanguageModel:
    """The model of ``cfg`` for a task's inputs and outputs: token ids over ``vocab_size``
    symbols, or vectors of ``input_dim`` read in and ``output_dim`` read out (a linear map each)
    when those are set; sequences up to ``task_seq_len``."""
    vector_io = {"input_dim": input_dim, "output_dim": output_dim}
    if cfg.tie_embeddings and (input_dim or output_dim):
        raise ConfigError("model.tie_embeddings: a task of vectors has no token embedding to tie")
    max_seq_len = cfg.max_seq_len or task_seq_len
    if max_seq_len < task_seq_len:
        raise ConfigError(
            f"model.max_seq_len: {max_seq_len} is shorter than the task sequences ({task_seq_len})"
        )
    if cfg.kind not in BUILDERS:
        raise ConfigError(f"model.kind: unknown model kind {cfg.kind!r}")
    builder = BUILDERS[cfg.kind]
    with torch.device("meta"):  # counted without allocating: a typo in d_model must not OOM
        count = builder(cfg, vocab_size, max_seq_len, **vector_io).num_parameters()
    if count > MAX_PARAMETERS:
        raise ConfigError(
            f"model.d_model: {count:,} parameters, beyond the {MAX_PARAMETERS:,} reasonlab "
            "builds (n_layers, d_model and the family's widths)"
        )
    return builder(cfg, vocab_size, max_seq_len, **vector_io)
