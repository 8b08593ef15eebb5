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

from reasonlab.config import ConfigError, TwoHopTaskConfig
from reasonlab.tasks.twohop.graph import Chains, Graph, build_graph, k_hop_chains, two_hop_chains


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
