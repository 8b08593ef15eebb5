"""The dynamic programs of ``tasks/dp/task.py``: for each problem its symbols, how inputs are
drawn and its solver (the trace and the answer as token ids). Formats in ``tasks/dp/task.py``."""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from reasonlab.config import DPTaskConfig

PAD, SEP, EOS = "<pad>", "<sep>", "<eos>"
SPECIALS = (PAD, SEP, EOS)
BAR, COMMA, EQUALS = "|", ",", "="
OPERATORS = ("+", "-", "*", "/")
OPEN, CLOSE = "(", ")"
INSERT_COST, DELETE_COST, SUBSTITUTE_COST = 2, 2, 3


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
    """dp[:, t] = (values[:, t] + dp[:, t - locality]) mod modulus, dp = 0 before the start.

    One addition per step whatever m is: a step reads the step m back, so a model must keep the
    last m steps, and only that memory (not the arithmetic) grows with m."""
    count, size = values.shape
    dp = np.zeros((count, locality + size), np.int64)  # `locality` leading zeros: dp_k, k <= 0
    for t in range(size):
        dp[:, locality + t] = (values[:, t] + dp[:, t]) % modulus
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
