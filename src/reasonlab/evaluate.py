"""Greedy-decoding exact match on every probe, with per-stage accuracies for CoT probes.

For a probe with stages (e.g. bridge at position 3, tail at position 4) three more numbers are
reported: ``<probe>.bridge`` (the generated bridge is right), ``<probe>.tail`` (the generated tail
is right when the model continues from its own bridge) and ``<probe>.tail_given_true_bridge`` (the
tail is right when the true bridge is fed instead, i.e. teacher forcing).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn

from reasonlab.tasks.base import Probe


@torch.no_grad()
def greedy_complete(model: nn.Module, tokens: Tensor, prompt_len: int, given: Tensor) -> Tensor:
    """Feeds the prompt, then generates every completion position one by one (argmax), except
    positions marked ``given``, which are fed from ``tokens``. Returns the full (N, L) sequence."""
    sequence = tokens.clone()
    for position in range(prompt_len, tokens.shape[1]):
        predicted = model(sequence[:, :position])[:, -1].argmax(-1)
        sequence[:, position] = torch.where(given[:, position], tokens[:, position], predicted)
    return sequence


@torch.no_grad()
def teacher_forced(model: nn.Module, tokens: Tensor) -> Tensor:
    """(N, L) predictions where position p is predicted from the true tokens before p."""
    predictions = torch.empty_like(tokens)
    predictions[:, 0] = -1
    predictions[:, 1:] = model(tokens[:, :-1]).argmax(-1)
    return predictions


def score_probe(
    model: nn.Module, probe: Probe, batch_size: int, device: torch.device, autocast: bool = False
) -> dict[str, float]:
    correct = 0
    stage_correct = {name: 0 for name in probe.stages}
    tail_tf_correct = 0
    context = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else nullcontext()
    with context:
        for start in range(0, len(probe), batch_size):
            tokens = probe.tokens[start : start + batch_size].to(device)
            given = probe.given[start : start + batch_size].to(device)
            scored = probe.scored[start : start + batch_size].to(device)
            generated = greedy_complete(model, tokens, probe.prompt_len, given)
            matches = generated == tokens
            correct += int((matches | ~scored).all(dim=1).sum())
            for name, position in probe.stages.items():
                stage_correct[name] += int(matches[:, position].sum())
            if "tail" in probe.stages:
                tail = probe.stages["tail"]
                forced = teacher_forced(model, tokens[:, : tail + 1])
                tail_tf_correct += int((forced[:, tail] == tokens[:, tail]).sum())
    n = len(probe)
    scores = {"": correct / n}
    scores.update({f".{name}": count / n for name, count in stage_correct.items()})
    if "tail" in probe.stages:
        scores[".tail_given_true_bridge"] = tail_tf_correct / n
    return scores


def evaluate(
    model: nn.Module,
    probes: dict[str, Probe],
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    autocast: bool = False,
) -> dict[str, float]:
    """{probe: exact match, probe.stage: stage accuracy, ...} for every probe."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    results: dict[str, float] = {}
    try:
        for name, probe in probes.items():
            for suffix, value in score_probe(model, probe, batch_size, device, autocast).items():
                results[name + suffix] = round(value, 6)
    finally:
        model.train(was_training)
    return results
