"""Logit lens: read the residual stream of every layer through the final norm and the unembedding.

For queries (N, L) and one target token per query (or one per query and position, e.g. the next
token of a teacher-fed sequence), ``logit_lens`` gives the target's rank (0 = top-1), reciprocal
rank 1/(rank+1) and probability at every layer x position. Works on any
model family through its interface (``models/base.py``): ``residual_names()`` and ``read_out``
(the final norm, then the unembedding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reasonlab.models.base import LanguageModel


@dataclass
class LensResult:
    """Per layer (embeddings, then after each block), query and position."""

    layers: list[str]  # residual hook names, in order
    rank: Tensor  # (layers, N, L) int64, rank of the target among all tokens, 0 = top-1
    prob: Tensor  # (layers, N, L) float, probability of the target

    @property
    def reciprocal_rank(self) -> Tensor:
        return 1.0 / (self.rank.float() + 1.0)

    def mrr(self) -> Tensor:
        """(layers, L): mean reciprocal rank over queries."""
        return self.reciprocal_rank.mean(dim=1)

    def mean_rank(self) -> Tensor:
        """(layers, L)."""
        return self.rank.float().mean(dim=1)

    def top1(self) -> Tensor:
        """(layers, L): share of queries whose target is the top-1 token."""
        return (self.rank == 0).float().mean(dim=1)


def ranks_of(logits: Tensor, target: Tensor) -> Tensor:
    """logits (..., V), target (...) -> rank of target (number of tokens with a larger logit)."""
    target_logit = logits.gather(-1, target.unsqueeze(-1))
    return (logits > target_logit).sum(-1)


@torch.no_grad()
def read_residual(model: LanguageModel, residual: Tensor) -> Tensor:
    """Logits a residual stream state would give if it were the last layer's output."""
    return model.read_out(residual).float()


@torch.no_grad()
def logit_lens(
    model: LanguageModel, tokens: Tensor, target: Tensor, batch_size: int = 512
) -> LensResult:
    """tokens (N, L) int64, target (N,) int64 token ids (one per query, read at every position)
    or (N, L) (one per query and position) -> LensResult over all layers/positions."""
    was_training = model.training
    model.eval()
    names = model.residual_names()
    ranks, probs = [], []
    try:
        for start in range(0, len(tokens), batch_size):
            batch = tokens[start : start + batch_size]
            goal = target[start : start + batch_size]
            _, cache = model.run_with_cache(batch, names_filter=names)
            batch_ranks, batch_probs = [], []
            for name in names:
                logits = read_residual(model, cache[name])  # (n, L, V)
                expanded = goal if goal.dim() == 2 else goal[:, None].expand(logits.shape[:2])
                batch_ranks.append(ranks_of(logits, expanded))
                batch_probs.append(logits.softmax(-1).gather(-1, expanded[..., None])[..., 0])
            ranks.append(torch.stack(batch_ranks))
            probs.append(torch.stack(batch_probs))
    finally:
        model.train(was_training)
    return LensResult(names, torch.cat(ranks, dim=1), torch.cat(probs, dim=1))


def first_top1_layer(top1_by_layer: list[float], share: float = 0.5) -> int | None:
    """Index of the first layer at which at least ``share`` of queries rank the target first."""
    return next((i for i, value in enumerate(top1_by_layer) if value >= share), None)
