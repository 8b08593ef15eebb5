"""Greedy-decoding evaluation against stub models whose predictions are known by construction:
exact match, given positions, per-stage scores and the teacher-forced tail, by full recomputation
(a plain module) and by incremental decoding (a stub with a decoding state)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from reasonlab.models.base import DecodingState
from reasonlab.tasks.base import Probe, as_probe
from reasonlab.training.evaluation import (
    evaluate,
    greedy_complete,
    greedy_complete_recompute,
    score_probe,
    score_probe_recompute,
    teacher_forced,
)

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


class IncrementalBigram(Bigram):
    """The same bigram with a decoding state (it needs nothing but the length); records the
    pieces fed with a state and the shapes run without one."""

    def __init__(self, table: dict[int, int]):
        super().__init__(table)
        self.pieces: list[int] = []
        self.stateless: list[tuple[int, int]] = []

    def new_state(self, batch_size: int) -> DecodingState:
        return DecodingState()

    def forward(self, tokens: Tensor, state: DecodingState | None = None) -> Tensor:
        if state is None:
            self.stateless.append(tuple(tokens.shape))
        else:
            self.pieces.append(tokens.shape[1])
            state.length += tokens.shape[1]
        return super().forward(tokens)


class BranchingBigram(IncrementalBigram):
    """The incremental bigram whose state can branch (``select``), as the GPT's; records the
    (rows, length) of every piece fed with a state."""

    def __init__(self, table: dict[int, int]):
        super().__init__(table)
        self.shapes: list[tuple[int, int]] = []

    def new_state(self, batch_size: int) -> DecodingState:
        return BranchingState(batch_size)

    def forward(self, tokens: Tensor, state: DecodingState | None = None) -> Tensor:
        if state is not None:
            self.shapes.append(tuple(tokens.shape))
        return super().forward(tokens, state)


class BranchingState(DecodingState):
    def __init__(self, batch_size: int, length: int = 0):
        self.batch_size, self.length = batch_size, length

    def select(self, rows: Tensor) -> BranchingState:
        return BranchingState(len(rows), self.length)


class NoDecodingFamily(Bigram):
    """A model family whose ``new_state`` is not written (as LanguageModel's default)."""

    def new_state(self, batch_size: int) -> DecodingState:
        raise NotImplementedError


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


def test_incremental_decoding_feeds_each_position_once():
    """The prompt in one piece, then one position at a time, except that a column given in every
    row goes in one piece with the generated token before it; the tokens are those of
    recomputation."""
    probe = interleaved_probe()
    model = IncrementalBigram(INTERLEAVED_MODEL)
    generated = greedy_complete(model, probe.tokens, 2, probe.given)
    assert generated.tolist() == [[1, 2, 4, 3, 5, END]]
    assert model.pieces == [2, 2, 1] and model.stateless == []
    model.pieces.clear()
    no_given = torch.zeros_like(probe.given)
    assert greedy_complete(model, probe.tokens, 2, no_given).tolist() == [[1, 2, 4, 8, 0, END]]
    assert model.pieces == [2, 1, 1, 1]
    after = after_probe()
    for prompt_len in (1, 3, 5):
        expected = greedy_complete_recompute(
            Bigram(AFTER_MODEL), after.tokens, prompt_len, after.given
        )
        decoded = greedy_complete(
            IncrementalBigram(AFTER_MODEL), after.tokens, prompt_len, after.given
        )
        assert torch.equal(decoded, expected)


def test_teacher_forced_tail_reruns_only_rows_that_left_the_true_prefix():
    """Row 0 fed the true bridge: its greedy tail is the teacher-forced one. Row 1 generated a
    wrong bridge: only it is run again, on the true tokens before the tail."""
    model = IncrementalBigram(AFTER_MODEL)
    scores = score_probe(model, after_probe(), 8, torch.device("cpu"))
    assert scores == {"": 0.5, ".bridge": 0.5, ".tail": 0.5, ".tail_given_true_bridge": 1.0}
    assert model.stateless == [(1, 4)]


def test_a_branching_state_feeds_shared_prompts_once_and_branches_for_the_tail():
    """Both prompts start with 1 2: fed once, then the state branches into the two rows. Row 1
    leaves the true sequence at its bridge (position 3): a branch of it is fed the true bridge
    for the teacher-forced tail; nothing is run from the start again. After the tail (the last
    stage) row 1, whose exact match is lost, is no longer fed."""
    model = BranchingBigram(AFTER_MODEL)
    scores = score_probe(model, after_probe(), 8, torch.device("cpu"))
    assert scores == {"": 0.5, ".bridge": 0.5, ".tail": 0.5, ".tail_given_true_bridge": 1.0}
    # prompt: 1, then 2, then the two third tokens; the branch of row 1 (true bridge 7); the
    # generated bridges; row 0's tail
    assert model.shapes == [(1, 1), (1, 1), (2, 1), (1, 1), (2, 1), (1, 1)]
    assert model.stateless == []
    # greedy_complete generates every position of every row
    generated = greedy_complete(BranchingBigram(AFTER_MODEL), AFTER_TOKENS, 3, after_probe().given)
    assert generated.tolist() == [[1, 2, 3, 4, 5, END], [1, 2, 6, 0, 5, END]]


@pytest.mark.parametrize(
    "model_class",
    [Bigram, IncrementalBigram, BranchingBigram, NoDecodingFamily],
    ids=lambda c: c.__name__,
)
@pytest.mark.parametrize("batch_size", [1, 2, 1024])
def test_every_path_scores_as_the_recompute_reference(model_class, batch_size):
    """A plain module and a family without ``new_state`` are decoded by recomputation, a model
    with a state incrementally: the same numbers as the original algorithm."""
    cpu = torch.device("cpu")
    padded = torch.tensor([[1, 2, 5, END, PAD, PAD], [1, 3, 4, 6, 7, END], [1, 3, 9, 6, 7, END]])
    some_given = torch.zeros(padded.shape, dtype=torch.bool)
    some_given[1:, 3] = True
    cases = [
        (AFTER_MODEL, after_probe()),
        (INTERLEAVED_MODEL, interleaved_probe()),
        ({**AFTER_MODEL, 5: 9, 8: 9}, after_probe()),
        # padding, given positions in some rows, a row right after a wrong token
        (
            {2: 5, 5: END, END: 9, PAD: 9, 3: 4, 4: 9, 6: 7, 7: END},
            as_probe(padded, 2, some_given, PAD, {}),
        ),
        (
            {2: 5, 5: END, 3: 4, 4: 6, 6: 7, 7: END},
            as_probe(padded, 2, some_given, PAD, {"tail": 4}),
        ),
    ]
    for table, probe in cases:
        expected = score_probe_recompute(Bigram(table), probe, batch_size, cpu)
        assert score_probe(model_class(table), probe, batch_size, cpu) == expected
        probes = {"p": probe}
        reference = evaluate(Bigram(table), probes, batch_size, recompute=True)
        assert evaluate(model_class(table), probes, batch_size) == reference


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


# Prompts of different lengths in one probe (arithmetic expressions vary): row 0 asks "1 2 ?",
# row 1 "1 3 3 ?" (9 closes a question), and the answer follows at each row's own position.
# The bigram would answer 0 after a 3, so a row 1 whose fourth token were generated would fail.
RAGGED_TOKENS = torch.tensor([[1, 2, 9, 4, END, PAD], [1, 3, 3, 9, 5, END], [1, 3, 9, 4, END, PAD]])
RAGGED_PROMPTS = torch.tensor([3, 4, 3])
RAGGED_ANSWERS = torch.tensor([3, 4, 3])


def ragged_probe() -> Probe:
    given = torch.zeros(RAGGED_TOKENS.shape, dtype=torch.bool)
    stages = {"answer": RAGGED_ANSWERS}
    return as_probe(RAGGED_TOKENS, RAGGED_PROMPTS, given, PAD, stages, teacher_forced=True)


def test_per_row_prompts_are_given_and_never_scored():
    probe = ragged_probe()
    assert probe.prompt_len == 3
    assert probe.given[1, 3] and not probe.given[0, 3] and not probe.given[1, 4]
    assert not probe.scored[1, :4].any() and probe.scored[1, 4:].all()
    assert probe.scored[0].tolist() == [False, False, False, True, True, False]


@pytest.mark.parametrize(
    "model_class", [Bigram, IncrementalBigram, BranchingBigram], ids=lambda c: c.__name__
)
@pytest.mark.parametrize("batch_size", [1, 2, 1024])
def test_per_row_prompts_stages_and_teacher_forced_exact_match(model_class, batch_size):
    """Row 1's answer 5 is wrong (the bigram says 4 after 9): exact match, the per-row answer
    stage and the answer given the true trace count 2 of 3 rows, 5 of the 6 scored tokens are
    right under teacher forcing; every path agrees with the recompute reference."""
    cpu = torch.device("cpu")
    table = {2: 9, 3: 0, 9: 4, 4: END, 5: END}
    scores = score_probe(model_class(table), ragged_probe(), batch_size, cpu)
    assert scores == {
        "": 2 / 3,
        ".answer": 2 / 3,
        ".token_accuracy_teacher_forced": 5 / 6,
        ".answer_given_true_trace": 2 / 3,
    }
    assert score_probe_recompute(Bigram(table), ragged_probe(), batch_size, cpu) == scores


def test_teacher_forced_scores_read_each_position_from_the_true_prefix():
    """Greedy decoding fails a row at its first wrong token; teacher forcing scores every scored
    position from the true tokens before it, so a wrong answer followed by right tokens still
    counts those tokens, and a right answer counts even when a later token is wrong."""
    tokens = torch.tensor([[1, 9, 4, 6, END]])  # prompt "1 9", answer 4 at position 2
    given = torch.zeros(tokens.shape, dtype=torch.bool)
    probe = as_probe(tokens, 2, given, PAD, {"answer": 2}, teacher_forced=True)
    cpu = torch.device("cpu")

    def scores(table: dict[int, int]) -> dict[str, float]:
        return score_probe(Bigram(table), probe, 4, cpu)

    wrong_end = {"": 0.0, ".answer": 1.0, ".token_accuracy_teacher_forced": 2 / 3}
    assert scores({9: 4, 4: 6, 6: 0}) == {**wrong_end, ".answer_given_true_trace": 1.0}
    wrong_answer = {"": 0.0, ".answer": 0.0, ".token_accuracy_teacher_forced": 2 / 3}
    assert scores({9: 7, 4: 6, 6: END, 7: 6}) == {**wrong_answer, ".answer_given_true_trace": 0.0}
    right = {"": 1.0, ".answer": 1.0, ".token_accuracy_teacher_forced": 1.0}
    assert scores({9: 4, 4: 6, 6: END}) == {**right, ".answer_given_true_trace": 1.0}
