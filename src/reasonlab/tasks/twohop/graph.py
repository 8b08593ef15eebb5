"""The knowledge graph of two-hop facts and the chains read off it: every entity has
``out_degree`` distinct relations, each pointing to a random tail; a share of the atomic facts
(by fact, not by entity) is out of distribution. Vectorized with numpy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reasonlab.config import ConfigError, TwoHopTaskConfig


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
