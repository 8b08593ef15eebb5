"""Two-hop queries for analysis: clean chains, counterfactual chains, token tensors, targets.

A counterfactual changes one part of the question — the head ``h``, the first relation ``r1``,
the second relation ``r2`` — or, for stage 2 of CoT, only the written ``bridge``, and is otherwise
a valid chain of the same graph: its own bridge and tail follow from the facts, and its answer
(the target read) differs from the clean one. Chains with no such counterfactual are dropped.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from reasonlab.tasks.twohop import Chains, Graph, Vocabulary, encode, layout

CHANGES = ("head", "r1", "r2", "bridge")


def tail_table(graph: Graph, num_relations: int) -> np.ndarray:
    """(E, R) tail of (entity, relation), -1 where the entity lacks the relation."""
    table = np.full((graph.num_entities, num_relations), -1, np.int64)
    rows = np.arange(graph.num_entities)[:, None]
    table[rows, graph.relation_of] = graph.tail_of
    return table


def counterfactual_chains(
    graph: Graph,
    num_relations: int,
    chains: Chains,
    change: str,
    target: str,
    rng: np.random.Generator,
    tries: int = 256,
) -> tuple[Chains, Chains]:
    """(clean, counterfactual) two-hop chains, aligned; ``target`` (bridge or tail) must differ."""
    if change not in CHANGES:
        raise ValueError(f"unknown change {change!r} (known: {', '.join(CHANGES)})")
    if chains.hops != 2:
        raise ValueError("counterfactuals are built for two-hop chains")
    table = tail_table(graph, num_relations)
    n = len(chains)
    h = np.repeat(chains.heads[:, None], tries, 1)
    r1 = np.repeat(chains.relations[:, :1], tries, 1)
    r2 = np.repeat(chains.relations[:, 1:], tries, 1)
    b = np.repeat(chains.bridges, tries, 1)
    if change == "head":
        h = rng.integers(0, graph.num_entities, (n, tries))
    elif change == "r1":
        r1 = rng.integers(0, num_relations, (n, tries))
    elif change == "r2":
        r2 = rng.integers(0, num_relations, (n, tries))
    b = table[h, r1] if change != "bridge" else rng.integers(0, graph.num_entities, (n, tries))
    t = np.where(b >= 0, table[np.maximum(b, 0), r2], -1)
    valid = (b >= 0) & (t >= 0)
    changed = {"head": h, "r1": r1, "r2": r2, "bridge": b}[change]
    original = {
        "head": chains.heads,
        "r1": chains.relations[:, 0],
        "r2": chains.relations[:, 1],
        "bridge": chains.bridges[:, 0],
    }[change]
    valid &= changed != original[:, None]
    valid &= (b if target == "bridge" else t) != (
        chains.bridges[:, :1] if target == "bridge" else chains.tails[:, None]
    )
    found = valid.any(axis=1)
    pick = valid.argmax(axis=1)
    rows = np.arange(n)
    counterfactual = Chains(
        h[rows, pick],
        np.stack([r1[rows, pick], r2[rows, pick]], axis=1),
        b[rows, pick, None],
        t[rows, pick],
    )
    keep = np.flatnonzero(found)
    return chains.take(keep), counterfactual.take(keep)


def query_tensors(
    chains: Chains, cot: str, vocab: Vocabulary, target: str
) -> tuple[Tensor, Tensor, int]:
    """Token ids up to the read position, the target token ids, and the read position: the
    position whose next-token prediction is the target (for the bridge without CoT, the last
    question position, where a latent bridge would have to be resolved)."""
    tokens, plan = encode(chains, cot, vocab)
    stages = plan.stages()
    if target == "bridge":
        read = stages["bridge"] - 1 if "bridge" in stages else plan.prompt_len - 1
        ids = chains.bridges[:, 0]
    elif target == "tail":
        read = stages["tail"] - 1 if "tail" in stages else plan.prompt_len - 1
        ids = chains.tails
    else:
        raise ValueError(f"unknown target {target!r} (bridge or tail)")
    return torch.from_numpy(tokens[:, : read + 1]), torch.from_numpy(ids), read


def position_labels(cot: str, read_position: int) -> list[str]:
    """Names of the positions up to ``read_position``: h, r1, r2, b, ..."""
    names = {"head": "h", "relation": "r", "bridge": "b", "tail": "t"}
    labels = [
        names[part] + (str(i + 1) if part == "relation" else "") for part, i in layout(2, cot).slots
    ]
    return labels[: read_position + 1]
