"""Multi-hop queries for analysis: clean chains, counterfactual chains, token tensors, targets.

A chain of k hops reads h -r1-> b1 -r2-> ... -rk-> t; with two hops its bridge is just ``bridge``
(``b``), with more ``bridge1``, ``bridge2``, ... (``b1``, ``b2``, ...), and ``bridge`` stays an
alias of the first one. A counterfactual changes one part of the question — the head ``h`` or a
relation ``r1``, ``r2``, ... — or, for the later stages of CoT, only a written bridge, and is
otherwise a valid chain of the same graph: the bridges and tail after the changed part follow
from the facts, and its answer (the target read) differs from the clean one. Chains with no such
counterfactual are dropped.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from reasonlab.tasks.twohop.encoding import Vocabulary, encode, layout
from reasonlab.tasks.twohop.graph import Chains, Graph


def target_names(hops: int) -> list[str]:
    """What a chain of ``hops`` hops can be asked for: its bridges, then its tail."""
    if hops == 2:
        return ["bridge", "tail"]
    return [*(f"bridge{i + 1}" for i in range(hops - 1)), "tail"]


def change_names(hops: int) -> list[str]:
    """The parts a counterfactual can change: the head, a relation, or a written bridge."""
    relations = [f"r{i + 1}" for i in range(hops)]
    return ["head", *relations, *target_names(hops)[:-1]]


CHANGES = tuple(change_names(2))  # head, r1, r2, bridge


def canonical(name: str, hops: int) -> str:
    """``bridge`` and ``bridge1`` name the first bridge: the two-hop name with two hops,
    ``bridge1`` with more. Other names pass through unchanged."""
    if name in ("bridge", "bridge1"):
        return "bridge" if hops == 2 else "bridge1"
    return name


def _bridge_index(name: str) -> int:
    """'bridge' -> 0, 'bridge2' -> 1."""
    return 0 if name == "bridge" else int(name[len("bridge") :]) - 1


def can_change(change: str, target: str) -> bool:
    """Whether changing ``change`` can change ``target`` (canonical names): a relation or a
    written bridge changes only what comes after it in the chain."""
    if target == "tail" or change == "head":
        return True
    bridge = _bridge_index(target)
    if change.startswith("r"):
        return int(change[1:]) - 1 <= bridge
    return _bridge_index(change) < bridge


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
    """(clean, counterfactual) chains of two or more hops, aligned; ``target`` (a bridge or the
    tail) must differ. Of ``tries`` random draws of the changed part, the first valid one is
    kept."""
    hops = chains.hops
    if hops < 2:
        raise ValueError("counterfactuals are built for chains of two or more hops")
    change, target = canonical(change, hops), canonical(target, hops)
    if change not in change_names(hops):
        raise ValueError(f"unknown change {change!r} (known: {', '.join(change_names(hops))})")
    if target not in target_names(hops):
        raise ValueError(f"unknown target {target!r} (known: {', '.join(target_names(hops))})")
    table = tail_table(graph, num_relations)
    n = len(chains)
    is_relation = change.startswith("r")
    draw = rng.integers(0, num_relations if is_relation else graph.num_entities, (n, tries))
    heads = draw if change == "head" else np.repeat(chains.heads[:, None], tries, 1)
    relations = np.repeat(chains.relations[:, None, :], tries, 1)  # (n, tries, hops)
    if is_relation:
        relations[:, :, int(change[1:]) - 1] = draw
    written = _bridge_index(change) if change.startswith("bridge") else None
    # Walk the chain: entity i + 1 is the tail of (entity i, relation i); -1 where no such fact.
    # A changed written bridge keeps the bridges before it and is followed by the facts.
    entities = [heads]
    for hop in range(hops):
        if written is not None and hop < written:
            entities.append(np.repeat(chains.bridges[:, hop, None], tries, 1))
        elif hop == written:
            entities.append(draw)
        else:
            last = entities[-1]
            step = table[np.maximum(last, 0), relations[..., hop]]
            entities.append(np.where(last >= 0, step, -1))
    walk = np.stack(entities, axis=-1)  # (n, tries, hops + 1): head, bridges, tail
    valid = (walk >= 0).all(axis=-1)
    if change == "head":
        original = chains.heads
    elif is_relation:
        original = chains.relations[:, int(change[1:]) - 1]
    else:
        original = chains.bridges[:, written]
    valid &= draw != original[:, None]
    if target == "tail":
        valid &= walk[..., -1] != chains.tails[:, None]
    else:
        index = _bridge_index(target)
        valid &= walk[..., index + 1] != chains.bridges[:, index, None]
    found = valid.any(axis=1)
    pick = valid.argmax(axis=1)
    rows = np.arange(n)
    chosen = walk[rows, pick]  # (n, hops + 1)
    counterfactual = Chains(chosen[:, 0], relations[rows, pick], chosen[:, 1:-1], chosen[:, -1])
    keep = np.flatnonzero(found)
    return chains.take(keep), counterfactual.take(keep)


def query_tensors(
    chains: Chains, cot: str, vocab: Vocabulary, target: str
) -> tuple[Tensor, Tensor, int]:
    """Token ids up to the read position, the target token ids, and the read position: the
    position whose next-token prediction is the target (for a bridge without CoT, the last
    question position, where a latent bridge would have to be resolved)."""
    target = canonical(target, chains.hops)
    if chains.hops < 2 or target not in target_names(chains.hops):
        known = ", ".join(target_names(chains.hops)) if chains.hops >= 2 else "tail"
        raise ValueError(f"unknown target {target!r} (known: {known})")
    tokens, plan = encode(chains, cot, vocab)
    stages = plan.stages()
    read = stages[target] - 1 if target in stages else plan.prompt_len - 1
    ids = chains.tails if target == "tail" else chains.bridges[:, _bridge_index(target)]
    return torch.from_numpy(tokens[:, : read + 1]), torch.from_numpy(ids), read


def position_labels(cot: str, read_position: int, hops: int = 2) -> list[str]:
    """Names of the positions up to ``read_position``: h, r1, r2, b, ... (b1, b2, ... when a
    chain has more than one bridge)."""
    labels = []
    for part, i in layout(hops, cot).slots:
        if part == "relation":
            labels.append(f"r{i + 1}")
        elif part == "bridge":
            labels.append("b" if hops == 2 else f"b{i + 1}")
        else:
            labels.append(part[0])  # h, t
    return labels[: read_position + 1]
