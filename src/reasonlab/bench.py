"""Speed benchmarks against real peers in the same process.

``step_time``: one training step (forward, completion loss, backward, AdamW) of reasonlab's GPT
against Hugging Face ``GPT2LMHeadModel`` of the same shape (when ``transformers`` is installed),
same batch, same threads; median over repeats after warm-up.

``mamba_step_time``: the same for reasonlab's Mamba against mambapy's Mamba (with an embedding,
final RMSNorm and head around it) and Hugging Face ``MambaForCausalLM`` of the same shape, and
reasonlab's GPT of the same depth and width for scale.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reasonlab.config import ConfigError, GPTModelConfig, MambaModelConfig
from reasonlab.models.build import build_model
from reasonlab.models.gpt import GPT, GPTConfig


def _time_steps(
    model: nn.Module,
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    tokens: torch.Tensor,
    repeats: int,
    warmup: int,
) -> list[float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for i in range(warmup + repeats):
        started = time.perf_counter()
        logits = logits_of(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - started)
    return times


def step_time(
    n_layers: int = 4,
    d_model: int = 128,
    n_heads: int = 4,
    vocab_size: int = 222,
    batch_size: int = 512,
    seq_len: int = 5,
    repeats: int = 20,
    warmup: int = 3,
) -> dict[str, Any]:
    torch.manual_seed(0)
    tokens = torch.randint(0, vocab_size, (batch_size, seq_len))
    ours = GPT(
        GPTConfig(
            vocab_size=vocab_size,
            max_seq_len=seq_len,
            n_layers=n_layers,
            d_model=d_model,
            n_heads=n_heads,
        )
    )
    results: dict[str, Any] = {
        "shape": {
            "n_layers": n_layers,
            "d_model": d_model,
            "n_heads": n_heads,
            "vocab_size": vocab_size,
            "batch_size": batch_size,
            "seq_len": seq_len,
        },
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "parameters": ours.num_parameters(),
    }
    timings = {"reasonlab": _time_steps(ours, ours, tokens, repeats, warmup)}
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        results["transformers"] = "not installed (pip install 'reasonlab[hf]')"
    else:
        config = GPT2Config(
            vocab_size=vocab_size,
            n_positions=seq_len,
            n_embd=d_model,
            n_layer=n_layers,
            n_head=n_heads,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=vocab_size - 1,
            eos_token_id=vocab_size - 1,
        )
        hf = GPT2LMHeadModel(config)
        timings["transformers_gpt2"] = _time_steps(
            hf, lambda x: hf(input_ids=x).logits, tokens, repeats, warmup
        )
    results["median_ms"] = {k: round(1000 * statistics.median(v), 2) for k, v in timings.items()}
    results["min_ms"] = {k: round(1000 * min(v), 2) for k, v in timings.items()}
    return results


class MambapyLM(nn.Module):
    """mambapy's Mamba blocks with an embedding, a final RMSNorm and an untied head: the same
    language model as reasonlab's Mamba of config ``cfg`` (a ``models.mamba.MambaConfig``),
    built from mambapy's parts (its own ``mambapy.lm`` imports mamba-ssm's Triton kernels, which
    a CPU machine lacks). Parameter names: ``embedding``, ``mamba.layers.{i}``, ``norm_f``,
    ``lm_head``."""

    def __init__(self, cfg: Any):
        super().__init__()
        from mambapy.mamba import Mamba, MambaConfig, RMSNorm

        config = MambaConfig(
            d_model=cfg.d_model,
            n_layers=cfg.n_layers,
            dt_rank=cfg.dt_rank,
            d_state=cfg.d_state,
            expand_factor=cfg.expand,
            d_conv=cfg.d_conv,
            rms_norm_eps=cfg.norm_eps,
        )
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.mamba = Mamba(config)
        self.norm_f = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm_f(self.mamba(self.embedding(tokens))))


def mamba_step_time(
    n_layers: int = 2,
    d_model: int = 128,
    d_state: int = 16,
    expand: int = 2,
    vocab_size: int = 32,
    batch_size: int = 64,
    seq_len: int = 41,
    repeats: int = 10,
    warmup: int = 2,
) -> dict[str, Any]:
    """Seconds per training step of a Mamba: reasonlab, mambapy, Hugging Face; and reasonlab's
    GPT of the same depth and width (4 heads), all on the same batch."""
    torch.manual_seed(0)
    tokens = torch.randint(0, vocab_size, (batch_size, seq_len))
    cfg = MambaModelConfig(n_layers=n_layers, d_model=d_model, d_state=d_state, expand=expand)
    ours = build_model(cfg, vocab_size, seq_len)
    gpt = build_model(
        GPTModelConfig(n_layers=n_layers, d_model=d_model, n_heads=4), vocab_size, seq_len
    )
    results: dict[str, Any] = {
        "shape": {
            "n_layers": n_layers,
            "d_model": d_model,
            "d_state": d_state,
            "expand": expand,
            "vocab_size": vocab_size,
            "batch_size": batch_size,
            "seq_len": seq_len,
        },
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "parameters": {"reasonlab": ours.num_parameters(), "reasonlab_gpt": gpt.num_parameters()},
    }
    timings = {
        "reasonlab": _time_steps(ours, ours, tokens, repeats, warmup),
        "reasonlab_gpt": _time_steps(gpt, gpt, tokens, repeats, warmup),
    }
    try:
        peer = MambapyLM(ours.cfg)
    except ImportError:
        results["mambapy"] = "not installed (pip install 'reasonlab[mamba]')"
    else:
        results["parameters"]["mambapy"] = sum(p.numel() for p in peer.parameters())
        timings["mambapy"] = _time_steps(peer, peer, tokens, repeats, warmup)
    from reasonlab.export import to_hf_mamba

    try:
        hf = to_hf_mamba(ours).train()  # the same model under Hugging Face's names
    except ConfigError:
        results["transformers"] = "not installed (pip install 'reasonlab[hf]')"
    else:
        results["parameters"]["transformers_mamba"] = sum(p.numel() for p in hf.parameters())
        timings["transformers_mamba"] = _time_steps(
            hf, lambda x: hf(input_ids=x, use_cache=False).logits, tokens, repeats, warmup
        )
    results["median_ms"] = {k: round(1000 * statistics.median(v), 2) for k, v in timings.items()}
    results["min_ms"] = {k: round(1000 * min(v), 2) for k, v in timings.items()}
    return results
