"""How chains become tokens: the vocabulary (entities, relations, the end token, padding), the
token layout of each CoT pattern, and training rows and probes. Shared by the generator's task
and the folder reader and writer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from reasonlab.tasks.base import Probe, as_probe
from reasonlab.tasks.twohop.graph import Chains

END, PAD = "</a>", "<pad>"


@dataclass(frozen=True)
class Layout:
    """Where each part of a chain goes in the sequence, for one (hops, CoT pattern)."""

    slots: tuple[tuple[str, int], ...]  # ("head", 0), ("relation", i), ("bridge", i), ("tail", 0)
    prompt_len: int
    given: frozenset[int]  # completion positions fed rather than generated

    @property
    def length(self) -> int:
        return len(self.slots) + 1  # + the end token

    def stages(self) -> dict[str, int]:
        bridges = [p for p, (part, _) in enumerate(self.slots) if part == "bridge"]
        names = ["bridge"] if len(bridges) == 1 else [f"bridge{i + 1}" for i in range(len(bridges))]
        stages = {name: p for name, p in zip(names, bridges, strict=True) if p >= self.prompt_len}
        if stages:
            stages["tail"] = len(self.slots) - 1
        return stages


def layout(hops: int, cot: str) -> Layout:
    head = [("head", 0)]
    relations = [("relation", i) for i in range(hops)]
    bridges = [("bridge", i) for i in range(hops - 1)]
    tail = [("tail", 0)]
    interleaved: list[tuple[str, int]] = [("head", 0), ("relation", 0)]
    for i in range(hops - 1):
        interleaved += [("bridge", i), ("relation", i + 1)]
    if hops == 1 or cot == "none":
        return Layout(tuple(head + relations + tail), 1 + hops, frozenset())
    if cot == "after_relations":
        return Layout(tuple(head + relations + bridges + tail), 1 + hops, frozenset())
    if cot == "interleaved":
        given = frozenset(p for p, (part, _) in enumerate(interleaved) if part == "relation")
        return Layout(tuple(interleaved + tail), 2, frozenset(p for p in given if p >= 2))
    if cot == "restated":
        return Layout(tuple(head + relations + interleaved + tail), 1 + hops, frozenset())
    raise ValueError(f"unknown CoT pattern {cot!r}")


class Vocabulary:
    """Entities <e_i>, relations <r_j>, the end token </a> and padding, in that id order."""

    def __init__(self, num_entities: int, num_relations: int):
        self.num_entities, self.num_relations = num_entities, num_relations
        self.tokens = [f"<e_{i}>" for i in range(num_entities)]
        self.tokens += [f"<r_{j}>" for j in range(num_relations)] + [END, PAD]
        self.end_id, self.pad_id = num_entities + num_relations, num_entities + num_relations + 1


def encode(chains: Chains, cot: str, vocab: Vocabulary) -> tuple[np.ndarray, Layout]:
    """Token ids (n, L) of chains in the given CoT pattern, and the layout used."""
    plan = layout(chains.hops, cot)
    columns = []
    for part, i in plan.slots:
        if part == "head":
            columns.append(chains.heads)
        elif part == "relation":
            columns.append(vocab.num_entities + chains.relations[:, i])
        elif part == "bridge":
            columns.append(chains.bridges[:, i])
        else:
            columns.append(chains.tails)
    columns.append(np.full(len(chains), vocab.end_id))
    return np.stack(columns, axis=1).astype(np.int64), plan


def pad_to(tokens: np.ndarray, length: int, pad_id: int) -> np.ndarray:
    out = np.full((tokens.shape[0], length), pad_id, np.int64)
    out[:, : tokens.shape[1]] = tokens
    return out


def chains_to_probe(chains: Chains, cot: str, vocab: Vocabulary) -> Probe:
    tokens, plan = encode(chains, cot, vocab)
    given = np.zeros(tokens.shape, bool)
    given[:, sorted(plan.given)] = True
    return as_probe(
        torch.from_numpy(tokens),
        plan.prompt_len,
        torch.from_numpy(given),
        vocab.pad_id,
        plan.stages(),
    )


def chains_to_training(
    chains: Chains, cot: str, vocab: Vocabulary
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and loss mask: the loss covers the completion, never the given tokens."""
    tokens, plan = encode(chains, cot, vocab)
    mask = np.zeros(tokens.shape, bool)
    mask[:, plan.prompt_len :] = True
    mask[:, sorted(plan.given)] = False
    return tokens, mask
