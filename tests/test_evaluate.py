"""Greedy-decoding evaluation against stub models whose predictions are known by construction:
exact match, given positions, per-stage scores and the teacher-forced tail."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from reasonlab.evaluate import evaluate, greedy_complete, score_probe, teacher_forced
from reasonlab.tasks.base import Probe, as_probe

V, END, PAD = 12, 10, 11  # a toy vocabulary: ids 0..9 are "entities and relations"


class Bigram(nn.Module):
    """Predicts ``table[previous token]`` at every position (unknown tokens: 0), as one-hot
    logits; a stand-in whose greedy decoding can be worked out by hand."""

    def __init__(self, table: dict[int, int]):
        super().__init__()
        lookup = torch.zeros(V, dtype=torch.long)
        for previous, following in table.items():
            lookup[previous] = following
        self.register_buffer("lookup", lookup)

    def forward(self, tokens: Tensor) -> Tensor:  # (N, L) -> (N, L, V)
        return nn.functional.one_hot(self.lookup[tokens], V).float()


# after_relations: h r1 r2 | b t </a>, prompt 3, stages bridge 3, tail 4.
# Row 0: everything right. Row 1: r2=6 -> wrong bridge 0; from its own bridge 0 the model says 5
# (wrong tail), but from the true bridge 7 it says 8 (right): tail_given_true_bridge is right.
AFTER_TOKENS = torch.tensor([[1, 2, 3, 4, 5, END], [1, 2, 6, 7, 8, END]])
AFTER_MODEL = {3: 4, 4: 5, 5: END, 6: 0, 0: 5, 7: 8, 8: END}

# interleaved: h r1 | b r2 t </a>, prompt 2, r2 (position 3) given. After the bridge 4 the model
# would write relation 8 (wrong), which leads to tail 0; fed the given r2 = 3 it answers 5.
INTERLEAVED_TOKENS = torch.tensor([[1, 2, 4, 3, 5, END]])
INTERLEAVED_MODEL = {2: 4, 4: 8, 8: 0, 3: 5, 5: END, 0: END}


def probe_of(tokens: Tensor, prompt_len: int, given: list[int], stages: dict[str, int]) -> Probe:
    mask = torch.zeros(tokens.shape, dtype=torch.bool)
    mask[:, given] = True
    return as_probe(tokens, prompt_len, mask, PAD, stages)


def after_probe() -> Probe:
    return probe_of(AFTER_TOKENS, 3, [], {"bridge": 3, "tail": 4})


def interleaved_probe() -> Probe:
    return probe_of(INTERLEAVED_TOKENS, 2, [3], {"bridge": 2, "tail": 4})


def test_greedy_complete_continues_from_its_own_predictions():
    """Generated tokens feed the next step; the prompt is kept; decoding starts at prompt_len."""
    probe = after_probe()
    generated = greedy_complete(Bigram(AFTER_MODEL), probe.tokens, 3, probe.given)
    assert generated.tolist() == [[1, 2, 3, 4, 5, END], [1, 2, 6, 0, 5, END]]


def test_greedy_complete_feeds_given_positions():
    """A given position holds the true token, not the model's guess, and decoding goes on
    from it (interleaved CoT: the question's r2 after the model's own bridge)."""
    probe = interleaved_probe()
    generated = greedy_complete(Bigram(INTERLEAVED_MODEL), probe.tokens, 2, probe.given)
    assert generated.tolist() == [[1, 2, 4, 3, 5, END]]
    no_given = torch.zeros_like(probe.given)
    generated = greedy_complete(Bigram(INTERLEAVED_MODEL), probe.tokens, 2, no_given)
    assert generated.tolist() == [[1, 2, 4, 8, 0, END]]


def test_teacher_forced_predicts_from_the_true_prefix():
    predictions = teacher_forced(Bigram(AFTER_MODEL), AFTER_TOKENS)
    assert predictions.tolist() == [[-1, 0, 0, 4, 5, END], [-1, 0, 0, 0, 8, END]]


def test_score_probe_per_stage_and_exact_match():
    """Own wrong bridge -> wrong tail, although the tail given the true bridge is right."""
    scores = score_probe(Bigram(AFTER_MODEL), after_probe(), 8, torch.device("cpu"))
    assert scores == {"": 0.5, ".bridge": 0.5, ".tail": 0.5, ".tail_given_true_bridge": 1.0}


def test_score_probe_uses_given_positions():
    scores = score_probe(Bigram(INTERLEAVED_MODEL), interleaved_probe(), 8, torch.device("cpu"))
    assert scores == {"": 1.0, ".bridge": 1.0, ".tail": 1.0, ".tail_given_true_bridge": 1.0}


def test_a_wrong_token_anywhere_in_the_completion_fails_exact_match():
    """Bridge and tail right but a wrong end token: exact match 0, stages 1."""
    model = Bigram({**AFTER_MODEL, 5: 9, 8: 9})
    scores = score_probe(model, after_probe(), 8, torch.device("cpu"))
    assert scores[""] == 0.0
    assert scores[".tail_given_true_bridge"] == 1.0
    model = Bigram({3: 9, 6: 9})  # every completion token wrong
    assert score_probe(model, after_probe(), 8, torch.device("cpu"))[""] == 0.0


def test_padding_and_given_positions_are_not_scored():
    """Rows of different lengths (right-padded): what the model says at padding or at a given
    position does not count."""
    tokens = torch.tensor([[1, 2, 5, END, PAD, PAD], [1, 3, 4, 6, 7, END]])
    given = torch.zeros(tokens.shape, dtype=torch.bool)
    given[1, 3] = True
    probe = as_probe(tokens, 2, given, PAD, {})
    # row 0: 2 -> 5, 5 -> END, then junk (9) where padding is; row 1: 3 -> 4, the given 6 is
    # predicted wrong (9) but fed, 6 -> 7, 7 -> END
    model = Bigram({2: 5, 5: END, END: 9, PAD: 9, 3: 4, 4: 9, 6: 7, 7: END})
    assert score_probe(model, probe, 8, torch.device("cpu")) == {"": 1.0}
    model = Bigram({2: 5, 5: END, 3: 4, 4: 9, 6: 7, 7: 9})  # row 1 misses its end token
    assert score_probe(model, probe, 8, torch.device("cpu")) == {"": 0.5}


@pytest.mark.parametrize("batch_size", [1, 2, 1024])
def test_evaluate_names_and_values(batch_size):
    """Keys probe / probe.stage; values independent of the batch size; mode restored."""
    model = Bigram(AFTER_MODEL)
    model.train()
    probes = {"after": after_probe(), "atomic": probe_of(torch.tensor([[1, 3, 4, END]]), 2, [], {})}
    scores = evaluate(model, probes, batch_size=batch_size)
    assert scores == {
        "after": 0.5,
        "after.bridge": 0.5,
        "after.tail": 0.5,
        "after.tail_given_true_bridge": 1.0,
        "atomic": 0.0,  # 3 -> 4 right, then 4 -> 8 instead of </a>
    }
    assert model.training


def test_evaluate_three_thirds():
    """Accuracies are counts over the whole probe (1/3, 2/3), rounded to 6 digits."""
    tokens = torch.tensor([[1, 3, 4, END], [1, 5, 6, END], [1, 7, 8, END]])
    model = Bigram({3: 4, 4: END, 5: 6, 6: END, 7: 0})
    scores = evaluate(model, {"p": probe_of(tokens, 2, [], {"tail": 2})}, batch_size=2)
    assert scores == {"p": 0.666667, "p.tail": 0.666667, "p.tail_given_true_bridge": 0.666667}
