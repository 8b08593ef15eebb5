"""Dynamic programs of Feng et al. 2023 (arXiv 2305.15408), answered with or without the DP's
trace as chain of thought.

Every example is one token sequence: INPUT ``<sep>`` TRACE ``<sep>`` ANSWER ``<eos>`` (mode cot)
or INPUT ``<sep>`` ANSWER ``<eos>`` (mode direct). The prompt is INPUT and the first ``<sep>``;
the rest is the completion that training predicts and evaluation generates. Numbers are single
decimal tokens ("17").

- lis: INPUT x_1 .. x_n; TRACE dp_1 .. dp_n (longest strictly increasing subsequence ending at
  x_i); ANSWER max dp.
- ed: INPUT a_1 .. a_n ``|`` b_1 .. b_m; TRACE the rows D[1] .. D[n] of the edit-distance table
  (D[i][0 .. m], row 0 left out), separated by ``,``; ANSWER D[n][m]. Insert and delete cost 2,
  substitute 3.
- arithmetic: INPUT an expression of n operators mod ``modulus``; TRACE step_1 ``=`` .. ``=``
  step_n, each step one reduction of the previous one, the last step the answer alone.
- local: INPUT x_1 .. x_n; TRACE dp_1 .. dp_n with dp_t = x_t + dp_{t-m} (mod ``modulus``,
  m = ``locality``, dp_k = 0 for k <= 0): an m-local DP with one addition a step; ANSWER dp_n.

Mode stream (lis, local) interleaves them: x_1 dp_1 x_2 dp_2 .. x_n dp_n ``<sep>`` ANSWER
``<eos>``, the prompt x_1. The inputs x_2 .. x_n are given (fed, neither generated nor trained
on), so each step's input sits next to it: an m-local DP then needs only the last m steps in the
sequence, where in mode cot step t reads x_t from n + 1 tokens back (a model with a fixed-size
state must carry the whole input across ``<sep>``).

Train and every probe are drawn without repeating an INPUT anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from reasonlab.config import ConfigError, DPTaskConfig
from reasonlab.tasks.base import Probe, TaskData, as_probe
from reasonlab.tasks.dp.problems import (
    BAR,
    COMMA,
    EOS,
    EQUALS,
    PAD,
    PROBLEMS,
    SEP,
    Problem,
)

MAX_ROUNDS = 200  # draws of fresh inputs before a too-small input space is reported

# ----------------------------------------------------------------------------- splits


def draw_distinct(
    problem: Problem,
    rng: np.random.Generator,
    size: int,
    count: int,
    seen: set[bytes],
    field: str,
) -> list[np.ndarray]:
    """``count`` inputs of this size that are not in ``seen`` nor repeated (added to seen)."""
    free = problem.space(size) - len(seen)
    if count > free:
        left = f", {max(free, 0)} of them not used by an earlier split" if seen else ""
        raise ConfigError(
            f"{field}: asks for {count} distinct {problem.cfg.problem} inputs of size {size} but "
            f"at most {problem.space(size)} exist{left}"
        )
    picked: list[np.ndarray] = []
    for _ in range(MAX_ROUNDS):
        need = count - len(picked)
        if need == 0:
            break
        for row in problem.draw(rng, need + need // 4 + 16, size):
            key = row.tobytes()
            if key not in seen:
                seen.add(key)
                picked.append(row)
                if len(picked) == count:
                    break
    if len(picked) < count:
        raise ConfigError(
            f"{field}: found only {len(picked)} of {count} distinct {problem.cfg.problem} inputs "
            f"of size {size} in {MAX_ROUNDS} draws; ask for fewer or widen the input space"
        )
    return picked


@dataclass
class Rows:
    """Sequences (N, L) right-padded, each row's prompt length and answer position, and the
    completion positions fed rather than predicted (mode stream's inputs)."""

    tokens: np.ndarray
    prompt_lens: np.ndarray
    answer_pos: np.ndarray
    given: np.ndarray | None = None

    def completion_mask(self, pad_id: int) -> np.ndarray:
        positions = np.arange(self.tokens.shape[1])
        mask = (positions >= self.prompt_lens[:, None]) & (self.tokens != pad_id)
        return mask if self.given is None else mask & ~self.given


def assemble(
    problem: Problem, inputs: list[np.ndarray], size: int, mode: str
) -> tuple[Rows, np.ndarray]:
    """INPUT <sep> [TRACE <sep>] ANSWER <eos> for every input (mode stream: x_1 dp_1 .. x_n
    dp_n <sep> ANSWER <eos>); also the answer ids."""
    vocab = problem.vocab
    traces, answers = problem.solve(inputs, size)
    if mode == "stream":
        return assemble_stream(inputs, traces, answers, vocab[SEP], vocab[EOS]), answers
    cot = mode == "cot"
    prompt_lens = np.array([len(row) + 1 for row in inputs], np.int64)
    trace_lens = np.array([len(t) + 1 for t in traces], np.int64) if cot else 0
    totals = prompt_lens + trace_lens + 2
    tokens = np.full((len(inputs), int(totals.max())), vocab[PAD], np.int64)
    sep = vocab[SEP]
    for r, (question, trace) in enumerate(zip(inputs, traces, strict=True)):
        start = len(question)
        tokens[r, :start] = question
        tokens[r, start] = sep
        if cot:
            tokens[r, start + 1 : start + 1 + len(trace)] = trace
            tokens[r, start + 1 + len(trace)] = sep
    rows = np.arange(len(inputs))
    tokens[rows, totals - 2] = answers
    tokens[rows, totals - 1] = vocab[EOS]
    return Rows(tokens, prompt_lens, totals - 2), answers


def assemble_stream(
    inputs: list[np.ndarray], traces: list[np.ndarray], answers: np.ndarray, sep: int, eos: int
) -> Rows:
    """x_1 dp_1 .. x_n dp_n <sep> answer <eos> (all rows of one size n); x_2 .. x_n given."""
    values, steps = np.stack(inputs), np.stack(traces)
    count, n = values.shape
    tokens = np.empty((count, 2 * n + 3), np.int64)
    tokens[:, 0 : 2 * n : 2] = values
    tokens[:, 1 : 2 * n : 2] = steps
    tokens[:, 2 * n] = sep
    tokens[:, 2 * n + 1] = answers
    tokens[:, 2 * n + 2] = eos
    given = np.zeros(tokens.shape, bool)
    given[:, 2 : 2 * n : 2] = True
    return Rows(tokens, np.ones(count, np.int64), np.full(count, 2 * n + 1), given)


def to_probe(rows: Rows, pad_id: int) -> Probe:
    tokens = torch.from_numpy(rows.tokens)
    given = np.zeros(rows.tokens.shape, bool) if rows.given is None else rows.given
    return as_probe(
        tokens,
        torch.from_numpy(rows.prompt_lens),
        torch.from_numpy(given),
        pad_id,
        {"answer": torch.from_numpy(rows.answer_pos)},
        teacher_forced=True,
    )


def notes_for(cfg: DPTaskConfig) -> list[str]:
    drawing = PROBLEMS[cfg.problem].__doc__ or ""
    notes = [
        f"dp {cfg.problem} ({cfg.mode}): {drawing}",
        "inputs are distinct across train and every probe",
    ]
    if cfg.problem == "ed":
        notes.append("ed: the trace holds rows 1..n of the table (row 0 is 0 2 4 .. left out)")
    if cfg.problem == "arithmetic":
        notes.append(
            "arithmetic: prompts differ in length (parentheses); shorter probe rows are given "
            "the rest of longer prompts"
        )
    return [" ".join(note.split()) for note in notes]


def build_dp(cfg: DPTaskConfig) -> TaskData:
    """Train rows at size ``length``, probe ``test`` (ID) and ``test_len{n}`` per test length."""
    sizes = sorted({cfg.length, *cfg.test_lengths})
    problem = PROBLEMS[cfg.problem](cfg, sizes)
    rng = np.random.default_rng(cfg.seed)
    seen: dict[int, set[bytes]] = {size: set() for size in sizes}
    train_inputs = draw_distinct(
        problem, rng, cfg.length, cfg.num_train, seen[cfg.length], "task.num_train"
    )
    requests = [("test", cfg.length)] + [(f"test_len{n}", n) for n in cfg.test_lengths]
    probe_inputs = {
        name: draw_distinct(problem, rng, size, cfg.num_test, seen[size], "task.num_test")
        for name, size in requests
    }
    train, train_answers = assemble(problem, train_inputs, cfg.length, cfg.mode)
    pad_id = problem.vocab[PAD]
    probes, stats = {}, statistics(train, train_answers, pad_id)
    for name, size in requests:
        rows, _ = assemble(problem, probe_inputs[name], size, cfg.mode)
        probes[name] = to_probe(rows, pad_id)
        stats[f"{name}_rows"] = len(rows.tokens)
        stats[f"{name}_max_len"] = int(rows.tokens.shape[1])
    stats["vocab_size"] = len(problem.vocab.tokens)
    return TaskData(
        vocab=problem.vocab.tokens,
        pad_id=pad_id,
        train_tokens=torch.from_numpy(train.tokens),
        train_loss_mask=torch.from_numpy(train.completion_mask(pad_id)),
        probes=probes,
        stats=stats,
        notes=notes_for(cfg),
    )


def statistics(train: Rows, answers: np.ndarray, pad_id: int) -> dict[str, int]:
    lengths = (train.tokens != pad_id).sum(axis=1)
    return {
        "train_rows": len(train.tokens),
        "train_min_len": int(lengths.min()),
        "train_max_len": int(lengths.max()),
        "train_max_prompt_len": int(train.prompt_lens.max()),
        "train_distinct_answers": len(np.unique(answers)),
    }


# ----------------------------------------------------------------------------- parsing


def parse_example(line_tokens: list[str], problem: str, mode: str) -> dict[str, Any]:
    """Splits one example (tokens as strings, padding dropped) into input, trace and answer.

    input: lis / local a list of ints, ed a pair of letter lists (a, b), arithmetic the tokens.
    trace: None in direct mode; lis / local a list of ints, ed a list of table rows (lists of
    ints), arithmetic a list of steps (token lists). answer: an int. Raises ValueError on a line
    that does not have the format."""
    tokens = [t for t in line_tokens if t != PAD]
    separators = 2 if mode == "cot" else 1
    if len(tokens) < 2 or tokens[-1] != EOS or tokens.count(SEP) != separators:
        raise ValueError(f"not a {mode} {problem} example: {' '.join(line_tokens)!r}")
    parts = _split(tokens[:-1], SEP)
    if len(parts[-1]) != 1:
        raise ValueError(f"the answer is not one token: {' '.join(line_tokens)!r}")
    answer = int(parts[-1][0])
    if mode == "stream":  # x_1 dp_1 x_2 dp_2 ..
        if len(parts[0]) % 2:
            raise ValueError(f"inputs and steps do not pair up: {' '.join(line_tokens)!r}")
        steps = [int(t) for t in parts[0]]
        return {"input": steps[0::2], "trace": steps[1::2], "answer": answer}
    trace = _parse_trace(parts[1], problem) if mode == "cot" else None
    return {"input": _parse_input(parts[0], problem), "trace": trace, "answer": answer}


def _split(tokens: list[str], separator: str) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for token in tokens:
        if token == separator:
            parts.append([])
        else:
            parts[-1].append(token)
    return parts


def _parse_input(
    tokens: list[str], problem: str
) -> list[int] | list[str] | tuple[list[str], list[str]]:
    if problem == "ed":
        a, b = _split(tokens, BAR)
        return a, b
    if problem == "arithmetic":
        return tokens
    return [int(t) for t in tokens]


def _parse_trace(tokens: list[str], problem: str) -> list[Any]:
    if problem == "ed":
        return [[int(t) for t in row] for row in _split(tokens, COMMA)]
    if problem == "arithmetic":
        return _split(tokens, EQUALS)
    return [int(t) for t in tokens]
