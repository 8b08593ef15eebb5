"""Incremental decoding: the GPT's KV cache gives the logits of the whole sequence when fed in
pieces (learned and rotary positions, single tokens, hooks watching), and greedy evaluation by
incremental decoding gives the tokens and metrics of full recomputation, but for near-tied
choices, which rounding may flip."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from helpers import TINY_TASK, tiny_config, tiny_gpt, tiny_mamba
from reasonlab.config import GPTModelConfig, TwoHopTaskConfig
from reasonlab.models.base import LanguageModel
from reasonlab.models.build import build_model
from reasonlab.models.gpt import GPT, GPTConfig
from reasonlab.tasks import build_task
from reasonlab.tasks.base import Probe, TaskData
from reasonlab.training.evaluation import (
    evaluate,
    greedy_complete,
    greedy_complete_recompute,
    score_probe,
    score_probe_recompute,
)

VOCAB, MAX_LEN, BATCH = 23, 12, 3


# A tiny GPT with every parameter randomized (biases and norms too): logits far from ties.
random_gpt = functools.partial(tiny_gpt, VOCAB, MAX_LEN, weight_std=0.3)


def random_tokens(seed: int = 1, batch: int = BATCH, length: int = MAX_LEN) -> Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def random_split(length: int, seed: int) -> list[int]:
    """Piece lengths summing to ``length``, with many single tokens."""
    generator = torch.Generator().manual_seed(seed)
    pieces, left = [], length
    while left:
        piece = min(left, int(torch.randint(1, 5, (1,), generator=generator)))
        pieces.append(piece)
        left -= piece
    return pieces


def fed_in_pieces(model: LanguageModel, tokens: Tensor, pieces: list[int]) -> Tensor:
    state = model.new_state(tokens.shape[0])
    outputs, start = [], 0
    for piece in pieces:
        outputs.append(model(tokens[:, start : start + piece], state=state))
        start += piece
    assert state.length == start
    return torch.cat(outputs, dim=1)


SPLITS = [[MAX_LEN], [1] * MAX_LEN, [5, 1, 1, 3, 2], [1, 11]] + [
    random_split(MAX_LEN, seed) for seed in range(3)
]


@pytest.mark.parametrize("positions", ["learned", "rotary"])
@pytest.mark.parametrize("pieces", SPLITS, ids=str)
@torch.no_grad()
def test_pieces_give_the_logits_of_the_whole(positions, pieces):
    model, tokens = random_gpt(positions=positions), random_tokens()
    torch.testing.assert_close(fed_in_pieces(model, tokens, pieces), model(tokens))


@pytest.mark.parametrize("positions", ["learned", "rotary"])
@torch.no_grad()
def test_hooks_see_the_new_positions_and_every_key(positions):
    """With the pattern watched (manual attention), each piece's hooks see its own positions;
    the pattern's rows are those of the whole sequence's, over the cached and new keys."""
    model, tokens = random_gpt(positions=positions), random_tokens()
    whole, cache = model.run_with_cache(tokens)
    state, start = model.new_state(BATCH), 0
    for piece in [4, 1, 3, 1, 3]:
        logits, piece_cache = model.run_with_cache(tokens[:, start : start + piece], state=state)
        end = start + piece
        torch.testing.assert_close(logits, whole[:, start:end])
        for name in ("blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"):
            assert piece_cache[name].shape == (BATCH, 2, piece, end)
            torch.testing.assert_close(piece_cache[name], cache[name][:, :, start:end, :end])
        assert piece_cache["blocks.1.attn.hook_k"].shape == (BATCH, piece, 2, 8)
        torch.testing.assert_close(
            piece_cache["blocks.1.hook_resid_post"], cache["blocks.1.hook_resid_post"][:, start:end]
        )
        start = end


@torch.no_grad()
def test_a_patching_hook_applies_to_the_piece_it_runs_on():
    """A hook that replaces an activation while a piece is fed changes that piece and, through
    the cached keys and values, the later ones: as in the whole sequence patched at the same
    positions."""
    model, tokens = random_gpt(), random_tokens()

    def zero_positions(first: int, last: int) -> Callable[[Tensor, object], Tensor]:
        def hook(activation: Tensor, _: object) -> Tensor:
            activation = activation.clone()
            activation[:, first:last] = 0.0
            return activation

        return hook

    patched = model.run_with_hooks(tokens, [("blocks.0.hook_attn_out", zero_positions(3, 5))])
    state = model.new_state(BATCH)
    first = model(tokens[:, :3], state=state)
    hook = [("blocks.0.hook_attn_out", zero_positions(0, 2))]
    second = model.run_with_hooks(tokens[:, 3:5], hook, state=state)
    rest = model(tokens[:, 5:], state=state)
    torch.testing.assert_close(torch.cat([first, second, rest], dim=1), patched)


@torch.no_grad()
def test_longer_than_max_seq_len_raises_and_keeps_the_state():
    model, tokens = random_gpt(), random_tokens(length=MAX_LEN + 1)
    state = model.new_state(BATCH)
    model(tokens[:, :8], state=state)
    with pytest.raises(ValueError, match=r"length 13 \(8 fed before, 5 now\) exceeds max_seq_len"):
        model(tokens[:, 8:], state=state)
    assert state.length == 8
    rest = model(tokens[:, 8:MAX_LEN], state=state)  # the state is still good
    torch.testing.assert_close(rest, model(tokens[:, :MAX_LEN])[:, 8:])
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        model(tokens[:, :1], state=state)
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        model(tokens)


@torch.no_grad()
def test_a_wrong_batch_size_and_a_failing_hook_leave_the_state_usable():
    model, tokens = random_gpt(positions="rotary"), random_tokens()
    state = model.new_state(BATCH)
    model(tokens[:, :4], state=state)
    with pytest.raises(ValueError, match="batch size 2 differs"):
        model(tokens[:2, 4:6], state=state)

    def fail(activation: Tensor, _: object) -> None:
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        model.run_with_hooks(tokens[:, 4:6], [("blocks.1.hook_resid_pre", fail)], state=state)
    assert state.length == 4
    assert all(layer.keys.shape[2] == 4 for layer in state.layers)  # layer 0 was rolled back
    torch.testing.assert_close(model(tokens[:, 4:], state=state), model(tokens)[:, 4:])


def build_gpt_learned() -> LanguageModel:
    return random_gpt(positions="learned")


def build_gpt_rotary() -> LanguageModel:
    return random_gpt(positions="rotary", seed=1)


def build_mamba() -> LanguageModel:
    pytest.importorskip("reasonlab.models.mamba")
    return tiny_mamba(VOCAB, d_state=16).eval()


# One line per model family with incremental decoding.
BUILDERS = [build_gpt_learned, build_gpt_rotary, build_mamba]

# The decoding paths compute the same logits in other pieces, which differ by rounding (below
# 1e-6 for these tiny float32 models). An argmax whose top two logits are further apart than
# TIE_MARGIN is the same on every path; only a nearer one may flip.
TIE_MARGIN = 1e-5


@torch.no_grad()
def near_ties(model: nn.Module, sequences: list[Tensor], prompt_len: int) -> Tensor:
    """(N,) True for the rows in which a prediction at a completion position from any of the
    (N, L) ``sequences`` (each position predicted from the tokens before it) has its top two
    logits within TIE_MARGIN: the only rows where two decoding paths may choose differently."""
    near = torch.zeros(sequences[0].shape[0], dtype=torch.bool)
    for sequence in sequences:
        top_two = model(sequence[:, :-1]).topk(2, dim=-1).values[:, prompt_len - 1 :]
        near |= (top_two[..., 0] - top_two[..., 1] < TIE_MARGIN).any(dim=1)
    return near


def assert_equal_but_for_near_ties(
    model: nn.Module, probe: Probe, scores: dict[str, float], reference: dict[str, float]
) -> None:
    """One probe's scores from two decoding paths are equal, except that each may differ by the
    share of rows with a near tie (greedy on the reference's own tokens, or teacher-forced on the
    true ones); 1e-6 more because ``evaluate`` rounds to 6 decimals."""
    generated = greedy_complete_recompute(model, probe.tokens, probe.prompt_len, probe.given)
    near = near_ties(model, [generated, probe.tokens], probe.prompt_len)
    allowed = float(near.sum()) / len(probe) + 1e-6
    assert scores.keys() == reference.keys()
    for key, value in scores.items():
        assert abs(value - reference[key]) <= allowed, key


def scores_of(scores: dict[str, float], probe_name: str) -> dict[str, float]:
    """The entries of one probe in ``evaluate``'s scores."""
    return {k: v for k, v in scores.items() if k == probe_name or k.startswith(probe_name + ".")}


@pytest.mark.parametrize("build", BUILDERS, ids=lambda build: build.__name__[6:])
@torch.no_grad()
def test_incremental_greedy_equals_recompute(build):
    """Prompt of 3; column 5 given in every row (fed together with the token before it);
    column 8 given in some rows only; the rest generated. Prompts share first tokens (fed once
    where the state can branch) and two rows are the same."""
    model = build()
    tokens = random_tokens(seed=2, batch=16, length=10)
    tokens[:12, 0] = 5
    tokens[:6, 1] = 7
    tokens[15] = tokens[14]
    given = torch.zeros(tokens.shape, dtype=torch.bool)
    given[:, 5] = True
    given[::2, 8] = True
    expected = greedy_complete_recompute(model, tokens, 3, given)
    # Tokens of two paths: exactly equal, because no choice here is a near tie.
    assert not near_ties(model, [expected], 3).any()
    assert torch.equal(greedy_complete(model, tokens, 3, given), expected)
    assert torch.equal(expected[:, 5], tokens[:, 5]) and torch.equal(expected[:, :3], tokens[:, :3])
    assert (expected[:, 3:] != tokens[:, 3:]).any()  # the model's own tokens, not the true ones
    nothing_given = torch.zeros_like(given)
    expected = greedy_complete_recompute(model, tokens, 1, nothing_given)
    assert not near_ties(model, [expected], 1).any()
    assert torch.equal(greedy_complete(model, tokens, 1, nothing_given), expected)


@pytest.mark.parametrize("positions", ["learned", "rotary"])
@torch.no_grad()
def test_a_branch_continues_the_rows_it_copied(positions):
    """``select`` copies rows (repeats allowed) into a new state: fed on, it gives the logits of
    those rows fed whole, and the state it came from goes on unchanged."""
    model, tokens = random_gpt(positions=positions), random_tokens()
    whole = model(tokens)
    state = model.new_state(BATCH)
    model(tokens[:, :5], state=state)
    rows = torch.tensor([2, 0, 2])
    branch = state.select(rows)
    assert branch.length == 5 and branch.batch_size == 3
    torch.testing.assert_close(model(tokens[rows, 5:9], state=branch), whole[rows, 5:9])
    torch.testing.assert_close(model(tokens[:, 5:], state=state), whole[:, 5:])
    assert branch.length == 9 and state.length == MAX_LEN


@pytest.fixture(scope="module")
def twohop_tasks() -> dict[str, TaskData]:
    """The tiny two-hop task (with three-hop probes) in both CoT patterns."""
    return {
        cot: build_task(TwoHopTaskConfig(**TINY_TASK, cot=cot, khop=[3]))
        for cot in ("after_relations", "interleaved")
    }


@pytest.fixture(scope="module")
def partly_trained_gpt(twohop_tasks) -> GPT:
    """A GPT trained a little on both CoT patterns: right on some queries, wrong on others, so
    that both ways of scoring the teacher-forced tail are used."""
    length = max(data.max_seq_len for data in twohop_tasks.values())
    tokens = torch.cat(
        [
            F.pad(d.train_tokens, (0, length - d.max_seq_len), value=d.pad_id)
            for d in twohop_tasks.values()
        ]
    )
    mask = torch.cat(
        [F.pad(d.train_loss_mask, (0, length - d.max_seq_len)) for d in twohop_tasks.values()]
    )
    torch.manual_seed(0)
    vocab_size = twohop_tasks["interleaved"].vocab_size
    model = GPT(GPTConfig(vocab_size, length, n_layers=1, d_model=32, n_heads=2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2)
    for _ in range(40):
        losses = F.cross_entropy(
            model(tokens[:, :-1]).transpose(1, 2), tokens[:, 1:], reduction="none"
        )
        loss = losses[mask[:, 1:]].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("cot", ["after_relations", "interleaved"])
@pytest.mark.parametrize("batch_size", [7, 1024])
def test_score_probe_equals_the_recompute_reference(
    twohop_tasks, partly_trained_gpt, cot, batch_size
):
    data, cpu, model = twohop_tasks[cot], torch.device("cpu"), partly_trained_gpt
    for probe in data.probes.values():
        new = score_probe(model, probe, batch_size, cpu)
        reference = score_probe_recompute(model, probe, batch_size, cpu)
        assert_equal_but_for_near_ties(model, probe, new, reference)
    scores = evaluate(model, data.probes)
    reference = evaluate(model, data.probes, recompute=True)
    assert scores.keys() == reference.keys()
    for name, probe in data.probes.items():
        assert_equal_but_for_near_ties(
            model, probe, scores_of(scores, name), scores_of(reference, name)
        )
    # some queries right and some wrong at the bridge: both ways of scoring the tail are used
    assert 0 < scores["train_inferred.bridge"] < 1
    assert 0 < scores["test_inferred_3hop_iid.bridge1"] < 1


@torch.no_grad()
def test_score_probe_equals_the_reference_on_a_random_model(twohop_tasks):
    """At initialization almost every tail is recomputed from the true prefix. Logits are close
    together there: some choices are near ties, whose rows may score differently."""
    data = twohop_tasks["interleaved"]
    model = build_model(GPTModelConfig(n_layers=1, d_model=16, n_heads=2), data.vocab_size, 8)
    scores = evaluate(model, data.probes)
    reference = evaluate(model, data.probes, recompute=True)
    assert scores.keys() == reference.keys()
    model.eval()
    for name, probe in data.probes.items():
        assert_equal_but_for_near_ties(
            model, probe, scores_of(scores, name), scores_of(reference, name)
        )


def test_eval_benchmark_times_both_paths_on_a_trained_run(tmp_path):
    from reasonlab.bench.evaluation import eval_benchmark, format_eval_table
    from reasonlab.training.loop import train

    train(tiny_config("task.cot=interleaved"), tmp_path / "run")
    result = eval_benchmark(tmp_path / "run", repeats=1)
    # The benchmark compares two decoding paths exactly; rounding may flip a near-tied argmax,
    # which in this tiny run moves a metric by one query of its probe at most.
    for key, values in result["mismatches"].items():
        queries = result["probes"][key.split(".")[0]]["queries"]
        assert abs(values["recompute"] - values["incremental"]) <= 1 / queries + 1e-6, key
    assert result["queries"] == sum(probe["queries"] for probe in result["probes"].values())
    assert "test_inferred_ood.tail_given_true_bridge" in result["metrics"]
    for path in ("recompute", "incremental"):
        assert result[path]["median_s"] > 0 and result[path]["queries_per_s"] > 0
    equal = "yes" if result["metrics_equal"] else "NO"
    assert f"metrics equal: {equal}" in format_eval_table(result)
