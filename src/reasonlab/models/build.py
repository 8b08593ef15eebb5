"""Model registry: ``model.kind`` -> a constructor from (ModelConfig, vocabulary size, length)."""

from __future__ import annotations

from collections.abc import Callable

from reasonlab.config import ConfigError, ModelConfig
from reasonlab.models.gpt import GPT, GPTConfig
from reasonlab.models.hooks import HookedModule


def _build_gpt(cfg: ModelConfig, vocab_size: int, max_seq_len: int) -> HookedModule:
    return GPT(
        GPTConfig(
            vocab_size=vocab_size,
            max_seq_len=max_seq_len,
            n_layers=cfg.n_layers,
            d_model=cfg.d_model,
            n_heads=cfg.n_heads,
            d_mlp=cfg.d_mlp,
            positions=cfg.positions,
            tie_embeddings=cfg.tie_embeddings,
            dropout=cfg.dropout,
        )
    )


MAX_PARAMETERS = 2_000_000_000

BUILDERS: dict[str, Callable[[ModelConfig, int, int], HookedModule]] = {"gpt": _build_gpt}


def build_model(cfg: ModelConfig, vocab_size: int, task_seq_len: int) -> HookedModule:
    max_seq_len = cfg.max_seq_len or task_seq_len
    if max_seq_len < task_seq_len:
        raise ConfigError(
            f"model.max_seq_len: {max_seq_len} is shorter than the task sequences ({task_seq_len})"
        )
    d_mlp = cfg.d_mlp or 4 * cfg.d_model
    estimate = (
        cfg.n_layers * (4 * cfg.d_model**2 + 2 * cfg.d_model * d_mlp)
        + (2 * vocab_size + max_seq_len) * cfg.d_model
    )
    if estimate > MAX_PARAMETERS:
        raise ConfigError(
            f"model.d_model: about {estimate:,} parameters, beyond the {MAX_PARAMETERS:,} "
            "reasonlab builds (n_layers, d_model, d_mlp)"
        )
    if cfg.kind not in BUILDERS:
        raise ConfigError(f"model.kind: unknown model kind {cfg.kind!r}")
    return BUILDERS[cfg.kind](cfg, vocab_size, max_seq_len)
