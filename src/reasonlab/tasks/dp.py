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
- local: INPUT x_1 .. x_n; TRACE dp_1 .. dp_n with dp_t = x_t + dp_{t-1} + .. + dp_{t-m}
  (mod ``modulus``, m = ``locality``, dp_k = 0 for k <= 0); ANSWER dp_n.

Train and every probe are drawn without repeating an INPUT anywhere.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from reasonlab.config import ConfigError, DPTaskConfig
from reasonlab.tasks.base import Probe, TaskData, as_probe

PAD, SEP, EOS = "<pad>", "<sep>", "<eos>"
SPECIALS = (PAD, SEP, EOS)
BAR, COMMA, EQUALS = "|", ",", "="
OPERATORS = ("+", "-", "*", "/")
OPEN, CLOSE = "(", ")"
INSERT_COST, DELETE_COST, SUBSTITUTE_COST = 2, 2, 3
MAX_ROUNDS = 200  # draws of fresh inputs before a too-small input space is reported


class Vocab:
    """``<pad> <sep> <eos>``, the problem's symbols, then the numbers "0" .. "largest"."""

    def __init__(self, symbols: Sequence[str], largest: int):
        self.tokens = [*SPECIALS, *symbols, *map(str, range(largest + 1))]
        self.ids = {token: i for i, token in enumerate(self.tokens)}
        self.zero = len(SPECIALS) + len(symbols)  # the id of "0"

    def __getitem__(self, token: str) -> int:
        return self.ids[token]

    def numbers(self, values: np.ndarray) -> np.ndarray:
        return self.zero + np.asarray(values, np.int64)


# ----------------------------------------------------------------------------- problems


class Problem:
    """One DP family: its symbols, how inputs are drawn, and its solver (trace and answer)."""

    def __init__(self, cfg: DPTaskConfig, sizes: Sequence[int]):
        self.cfg = cfg
        self.vocab = Vocab(self.symbols(), max(self.largest_number(n) for n in sizes))

    def symbols(self) -> list[str]:
        return []

    def largest_number(self, size: int) -> int:
        """The largest number any row of this size contains."""
        raise NotImplementedError

    def space(self, size: int) -> int:
        """How many distinct inputs of this size the sampler can produce (or an upper bound)."""
        raise NotImplementedError

    def draw(self, rng: np.random.Generator, count: int, size: int) -> list[np.ndarray]:
        """``count`` inputs of this size as token ids (repeats possible)."""
        raise NotImplementedError

    def solve(self, inputs: list[np.ndarray], size: int) -> tuple[list[np.ndarray], np.ndarray]:
        """Each input's trace (token ids) and answer (token id)."""
        raise NotImplementedError


def distinct_sorted(rng: np.random.Generator, count: int, size: int, high: int) -> np.ndarray:
    """(count, size) strictly increasing values in [0, high): sorted draws from [0, high - size]
    plus 0, 1, .., size - 1."""
    draws = np.sort(rng.integers(0, high - size + 1, (count, size)), axis=1)
    return draws + np.arange(size)


def ranks(keys: np.ndarray) -> np.ndarray:
    """Each entry's rank within its row (0 = smallest)."""
    return np.argsort(np.argsort(keys, axis=1), axis=1)


def lis_orders(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """(count, size) permutations of 0..size-1 whose LIS length is drawn uniformly in 1..size.

    Patience sorting in reverse: the LIS length is the number of piles (a pile holds decreasing
    values; an element goes on the leftmost pile whose last value exceeds it, or starts a new
    pile). ``k - 1`` positions after the first are chosen to start a new pile; each element is
    inserted at a uniformly random rank among the earlier ones, above the top pile's last value
    where it starts a pile and below it elsewhere.
    """
    target = rng.integers(1, size + 1, count)
    starts_pile = np.zeros((count, size), bool)
    starts_pile[:, 0] = True
    starts_pile[:, 1:] = ranks(rng.random((count, size - 1))) < (target - 1)[:, None]
    uniform = rng.random((count, size))
    order = np.zeros((count, size), np.int64)
    tails = np.full((count, size), size, np.int64)  # rank of each pile's last value; size: none
    piles = np.zeros(count, np.int64)
    rows = np.arange(count)
    for i in range(size):
        top = np.where(piles > 0, tails[rows, np.maximum(piles - 1, 0)], -1)
        low = np.where(starts_pile[:, i], top + 1, 0)
        high = np.where(starts_pile[:, i], i, top)
        slot = low + (uniform[:, i] * (high - low + 1)).astype(np.int64)
        order[:, :i] += order[:, :i] >= slot[:, None]
        tails += tails >= slot[:, None]
        order[:, i] = slot
        tails[rows, (tails < slot[:, None]).sum(axis=1)] = slot
        piles += starts_pile[:, i]
    return order


def lis_table(values: np.ndarray) -> np.ndarray:
    """dp[:, i] = length of the longest strictly increasing subsequence ending at values[:, i]."""
    dp = np.ones_like(values)
    for i in range(1, values.shape[1]):
        smaller = values[:, :i] < values[:, i : i + 1]
        dp[:, i] = 1 + np.where(smaller, dp[:, :i], 0).max(axis=1)
    return dp


class LIS(Problem):
    """The LIS length is drawn uniformly in 1..n, then a random order of n values with exactly
    that LIS (patience sorting in reverse, ``lis_orders``), filled with n distinct values drawn
    from [0, value_range)."""

    def largest_number(self, size: int) -> int:
        return max(self.cfg.value_range - 1, size)

    def space(self, size: int) -> int:
        return math.perm(self.cfg.value_range, size)

    def draw(self, rng: np.random.Generator, count: int, size: int) -> list[np.ndarray]:
        order = lis_orders(rng, count, size)
        values = np.take_along_axis(
            distinct_sorted(rng, count, size, self.cfg.value_range), order, axis=1
        )
        return list(self.vocab.numbers(values))

    def solve(self, inputs: list[np.ndarray], size: int) -> tuple[list[np.ndarray], np.ndarray]:
        dp = lis_table(np.stack(inputs) - self.vocab.zero)
        return list(self.vocab.numbers(dp)), self.vocab.numbers(dp.max(axis=1))


def local_table(values: np.ndarray, locality: int, modulus: int) -> np.ndarray:
    """dp[:, t] = (values[:, t] + the `locality` dp values before it) mod modulus."""
    count, size = values.shape
    dp = np.zeros((count, locality + size), np.int64)  # `locality` leading zeros: dp_k, k <= 0
    for t in range(size):
        dp[:, locality + t] = (values[:, t] + dp[:, t : locality + t].sum(axis=1)) % modulus
    return dp[:, locality:]


class LocalDP(Problem):
    """Inputs uniform in [0, modulus)^n."""

    def largest_number(self, size: int) -> int:
        return self.cfg.modulus - 1

    def space(self, size: int) -> int:
        return self.cfg.modulus**size

    def draw(self, rng: np.random.Generator, count: int, size: int) -> list[np.ndarray]:
        return list(self.vocab.numbers(rng.integers(0, self.cfg.modulus, (count, size))))

    def solve(self, inputs: list[np.ndarray], size: int) -> tuple[list[np.ndarray], np.ndarray]:
        values = np.stack(inputs) - self.vocab.zero
        dp = local_table(values, self.cfg.locality, self.cfg.modulus)
        return list(self.vocab.numbers(dp)), self.vocab.numbers(dp[:, -1])


def ed_spread(size: int) -> int:
    """The second string's length is drawn in size - spread .. size + spread (at least 1)."""
    return (size + 3) // 4


def ed_table(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(count, n + 1, m + 1) edit-distance tables of the rows of a (count, n) and b (count, m).

    A row from the previous one: D[i][j] = min(best[j], D[i][j-1] + insert) with best[j] the
    delete / substitute candidate, i.e. a running minimum of best[j] - insert * j."""
    count, n = a.shape
    m = b.shape[1]
    columns = INSERT_COST * np.arange(m + 1)
    table = np.empty((count, n + 1, m + 1), np.int64)
    table[:, 0] = columns
    for i in range(1, n + 1):
        above = table[:, i - 1]
        substitute = above[:, :-1] + np.where(a[:, i - 1 : i] == b, 0, SUBSTITUTE_COST)
        best = np.empty((count, m + 1), np.int64)
        best[:, 0] = DELETE_COST * i
        best[:, 1:] = np.minimum(above[:, 1:] + DELETE_COST, substitute)
        table[:, i] = np.minimum.accumulate(best - columns, axis=1) + columns
    return table


class EditDistance(Problem):
    """a uniform over the letters; b (length m near n) keeps, in order, a random share of a's
    letters (none in a quarter of the rows, else 50-100 % of min(n, m)) among random letters."""

    def symbols(self) -> list[str]:
        return [BAR, COMMA, *string.ascii_lowercase[: self.cfg.alphabet_size]]

    @property
    def first_letter(self) -> int:
        return self.vocab["a"]

    def largest_number(self, size: int) -> int:
        longest = size + ed_spread(size)  # the table only grows towards D[n][m], m longest
        return SUBSTITUTE_COST * size + INSERT_COST * (longest - size)

    def lengths(self, size: int) -> range:
        return range(max(1, size - ed_spread(size)), size + ed_spread(size) + 1)

    def space(self, size: int) -> int:
        return sum(self.cfg.alphabet_size ** (size + m) for m in self.lengths(size))

    def draw(self, rng: np.random.Generator, count: int, size: int) -> list[np.ndarray]:
        letters = self.cfg.alphabet_size
        lengths = self.lengths(size)
        m = rng.integers(lengths.start, lengths.stop, count)
        a = rng.integers(0, letters, (count, size))
        share = np.where(rng.random(count) < 0.25, 0.0, rng.uniform(0.5, 1.0, count))
        kept = np.rint(share * np.minimum(size, m)).astype(np.int64)[:, None]
        positions = np.arange(size)
        keep = ranks(rng.random((count, size))) < kept
        kept_letters = np.take_along_axis(
            a, np.argsort(np.where(keep, positions, size + positions), axis=1), axis=1
        )
        slot_keys = rng.random((count, lengths.stop - 1))
        slot_keys[np.arange(lengths.stop - 1) >= m[:, None]] = 2.0  # past the end of b
        chosen = ranks(slot_keys) < kept
        which = np.clip(np.cumsum(chosen, axis=1) - 1, 0, size - 1)
        b = np.where(
            chosen,
            np.take_along_axis(kept_letters, which, axis=1),
            rng.integers(0, letters, chosen.shape),
        )
        bar = self.vocab[BAR]
        first = self.first_letter
        return [
            np.concatenate([first + a_row, [bar], first + b_row[:length]])
            for a_row, b_row, length in zip(a, b, m.tolist(), strict=True)
        ]

    def solve(self, inputs: list[np.ndarray], size: int) -> tuple[list[np.ndarray], np.ndarray]:
        traces: list[np.ndarray] = [np.empty(0, np.int64)] * len(inputs)
        answers = np.empty(len(inputs), np.int64)
        widths = np.array([len(row) for row in inputs])
        comma = self.vocab[COMMA]
        for width in np.unique(widths):
            rows = np.flatnonzero(widths == width)
            block = np.stack([inputs[r] for r in rows]) - self.first_letter
            table = ed_table(block[:, :size], block[:, size + 1 :])[:, 1:]
            ids = self.vocab.numbers(table)
            with_commas = np.concatenate([ids, np.full((*ids.shape[:2], 1), comma)], axis=2)
            flat = with_commas.reshape(len(rows), -1)[:, :-1]
            for r, trace in zip(rows, flat, strict=True):
                traces[r] = trace
            answers[rows] = ids[:, -1, -1]
        return traces, answers


class Arithmetic(Problem):
    """Expression trees of n operators: the left subtree gets a uniform share of the operators
    (random-split shapes), operators and leaves uniform; a division whose divisor is not
    invertible mod ``modulus`` becomes +, - or * (uniformly). Parentheses only where the tree
    needs them (a left operand of lower precedence, a right one of lower or equal)."""

    def __init__(self, cfg: DPTaskConfig, sizes: Sequence[int]):
        super().__init__(cfg, sizes)
        modulus = cfg.modulus
        self.inverse = {v: pow(v, -1, modulus) for v in range(modulus) if math.gcd(v, modulus) == 1}
        ids = self.vocab.ids
        self.op_ids = [ids[op] for op in OPERATORS]
        self.open, self.close = ids[OPEN], ids[CLOSE]
        add, sub, mul, div = self.op_ids
        self.divide = div
        self.precedence = {add: 1, sub: 1, mul: 2, div: 2}
        self.apply: dict[int, Callable[[int, int], int]] = {
            add: lambda x, y: (x + y) % modulus,
            sub: lambda x, y: (x - y) % modulus,
            mul: lambda x, y: (x * y) % modulus,
            div: lambda x, y: (x * self.inverse[y]) % modulus,
        }

    def symbols(self) -> list[str]:
        return [*OPERATORS, OPEN, CLOSE, EQUALS]

    def largest_number(self, size: int) -> int:
        return self.cfg.modulus - 1

    def space(self, size: int) -> int:
        shapes = math.comb(2 * size, size) // (size + 1)
        return shapes * len(OPERATORS) ** size * self.cfg.modulus ** (size + 1)

    def draw(self, rng: np.random.Generator, count: int, size: int) -> list[np.ndarray]:
        splits = rng.random((count, size)).tolist()
        operators = rng.integers(0, len(OPERATORS), (count, size)).tolist()
        fallbacks = rng.integers(0, len(OPERATORS) - 1, (count, size)).tolist()
        leaves = rng.integers(0, self.cfg.modulus, (count, size + 1)).tolist()
        rows = zip(splits, operators, fallbacks, leaves, strict=True)
        return [
            np.array(self.expression(size, iter(s), iter(o), iter(f), iter(v))[0], np.int64)
            for s, o, f, v in rows
        ]

    def expression(
        self,
        size: int,
        splits: Iterator[float],
        operators: Iterator[int],
        fallbacks: Iterator[int],
        leaves: Iterator[int],
    ) -> tuple[list[int], int, int]:
        """(token ids, value, precedence; 3 for a number) of a random tree of ``size`` ops."""
        if size == 0:
            value = next(leaves)
            return [self.vocab.zero + value], value, 3
        left_size = int(next(splits) * size)
        op = self.op_ids[next(operators)]
        left, left_value, left_rank = self.expression(
            left_size, splits, operators, fallbacks, leaves
        )
        right, right_value, right_rank = self.expression(
            size - 1 - left_size, splits, operators, fallbacks, leaves
        )
        fallback = self.op_ids[next(fallbacks)]
        if op == self.divide and right_value not in self.inverse:
            op = fallback
        rank = self.precedence[op]
        tokens = [
            *self.bracket(left, left_rank < rank),
            op,
            *self.bracket(right, right_rank <= rank),
        ]
        return tokens, self.apply[op](left_value, right_value), rank

    def bracket(self, tokens: list[int], needed: bool) -> list[int]:
        return [self.open, *tokens, self.close] if needed else tokens

    def reduce_once(self, tokens: list[int]) -> list[int]:
        """Evaluates one operation: in the leftmost innermost parenthesized group (the whole
        expression if it has none), the leftmost * or /, else the leftmost + or -; parentheses
        left around a lone number are dropped."""
        close = tokens.index(self.close) if self.close in tokens else len(tokens)
        start = close - 1
        while start >= 0 and tokens[start] != self.open:
            start -= 1
        group = range(start + 1, close)
        ops = [p for p in group if tokens[p] in self.precedence]
        pick = next((p for p in ops if self.precedence[tokens[p]] == 2), ops[0])
        zero = self.vocab.zero
        value = self.apply[tokens[pick]](tokens[pick - 1] - zero, tokens[pick + 1] - zero)
        low, high = pick - 1, pick + 2
        if low - 1 == start >= 0 and high == close:
            low, high = start, close + 1
        return [*tokens[:low], zero + value, *tokens[high:]]

    def solve(self, inputs: list[np.ndarray], size: int) -> tuple[list[np.ndarray], np.ndarray]:
        traces, answers = [], []
        equals = self.vocab[EQUALS]
        for row in inputs:
            step, trace = row.tolist(), []
            for _ in range(size):
                step = self.reduce_once(step)
                trace += [*step, equals]
            traces.append(np.array(trace[:-1], np.int64))
            answers.append(step[0])
        return traces, np.array(answers, np.int64)


PROBLEMS: dict[str, type[Problem]] = {
    "lis": LIS,
    "ed": EditDistance,
    "arithmetic": Arithmetic,
    "local": LocalDP,
}


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
    """Sequences (N, L) right-padded, each row's prompt length and answer position."""

    tokens: np.ndarray
    prompt_lens: np.ndarray
    answer_pos: np.ndarray

    def completion_mask(self, pad_id: int) -> np.ndarray:
        positions = np.arange(self.tokens.shape[1])
        return (positions >= self.prompt_lens[:, None]) & (self.tokens != pad_id)


def assemble(
    problem: Problem, inputs: list[np.ndarray], size: int, cot: bool
) -> tuple[Rows, np.ndarray]:
    """INPUT <sep> [TRACE <sep>] ANSWER <eos> for every input; also the answer ids."""
    vocab = problem.vocab
    traces, answers = problem.solve(inputs, size)
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


def to_probe(rows: Rows, pad_id: int) -> Probe:
    tokens = torch.from_numpy(rows.tokens)
    return as_probe(
        tokens,
        torch.from_numpy(rows.prompt_lens),
        torch.zeros(tokens.shape, dtype=torch.bool),
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
    cot = cfg.mode == "cot"
    train_inputs = draw_distinct(
        problem, rng, cfg.length, cfg.num_train, seen[cfg.length], "task.num_train"
    )
    requests = [("test", cfg.length)] + [(f"test_len{n}", n) for n in cfg.test_lengths]
    probe_inputs = {
        name: draw_distinct(problem, rng, size, cfg.num_test, seen[size], "task.num_test")
        for name, size in requests
    }
    train, train_answers = assemble(problem, train_inputs, cfg.length, cot)
    pad_id = problem.vocab[PAD]
    probes, stats = {}, statistics(train, train_answers, pad_id)
    for name, size in requests:
        rows, _ = assemble(problem, probe_inputs[name], size, cot)
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
    trace = _parse_trace(parts[1], problem) if mode == "cot" else None
    return {"input": _parse_input(parts[0], problem), "trace": trace, "answer": int(parts[-1][0])}


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
