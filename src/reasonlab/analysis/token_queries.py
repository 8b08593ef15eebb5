"""Queries of any token task (COPY, DP, a two-hop dataset folder) for the logit lens and causal
tracing: a probe's rows, what is read from them, and their counterfactuals.

A query is a probe row fed with its true tokens (teacher forcing), so the prediction made at
position p - 1 is read for the token at position p, the token the model should write there.

Targets (``--target``):

- ``scored`` (the logit lens only, its default): every scored position of every row (the tokens
  the model must produce: a COPY's copy and its ``<eos>``, a DP's trace, answer and ``<eos>``),
  each read one position before it; the grid's columns are those read positions.
- ``first``: the first scored token of each row (a COPY's first copied symbol, the first token
  after a DP's ``<sep>``), read at the position before it; the default of tracing.
- a stage of the probe: COPY ``first`` / ``last`` (the first and last copied symbol), DP
  ``answer``, a two-hop folder's ``bridge`` / ``tail``.

A one-token target is read at one position for every query, so its queries are the probe's rows
whose target sits at the most common position (every row of a COPY probe; the DP rows of the most
common length). The counterfactual of a query (tracing) is another of those rows whose target
token differs, drawn at random from a seed; a query with none is dropped.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from reasonlab.tasks.base import Probe

EVERY_SCORED = "scored"
FIRST_SCORED = "first"


def target_names(probe: Probe, lens: bool) -> list[str]:
    """What can be read on ``probe``: ``scored`` (the lens only), ``first`` and its stages."""
    names = [EVERY_SCORED] if lens else []
    return names + [FIRST_SCORED] + [name for name in probe.stages if name != FIRST_SCORED]


def target_positions(probe: Probe, target: str) -> Tensor:
    """(N,) the position of each row's one-token target (``first`` or a stage)."""
    if target in probe.stages:
        position = probe.stages[target]
        return torch.as_tensor(position).expand(len(probe)).clone()
    if target == FIRST_SCORED:
        return probe.scored.int().argmax(dim=1)  # the first True of each row
    raise ValueError(f"unknown target {target!r}")


def aligned_rows(probe: Probe, target: str) -> tuple[Tensor, int]:
    """The rows whose one-token target sits at the most common position (the smallest one on a
    tie), and that position."""
    positions = target_positions(probe, target)
    values, counts = positions.unique(return_counts=True)
    position = int(values[counts.argmax()])
    return torch.nonzero(positions == position).flatten(), position


def sample_rows(rows: Tensor, n: int, seed: int = 0) -> Tensor:
    """At most ``n`` of ``rows``, drawn once from ``seed`` and kept in order."""
    if len(rows) <= n:
        return rows
    chosen = np.sort(np.random.default_rng(seed).choice(len(rows), n, replace=False))
    return rows[torch.from_numpy(chosen)]


def counterfactual_rows(
    tokens: Tensor, clean: Tensor, pool: Tensor, position: int, rng: np.random.Generator
) -> tuple[Tensor, Tensor]:
    """(kept clean rows, their counterfactual rows): for each clean row a row of ``pool`` whose
    token at ``position`` differs, drawn at random; clean rows with none are dropped."""
    clean_target, pool_target = tokens[clean, position], tokens[pool, position]
    differs = (clean_target[:, None] != pool_target[None, :]).numpy()  # (clean, pool)
    scores = np.where(differs, rng.random(differs.shape), -1.0)
    found = torch.from_numpy(differs.any(axis=1))
    partner = pool[torch.from_numpy(scores.argmax(axis=1))]
    return clean[found], partner[found]


def scored_targets(probe: Probe, rows: Tensor) -> tuple[Tensor, Tensor, Tensor, list[int]]:
    """For the lens of every scored token: the rows' tokens (n, L), the next token at each
    position (n, L) and where it is scored (n, L), and the read positions (those before some
    scored token, as a contiguous range)."""
    tokens = probe.tokens[rows]
    following = torch.cat([tokens[:, 1:], tokens[:, -1:]], dim=1)
    read = torch.zeros_like(tokens, dtype=torch.bool)
    read[:, :-1] = probe.scored[rows][:, 1:]
    columns = torch.nonzero(read.any(dim=0)).flatten()
    positions = list(range(int(columns.min()), int(columns.max()) + 1))
    return tokens, following, read, positions


def position_labels(tokens: Tensor, vocab: list[str], positions: list[int]) -> list[str]:
    """A label for each position: its token where every query has the same one there (e.g.
    ``<sep>``), else its index."""
    labels = []
    for position in positions:
        column = tokens[:, position]
        same = bool((column == column[0]).all())
        labels.append(vocab[int(column[0])] if same else str(position))
    return labels
