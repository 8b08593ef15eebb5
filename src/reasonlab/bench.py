"""Speed benchmarks against real peers in the same process.

``step_time``: one training step (forward, completion loss, backward, AdamW) of reasonlab's GPT
against Hugging Face ``GPT2LMHeadModel`` of the same shape (when ``transformers`` is installed),
same batch, same threads; median over repeats after warm-up.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

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
