"""Greedy-decoding exact match on every probe, with per-stage accuracies for CoT probes.

For a probe with stages (e.g. bridge at position 3, tail at position 4) three more numbers are
reported: ``<probe>.bridge`` (the generated bridge is right), ``<probe>.tail`` (the generated tail
is right when the model continues from its own bridge) and ``<probe>.tail_given_true_bridge`` (the
tail is right when the true bridge is fed instead, i.e. teacher forcing). Stage positions may
differ by row (an (N,) tensor: the answer of a dynamic program sits after a trace of varying
length), and so may prompts (the rest of a longer prompt is given). A probe marked
``teacher_forced`` adds ``<probe>.token_accuracy_teacher_forced`` (scored tokens predicted
right from the true tokens before them) and, with an ``answer`` stage,
``<probe>.answer_given_true_trace``.

Decoding is incremental for a model that offers ``new_state`` (``models/base.py``): the prompt is
fed once, then one position at a time (runs of positions given in every row together), so each
position is run once instead of once per later position. The teacher-forced tail is the greedy
pass's own prediction wherever greedy decoding fed the true tokens before the tail; only the
other rows are run on the true prefix. On the CPU, a state that can branch (``select(rows)``, the
GPT's KV cache) also saves positions: prompts sorted together feed their shared first tokens
once, a row that leaves the true sequence branches there for its teacher-forced tail instead of
being run from the start, and a row whose exact match is lost is no longer fed once no stage
position is ahead. A model without ``new_state`` (any plain ``nn.Module``) is decoded by
recomputing the whole prefix for every position.

Every path gives the tokens and scores of the original algorithm, which
``greedy_complete_recompute`` and ``score_probe_recompute`` keep as the reference for tests
and ``reasonlab.bench.evaluation``, as far as float rounding allows: logits computed in other
pieces differ in the last bits, which changes an argmax only between (nearly) tied logits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from reasonlab.models.base import DecodingState
from reasonlab.tasks.base import Probe, RegressionProbe
from reasonlab.training.precision import autocast_context


@torch.no_grad()
def greedy_complete_recompute(
    model: nn.Module, tokens: Tensor, prompt_len: int, given: Tensor
) -> Tensor:
    """Feeds the prompt, then generates every completion position one by one (argmax), except
    positions marked ``given``, which are fed from ``tokens``. Returns the full (N, L) sequence.
    Reruns the whole prefix for every position: the reference the incremental path must match."""
    sequence = tokens.clone()
    for position in range(prompt_len, tokens.shape[1]):
        predicted = model(sequence[:, :position])[:, -1].argmax(-1)
        sequence[:, position] = torch.where(given[:, position], tokens[:, position], predicted)
    return sequence


@torch.no_grad()
def greedy_complete(model: nn.Module, tokens: Tensor, prompt_len: int, given: Tensor) -> Tensor:
    """What ``greedy_complete_recompute`` returns, decoded incrementally when the model can."""
    return _decode(model, tokens, prompt_len, given)[0]


@torch.no_grad()
def teacher_forced(model: nn.Module, tokens: Tensor) -> Tensor:
    """(N, L) predictions where position p is predicted from the true tokens before p."""
    predictions = torch.empty_like(tokens)
    predictions[:, 0] = -1
    predictions[:, 1:] = model(tokens[:, :-1]).argmax(-1)
    return predictions


def _branch(state: DecodingState, rows: Tensor) -> DecodingState:
    """A new state with a copy of ``rows`` of ``state`` (repeats allowed), for states that offer
    ``select(rows)`` (the GPT's KV cache; see ``_decode``)."""
    return state.select(rows)  # type: ignore[attr-defined]


def _new_state(model: nn.Module, batch_size: int) -> DecodingState | None:
    """The model's decoding state, or None when it has none (then it is decoded by recomputing)."""
    new_state: Callable[[int], DecodingState] | None = getattr(model, "new_state", None)
    if new_state is None:
        return None
    try:
        return new_state(batch_size)
    except NotImplementedError:  # a LanguageModel family without incremental decoding
        return None


class Decoded(NamedTuple):
    sequence: Tensor  # (N, L) the prompt, the generated tokens and the given ones
    predicted: Tensor  # (N, L) argmax at every completion position, given ones too; -1 before
    forced_tail: Tensor | None  # (N,) the prediction at ``tail`` from the true tokens before it


def _decode(
    model: nn.Module,
    tokens: Tensor,
    prompt_len: int,
    given: Tensor,
    tail: int | None = None,
    scored: Tensor | None = None,
    last_stage: int = -1,
) -> Decoded:
    """Greedy completion as in ``greedy_complete_recompute``, and the predictions made on the way
    (a teacher-forced score can reuse them). Where the decoding state can branch (``select(rows)``:
    a new state with a copy of some rows) and the tensors are on the CPU, also:

    - with ``tail``, the teacher-forced prediction at ``tail``: a row whose generated token first
      leaves the true sequence before the tail branches off there and is fed the true tokens up
      to the tail, so that its true prefix is not run again;
    - with ``scored`` (for scoring only), rows whose exact match is lost (a scored token wrong)
      are dropped once no stage position (``last_stage``) is ahead: their later positions, which
      change no score, are not generated (-1 in ``sequence`` and ``predicted``)."""
    state = _new_state(model, tokens.shape[0])
    if state is None:
        return _decode_recompute(model, tokens, prompt_len, given)
    n, length = tokens.shape
    sequence = tokens.clone()
    predicted = torch.full_like(tokens, -1)
    # Sharing prompts and branching trade more, smaller calls for fewer positions run: worth it
    # where compute bounds the time (the CPU); on an accelerator, where a small model's time goes
    # to launching kernels, one call per position is kept.
    branching = tokens.device.type == "cpu" and callable(getattr(state, "select", None))
    forced_tail = torch.full_like(tokens[:, 0], -1) if branching and tail is not None else None
    left_true = torch.zeros_like(given[:, 0])  # rows whose fed sequence left the true one
    lost = torch.zeros_like(given[:, 0])  # rows with a wrong scored token
    generated_until = torch.full_like(tokens[:, 0], length)  # positions from here: not generated
    active = torch.arange(n, device=tokens.device)  # the rows the state holds, in its order
    # Columns fed from the true tokens in every row need no decision between steps: they are fed
    # in one piece together with the token generated before them.
    given_everywhere = given.all(0).tolist()
    if branching:
        state, logits = _prefill_shared(model, sequence[:, :prompt_len])
    else:
        logits = model(sequence[:, :prompt_len], state=state)[:, -1:]
    position = prompt_len  # the last position ``logits`` predicts
    while True:
        # logits: (active rows, k, vocab) predicting positions position - k + 1 .. position
        predicted[active, position + 1 - logits.shape[1] : position + 1] = logits.argmax(-1)
        truth = tokens[active, position]
        fed = torch.where(given[active, position], truth, predicted[active, position])
        sequence[active, position] = fed
        if forced_tail is not None and tail is not None and position < tail:
            # the state holds the true positions before this one for rows still on the truth
            local = ((fed != truth) & ~left_true[active]).nonzero().squeeze(1)
            if len(local):
                rows = active[local]
                forced = model(tokens[rows, position:tail], state=_branch(state, local))
                forced_tail[rows] = forced[:, -1].argmax(-1)
                left_true[rows] = True
        if position + 1 == length:
            break
        if branching and scored is not None:
            lost[active] |= scored[active, position] & (fed != truth)
            keep = (~lost[active]).nonzero().squeeze(1) if position >= last_stage else active
            if 8 * len(keep) <= 7 * len(active):  # enough rows to drop to be worth a copy
                generated_until[active[lost[active]]] = position + 1
                if not len(keep):
                    break
                state, active = _branch(state, keep), active[keep]
        end = position + 1
        while end < length - 1 and given_everywhere[end]:
            end += 1
        logits = model(sequence[active, position:end], state=state)
        position = end
    not_generated = torch.arange(length, device=tokens.device) >= generated_until[:, None]
    sequence[not_generated], predicted[not_generated] = -1, -1
    if forced_tail is not None and tail is not None:
        forced_tail = torch.where(left_true, forced_tail, predicted[:, tail])
    return Decoded(sequence, predicted, forced_tail)


def _prefill_shared(model: nn.Module, prompts: Tensor) -> tuple[DecodingState, Tensor]:
    """Feeds (N, P) prompts to a new decoding state that can branch (``select(rows)``), each
    distinct prefix once: prompts share their first tokens (the same head entity, the same
    first relation), so position d is run for the distinct prefixes of length d + 1 only, the
    state branching as they part. Returns the state of the N rows and their (N, 1, vocab)
    logits at the last prompt position."""
    n, prompt_len = prompts.shape
    vocab = int(prompts.max()) + 1
    state: DecodingState | None = None
    rows = torch.zeros_like(prompts[:, 0])  # each row's prefix so far, as an index into the state
    for depth in range(prompt_len):
        # a prefix is (the prefix one shorter, this token): one integer, which sorts fast
        keys, inverse = torch.unique(rows * vocab + prompts[:, depth], return_inverse=True)
        if len(keys) == n:  # all distinct from here on: the rest in one piece, row by row
            state = model.new_state(n) if state is None else _branch(state, rows)
            return state, model(prompts[:, depth:], state=state)[:, -1:]
        parent, token = keys // vocab, keys % vocab
        state = model.new_state(len(keys)) if state is None else _branch(state, parent)
        logits = model(token[:, None], state=state)
        rows = inverse
    assert state is not None  # prompt_len >= 1
    return _branch(state, rows), logits[rows]


def _decode_recompute(model: nn.Module, tokens: Tensor, prompt_len: int, given: Tensor) -> Decoded:
    """``greedy_complete_recompute`` that also returns its predictions (see ``_decode``)."""
    sequence = tokens.clone()
    predicted = torch.full_like(tokens, -1)
    for position in range(prompt_len, tokens.shape[1]):
        predicted[:, position] = model(sequence[:, :position])[:, -1].argmax(-1)
        sequence[:, position] = torch.where(
            given[:, position], tokens[:, position], predicted[:, position]
        )
    return Decoded(sequence, predicted, None)


def _can_branch(model: nn.Module) -> bool:
    """Whether the model's decoding state offers ``select`` (see ``_decode``)."""
    state = _new_state(model, 1)
    return state is not None and callable(getattr(state, "select", None))


def _prompt_order(prompts: Tensor) -> Tensor:
    """The row order that sorts (N, P) prompts lexicographically."""
    order = torch.arange(len(prompts))
    for column in reversed(range(prompts.shape[1])):  # stable sorts, last key first
        order = order[torch.sort(prompts[order, column], stable=True).indices]
    return order


def _stage_rows(position: int | Tensor, rows: slice | Tensor, device: torch.device) -> Tensor:
    """Each row's position of a stage (one int for all rows, or an (N,) tensor) as (n, 1)."""
    if isinstance(position, Tensor):
        return position[rows].to(device)[:, None]
    return torch.full((1, 1), position, device=device)


def _at_stage(matches: Tensor, position: Tensor) -> Tensor:
    """matches (n, L) at each row's stage position (n, 1) or (1, 1): (n,)."""
    return matches.gather(1, position.expand(matches.shape[0], 1))[:, 0]


def _last_stage(stages: dict[str, int | Tensor]) -> int:
    return max((int(p.max()) if isinstance(p, Tensor) else p for p in stages.values()), default=-1)


def _forced_counts(
    model: nn.Module, tokens: Tensor, scored: Tensor, answer: Tensor | None
) -> Tensor:
    """Teacher forcing (every position predicted from the true tokens before it): rows whose
    answer is right (0 without an answer stage), scored tokens right, and scored tokens."""
    right = teacher_forced(model, tokens) == tokens
    answers = (
        _at_stage(right, answer).sum()
        if answer is not None
        else right.new_zeros((), dtype=torch.long)
    )
    return torch.stack([answers, (right & scored).sum(), scored.sum()])


def _forced_scores(probe: Probe, counts: list[int]) -> dict[str, float]:
    """The teacher-forced scores of a probe with ``teacher_forced`` (see ``score_probe``)."""
    scores = {".token_accuracy_teacher_forced": counts[1] / max(counts[2], 1)}
    if "answer" in probe.stages:
        scores[".answer_given_true_trace"] = counts[0] / len(probe)
    return scores


def score_probe(
    model: nn.Module, probe: Probe, batch_size: int, device: torch.device, autocast: bool = False
) -> dict[str, float]:
    """Exact match, stage accuracies, the teacher-forced tail and, for a probe marked
    ``teacher_forced``, the teacher-forced answer and token accuracies of one probe (module
    docstring); the same numbers as ``score_probe_recompute``."""
    n = len(probe)
    stages = list(probe.stages.items())
    all_tokens, all_given, all_scored = probe.tokens, probe.given, probe.scored
    order: Tensor | None = None
    if n > batch_size and device.type == "cpu" and _can_branch(model):
        # batches of prompts sorted together share more first tokens, fed once (_prefill_shared);
        # the scores are counts, which the order does not change
        order = _prompt_order(all_tokens[:, : probe.prompt_len])
        all_tokens, all_given, all_scored = all_tokens[order], all_given[order], all_scored[order]
    if order is not None:
        stages = [(k, p[order] if isinstance(p, Tensor) else p) for k, p in stages]
    tail = probe.stages.get("tail")
    tail = tail if isinstance(tail, int) else None  # per-row tails: no teacher-forced tail
    last_stage = _last_stage(probe.stages)
    # Counts stay on the device until the end: one synchronization per probe, not per batch.
    counts = torch.zeros(2 + len(stages), dtype=torch.long, device=device)
    forced_counts = torch.zeros(3, dtype=torch.long, device=device)
    answer = dict(stages).get("answer")
    with torch.inference_mode(), autocast_context(device, autocast):
        for start in range(0, n, batch_size):
            rows = slice(start, start + batch_size)
            tokens = all_tokens[rows].to(device)
            given = all_given[rows].to(device)
            scored = all_scored[rows].to(device)
            generated, predicted, forced_tail = _decode(
                model, tokens, probe.prompt_len, given, tail, scored, last_stage
            )
            matches = generated == tokens
            counts[0] += (matches | ~scored).all(dim=1).sum()
            for i, (_, position) in enumerate(stages):
                counts[2 + i] += _at_stage(matches, _stage_rows(position, rows, device)).sum()
            if forced_tail is not None:
                counts[1] += (forced_tail == tokens[:, tail]).sum()
            elif tail is not None:
                counts[1] += _tail_given_true_prefix(model, tokens, generated, predicted, tail)
            if probe.teacher_forced:
                answer_rows = None if answer is None else _stage_rows(answer, rows, device)
                forced_counts += _forced_counts(model, tokens, scored, answer_rows)
    values = counts.tolist()
    scores = {"": values[0] / n}
    scores.update({f".{name}": values[2 + i] / n for i, (name, _) in enumerate(stages)})
    if tail is not None:
        scores[".tail_given_true_bridge"] = values[1] / n
    if probe.teacher_forced:
        scores.update(_forced_scores(probe, forced_counts.tolist()))
    return scores


def _tail_given_true_prefix(
    model: nn.Module, tokens: Tensor, generated: Tensor, predicted: Tensor, tail: int
) -> Tensor:
    """How many rows predict the true tail from the true tokens before it (teacher forcing).
    Where greedy decoding fed exactly the true prefix, its own prediction at the tail is that
    prediction already (the teacher-forced pass of ``score_probe_recompute`` feeds the same
    tokens); only the other rows are run again."""
    forced = predicted[:, tail].clone()
    rerun = (generated[:, :tail] != tokens[:, :tail]).any(dim=1).nonzero().squeeze(1)
    if rerun.numel():
        forced[rerun] = model(tokens[rerun, :tail])[:, -1].argmax(-1)
    return (forced == tokens[:, tail]).sum()


@torch.no_grad()
def score_probe_recompute(
    model: nn.Module, probe: Probe, batch_size: int, device: torch.device, autocast: bool = False
) -> dict[str, float]:
    """The original scoring: greedy decoding by recomputation, then a teacher-forced pass over
    every row for the tail (and the teacher-forced scores). The reference ``score_probe`` must
    match."""
    correct = tail_tf_correct = 0
    forced_counts = torch.zeros(3, dtype=torch.long)
    answer = probe.stages.get("answer")
    stage_correct = {name: 0 for name in probe.stages}
    tail = probe.stages.get("tail")
    tail = tail if isinstance(tail, int) else None
    with autocast_context(device, autocast):
        for start in range(0, len(probe), batch_size):
            rows = slice(start, start + batch_size)
            tokens = probe.tokens[rows].to(device)
            given = probe.given[rows].to(device)
            scored = probe.scored[rows].to(device)
            generated = greedy_complete_recompute(model, tokens, probe.prompt_len, given)
            matches = generated == tokens
            correct += int((matches | ~scored).all(dim=1).sum())
            for name, position in probe.stages.items():
                at_stage = _at_stage(matches, _stage_rows(position, rows, device))
                stage_correct[name] += int(at_stage.sum())
            if tail is not None:
                forced = teacher_forced(model, tokens[:, : tail + 1])
                tail_tf_correct += int((forced[:, tail] == tokens[:, tail]).sum())
            if probe.teacher_forced:
                answer_rows = None if answer is None else _stage_rows(answer, rows, device)
                forced_counts += _forced_counts(model, tokens, scored, answer_rows).cpu()
    n = len(probe)
    scores = {"": correct / n}
    scores.update({f".{name}": count / n for name, count in stage_correct.items()})
    if tail is not None:
        scores[".tail_given_true_bridge"] = tail_tf_correct / n
    if probe.teacher_forced:
        scores.update(_forced_scores(probe, forced_counts.tolist()))
    return scores


@torch.no_grad()
def regression_errors(
    model: nn.Module,
    probe: RegressionProbe,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    autocast: bool = False,
) -> Tensor:
    """(k,) mean squared error over the probe's prompts at each query position (the target
    after 0, 1, ..., k - 1 in-context examples), divided by the probe's normalizer."""
    device = torch.device(device)
    total = torch.zeros(probe.targets.shape[1], dtype=torch.float64)
    for start in range(0, len(probe), batch_size):
        inputs = probe.inputs[start : start + batch_size].to(device)
        targets = probe.targets[start : start + batch_size].to(device)
        with autocast_context(device, autocast):
            outputs = model(inputs)[:, probe.positions.to(device)]
        squared = (outputs.float() - targets.float()).pow(2).sum(-1)  # (batch, k)
        total += squared.double().sum(0).cpu()
    return total / len(probe) / probe.normalizer


def score_regression(
    model: nn.Module,
    probe: RegressionProbe,
    batch_size: int,
    device: torch.device,
    autocast: bool,
) -> dict[str, float]:
    """'' -> the error averaged over every query position, '.k<n>' -> the error after n
    in-context examples, for each n in the probe's ``report_at``."""
    errors = regression_errors(model, probe, batch_size, device, autocast)
    scores = {"": float(errors.mean())}
    for n in probe.report_at:
        if n < len(errors):
            scores[f".k{n}"] = float(errors[n])
    return scores


def evaluate(
    model: nn.Module,
    probes: dict[str, Probe] | dict[str, RegressionProbe],
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    autocast: bool = False,
    recompute: bool = False,
) -> dict[str, float]:
    """{probe: exact match, probe.stage: stage accuracy, ...} for every token probe, {probe:
    mean error, probe.k<n>: error after n examples} for every regression probe; ``recompute``
    scores token probes with the original full-recomputation algorithm (the reference)."""
    score_tokens = score_probe_recompute if recompute else score_probe
    was_training = model.training
    model.eval()
    device = torch.device(device)
    results: dict[str, float] = {}
    try:
        for name, probe in probes.items():
            score = score_regression if isinstance(probe, RegressionProbe) else score_tokens
            for suffix, value in score(model, probe, batch_size, device, autocast).items():  # type: ignore[arg-type]
                results[name + suffix] = round(value, 6)
    finally:
        model.train(was_training)
    return results
