"""Two-hop (and k-hop) facts over a random knowledge graph, with and without chain-of-thought.

The setup of the explicit-CoT paper (arXiv 2502.04667) and the Grokked-transformers work it builds
on (arXiv 2405.15071): every entity has ``out_degree`` distinct relations, each pointing to a random
tail. A share ``ood_fraction`` of atomic facts (by fact, not by entity) is out of distribution. All
atomic facts are trained; a two-hop chain (h, r1, b) + (b, r2, t) whose hops are both ID goes to the
training pool or (``id_test_fraction``) to the ID test set; one whose hops are both OOD goes to the
OOD test set; mixed chains are dropped. ``lam`` sets how many pool chains are trained, relative to
the number of ID atomic facts. Noise corrupts the tail and/or the bridge of a share ``noise_ratio``
of training chains, each chain independently; test sets stay clean.

Everything is vectorized with numpy: the paper's size (800,000 chains) builds in about a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from reasonlab.config import ConfigError, TwoHopTaskConfig
from reasonlab.tasks.base import Probe, TaskData, as_probe

END, PAD = "</a>", "<pad>"


@dataclass
class Chains:
    """n chains of k hops: head -r1-> bridge_1 -r2-> ... -rk-> tail."""

    heads: np.ndarray  # (n,)
    relations: np.ndarray  # (n, k)
    bridges: np.ndarray  # (n, k - 1)
    tails: np.ndarray  # (n,)

    def __len__(self) -> int:
        return len(self.heads)

    @property
    def hops(self) -> int:
        return self.relations.shape[1]

    def take(self, index: np.ndarray) -> Chains:
        return Chains(
            self.heads[index], self.relations[index], self.bridges[index], self.tails[index]
        )


@dataclass
class Graph:
    """The atomic facts: relation_of[e, i] is entity e's i-th relation, tail_of[e, i] its tail."""

    relation_of: np.ndarray  # (E, D)
    tail_of: np.ndarray  # (E, D)
    is_ood: np.ndarray  # (E, D) bool

    @property
    def num_entities(self) -> int:
        return self.relation_of.shape[0]

    def facts(self, ood: bool | None = None) -> Chains:
        """Atomic facts as one-hop chains, optionally only the ID (ood=False) or OOD ones."""
        heads = np.repeat(np.arange(self.num_entities), self.relation_of.shape[1])
        keep = np.ones(heads.shape, bool) if ood is None else self.is_ood.ravel() == ood
        return Chains(
            heads[keep],
            self.relation_of.ravel()[keep, None],
            np.empty((int(keep.sum()), 0), np.int64),
            self.tail_of.ravel()[keep],
        )


def build_graph(cfg: TwoHopTaskConfig, rng: np.random.Generator) -> Graph:
    n_entities, degree = cfg.num_entities, cfg.out_degree
    relation_of = np.argsort(rng.random((n_entities, cfg.num_relations)), axis=1)[:, :degree]
    tail_of = rng.integers(0, n_entities, size=(n_entities, degree))
    n_facts = n_entities * degree
    n_ood = round(cfg.ood_fraction * n_facts)
    if n_ood == 0:
        raise ConfigError(
            f"task.ood_fraction: {cfg.ood_fraction} of {n_facts} atomic facts is no OOD fact"
        )
    is_ood = np.zeros(n_facts, bool)
    is_ood[rng.choice(n_facts, n_ood, replace=False)] = True
    return Graph(
        relation_of.astype(np.int64), tail_of.astype(np.int64), is_ood.reshape(n_entities, degree)
    )


def two_hop_chains(graph: Graph) -> tuple[Chains, np.ndarray]:
    """All E * D * D two-hop chains and, per chain, how many of its two hops are OOD (0, 1, 2)."""
    n_entities, degree = graph.relation_of.shape
    heads = np.repeat(np.arange(n_entities), degree * degree)
    first = np.tile(np.repeat(np.arange(degree), degree), n_entities)
    second = np.tile(np.arange(degree), n_entities * degree)
    bridges = graph.tail_of[heads, first]
    chains = Chains(
        heads,
        np.stack([graph.relation_of[heads, first], graph.relation_of[bridges, second]], axis=1),
        bridges[:, None],
        graph.tail_of[bridges, second],
    )
    ood_hops = graph.is_ood[heads, first].astype(np.int64) + graph.is_ood[bridges, second]
    return chains, ood_hops


def k_hop_chains(
    graph: Graph, hops: int, ood: bool, limit: int, rng: np.random.Generator
) -> Chains:
    """Up to ``limit`` chains of ``hops`` facts, all ID (ood=False) or all OOD (ood=True).

    Built by joining facts on their head; when the frontier grows past ``4 * limit`` it is
    subsampled before the next join, which keeps memory bounded at any graph size.
    """
    facts = graph.facts(ood=ood)
    order = np.argsort(facts.heads, kind="stable")
    count = np.bincount(facts.heads, minlength=graph.num_entities)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    entities = np.arange(graph.num_entities)[:, None]  # one start per entity, not per fact
    relations = np.empty((graph.num_entities, 0), np.int64)
    for _ in range(hops):
        if len(entities) > 4 * limit:
            keep = np.sort(rng.choice(len(entities), 4 * limit, replace=False))
            entities, relations = entities[keep], relations[keep]
        last = entities[:, -1]
        repeats = count[last]
        parent = np.repeat(np.arange(len(last)), repeats)
        offset = np.arange(len(parent)) - np.repeat(np.cumsum(repeats) - repeats, repeats)
        fact = order[start[last[parent]] + offset]
        entities = np.concatenate([entities[parent], facts.tails[fact, None]], axis=1)
        relations = np.concatenate([relations[parent], facts.relations[fact]], axis=1)
    if len(entities) > limit:
        keep = np.sort(rng.choice(len(entities), limit, replace=False))
        entities, relations = entities[keep], relations[keep]
    return Chains(entities[:, 0], relations, entities[:, 1:-1], entities[:, -1])


# ----------------------------------------------------------------------------- token layout


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


def _pad(tokens: np.ndarray, length: int, pad_id: int) -> np.ndarray:
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


# ----------------------------------------------------------------------------- the task


@dataclass
class TwoHopSplits:
    graph: Graph
    atomic: Chains
    train_chains: Chains  # as trained, noise included
    train_chains_clean: Chains
    noisy: np.ndarray  # (n_train,) bool
    test_iid: Chains
    test_ood: Chains
    khop: dict[int, tuple[Chains, Chains]]  # k -> (iid, ood)


def _corrupt(values: np.ndarray, mask: np.ndarray, n_entities: int, rng: np.random.Generator):
    """A uniformly random *other* entity wherever mask is set."""
    shift = rng.integers(1, n_entities, size=values.shape)
    return np.where(mask, (values + shift) % n_entities, values)


MAX_TWO_HOP_CHAINS = 30_000_000  # ~40x the paper's 800,000; bounds memory at a few GB


def build_splits(cfg: TwoHopTaskConfig) -> TwoHopSplits:
    n_chains = cfg.num_entities * cfg.out_degree**2
    if n_chains > MAX_TWO_HOP_CHAINS:
        raise ConfigError(
            f"task.num_entities: {cfg.num_entities} entities x out_degree {cfg.out_degree}^2 make "
            f"{n_chains:,} two-hop chains, more than the {MAX_TWO_HOP_CHAINS:,} reasonlab builds"
        )
    if cfg.num_entities * cfg.num_relations > MAX_TWO_HOP_CHAINS:
        raise ConfigError(
            f"task.num_relations: {cfg.num_entities} entities x {cfg.num_relations} relations is "
            f"more than the {MAX_TWO_HOP_CHAINS:,} (entity, relation) pairs reasonlab builds"
        )
    rng = np.random.default_rng(cfg.seed)
    graph = build_graph(cfg, rng)
    chains, ood_hops = two_hop_chains(graph)
    id_chains = np.flatnonzero(ood_hops == 0)
    held_out = rng.random(len(id_chains)) < cfg.id_test_fraction
    pool, test_iid = id_chains[~held_out], id_chains[held_out]
    test_ood = np.flatnonzero(ood_hops == 2)
    n_id_atomic = int((~graph.is_ood).sum())
    n_train = round(cfg.lam * n_id_atomic)
    if n_train > len(pool):
        raise ConfigError(
            f"task.lam: lambda {cfg.lam} asks for {n_train} two-hop training facts but the ID pool "
            f"holds {len(pool)} (at most lambda {len(pool) / n_id_atomic:.3g} for this graph)"
        )
    if len(test_ood) == 0:
        raise ConfigError(
            "task.ood_fraction: the graph has no two-hop chain with both hops OOD; raise "
            "ood_fraction or num_entities/out_degree"
        )
    if len(test_iid) == 0:
        raise ConfigError("task.id_test_fraction: no ID two-hop chain was held out for testing")
    train_clean = chains.take(np.sort(rng.choice(pool, n_train, replace=False)))
    train_clean = train_clean.take(rng.permutation(n_train))
    noisy = rng.random(n_train) < cfg.noise_ratio
    tails, bridges = train_clean.tails, train_clean.bridges
    if cfg.noise_kind in ("tail", "both"):
        tails = _corrupt(tails, noisy, cfg.num_entities, rng)
    if cfg.noise_kind in ("bridge", "both"):
        bridges = _corrupt(bridges, noisy[:, None], cfg.num_entities, rng)
    limit = cfg.max_probe_size
    khop = {
        k: (k_hop_chains(graph, k, False, limit, rng), k_hop_chains(graph, k, True, limit, rng))
        for k in cfg.khop
    }
    return TwoHopSplits(
        graph=graph,
        atomic=graph.facts(),
        train_chains=Chains(train_clean.heads, train_clean.relations, bridges, tails),
        train_chains_clean=train_clean,
        noisy=noisy,
        test_iid=chains.take(test_iid),
        test_ood=chains.take(test_ood),
        khop=khop,
    )


def probe_chains(splits: TwoHopSplits, cfg: TwoHopTaskConfig) -> dict[str, Chains]:
    """The named test sets, each sampled down to ``max_probe_size`` with a fixed seed."""
    rng = np.random.default_rng([cfg.seed, 1])
    graph = splits.graph
    sets = {
        "id_atomic": graph.facts(ood=False),
        "ood_atomic": graph.facts(ood=True),
        "train_inferred": splits.train_chains_clean,
        "test_inferred_iid": splits.test_iid,
        "test_inferred_ood": splits.test_ood,
    }
    for k, (iid, ood) in splits.khop.items():
        sets[f"test_inferred_{k}hop_iid"] = iid
        sets[f"test_inferred_{k}hop_ood"] = ood
    sampled = {}
    for name, chains in sets.items():
        if len(chains) > cfg.max_probe_size:
            chains = chains.take(
                np.sort(rng.choice(len(chains), cfg.max_probe_size, replace=False))
            )
        if len(chains):
            sampled[name] = chains
    return sampled


def build_twohop(cfg: TwoHopTaskConfig) -> TaskData:
    if cfg.data_dir is not None:
        from reasonlab.tasks.grokked_folder import load_folder

        return load_folder(cfg)
    splits = build_splits(cfg)
    vocab = Vocabulary(cfg.num_entities, cfg.num_relations)
    atomic_tokens, atomic_mask = chains_to_training(splits.atomic, cfg.cot, vocab)
    chain_tokens, chain_mask = chains_to_training(splits.train_chains, cfg.cot, vocab)
    length = max(atomic_tokens.shape[1], chain_tokens.shape[1])
    tokens = np.concatenate(
        [_pad(atomic_tokens, length, vocab.pad_id), _pad(chain_tokens, length, vocab.pad_id)]
    )
    mask = np.concatenate([_pad(atomic_mask, length, 0), _pad(chain_mask, length, 0)]).astype(bool)
    probes = {
        name: chains_to_probe(chains, cfg.cot, vocab)
        for name, chains in probe_chains(splits, cfg).items()
    }
    notes = []
    if cfg.cot == "interleaved":
        notes.append(
            "CoT pattern h r1 b r2 t: at evaluation the question's r2 is fed after the "
            "model's own bridge; only b and t are generated."
        )
    for k in cfg.khop:
        for split in ("iid", "ood"):
            if f"test_inferred_{k}hop_{split}" not in probes:
                notes.append(f"no {k}-hop {split.upper()} chain exists in this graph")
    return TaskData(
        vocab=vocab.tokens,
        pad_id=vocab.pad_id,
        train_tokens=torch.from_numpy(tokens),
        train_loss_mask=torch.from_numpy(mask),
        probes=probes,
        stats=statistics(splits),
        notes=notes,
    )


def statistics(splits: TwoHopSplits) -> dict[str, int]:
    is_ood = splits.graph.is_ood
    stats = {
        "atomic_facts": len(splits.atomic),
        "ood_atomic_facts": int(is_ood.sum()),
        "id_atomic_facts": int((~is_ood).sum()),
        "twohop_train_facts": len(splits.train_chains),
        "twohop_noisy_train_facts": int(splits.noisy.sum()),
        "test_inferred_iid_chains": len(splits.test_iid),
        "test_inferred_ood_chains": len(splits.test_ood),
    }
    for k, (iid, ood) in splits.khop.items():
        stats[f"{k}hop_iid_chains"], stats[f"{k}hop_ood_chains"] = len(iid), len(ood)
    return stats
