"""Behaviour checks of the tasks that no other test pinned down (issue 21, items 15, 16, 20):
which COPY probes are out of distribution, the in-context error's normalizer as the error of
predicting zero (checked statistically on drawn prompts), and the loss mask lining up with the
shifted targets (on a hand-built batch, on COPY and two-hop, and through a model's loss in fp32
and under bf16 autocast)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_gpt, tiny_task
from reasonlab.config import CopyTaskConfig, ICLTaskConfig
from reasonlab.tasks import build_task
from reasonlab.tasks.base import Batch, TaskData
from reasonlab.tasks.copy import build_copy
from reasonlab.tasks.icl import ICLTask, normalizer, sample_prompts
from reasonlab.training.precision import autocast_context

# ----------------------------------------------------------------------------- COPY: OOD lengths


def ood_lengths_in_notes(notes: list[str]) -> list[int]:
    """The lengths the task's notes call OOD (the note lists them as a Python list)."""
    found = [re.search(r"\[([\d, ]*)\][^\[]*\(OOD\)", note) for note in notes]
    return [int(n) for m in found if m for n in m.group(1).split(",") if n.strip()]


@pytest.mark.parametrize("variant", ["copy", "selective"])
def test_a_probe_of_exactly_max_length_is_in_distribution(variant):
    """Training lengths are uniform in [min_length, max_length], so a probe of length exactly
    max_length holds trained lengths: only longer probes are OOD, in the notes and the stats."""
    noise = {"variant": "selective", "noise_tokens": 3} if variant == "selective" else {}
    cfg = CopyTaskConfig(
        vocab_size=6,
        min_length=2,
        max_length=6,
        test_lengths=[3, 6, 7, 9],
        num_train=400,
        num_test=20,
        **noise,
    )
    data = build_copy(cfg)
    assert data.stats["train_max_length"] == cfg.max_length  # that length is trained on
    assert ood_lengths_in_notes(data.notes) == [7, 9]
    assert data.stats["ood_probes"] == 2


def test_no_ood_note_when_every_probe_length_is_trained():
    cfg = CopyTaskConfig(
        vocab_size=6, min_length=2, max_length=6, test_lengths=[2, 6], num_train=200, num_test=20
    )
    data = build_copy(cfg)
    assert ood_lengths_in_notes(data.notes) == []
    assert not any("OOD" in note for note in data.notes)
    assert data.stats["ood_probes"] == 0


# ----------------------------------------------------------------------------- ICL: normalizer

# Each class with settings where its E[f(x)^2] differs from the other classes' formulas: the
# sparse class has sparsity well below dim (dim / sparsity = 4), the noisy class a large noise.
CLASSES = {
    "linear": {},
    "sparse_linear": {"sparsity": 2},
    "noisy_linear": {"noise_std": 2.0},
    "relu2nn": {"hidden": 50},
    "decision_tree": {"depth": 3},
}


def zero_prediction_error(cfg: ICLTaskConfig, dim: int, prompts: int = 4000, points: int = 8):
    """(mean of f(x)^2 over drawn prompts, its standard error), prompts being independent."""
    _, ys = sample_prompts(cfg, prompts, dim, points, torch.Generator().manual_seed(dim))
    per_prompt = ys.double().pow(2).mean(1)
    return float(per_prompt.mean()), float(per_prompt.std() / prompts**0.5)


@pytest.mark.parametrize("function_class", sorted(CLASSES))
def test_the_normalized_error_of_predicting_zero_is_one(function_class):
    """The normalizer is E[f(x)^2]: predicting 0 must score ~1 after division, within five
    standard errors of the sample mean (and 15% at most), at full and curriculum dimensions."""
    cfg = ICLTaskConfig(function_class=function_class, dim=8, n_points=8, **CLASSES[function_class])
    for dim in (1, 2, 5, 8):  # below, at and above the sparsity of the sparse class
        mean, error = zero_prediction_error(cfg, dim)
        expected = normalizer(cfg, dim)
        tolerance = min(5 * error, 0.15 * expected)
        assert abs(mean - expected) <= tolerance, (function_class, dim, mean, expected)


def test_sparse_linear_normalizer_counts_the_nonzero_weights_not_the_dimension():
    """By hand: w has ``sparsity`` N(0, 1) entries and x ~ N(0, I), so E[(w.x)^2] = sparsity;
    at a curriculum dimension below the sparsity only ``dim`` weights can be nonzero."""
    cfg = ICLTaskConfig(function_class="sparse_linear", dim=12, sparsity=3)
    assert normalizer(cfg, 12) == 3.0
    assert normalizer(cfg, 2) == 2.0
    task = ICLTask(ICLTaskConfig(function_class="sparse_linear", dim=12, sparsity=3, num_test=2000))
    probe = task.probes["test"]
    assert probe.normalizer == 3.0 and task.stats["normalizer"] == 3.0
    # the test probe's own targets: predicting 0 scores ~1
    assert abs(float(probe.targets.double().pow(2).mean()) / probe.normalizer - 1.0) < 0.1


# ----------------------------------------------------------------------------- loss mask


def hand_built_task() -> TaskData:
    """Two rows ``question <sep> answer <eos>``; the loss mask marks the answer and <eos>."""
    vocab = ["<pad>", "<sep>", "<eos>", "a", "b", "c", "d"]
    pad, sep, eos, a, b, c, d = range(7)
    tokens = torch.tensor([[a, b, sep, c, d, eos, pad], [b, sep, a, eos, pad, pad, pad]])
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[0, 3:6] = True  # c d <eos>
    mask[1, 2:4] = True  # a <eos>
    return TaskData(vocab=vocab, pad_id=pad, train_tokens=tokens, train_loss_mask=mask, probes={})


def source_rows(data: TaskData, batch: Batch) -> list[int]:
    """For each batch row, the index of the training row it was cut from (inputs + last target
    rebuild the whole row)."""
    rows = []
    for inputs, targets in zip(batch.inputs, batch.targets, strict=True):
        whole = torch.cat([inputs[:1], targets])
        assert torch.equal(torch.cat([inputs, targets[-1:]]), whole)  # targets = inputs shifted
        (matches,) = (data.train_tokens == whole).all(1).nonzero(as_tuple=True)
        rows.append(int(matches[0]))
    return rows


def check_mask_selects_the_marked_targets(data: TaskData, batch: Batch) -> None:
    """The batch mask at output position t is the loss mask of token t + 1, the token that
    position predicts: so the targets it selects are exactly the tokens the loss mask marks."""
    for i, row in enumerate(source_rows(data, batch)):
        tokens, marked = data.train_tokens[row], data.train_loss_mask[row]
        assert torch.equal(batch.mask[i], marked[1:])
        assert torch.equal(batch.targets[i][batch.mask[i]], tokens[marked])


def test_hand_built_mask_selects_exactly_the_answer_tokens():
    data = hand_built_task()
    batch = data.batch(0, 2, seed=0)
    c, d, eos, a, sep = 5, 6, 2, 3, 1
    selected = sorted(batch.targets[batch.mask].tolist())
    assert selected == sorted([c, d, eos, a, eos])  # never <pad>, never a question token
    # the positions that predict them read <sep> and the answer so far
    assert sorted(batch.inputs[batch.mask].tolist()) == sorted([sep, c, d, sep, a])
    check_mask_selects_the_marked_targets(data, batch)


def test_copy_batches_train_on_the_copy_and_eos_only():
    cfg = CopyTaskConfig(
        vocab_size=5, min_length=2, max_length=5, test_lengths=[3], num_train=64, num_test=8
    )
    data = build_copy(cfg)
    batch = data.batch(3, 16, seed=1)
    check_mask_selects_the_marked_targets(data, batch)
    eos = data.vocab.index("<eos>")
    for inputs, targets, mask in zip(batch.inputs, batch.targets, batch.mask, strict=True):
        answer = targets[mask]
        assert answer[-1] == eos and int((answer == eos).sum()) == 1
        # the copy: the symbols before <sep>, in order
        sep = int((inputs == data.vocab.index("<sep>")).nonzero()[0])
        assert torch.equal(answer[:-1], inputs[:sep])


def test_two_hop_batches_select_the_marked_targets():
    data = build_task(tiny_task())
    check_mask_selects_the_marked_targets(data, data.batch(0, 32, seed=0))


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_the_loss_is_the_cross_entropy_of_the_answer_tokens(bf16):
    """The task's loss of a model's logits equals the mean cross-entropy, computed here from
    the positions, of each answer token predicted from the position before it."""
    data = hand_built_task()
    batch = data.batch(0, 2, seed=0)
    model = tiny_gpt(data.vocab_size, 8, n_layers=1, weight_std=0.5)
    with torch.no_grad(), autocast_context(torch.device("cpu"), bf16):
        logits = model(batch.inputs).float()
        loss = float(data.loss(logits, batch))
    picked, wanted, late, later = [], [], [], []
    for i, row in enumerate(source_rows(data, batch)):
        tokens, marked = data.train_tokens[row], data.train_loss_mask[row]
        for position in marked.nonzero()[:, 0].tolist():  # token `position` is read at position-1
            picked.append(logits[i, position - 1])
            wanted.append(int(tokens[position]))
            late.append(logits[i, position])  # a mask one step late: the next token's logits
            later.append(int(tokens[position + 1]))
    expected = float(F.cross_entropy(torch.stack(picked), torch.tensor(wanted)))
    one_late = float(F.cross_entropy(torch.stack(late), torch.tensor(later)))
    assert abs(one_late - expected) > 0.05  # the check can tell a shifted mask apart
    assert loss == pytest.approx(expected, rel=1e-4, abs=1e-5)
