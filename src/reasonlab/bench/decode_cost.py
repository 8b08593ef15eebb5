"""Per-token decoding cost against context length (the cost argument of arXiv 2410.03810).

A Transformer decodes a token by attending to a KV cache that holds every past position, so its
per-token time and its state grow with the context; a Mamba carries a conv + SSM state of fixed
size, so neither grows. ``decode_cost`` measures both for any ``LanguageModel``: feed a prompt of
T tokens into a fresh decoding state (not timed), then time single-token steps.

The state's size is the sum of the ``nbytes`` of the tensors the decoding state holds (walked
through its attributes, lists and dicts): per layer the keys and values of a GPT, the conv
inputs and SSM state of a Mamba. ``nbytes`` is the tensor's logical size (elements x element
size), not the storage it may share with other tensors.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from reasonlab.models.base import DecodingState, LanguageModel

MIB = 1 << 20


def state_tensors(state: Any) -> list[Tensor]:
    """Every distinct tensor reachable from ``state`` through attributes, lists, tuples and
    dicts (each tensor object once)."""
    found: dict[int, Tensor] = {}
    seen: set[int] = set()
    pending = [state]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Tensor):
            found[id(node)] = node
        elif isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, list | tuple):
            pending.extend(node)
        elif hasattr(node, "__dict__"):
            pending.extend(vars(node).values())
    return list(found.values())


def state_bytes(state: DecodingState) -> int:
    """Bytes held by a decoding state: the sum of its tensors' ``nbytes``."""
    return sum(tensor.nbytes for tensor in state_tensors(state))


def fit_slope(lengths: list[float], values: list[float]) -> float:
    """The slope of log(values) against log(lengths), by least squares: the exponent k of
    values ~ c * lengths^k."""
    if len(lengths) != len(values) or len(lengths) < 2:
        raise ValueError("fit_slope needs two or more (length, value) pairs")
    if min(lengths) <= 0 or min(values) <= 0:
        raise ValueError("fit_slope needs positive lengths and values (it fits on logs)")
    slope, _ = np.polyfit(np.log(lengths), np.log(values), 1)
    return float(slope)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _random_tokens(vocab_size: int, batch_size: int, length: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch_size, length), generator=generator)


def _time_steps(
    model: LanguageModel, state: DecodingState, tokens: Tensor, device: torch.device
) -> float:
    """Seconds per token of feeding ``tokens`` (batch, n) one position at a time."""
    _synchronize(device)
    start = time.perf_counter()
    for position in range(tokens.shape[1]):
        model(tokens[:, position : position + 1], state=state)
    _synchronize(device)
    return (time.perf_counter() - start) / tokens.shape[1]


def _measure_length(
    model: LanguageModel,
    length: int,
    batch_size: int,
    new_tokens: int,
    repeats: int,
    device: torch.device,
) -> dict[str, Any]:
    """One row: the median over ``repeats`` fresh prompts of the mean time per decoded token,
    the state's bytes after the prompt and, on CUDA, the peak memory the steps add."""
    vocab_size = model.cfg.vocab_size
    seconds, sizes, peaks = [], [], []
    for repeat in range(repeats):
        prompt = _random_tokens(vocab_size, batch_size, length, seed=repeat).to(device)
        steps = _random_tokens(vocab_size, batch_size, new_tokens, seed=1000 + repeat).to(device)
        state = model.new_state(batch_size)
        model(prompt, state=state)
        sizes.append(state_bytes(state))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        seconds.append(_time_steps(model, state, steps, device))
        if device.type == "cuda":
            peaks.append((torch.cuda.max_memory_allocated(device) - before) / MIB)
        del state
    row: dict[str, Any] = {
        "length": length,
        "ms_per_token": 1000 * statistics.median(seconds),
        "state_bytes": sizes[0],
        "state_bytes_per_row": sizes[0] // batch_size,
    }
    if peaks:
        row["peak_extra_mib"] = max(peaks)
    return row


def decode_cost(
    model: LanguageModel,
    lengths: list[int],
    batch_size: int = 1,
    new_tokens: int = 16,
    repeats: int = 3,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Per context length T: feed a random prompt of T tokens into a fresh decoding state (not
    timed), then time ``new_tokens`` single-token steps of random tokens; the median over
    ``repeats`` prompts of the mean per token. Rows of ``length``, ``ms_per_token``,
    ``state_bytes`` (after the prompt), ``state_bytes_per_row`` and, on CUDA only,
    ``peak_extra_mib`` (peak allocated memory during the steps beyond what was allocated before
    them). Moves the model to ``device`` and puts it in eval mode."""
    if batch_size < 1 or new_tokens < 1 or repeats < 1:
        raise ValueError("batch_size, new_tokens and repeats must be at least 1")
    device = torch.device(device)
    model.to(device).eval()
    with torch.inference_mode():
        return [
            _measure_length(model, length, batch_size, new_tokens, repeats, device)
            for length in lengths
        ]
