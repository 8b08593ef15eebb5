"""The two-hop generator: determinism, the paper's sizes, true compositions, disjoint splits,
noise, token layouts and loss masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import fact_tables, splits_or_skip, tiny_task
from reasonlab.config import ConfigError, TwoHopTaskConfig
from reasonlab.tasks import build_task
from reasonlab.tasks.twohop.encoding import Vocabulary, chains_to_probe, chains_to_training, encode
from reasonlab.tasks.twohop.generator import build_splits, probe_chains
from reasonlab.tasks.twohop.graph import Chains
from reasonlab.tasks.twohop.task import build_twohop


def assert_true_compositions(chains: Chains, tail: np.ndarray) -> None:
    """Every hop of every chain is an atomic fact of the graph."""
    entities = np.concatenate([chains.heads[:, None], chains.bridges, chains.tails[:, None]], 1)
    for hop in range(chains.hops):
        looked_up = tail[entities[:, hop], chains.relations[:, hop]]
        assert (looked_up >= 0).all(), "a chain uses a relation its entity does not have"
        np.testing.assert_array_equal(looked_up, entities[:, hop + 1])


def hop_ood(chains: Chains, ood: np.ndarray) -> np.ndarray:
    """(n, k) bool: whether each hop of each chain is an OOD fact."""
    entities = np.concatenate([chains.heads[:, None], chains.bridges], 1)
    return ood[entities, chains.relations]


def queries(chains: Chains) -> set[tuple[int, ...]]:
    return {(int(h), *map(int, r)) for h, r in zip(chains.heads, chains.relations, strict=True)}


# ----------------------------------------------------------------------------- determinism


def test_same_config_same_data_other_seed_other_data():
    cfg = tiny_task(khop=[3])
    first, second = build_twohop(cfg), build_twohop(cfg)
    assert first.fingerprint() == second.fingerprint()
    assert torch.equal(first.train_tokens, second.train_tokens)
    assert first.stats == second.stats
    other = build_twohop(tiny_task(khop=[3], seed=1))
    assert other.fingerprint() != first.fingerprint()


def test_fingerprint_sees_every_tensor():
    data = build_twohop(tiny_task())
    before = data.fingerprint()
    data.probes["test_inferred_ood"].tokens[0, -2] += 1
    assert data.fingerprint() != before


def test_build_task_dispatches_on_kind():
    cfg = tiny_task()
    assert build_task(cfg).fingerprint() == build_twohop(cfg).fingerprint()


def test_paper_sizes():
    cfg = TwoHopTaskConfig(num_entities=2000, num_relations=200, out_degree=20, lam=7.2)
    stats = build_twohop(cfg).stats
    assert stats["atomic_facts"] == 40000
    assert stats["ood_atomic_facts"] == 2000
    assert stats["id_atomic_facts"] == 38000
    assert stats["twohop_train_facts"] == 273600
    assert stats["twohop_noisy_train_facts"] == 0
    assert 1500 <= stats["test_inferred_ood_chains"] <= 2500


# ----------------------------------------------------------------------------- the splits


@pytest.fixture(scope="module")
def splits():
    return build_splits(
        tiny_task(num_entities=60, ood_fraction=0.3, lam=2.0, khop=[3], max_probe_size=10_000)
    )


def test_graph_shape(splits):
    graph = splits.graph
    assert graph.relation_of.shape == (60, 4)
    # each entity has out_degree distinct relations
    assert all(len(set(row)) == 4 for row in graph.relation_of.tolist())
    assert graph.is_ood.sum() == round(0.3 * 240)
    assert len(splits.atomic) == 240


def test_training_and_test_chains_are_true_compositions(splits):
    tail, _ = fact_tables(splits.graph)
    for chains in (splits.atomic, splits.train_chains_clean, splits.test_iid, splits.test_ood):
        assert len(chains) > 0
        assert_true_compositions(chains, tail)
    # without noise the trained chains are the clean ones
    np.testing.assert_array_equal(splits.train_chains.tails, splits.train_chains_clean.tails)
    np.testing.assert_array_equal(splits.train_chains.bridges, splits.train_chains_clean.bridges)


def test_hops_are_id_or_ood_as_the_split_says(splits):
    _, ood = fact_tables(splits.graph)
    assert not hop_ood(splits.train_chains_clean, ood).any()
    assert not hop_ood(splits.test_iid, ood).any()
    assert hop_ood(splits.test_ood, ood).all()


def all_chains(graph, hops: int, ood: bool) -> set[tuple[int, ...]]:
    """Brute force: every (head, r1, ..., rk) whose k hops are all OOD (or all ID)."""
    found = set()

    def walk(entity, path):
        if len(path) == hops + 1:
            found.add(path)
            return
        for i, relation in enumerate(graph.relation_of[entity].tolist()):
            if graph.is_ood[entity, i] == ood:
                walk(int(graph.tail_of[entity, i]), (*path, relation))

    for head in range(graph.num_entities):
        walk(head, (head,))
    return found


def test_every_ood_chain_of_the_graph_is_in_the_ood_test_set(splits):
    assert queries(splits.test_ood) == all_chains(splits.graph, 2, ood=True)
    # the ID chains are split between training, the ID test set and the unused pool
    id_chains = all_chains(splits.graph, 2, ood=False)
    assert queries(splits.train_chains_clean) | queries(splits.test_iid) <= id_chains


def test_no_test_query_is_trained(splits):
    train = queries(splits.train_chains_clean)
    assert len(train) == len(splits.train_chains_clean)  # no repeated training chain
    assert not train & queries(splits.test_iid)
    assert not train & queries(splits.test_ood)
    assert not queries(splits.test_iid) & queries(splits.test_ood)


def test_lambda_sets_the_number_of_training_chains(splits):
    n_id_atomic = int((~splits.graph.is_ood).sum())
    assert len(splits.train_chains) == round(2.0 * n_id_atomic)


def test_k_hop_chains(splits):
    tail, ood = fact_tables(splits.graph)
    iid, ood_chains = splits.khop[3]
    assert len(iid) > 0 and len(ood_chains) > 0
    for chains in (iid, ood_chains):
        assert chains.hops == 3 and chains.bridges.shape == (len(chains), 2)
        assert_true_compositions(chains, tail)
    assert not hop_ood(iid, ood).any()
    assert hop_ood(ood_chains, ood).all()
    # below the probe limit nothing is subsampled: every 3-hop chain is there, once
    assert len(queries(iid)) == len(iid) and len(queries(ood_chains)) == len(ood_chains)
    assert queries(iid) == all_chains(splits.graph, 3, ood=False)
    assert queries(ood_chains) == all_chains(splits.graph, 3, ood=True)


def test_k_hop_chains_are_capped_at_the_probe_size():
    splits = build_splits(
        tiny_task(num_entities=60, ood_fraction=0.3, khop=[3, 4], max_probe_size=20)
    )
    tail, _ = fact_tables(splits.graph)
    for k in (3, 4):
        for chains in splits.khop[k]:
            assert 0 < len(chains) <= 20 and chains.hops == k
            assert len(queries(chains)) == len(chains)
            assert_true_compositions(chains, tail)


def test_k_hop_probes_in_task_data():
    data = build_twohop(tiny_task(num_entities=60, ood_fraction=0.3, khop=[3]))
    assert {"test_inferred_3hop_iid", "test_inferred_3hop_ood"} <= set(data.probes)
    probe = data.probes["test_inferred_3hop_iid"]
    # after_relations: h r1 r2 r3 b1 b2 t </a>
    assert probe.tokens.shape[1] == 8 and probe.prompt_len == 4
    assert probe.stages == {"bridge1": 4, "bridge2": 5, "tail": 6}


@pytest.mark.parametrize("cot", ["after_relations", "interleaved"])
def test_k_hop_probes_are_named_by_their_split(cot):
    """test_inferred_{k}hop_iid holds only ID facts at every hop, _ood only OOD facts: in the
    named test sets and in the probes' tokens as trained on."""
    cfg = tiny_task(num_entities=60, ood_fraction=0.3, khop=[3, 4], cot=cot)
    splits = build_splits(cfg)
    tail, ood = fact_tables(splits.graph)
    named = probe_chains(splits, cfg)
    data = build_twohop(cfg)
    for k in (3, 4):
        for split, is_ood in (("iid", False), ("ood", True)):
            name = f"test_inferred_{k}hop_{split}"
            chains = named[name]
            assert len(chains) > 0 and chains.hops == k
            assert (hop_ood(chains, ood) == is_ood).all(), name
            tokens = data.probes[name].tokens.numpy()
            assert tokens.shape[0] == len(chains)
            if cot == "after_relations":  # h r1 .. rk b1 .. b(k-1) t </a>
                relations, bridges = tokens[:, 1 : 1 + k] - 60, tokens[:, 1 + k : 2 * k]
            else:  # h r1 b1 r2 ... b(k-1) rk t </a>
                relations, bridges = tokens[:, 1 : 2 * k : 2] - 60, tokens[:, 2 : 2 * k - 1 : 2]
            decoded = Chains(tokens[:, 0], relations, bridges, tokens[:, 2 * k])
            assert_true_compositions(decoded, tail)
            assert (hop_ood(decoded, ood) == is_ood).all(), name


def test_probes_are_sampled_down_to_max_probe_size():
    data = build_twohop(tiny_task(num_entities=60, max_probe_size=10))
    assert all(len(probe) <= 10 for probe in data.probes.values())
    assert len(data.probes["id_atomic"]) == 10


# ----------------------------------------------------------------------------- noise


@pytest.mark.parametrize("kind", ["tail", "bridge", "both"])
@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_noise_share_and_corruption(kind, ratio):
    cfg = tiny_task(num_entities=60, lam=2.0, noise_kind=kind, noise_ratio=ratio)
    splits = build_splits(cfg)
    clean, noisy_chains, noisy = splits.train_chains_clean, splits.train_chains, splits.noisy
    n = len(noisy)
    assert abs(noisy.mean() - ratio) <= 4 * math.sqrt(ratio * (1 - ratio) / n)
    tail_changed = noisy_chains.tails != clean.tails
    bridge_changed = (noisy_chains.bridges != clean.bridges).any(1)
    np.testing.assert_array_equal(noisy_chains.heads, clean.heads)
    np.testing.assert_array_equal(noisy_chains.relations, clean.relations)
    # a corrupted value always differs from the truth, and only noisy chains are corrupted
    np.testing.assert_array_equal(tail_changed, noisy if kind in ("tail", "both") else False)
    np.testing.assert_array_equal(bridge_changed, noisy if kind in ("bridge", "both") else False)
    assert noisy_chains.tails.max() < 60 and noisy_chains.bridges.max() < 60

    data = build_twohop(cfg)
    assert data.stats["twohop_noisy_train_facts"] == int(noisy.sum())
    # the probes stay clean: train_inferred holds the true chains
    tail, _ = fact_tables(splits.graph)
    for name, probe in data.probes.items():
        hops = 1 if "atomic" in name else 2
        tokens = probe.tokens.numpy()
        heads, relations = tokens[:, 0], tokens[:, 1 : 1 + hops] - 60
        bridges = tokens[:, 1 + hops : 2 * hops]
        chains = Chains(heads, relations, bridges, tokens[:, 2 * hops])
        assert_true_compositions(chains, tail)


def test_noisy_chains_are_what_is_trained():
    cfg = tiny_task(num_entities=60, lam=2.0, noise_kind="both", noise_ratio=0.3)
    splits, data = build_splits(cfg), build_twohop(cfg)
    vocab = Vocabulary(60, 8)
    expected, _ = chains_to_training(splits.train_chains, cfg.cot, vocab)
    n_atomic = len(splits.atomic)
    trained = data.train_tokens[n_atomic:].numpy()
    np.testing.assert_array_equal(trained, expected)


# ----------------------------------------------------------------------------- layouts


E, R = 10, 3  # entity ids 0..9, relation r -> id 10 + r, </a> = 13, <pad> = 14
CHAIN = Chains(np.array([5]), np.array([[1, 2]]), np.array([[7]]), np.array([9]))
H, R1, R2, B, T, END = 5, 11, 12, 7, 9, 13

LAYOUTS = {
    # cot: (tokens, prompt_len, given positions, stages)
    "none": ([H, R1, R2, T, END], 3, [], {}),
    "after_relations": ([H, R1, R2, B, T, END], 3, [], {"bridge": 3, "tail": 4}),
    "interleaved": ([H, R1, B, R2, T, END], 2, [3], {"bridge": 2, "tail": 4}),
    "restated": ([H, R1, R2, H, R1, B, R2, T, END], 3, [], {"bridge": 5, "tail": 7}),
}


@pytest.mark.parametrize("cot", list(LAYOUTS))
def test_token_layout(cot):
    vocab = Vocabulary(E, R)
    assert (vocab.end_id, vocab.pad_id) == (13, 14)
    assert vocab.tokens[13] == "</a>" and vocab.tokens[11] == "<r_1>" and vocab.tokens[7] == "<e_7>"
    expected, prompt_len, given, stages = LAYOUTS[cot]
    tokens, plan = encode(CHAIN, cot, vocab)
    assert tokens.tolist() == [expected]
    assert plan.prompt_len == prompt_len
    assert sorted(plan.given) == given

    train_tokens, mask = chains_to_training(CHAIN, cot, vocab)
    expected_mask = [p >= prompt_len and p not in given for p in range(len(expected))]
    assert mask.tolist() == [expected_mask]
    assert train_tokens.tolist() == [expected]

    probe = chains_to_probe(CHAIN, cot, vocab)
    assert probe.prompt_len == prompt_len
    assert probe.given[0].nonzero().flatten().tolist() == given
    assert probe.scored[0].tolist() == expected_mask
    assert probe.stages == stages


@pytest.mark.parametrize("cot", list(LAYOUTS))
def test_atomic_facts_have_no_cot(cot):
    vocab = Vocabulary(E, R)
    fact = Chains(np.array([4]), np.array([[2]]), np.empty((1, 0), np.int64), np.array([6]))
    tokens, mask = chains_to_training(fact, cot, vocab)
    assert tokens.tolist() == [[4, 12, 6, 13]]
    assert mask.tolist() == [[False, False, True, True]]


@pytest.mark.parametrize("cot", list(LAYOUTS))
def test_task_data_layout_and_masks(cot):
    cfg = tiny_task(cot=cot)
    data = build_twohop(cfg)
    expected_len, prompt_len, given, _ = LAYOUTS[cot]
    length = len(expected_len)
    assert data.train_tokens.shape[1] == length
    assert data.train_tokens.dtype == torch.int64 and data.train_loss_mask.dtype == torch.bool
    assert data.vocab[data.pad_id] == "<pad>" and data.vocab_size == 30 + 8 + 2
    n_atomic = 120
    atomic, chains = data.train_tokens[:n_atomic], data.train_tokens[n_atomic:]
    atomic_mask, chain_mask = data.train_loss_mask[:n_atomic], data.train_loss_mask[n_atomic:]
    # atomic facts: h r t </a>, padded; the loss covers t and </a> only
    assert (atomic[:, 4:] == data.pad_id).all()
    assert (atomic[:, 3] == 30 + 8).all()
    assert atomic_mask[:, [2, 3]].all() and not atomic_mask[:, [0, 1]].any()
    assert not atomic_mask[:, 4:].any()
    # chains: full length, end token last, mask = completion minus given positions
    assert (chains != data.pad_id).all()
    assert (chains[:, -1] == 30 + 8).all()
    expected_mask = torch.tensor([p >= prompt_len and p not in given for p in range(length)])
    assert torch.equal(chain_mask, expected_mask.expand_as(chain_mask))
    # never a loss on padding or on the prompt
    assert not (data.train_loss_mask & (data.train_tokens == data.pad_id)).any()
    for probe in data.probes.values():
        assert not (probe.scored & probe.given).any()
        assert not probe.scored[:, : probe.prompt_len].any()
        assert not (probe.scored & (probe.tokens == data.pad_id)).any()
    ood = data.probes["test_inferred_ood"]
    assert ood.prompt_len == prompt_len
    assert ood.given[0].nonzero().flatten().tolist() == given
    if cot == "interleaved":
        assert any("r2" in note for note in data.notes)


# The tokens the loss is trained on, by value, per CoT pattern (tiny task: relation j is 30 + j).
TRAINED_PARTS = {
    "none": lambda c: [c.tails],
    "after_relations": lambda c: [c.bridges[:, 0], c.tails],
    "interleaved": lambda c: [c.bridges[:, 0], c.tails],  # r2 between them is given
    "restated": lambda c: [
        c.heads,
        30 + c.relations[:, 0],
        c.bridges[:, 0],
        30 + c.relations[:, 1],
        c.tails,
    ],
}


@pytest.mark.parametrize("cot", list(LAYOUTS))
def test_loss_mask_selects_exactly_the_completion(cot):
    """Row by row, the masked tokens are the completion (bridge, tail, </a>; the restated
    question too for `restated`): never the prompt, a given token or padding."""
    cfg = tiny_task(cot=cot)
    data, splits = build_task(cfg), build_splits(cfg)
    tokens, mask = data.train_tokens.numpy(), data.train_loss_mask.numpy()
    end = data.vocab.index("</a>")
    n_atomic = len(splits.atomic)
    atomic_trained = tokens[:n_atomic][mask[:n_atomic]].reshape(n_atomic, -1)
    np.testing.assert_array_equal(atomic_trained[:, 0], splits.atomic.tails)
    assert (atomic_trained[:, 1] == end).all() and atomic_trained.shape[1] == 2
    chains = splits.train_chains
    expected = np.stack([*TRAINED_PARTS[cot](chains), np.full(len(chains), end)], axis=1)
    chain_trained = tokens[n_atomic:][mask[n_atomic:]].reshape(len(chains), -1)
    np.testing.assert_array_equal(chain_trained, expected)
    # and the positions: the trained tokens sit right after the prompt (given ones skipped)
    _, prompt_len, given, _ = LAYOUTS[cot]
    positions = np.flatnonzero(mask[n_atomic])
    assert positions.tolist() == [p for p in range(prompt_len, tokens.shape[1]) if p not in given]


def test_relations_and_entities_sit_in_their_slots():
    data = build_twohop(tiny_task(cot="interleaved"))
    tokens = data.train_tokens[120:]
    is_entity = tokens < 30
    is_relation = (tokens >= 30) & (tokens < 38)
    # h r1 b r2 t </a>
    assert is_entity[:, [0, 2, 4]].all() and is_relation[:, [1, 3]].all()


# ----------------------------------------------------------------------------- impossible sizes


def test_lambda_larger_than_the_pool():
    with pytest.raises(ConfigError) as info:
        build_twohop(tiny_task(lam=50.0))
    assert str(info.value).startswith("task.lam")
    assert "\n" not in str(info.value)


def test_graph_without_ood_chain():
    # one OOD fact among 120: no two-hop chain has both hops OOD
    with pytest.raises(ConfigError) as info:
        build_splits(tiny_task(ood_fraction=0.01))
    assert str(info.value).startswith("task.ood_fraction")


def test_graph_without_ood_fact():
    with pytest.raises(ConfigError) as info:
        build_twohop(tiny_task(ood_fraction=0.001))
    assert str(info.value).startswith("task.ood_fraction")


# ----------------------------------------------------------------------------- property


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    num_entities=st.integers(8, 40),
    num_relations=st.integers(2, 8),
    degree_share=st.floats(0.2, 1.0),
    lam=st.floats(0.1, 1.5),
    seed=st.integers(0, 2**16),
    cot=st.sampled_from(list(LAYOUTS)),
)
def test_property_labels_are_compositions_and_splits_disjoint(
    num_entities, num_relations, degree_share, lam, seed, cot
):
    out_degree = max(1, round(degree_share * num_relations))
    cfg = TwoHopTaskConfig(
        num_entities=num_entities,
        num_relations=num_relations,
        out_degree=out_degree,
        ood_fraction=0.3,
        id_test_fraction=0.2,
        lam=lam,
        seed=seed,
        cot=cot,
        max_probe_size=10_000,
    )
    splits = splits_or_skip(cfg)
    tail, ood = fact_tables(splits.graph)
    for chains in (splits.train_chains_clean, splits.test_iid, splits.test_ood):
        assert_true_compositions(chains, tail)
    assert not hop_ood(splits.train_chains_clean, ood).any()
    assert not hop_ood(splits.test_iid, ood).any()
    assert hop_ood(splits.test_ood, ood).all()
    train, iid, ood_q = (
        queries(c) for c in (splits.train_chains_clean, splits.test_iid, splits.test_ood)
    )
    assert len(train) == len(splits.train_chains_clean)
    assert not train & iid and not train & ood_q and not iid & ood_q
    # the training set holds every atomic fact and every training chain
    data = build_twohop(cfg)
    assert len(data.train_tokens) == len(splits.atomic) + len(splits.train_chains)


def test_decode_writes_tokens_without_padding():
    from reasonlab.config import TwoHopTaskConfig

    data = build_twohop(
        TwoHopTaskConfig(
            num_entities=30,
            num_relations=6,
            out_degree=3,
            lam=1,
            ood_fraction=0.3,
            id_test_fraction=0.1,
        )
    )
    atomic = data.decode(data.train_tokens[0]).split()
    assert len(atomic) == 4 and atomic[0].startswith("<e_") and atomic[1].startswith("<r_")
    assert atomic[3] == "</a>" and "<pad>" not in atomic
