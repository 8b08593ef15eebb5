"""Model registry: ``model.kind`` -> a constructor from (model config, vocabulary size, length)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from reasonlab.config import ConfigError, GPTModelConfig, MambaModelConfig, ModelConfig
from reasonlab.models.base import LanguageModel


def _build_gpt(cfg: GPTModelConfig, vocab_size: int, max_seq_len: int) -> LanguageModel:
    from reasonlab.models.gpt import GPT, GPTConfig

    fields = cfg.model_dump(exclude={"kind", "max_seq_len"})
    return GPT(GPTConfig(vocab_size=vocab_size, max_seq_len=max_seq_len, **fields))


def _build_mamba(cfg: MambaModelConfig, vocab_size: int, max_seq_len: int) -> LanguageModel:
    from reasonlab.models.mamba import Mamba, MambaConfig

    fields = cfg.model_dump(exclude={"kind", "max_seq_len", "dt_rank"})
    return Mamba(MambaConfig(vocab_size=vocab_size, dt_rank=cfg.resolved_dt_rank, **fields))


MAX_PARAMETERS = 2_000_000_000

BUILDERS: dict[str, Callable[..., LanguageModel]] = {"gpt": _build_gpt, "mamba": _build_mamba}


def build_model(cfg: ModelConfig, vocab_size: int, task_seq_len: int) -> LanguageModel:
    max_seq_len = cfg.max_seq_len or task_seq_len
    if max_seq_len < task_seq_len:
        raise ConfigError(
            f"model.max_seq_len: {max_seq_len} is shorter than the task sequences ({task_seq_len})"
        )
    if cfg.kind not in BUILDERS:
        raise ConfigError(f"model.kind: unknown model kind {cfg.kind!r}")
    builder = BUILDERS[cfg.kind]
    with torch.device("meta"):  # counted without allocating: a typo in d_model must not OOM
        count = builder(cfg, vocab_size, max_seq_len).num_parameters()
    if count > MAX_PARAMETERS:
        raise ConfigError(
            f"model.d_model: {count:,} parameters, beyond the {MAX_PARAMETERS:,} reasonlab "
            "builds (n_layers, d_model and the family's widths)"
        )
    return builder(cfg, vocab_size, max_seq_len)
