"""The dynamic-programming tasks (Feng et al. 2023): every row re-solved by solvers written here,
independent of the generator's; layouts, masks, probes, disjoint splits, determinism, errors."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from reasonlab.config import ConfigError, DPTaskConfig
from reasonlab.tasks import build_task
from reasonlab.tasks.base import TaskData
from reasonlab.tasks.dp.task import build_dp, parse_example
from reasonlab.tasks.text_files import write_text_dataset

SMALL = {"length": 6, "test_lengths": [3, 9], "num_train": 150, "num_test": 40}
VARIANTS = [
    ("lis", ()),
    ("lis", (("value_range", 9),)),
    ("ed", ()),
    ("ed", (("alphabet_size", 2),)),
    ("arithmetic", ()),
    ("arithmetic", (("modulus", 10),)),
    ("local", ()),
    ("local", (("locality", 1), ("modulus", 7))),
]
CASES = [(p, mode, extra) for p, extra in VARIANTS for mode in ("cot", "direct")]
CASE_IDS = [f"{p}-{mode}-{'-'.join(f'{k}{v}' for k, v in extra)}" for p, mode, extra in CASES]


def small_config(problem: str, mode: str = "cot", **fields) -> DPTaskConfig:
    return DPTaskConfig(problem=problem, mode=mode, **{**SMALL, **fields})


@cache
def built(problem: str, mode: str, extra: tuple = ()) -> tuple[DPTaskConfig, TaskData]:
    cfg = small_config(problem, mode, **dict(extra))
    return cfg, build_dp(cfg)


def rows_of(data: TaskData, tokens: torch.Tensor) -> list[list[str]]:
    return [[data.vocab[i] for i in row.tolist() if i != data.pad_id] for row in tokens]


def sized_rows(cfg: DPTaskConfig, data: TaskData) -> list[tuple[list[str], int]]:
    """Every train and probe row with the size it was drawn at."""
    rows = [(row, cfg.length) for row in rows_of(data, data.train_tokens)]
    for name, probe in data.probes.items():
        size = cfg.length if name == "test" else int(name.removeprefix("test_len"))
        rows += [(row, size) for row in rows_of(data, probe.tokens)]
    return rows


# ----------------------------------------------------------------------------- solvers


def lis_ending_at(xs: list[int]) -> list[int]:
    dp = []
    for i, x in enumerate(xs):
        dp.append(1 + max([dp[j] for j in range(i) if xs[j] < x], default=0))
    return dp


def edit_table(a: list[str], b: list[str]) -> list[list[int]]:
    """D[i][j]: cost to turn a[:i] into b[:j]; insert 2, delete 2, substitute 3."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        for j in range(len(b) + 1):
            if i == 0 or j == 0:
                table[i][j] = 2 * (i + j)
                continue
            table[i][j] = min(
                table[i - 1][j] + 2,
                table[i][j - 1] + 2,
                table[i - 1][j - 1] + (0 if a[i - 1] == b[j - 1] else 3),
            )
    return table


def local_steps(xs: list[int], locality: int, modulus: int) -> list[int]:
    dp: list[int] = []
    for t, x in enumerate(xs):
        dp.append((x + (dp[t - locality] if t >= locality else 0)) % modulus)
    return dp


class Parser:
    """Recursive descent over + - (low) and * / (high), left-associative, mod ``modulus``.
    A node is ("num", value) or (op, left, right, position of the op token)."""

    def __init__(self, tokens: list[str], modulus: int):
        self.tokens, self.modulus, self.at = tokens, modulus, 0

    def parse(self) -> tuple:
        node = self.expression()
        assert self.at == len(self.tokens), f"trailing tokens in {self.tokens}"
        return node

    def expression(self) -> tuple:
        node = self.term()
        while self.at < len(self.tokens) and self.tokens[self.at] in "+-":
            op, self.at = self.at, self.at + 1
            node = (self.tokens[op], node, self.term(), op)
        return node

    def term(self) -> tuple:
        node = self.factor()
        while self.at < len(self.tokens) and self.tokens[self.at] in "*/":
            op, self.at = self.at, self.at + 1
            node = (self.tokens[op], node, self.factor(), op)
        return node

    def factor(self) -> tuple:
        token = self.tokens[self.at]
        self.at += 1
        if token == "(":
            node = self.expression()
            assert self.tokens[self.at] == ")", f"unclosed ( in {self.tokens}"
            self.at += 1
            return node
        value = int(token)
        assert 0 <= value < self.modulus, token
        return ("num", value)

    def value(self, node: tuple) -> int:
        if node[0] == "num":
            return node[1]
        left, right = self.value(node[1]), self.value(node[2])
        if node[0] == "/":
            assert math.gcd(right, self.modulus) == 1, "division by a non-invertible value"
            right = pow(right, -1, self.modulus)
        result = {"+": left + right, "-": left - right, "*": left * right, "/": left * right}
        return result[node[0]] % self.modulus


def operations(node: tuple) -> list[tuple]:
    if node[0] == "num":
        return []
    return [node, *operations(node[1]), *operations(node[2])]


def single_reductions(tokens: list[str], modulus: int) -> list[list[str]]:
    """Every expression one evaluation away: an operation on two numbers replaced by its value,
    parentheses around the lone value dropped."""
    parser = Parser(tokens, modulus)
    results = []
    for node in operations(parser.parse()):
        if node[1][0] != "num" or node[2][0] != "num":
            continue
        low, high = node[3] - 1, node[3] + 2
        if low > 0 and tokens[low - 1] == "(" and high < len(tokens) and tokens[high] == ")":
            low, high = low - 1, high + 1
        results.append([*tokens[:low], str(parser.value(node)), *tokens[high:]])
    return results


# ----------------------------------------------------------------------------- row checks


def split_row(row: list[str]) -> tuple[list[str], list[list[str]], str]:
    """(input, parts between <sep>s, answer) of a row; checks the <eos> at the end."""
    assert row[-1] == "<eos>" and row.count("<eos>") == 1, row
    parts: list[list[str]] = [[]]
    for token in row[:-1]:
        if token == "<sep>":
            parts.append([])
        else:
            parts[-1].append(token)
    assert len(parts[-1]) == 1, f"answer is not one token: {row}"
    return parts[0], parts[1:-1], parts[-1][0]


def check_row(row: list[str], cfg: DPTaskConfig, size: int) -> None:
    question, middle, answer = split_row(row)
    assert len(middle) == (1 if cfg.mode == "cot" else 0), row
    trace = middle[0] if middle else None
    check = {"lis": check_lis, "ed": check_ed, "arithmetic": check_arithmetic}
    check.get(cfg.problem, check_local)(question, trace, int(answer), cfg, size)


def check_lis(question, trace, answer, cfg, size) -> None:
    xs = [int(t) for t in question]
    assert len(xs) == size and all(0 <= x < cfg.value_range for x in xs)
    dp = lis_ending_at(xs)
    assert answer == max(dp)
    if trace is not None:
        assert [int(t) for t in trace] == dp


def check_ed(question, trace, answer, cfg, size) -> None:
    assert question.count("|") == 1
    cut = question.index("|")
    a, b = question[:cut], question[cut + 1 :]
    letters = set("abcdefghijklmnopqrstuvwxyz"[: cfg.alphabet_size])
    assert len(a) == size and set(a + b) <= letters
    assert len(b) >= 1 and abs(len(b) - size) <= (size + 3) // 4
    table = edit_table(a, b)
    assert answer == table[-1][-1]
    if trace is not None:
        rows = " ".join(trace).split(" , ")
        assert [[int(t) for t in r.split()] for r in rows] == table[1:]


def check_arithmetic(question, trace, answer, cfg, size) -> None:
    assert sum(t in "+-*/" for t in question) == size
    value = Parser(question, cfg.modulus).value(Parser(question, cfg.modulus).parse())
    assert answer == value
    if trace is None:
        return
    steps = " ".join(trace).split(" = ")
    assert len(steps) == size
    previous = question
    for step in steps:
        tokens = step.split()
        assert tokens in single_reductions(previous, cfg.modulus), (previous, tokens)
        assert Parser(tokens, cfg.modulus).value(Parser(tokens, cfg.modulus).parse()) == value
        previous = tokens
    assert previous == [str(answer)]


def check_local(question, trace, answer, cfg, size) -> None:
    xs = [int(t) for t in question]
    assert len(xs) == size and all(0 <= x < cfg.modulus for x in xs)
    dp = local_steps(xs, cfg.locality, cfg.modulus)
    assert answer == dp[-1]
    if trace is not None:
        assert [int(t) for t in trace] == dp


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize(("problem", "mode", "extra"), CASES, ids=CASE_IDS)
def test_every_row_is_solved_right(problem, mode, extra):
    cfg, data = built(problem, mode, extra)
    assert set(data.probes) == {"test", "test_len3", "test_len9"}
    rows = sized_rows(cfg, data)
    assert len(rows) == cfg.num_train + 3 * cfg.num_test
    for row, size in rows:
        check_row(row, cfg, size)


@pytest.mark.parametrize(("problem", "mode", "extra"), CASES, ids=CASE_IDS)
def test_inputs_are_distinct_across_train_and_probes(problem, mode, extra):
    cfg, data = built(problem, mode, extra)
    inputs = [tuple(split_row(row)[0]) for row, _ in sized_rows(cfg, data)]
    assert len(set(inputs)) == len(inputs)


@pytest.mark.parametrize("problem", ["lis", "ed", "arithmetic", "local"])
def test_loss_mask_covers_exactly_the_completion(problem):
    _, data = built(problem, "cot")
    sep = data.vocab.index("<sep>")
    tokens, mask = data.train_tokens, data.train_loss_mask
    assert tokens.dtype == torch.int64 and mask.dtype == torch.bool
    for row, row_mask in zip(tokens.tolist(), mask.tolist(), strict=True):
        prompt_len = row.index(sep) + 1
        expected = [prompt_len <= t and token != data.pad_id for t, token in enumerate(row)]
        assert row_mask == expected
        assert data.vocab[row[max(t for t, m in enumerate(row_mask) if m)]] == "<eos>"


@pytest.mark.parametrize(("problem", "mode", "extra"), CASES, ids=CASE_IDS)
def test_probe_prompts_given_scored_and_answer_stage(problem, mode, extra):
    _, data = built(problem, mode, extra)
    sep = data.vocab.index("<sep>")
    for probe in data.probes.values():
        assert probe.teacher_forced and set(probe.stages) == {"answer"}
        rows = probe.tokens.tolist()
        prompt_lens = [row.index(sep) + 1 for row in rows]
        assert probe.prompt_len == min(prompt_lens)
        answer_pos = probe.stages["answer"]
        for r, (row, prompt_len) in enumerate(zip(rows, prompt_lens, strict=True)):
            length = sum(token != data.pad_id for token in row)
            positions = range(len(row))
            given = [probe.prompt_len <= t < prompt_len for t in positions]
            scored = [prompt_len <= t < length for t in positions]
            assert probe.given[r].tolist() == given and probe.scored[r].tolist() == scored
            assert int(answer_pos[r]) == length - 2
            assert data.vocab[row[length - 2]] == split_row(rows_of(data, probe.tokens)[r])[2]


@pytest.mark.parametrize("problem", ["ed", "arithmetic"])
def test_prompts_of_one_probe_differ_in_length(problem):
    _, data = built(problem, "cot")
    probe = data.probes["test"]
    assert probe.given.any(), "a longer prompt's rest must be given"
    assert not (probe.given & probe.scored).any()


@pytest.mark.parametrize("problem", ["lis", "ed", "arithmetic", "local"])
def test_direct_mode_has_no_trace_and_shares_the_vocabulary(problem):
    _, cot = built(problem, "cot")
    _, direct = built(problem, "direct")
    assert cot.vocab == direct.vocab
    assert cot.vocab[:3] == ["<pad>", "<sep>", "<eos>"] and cot.pad_id == 0
    sep = direct.vocab.index("<sep>")
    assert ((direct.train_tokens == sep).sum(dim=1) == 1).all()
    assert ((cot.train_tokens == sep).sum(dim=1) == 2).all()
    assert len(set(cot.vocab)) == len(cot.vocab)


@pytest.mark.parametrize("problem", ["lis", "ed", "arithmetic", "local"])
def test_same_config_same_data_other_seed_other_data(problem):
    cfg, data = built(problem, "cot")
    again = build_dp(cfg)
    assert again.fingerprint() == data.fingerprint() and again.vocab == data.vocab
    assert torch.equal(again.train_loss_mask, data.train_loss_mask)
    assert build_dp(cfg.model_copy(update={"seed": 1})).fingerprint() != data.fingerprint()


def test_lis_answers_spread_over_lengths():
    cfg = DPTaskConfig(problem="lis", mode="direct", length=8, num_train=200, num_test=10)
    data = build_dp(cfg)
    answers = {split_row(row)[2] for row in rows_of(data, data.train_tokens)}
    assert len(answers) >= 4
    assert data.stats["train_distinct_answers"] == len(answers)


def test_edit_distances_are_not_all_near_the_maximum():
    _, data = built("ed", "direct")
    distances = [int(split_row(row)[2]) for row in rows_of(data, data.train_tokens)]
    assert min(distances) <= 6 and len(set(distances)) >= 8


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"problem": "lis", "length": 2, "value_range": 2, "num_train": 1000}, "task.num_train"),
        ({"problem": "local", "modulus": 2, "length": 3, "num_train": 6}, "task.num_test"),
        ({"problem": "local", "modulus": 2, "length": 6, "test_lengths": [2]}, "task.num_test"),
        ({"problem": "ed", "alphabet_size": 2, "length": 1, "num_train": 100}, "task.num_train"),
        ({"problem": "arithmetic", "modulus": 2, "length": 1}, "task.num_train"),
    ],
)
def test_too_small_input_space_is_a_one_line_config_error(fields, field):
    cfg = DPTaskConfig(**{"num_train": 50, "num_test": 5, **fields})
    with pytest.raises(ConfigError) as info:
        build_task(cfg)
    message = str(info.value)
    assert message.startswith(f"{field}: ") and "\n" not in message


def test_a_space_used_up_exactly_is_fine():
    cfg = DPTaskConfig(problem="local", modulus=2, length=4, num_train=12, num_test=4)
    data = build_dp(cfg)
    inputs = {tuple(split_row(row)[0]) for row, _ in sized_rows(cfg, data)}
    assert len(inputs) == 16


@pytest.mark.parametrize("mode", ["cot", "direct"])
@pytest.mark.parametrize("problem", ["lis", "ed", "arithmetic", "local"])
def test_parse_example_matches_the_rows(problem, mode):
    _, data = built(problem, mode)
    for row in rows_of(data, data.train_tokens[:30]):
        parsed = parse_example(row, problem, mode)
        question, middle, answer = split_row(row)
        assert parsed["answer"] == int(answer)
        trace = middle[0] if middle else None
        if problem == "ed":
            a, b = parsed["input"]
            assert [*a, "|", *b] == question
        elif problem == "arithmetic":
            assert parsed["input"] == question
        else:
            assert parsed["input"] == [int(t) for t in question]
        if trace is None:
            assert parsed["trace"] is None
        elif problem == "ed":
            assert [str(v) for r in parsed["trace"] for v in [*r, ","]][:-1] == trace
        elif problem == "arithmetic":
            assert [t for step in parsed["trace"] for t in [*step, "="]][:-1] == trace
            assert parsed["trace"][-1] == [answer]
        else:
            assert parsed["trace"] == [int(t) for t in trace]


@pytest.mark.parametrize(
    "line",
    [
        ["1", "2", "<sep>", "2"],
        ["1", "2", "<sep>", "1", "2", "<sep>", "2", "<eos>"],
        ["1", "2", "<sep>", "1", "2", "<eos>"],
    ],
)
def test_parse_example_refuses_malformed_lines(line):
    with pytest.raises(ValueError):
        parse_example(line, "lis", "direct")


@pytest.mark.parametrize("problem", ["ed", "arithmetic"])
def test_text_files_reparse_and_reverify(problem, tmp_path: Path):
    cfg, data = built(problem, "cot")
    counts = write_text_dataset(data, tmp_path)
    train = (tmp_path / "train.txt").read_text().splitlines()
    assert counts["train"] == len(train) == cfg.num_train
    for line in train:
        check_row(line.split(" "), cfg, cfg.length)
        parse_example(line.split(" "), problem, "cot")
    test = (tmp_path / "test.txt").read_text().splitlines()
    assert len(test) == counts["test"] == 3 * cfg.num_test


def test_stats_count_rows_and_lengths():
    cfg, data = built("arithmetic", "cot")
    stats = data.stats
    assert stats["train_rows"] == cfg.num_train
    assert stats["test_rows"] == stats["test_len3_rows"] == cfg.num_test
    assert stats["train_max_len"] == data.train_tokens.shape[1]
    assert stats["test_len9_max_len"] == data.probes["test_len9"].tokens.shape[1]
    assert stats["vocab_size"] == len(data.vocab) and data.notes


# ----------------------------------------------------------------------------- mode stream

STREAM_CASES = [("lis", ()), ("local", ()), ("local", (("locality", 1), ("modulus", 7)))]


@pytest.mark.parametrize(("problem", "extra"), STREAM_CASES)
def test_stream_rows_interleave_each_input_with_its_step(problem, extra):
    """x_1 dp_1 .. x_n dp_n <sep> answer <eos>, every step and answer from the solvers above,
    on the same inputs that mode cot draws for the same seed."""
    cfg, data = built(problem, "stream", extra)
    _, cot = built(problem, "cot", extra)
    rows = sized_rows(cfg, data)
    assert len(rows) == cfg.num_train + 3 * cfg.num_test
    for (row, size), (cot_row, _) in zip(rows, sized_rows(cfg, cot), strict=True):
        assert len(row) == 2 * size + 3 and row[-3] == "<sep>" and row[-1] == "<eos>"
        xs, steps = row[0 : 2 * size : 2], row[1 : 2 * size : 2]
        assert xs == split_row(cot_row)[0]
        check_row(
            [*xs, "<sep>", *steps, "<sep>", row[-2], "<eos>"],
            cfg.model_copy(update={"mode": "cot"}),
            size,
        )


@pytest.mark.parametrize(("problem", "extra"), STREAM_CASES)
def test_stream_inputs_are_given_and_never_trained_on(problem, extra):
    """The prompt is x_1; x_2 .. x_n are fed (given), never scored nor in the loss; the steps,
    <sep>, the answer and <eos> are scored and trained on."""
    cfg, data = built(problem, "stream", extra)
    n = cfg.length
    expected_given = [2 <= t < 2 * n and t % 2 == 0 for t in range(2 * n + 3)]
    expected_scored = [t >= 1 and not expected_given[t] for t in range(2 * n + 3)]
    assert data.train_loss_mask.tolist() == [expected_scored] * cfg.num_train
    probe = data.probes["test"]
    assert probe.prompt_len == 1 and probe.teacher_forced
    assert probe.given.tolist() == [expected_given] * cfg.num_test
    assert probe.scored.tolist() == [expected_scored] * cfg.num_test
    assert probe.stages["answer"].tolist() == [2 * n + 1] * cfg.num_test
    for row in rows_of(data, data.train_tokens[:20]):
        parsed = parse_example(row, problem, "stream")
        assert parsed["input"] == [int(t) for t in row[0 : 2 * n : 2]]
        assert parsed["trace"] == [int(t) for t in row[1 : 2 * n : 2]]
        assert parsed["answer"] == int(row[-2])


@pytest.mark.parametrize("problem", ["ed", "arithmetic"])
def test_stream_mode_needs_a_step_per_input(problem):
    with pytest.raises(ValidationError, match="stream"):
        small_config(problem, "stream")
