"""Model registry: ``model.kind`` -> a constructor from (model config, vocabulary size, length),
and the check that a model fits in memory, made from the config before anything is allocated."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

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
# What training holds per parameter: fp32 weights, gradients and AdamW's two moments, 4 x 4 bytes.
BYTES_PER_PARAMETER = 16


def estimate_parameters(
    cfg: ModelConfig,
    vocab_size: int,
    max_seq_len: int,
    input_dim: int | None = None,
    output_dim: int | None = None,
) -> int:
    """The parameters of ``cfg``'s model counted from the config alone (no tensor is made, so a
    width of 2^32 cannot overflow anything): embeddings, blocks, final norm and unembedding."""
    d, layers = cfg.d_model, cfg.n_layers
    embed = input_dim * d + d if input_dim else vocab_size * d
    unembed = 0 if cfg.tie_embeddings else d * (output_dim or vocab_size)
    if isinstance(cfg, MambaModelConfig):
        inner, state, rank = cfg.d_inner, cfg.d_state, cfg.resolved_dt_rank
        block = d + d * 2 * inner + inner * (cfg.d_conv + 1) + inner * (rank + 2 * state)
        block += (rank + 1) * inner + inner * state + inner + inner * d
        return embed + layers * block + d + unembed
    if isinstance(cfg, GPTModelConfig):
        mlp = cfg.d_mlp or 4 * d
        block = 4 * d + 4 * d * d + 4 * d + 2 * d * mlp + mlp + d
        if cfg.attention == "augmented":  # a key MLP and a value MLP on each head's vectors
            head, hidden = d // cfg.n_heads, cfg.attention_hidden
            block += 2 * (2 * head * hidden + hidden + head)
        positions = max_seq_len * d if cfg.positions == "learned" else 0
        return embed + positions + layers * block + 2 * d + unembed
    return embed + layers * 12 * d * d + unembed  # another family: a GPT-like block


def memory_bytes(device: torch.device | None = None) -> int | None:
    """The memory a model is trained in: the CUDA device's, else this machine's (the smaller of
    its physical memory and a cgroup limit); None where it cannot be told."""
    if device is not None and device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    sizes = []
    try:
        import psutil

        sizes.append(int(psutil.virtual_memory().total))
    except ImportError:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # "max" or a huge number: no limit
            sizes.append(int(text))
    return min(sizes) if sizes else None


def _size(n_bytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n_bytes < 1024 or unit == "PiB":
            return f"{n_bytes:,.0f} {unit}" if unit == "bytes" else f"{n_bytes:,.1f} {unit}"
        n_bytes /= 1024
    raise AssertionError


def check_fits(
    cfg: ModelConfig, count: int, vocab_size: int, device: torch.device | None = None
) -> None:
    """A ConfigError naming model.d_model when ``count`` parameters, with their gradients and
    AdamW's state, need more than the memory the model is trained in."""
    available = memory_bytes(device)
    needed = count * BYTES_PER_PARAMETER
    if available is not None and needed > available:
        where = f"{device} memory" if device is not None and device.type == "cuda" else "memory"
        raise ConfigError(
            f"model.d_model: ~{count:,} parameters (n_layers {cfg.n_layers} x d_model "
            f"{cfg.d_model}, {vocab_size:,} tokens) need ~{_size(needed)} to train ({needed:,} "
            f"bytes: 4 x 4 bytes each for weights, gradients and AdamW's two moments), more than "
            f"the {_size(available)} of {where}; make the model smaller"
        )


BUILDERS: dict[str, Callable[..., LanguageModel]] = {"gpt": _build_gpt, "mamba": _build_mamba}


def build_model(
    cfg: ModelConfig,
    vocab_size: int,
    task_seq_len: int,
    input_dim: int | None = None,
    output_dim: int | None = None,
    device: torch.device | str | None = None,
) -> LanguageModel:
    """The model of ``cfg`` for a task's inputs and outputs: token ids over ``vocab_size``
    symbols, or vectors of ``input_dim`` read in and ``output_dim`` read out (a linear map each)
    when those are set; sequences up to ``task_seq_len``. A model that would not fit, with its
    training state, in the memory of the machine (or of ``device``, a CUDA device it is to be
    trained on) is a ConfigError before any tensor is made."""
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
    estimate = estimate_parameters(cfg, vocab_size, max_seq_len, input_dim, output_dim)
    check_fits(cfg, estimate, vocab_size, torch.device(device) if device is not None else None)
    with torch.device("meta"):  # counted without allocating: a typo in d_model must not OOM
        count = builder(cfg, vocab_size, max_seq_len, **vector_io).num_parameters()
    if count > MAX_PARAMETERS:
        raise ConfigError(
            f"model.d_model: {count:,} parameters, beyond the {MAX_PARAMETERS:,} reasonlab "
            "builds (n_layers, d_model and the family's widths)"
        )
    return builder(cfg, vocab_size, max_seq_len, **vector_io)
