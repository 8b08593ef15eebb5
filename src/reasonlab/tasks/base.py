"""What every task hands to the trainer: training sequences with a loss mask, and named probes.

A task knows no model. Sequences are token ids, right-padded with ``pad_id``; the loss mask marks
the positions whose token the model is trained to predict (the completion).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class Probe:
    """A set of test queries scored by greedy decoding and exact match of the completion.

    tokens:  (N, L) int64, the whole correct sequence (prompt + completion), right-padded.
    prompt_len: positions [0, prompt_len) are the question in every row, fed in one piece.
    given:   (N, L) bool, positions at or after prompt_len fed from ``tokens`` rather than
             generated: the rest of a longer row's question (prompts of different lengths), or
             e.g. the second relation of the interleaved CoT pattern.
    scored:  (N, L) bool, completion positions the model must produce (not given, not padding).
    stages:  stage name -> position (one int for every row, or an (N,) tensor of each row's
             position), for per-stage accuracies (e.g. bridge, tail, answer).
    teacher_forced: also report scores under teacher forcing (each position predicted from the
             true tokens before it; Feng et al. score LIS and edit distance this way): the
             share of scored tokens right, and with an ``answer`` stage the answer given the
             true trace. (Exact match of the whole completion under teacher forcing equals
             greedy exact match, so it is not reported twice.)
    """

    tokens: Tensor
    prompt_len: int
    given: Tensor
    scored: Tensor
    stages: dict[str, int | Tensor] = field(default_factory=dict)
    teacher_forced: bool = False

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


@dataclass
class TaskData:
    """Everything the training loop needs from a task, already on the CPU as tensors."""

    vocab: list[str]
    pad_id: int
    train_tokens: Tensor  # (N, L) int64
    train_loss_mask: Tensor  # (N, L) bool: True where tokens[:, t] is a training target
    probes: dict[str, Probe]
    stats: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Task config fields that the data itself decided (e.g. the CoT pattern of a dataset folder
    # made elsewhere); the trainer records them in the run's resolved config.
    resolved: dict[str, Any] = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def max_seq_len(self) -> int:
        lengths = [self.train_tokens.shape[1], *(p.tokens.shape[1] for p in self.probes.values())]
        return int(max(lengths))

    def fingerprint(self) -> str:
        """A short hash of every tensor: same config and seed must give the same value."""
        digest = hashlib.sha256()
        tensors = [self.train_tokens, self.train_loss_mask]
        for name in sorted(self.probes):
            probe = self.probes[name]
            digest.update(name.encode())
            tensors += [probe.tokens, probe.given, probe.scored]
        for tensor in tensors:
            digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def decode(self, ids: list[int] | Tensor) -> str:
        ids = ids.tolist() if isinstance(ids, Tensor) else ids
        return " ".join(self.vocab[i] for i in ids if i != self.pad_id)


def as_probe(
    tokens: Tensor,
    prompt_len: int | Tensor,
    given: Tensor,
    pad_id: int,
    stages: dict[str, int | Tensor],
    teacher_forced: bool = False,
) -> Probe:
    """Builds a probe; scored = completion positions that are neither given nor padding.
    ``prompt_len``: one length for every row, or an (N,) tensor of each row's prompt length
    (the rest of a row's prompt after the shortest one is then given)."""
    positions = torch.arange(tokens.shape[1])
    lengths = torch.as_tensor(prompt_len).reshape(-1, 1)  # (N, 1) or (1, 1)
    in_prompt = (positions < lengths).expand_as(tokens)
    scored = ~in_prompt & ~given & (tokens != pad_id)
    shortest = int(lengths.min())
    given = given | (in_prompt & (positions >= shortest))
    return Probe(tokens, shortest, given, scored, stages, teacher_forced)
