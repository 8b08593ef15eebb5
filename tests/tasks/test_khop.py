"""k-hop questions by chained CoT queries (reasonlab.analysis.khop), checked with an oracle that
knows the graph: every query has a training sequence's shape, each answer starts the next
query, and the scores count the right entities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from helpers import tiny_task
from reasonlab.analysis.khop import chained_answers, chained_scores, query_plan
from reasonlab.tasks.twohop.encoding import Vocabulary, layout
from reasonlab.tasks.twohop.generator import build_splits
from reasonlab.tasks.twohop.graph import Graph


class Oracle(nn.Module):
    """Predicts each next token from the graph's facts, as a perfect model of one CoT pattern:
    after the head and relations, the next hop's entity (``none``: the whole composition), then
    the end token. ``lie_on``: a query length (relations in the prompt) answered with a wrong
    entity, to show whose answer the next query starts from. Records every sequence length."""

    def __init__(self, graph: Graph, vocab: Vocabulary, cot: str, lie_on: int | None = None):
        super().__init__()
        self.graph, self.vocab, self.cot, self.lie_on = graph, vocab, cot, lie_on
        self.lengths: list[int] = []
        self.tail = {
            (int(e), int(r)): int(t)
            for e in range(graph.num_entities)
            for r, t in zip(graph.relation_of[e], graph.tail_of[e], strict=True)
        }

    def next_token(self, prefix: list[int]) -> int:
        entities = self.vocab.num_entities
        relations = [t - entities for t in prefix if entities <= t < self.vocab.end_id]
        written = [t for t in prefix[1:] if t < entities]  # entities written after the head
        current = written[-1] if written else prefix[0]
        pending = relations[len(written) :]
        if not pending:
            return self.vocab.end_id
        for r in pending if self.cot == "none" else pending[:1]:
            current = self.tail.get((current, r), 0)
        if self.lie_on == len(relations) and not written:
            current = (current + 1) % entities
        return current

    def forward(self, tokens: Tensor) -> Tensor:
        self.lengths.append(tokens.shape[1])
        logits = torch.zeros(*tokens.shape, self.vocab.pad_id + 1)
        for row in range(tokens.shape[0]):
            for position in range(tokens.shape[1]):
                prefix = tokens[row, : position + 1].tolist()
                logits[row, position, self.next_token(prefix)] = 1.0
        return logits


@pytest.fixture(scope="module")
def khop_splits():
    return build_splits(tiny_task(khop=[3, 4]))


def test_query_plan_is_two_hop_queries_and_an_atomic_last():
    assert query_plan(2) == [2]
    assert query_plan(3) == [2, 1]
    assert query_plan(4) == [2, 2]
    assert query_plan(5) == [2, 2, 1]


@pytest.mark.parametrize("cot", ["after_relations", "interleaved", "none"])
@pytest.mark.parametrize("hops", [3, 4])
def test_a_perfect_model_answers_every_chain_with_trained_lengths(khop_splits, cot, hops):
    cfg = tiny_task()
    vocab = Vocabulary(cfg.num_entities, cfg.num_relations)
    chains = khop_splits.khop[hops][0]
    assert len(chains) > 0
    oracle = Oracle(khop_splits.graph, vocab, cot)
    scores = chained_scores(oracle, chains, cot, vocab, batch_size=16)
    assert scores["accuracy"] == 1.0 and all(a == 1.0 for a in scores["after_each_query"])
    longest_trained = max(layout(2, cot).length, layout(1, cot).length)
    assert max(oracle.lengths) < longest_trained  # never the k-hop sequence's positions
    assert layout(hops, cot).length > longest_trained


def test_the_next_query_starts_from_the_models_own_answer(khop_splits):
    """An oracle wrong on two-hop queries only: the first query's wrong entity starts the
    atomic query, so the final answer is wrong although atomic queries are answered right."""
    cfg = tiny_task()
    vocab = Vocabulary(cfg.num_entities, cfg.num_relations)
    chains = khop_splits.khop[3][0]
    oracle = Oracle(khop_splits.graph, vocab, "after_relations", lie_on=2)
    after_each = chained_answers(oracle, chains, "after_relations", vocab)
    assert len(after_each) == 2
    scores = chained_scores(oracle, chains, "after_relations", vocab)
    assert scores["after_each_query"][0] < 1.0
    wrong_bridge = after_each[0] != chains.bridges[:, 1]
    # where the first answer was wrong, the atomic query answered from it, not from the truth
    tail = oracle.tail
    expected = np.array(
        [
            tail.get((int(e), int(r)), 0)
            for e, r in zip(after_each[0], chains.relations[:, 2], strict=True)
        ]
    )
    assert np.array_equal(after_each[1], expected)
    assert wrong_bridge.any() and scores["accuracy"] < 1.0
