"""Incremental decoding: the GPT's KV cache gives the logits of the whole sequence when fed in
pieces (learned and rotary positions, single tokens, hooks watching), and greedy evaluation by
incremental decoding gives the tokens and metrics of full recomputation."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.nn import functional as F

from conftest import TINY_TASK, tiny_config
from reasonlab.config import GPTModelConfig, MambaModelConfig, TwoHopTaskConfig
from reasonlab.models.base import LanguageModel
from reasonlab.models.build import build_model
from reasonlab.models.gpt import GPT, GPTConfig
from reasonlab.tasks import build_task
from reasonlab.tasks.base import TaskData
from reasonlab.training.evaluation import (
    evaluate,
    greedy_complete,
    greedy_complete_recompute,
    score_probe,
    score_probe_recompute,
)

VOCAB, MAX_LEN, BATCH = 23, 12, 3


def random_gpt(positions: str = "learned", seed: int = 0) -> GPT:
    """A tiny GPT with every parameter randomized (biases and norms too): logits far from ties."""
    torch.manual_seed(seed)
    cfg = GPTConfig(VOCAB, MAX_LEN, n_layers=2, d_model=16, n_heads=2, positions=positions)
    model = GPT(cfg).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    return model


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
    model, tokens = random_gpt(positions), random_tokens()
    torch.testing.assert_close(fed_in_pieces(model, tokens, pieces), model(tokens))


@pytest.mark.parametrize("positions", ["learned", "rotary"])
@torch.no_grad()
def test_hooks_see_the_new_positions_and_every_key(positions):
    """With the pattern watched (manual attention), each piece's hooks see its own positions;
    the pattern's rows are those of the whole sequence's, over the cached and new keys."""
    model, tokens = random_gpt(positions), random_tokens()
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
    model, tokens = random_gpt("rotary"), random_tokens()
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
    return random_gpt("learned")


def build_gpt_rotary() -> LanguageModel:
    return random_gpt("rotary", seed=1)


def build_mamba() -> LanguageModel:
    pytest.importorskip("reasonlab.models.mamba")
    torch.manual_seed(0)
    return build_model(MambaModelConfig(n_layers=2, d_model=16), VOCAB, MAX_LEN).eval()


# One line per model family with incremental decoding.
BUILDERS = [build_gpt_learned, build_gpt_rotary, build_mamba]


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
    assert torch.equal(greedy_complete(model, tokens, 3, given), expected)
    assert torch.equal(expected[:, 5], tokens[:, 5]) and torch.equal(expected[:, :3], tokens[:, :3])
    assert (expected[:, 3:] != tokens[:, 3:]).any()  # the model's own tokens, not the true ones
    nothing_given = torch.zeros_like(given)
    expected = greedy_complete_recompute(model, tokens, 1, nothing_given)
    assert torch.equal(greedy_complete(model, tokens, 1, nothing_given), expected)


@pytest.mark.parametrize("positions", ["learned", "rotary"])
@torch.no_grad()
def test_a_branch_continues_the_rows_it_copied(positions):
    """``select`` copies rows (repeats allowed) into a new state: fed on, it gives the logits of
    those rows fed whole, and the state it came from goes on unchanged."""
    model, tokens = random_gpt(positions), random_tokens()
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
    data, cpu = twohop_tasks[cot], torch.device("cpu")
    for name, probe in data.probes.items():
        new = score_probe(partly_trained_gpt, probe, batch_size, cpu)
        assert new == score_probe_recompute(partly_trained_gpt, probe, batch_size, cpu), name
    scores = evaluate(partly_trained_gpt, data.probes)
    assert scores == evaluate(partly_trained_gpt, data.probes, recompute=True)
    # some queries right and some wrong at the bridge: both ways of scoring the tail are used
    assert 0 < scores["train_inferred.bridge"] < 1
    assert 0 < scores["test_inferred_3hop_iid.bridge1"] < 1


@torch.no_grad()
def test_score_probe_equals_the_reference_on_a_random_model(twohop_tasks):
    """At initialization almost every tail is recomputed from the true prefix."""
    data = twohop_tasks["interleaved"]
    model = build_model(GPTModelConfig(n_layers=1, d_model=16, n_heads=2), data.vocab_size, 8)
    assert evaluate(model, data.probes) == evaluate(model, data.probes, recompute=True)


def test_eval_benchmark_times_both_paths_on_a_trained_run(tmp_path):
    from reasonlab.bench.evaluation import eval_benchmark, format_eval_table
    from reasonlab.training.loop import train

    train(tiny_config("task.cot=interleaved"), tmp_path / "run")
    result = eval_benchmark(tmp_path / "run", repeats=1)
    assert result["metrics_equal"] and result["mismatches"] == {}
    assert result["queries"] == sum(probe["queries"] for probe in result["probes"].values())
    assert "test_inferred_ood.tail_given_true_bridge" in result["metrics"]
    for path in ("recompute", "incremental"):
        assert result[path]["median_s"] > 0 and result[path]["queries_per_s"] > 0
    assert "metrics equal: yes" in format_eval_table(result)
