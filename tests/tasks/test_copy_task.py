"""The COPY and selective-copy task: every line checked by decoding it, loss masks, probes,
disjoint splits, lengths, determinism, the per-position helpers and bad configs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from helpers import exit_code
from reasonlab.config import ConfigError, CopyTaskConfig
from reasonlab.tasks import build_task
from reasonlab.tasks import copy as copy_task
from reasonlab.tasks.base import Probe, TaskData
from reasonlab.tasks.copy import (
    build_copy,
    copy_positions,
    position_accuracy,
    source_positions,
)
from reasonlab.tasks.text_files import write_text_dataset

SMALL: dict[str, Any] = {
    "vocab_size": 6,
    "min_length": 2,
    "max_length": 8,
    "test_lengths": [3, 8, 12],
    "num_train": 3000,
    "num_test": 40,
}
VARIANTS = {"copy": {}, "selective": {"variant": "selective", "noise_tokens": 5}}


def small(variant: str = "copy", **changes: Any) -> CopyTaskConfig:
    return CopyTaskConfig(**{**SMALL, **VARIANTS[variant], **changes})


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def built(request) -> tuple[CopyTaskConfig, TaskData]:
    cfg = small(request.param)
    return cfg, build_copy(cfg)


# ----------------------------------------------------------------------------- independent checks


def row_tokens(data: TaskData, row: torch.Tensor) -> list[str]:
    """A row's token strings without its right padding (padding inside a row fails)."""
    words = [data.vocab[i] for i in row.tolist()]
    content = len(words)
    while content and words[content - 1] == "<pad>":
        content -= 1
    assert "<pad>" not in words[:content], "padding inside a row"
    return words[:content]


def check_line(words: list[str], noise: int, symbols: set[str]) -> tuple[str, ...]:
    """Asserts a line is input <sep> copy <eos>; returns the input's symbols (noise removed)."""
    assert words.count("<sep>") == 1
    sep = words.index("<sep>")
    question, answer = words[:sep], words[sep + 1 :]
    assert question.count("<noise>") == noise
    string = [w for w in question if w != "<noise>"]
    assert string and set(string) <= symbols
    assert answer == [*string, "<eos>"]
    return tuple(string)


def symbol_set(data: TaskData) -> set[str]:
    return {w for w in data.vocab if not w.startswith("<")}


def probe_strings(cfg: CopyTaskConfig, data: TaskData) -> dict[str, list[tuple[str, ...]]]:
    symbols = symbol_set(data)
    return {
        name: [check_line(row_tokens(data, row), cfg.noise_tokens, symbols) for row in p.tokens]
        for name, p in data.probes.items()
    }


def train_strings(cfg: CopyTaskConfig, data: TaskData) -> list[tuple[str, ...]]:
    symbols = symbol_set(data)
    return [
        check_line(row_tokens(data, row), cfg.noise_tokens, symbols) for row in data.train_tokens
    ]


# ----------------------------------------------------------------------------- lines and masks


def test_every_line_is_input_sep_copy_eos(built):
    cfg, data = built
    assert len(train_strings(cfg, data)) == cfg.num_train
    for strings in probe_strings(cfg, data).values():
        assert len(strings) == cfg.num_test


def test_vocabulary_layout():
    assert build_copy(small()).vocab == ["<pad>", "<sep>", "<eos>", *"abcdef"]
    selective = build_copy(small("selective", vocab_size=30))
    assert selective.vocab[:4] == ["<pad>", "<sep>", "<eos>", "<noise>"]
    assert selective.vocab[4:] == [f"s{i}" for i in range(30)]
    assert selective.pad_id == 0
    assert "<noise>" not in build_copy(small(vocab_size=30)).vocab


def test_loss_mask_covers_exactly_the_copy_and_eos(built):
    _, data = built
    for row, mask in zip(data.train_tokens, data.train_loss_mask, strict=True):
        words = row_tokens(data, row)
        expected = torch.zeros_like(mask)
        expected[words.index("<sep>") + 1 : len(words)] = True
        assert torch.equal(mask, expected)


def test_probe_prompt_scored_given_and_stages(built):
    cfg, data = built
    assert sorted(data.probes) == sorted(f"len{n}" for n in cfg.test_lengths)
    for name, probe in data.probes.items():
        assert not probe.teacher_forced
        assert not probe.given.any()
        for row, scored in zip(probe.tokens, probe.scored, strict=True):
            words = row_tokens(data, row)
            sep = words.index("<sep>")
            assert probe.prompt_len == sep + 1
            expected = torch.zeros_like(scored)
            expected[sep + 1 : len(words)] = True
            assert torch.equal(scored, expected)
            assert probe.stages == {"first": sep + 1, "last": len(words) - 2}
            assert words[len(words) - 1] == "<eos>"
        assert probe.tokens.shape[1] == 2 * int(name[3:]) + cfg.noise_tokens + 2


# ----------------------------------------------------------------------------- splits and lengths


def test_probes_are_distinct_and_never_trained(built):
    cfg, data = built
    trained = set(train_strings(cfg, data))
    for strings in probe_strings(cfg, data).values():
        assert len(set(strings)) == len(strings)
        assert not trained & set(strings)


def test_probe_lengths_include_ood(built):
    cfg, data = built
    for name, strings in probe_strings(cfg, data).items():
        assert {len(s) for s in strings} == {int(name.removeprefix("len"))}
    assert max(cfg.test_lengths) > cfg.max_length
    assert data.stats["ood_probes"] == 1
    assert any("OOD" in note for note in data.notes)


def test_training_lengths_cover_the_range(built):
    cfg, data = built
    lengths = {len(s) for s in train_strings(cfg, data)}
    assert lengths == set(range(cfg.min_length, cfg.max_length + 1))
    stats = data.stats
    assert (stats["train_min_length"], stats["train_max_length"]) == (2, 8)
    assert stats["train_strings"] == cfg.num_train
    assert stats["test_strings"] == cfg.num_test * len(cfg.test_lengths)
    assert stats["longest_sequence"] == data.max_seq_len == 2 * 12 + cfg.noise_tokens + 2
    assert stats["train_distinct_strings"] == len(set(train_strings(cfg, data)))


def test_selective_inputs_scatter_the_symbols():
    """Exactly noise_tokens noise tokens per input (check_line); the symbols do not always sit
    at the same places."""
    cfg = small("selective", noise_tokens=7)
    data = build_copy(cfg)
    train_strings(cfg, data)
    noise_id = data.vocab.index("<noise>")
    first_places = (data.probes["len3"].tokens[:, :10] != noise_id).int().argmax(dim=1)
    assert len(set(first_places.tolist())) > 1


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_data_other_seed_other_data():
    first, second = build_copy(small("selective")), build_copy(small("selective"))
    assert first.fingerprint() == second.fingerprint()
    assert first.stats == second.stats
    assert build_copy(small("selective", seed=1)).fingerprint() != first.fingerprint()


def test_probes_do_not_depend_on_training_size_or_other_lengths():
    base = build_copy(small())
    other = build_copy(small(num_train=500, test_lengths=[8, 20]))
    assert torch.equal(base.probes["len8"].tokens, other.probes["len8"].tokens)


def test_default_config_builds_fast_and_through_the_registry():
    data = build_task(CopyTaskConfig())
    assert data.train_tokens.shape == (50_000, 42)
    assert sorted(data.probes) == ["len10", "len20", "len30", "len40", "len5"]


# ----------------------------------------------------------------------------- small spaces


def test_a_probe_can_hold_every_string_of_an_ood_length():
    cfg = CopyTaskConfig(
        vocab_size=2, min_length=1, max_length=2, test_lengths=[3], num_test=8, num_train=50
    )
    data = build_copy(cfg)
    assert set(probe_strings(cfg, data)["len3"]) == {
        (a, b, c) for a in "ab" for b in "ab" for c in "ab"
    }


def test_training_takes_what_the_probe_leaves():
    cfg = CopyTaskConfig(
        vocab_size=2, min_length=3, max_length=3, test_lengths=[3], num_test=7, num_train=30
    )
    data = build_copy(cfg)
    probe = set(probe_strings(cfg, data)["len3"])
    trained = set(train_strings(cfg, data))
    assert len(trained) == 1 and not trained & probe
    assert any("len3: the probe holds 7 of the 8" in note for note in data.notes)


@pytest.mark.parametrize("small_space", [copy_task.SMALL_SPACE, 0])
def test_both_sampling_paths_train_on_every_string_the_probe_leaves(monkeypatch, small_space):
    """Spaces up to SMALL_SPACE are sampled as integer codes, larger ones by rejection (forced
    here, with many collisions): the same guarantees either way."""
    monkeypatch.setattr(copy_task, "SMALL_SPACE", small_space)
    cfg = CopyTaskConfig(
        vocab_size=2, min_length=1, max_length=4, test_lengths=[4], num_test=12, num_train=400
    )
    data = build_copy(cfg)
    probe = probe_strings(cfg, data)["len4"]
    assert len(set(probe)) == 12
    trained = train_strings(cfg, data)
    assert not set(trained) & set(probe)
    assert {s for s in trained if len(s) == 4} == {
        (a, b, c, d) for a in "ab" for b in "ab" for c in "ab" for d in "ab"
    } - set(probe)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"test_lengths": [3], "num_test": 9},
            "task.num_test: only 8 distinct strings of length 3 over 2 symbols",
        ),
        ({"test_lengths": [2], "num_test": 4}, "task.num_test: the len2 probe takes all 4"),
        ({"num_train": 10_000_000, "max_length": 100, "num_test": 1}, "task.num_train:"),
        ({"test_lengths": [100_000], "num_test": 10_000}, "task.num_test:"),
    ],
)
def test_impossible_configs_raise_config_error(changes, message):
    cfg = CopyTaskConfig(**{"vocab_size": 2, "min_length": 1, "max_length": 4, **changes})
    with pytest.raises(ConfigError, match=message) as info:
        build_copy(cfg)
    assert "\n" not in str(info.value)


def test_cli_reports_a_too_small_space_in_one_line(tmp_path, capsys):
    config = tmp_path / "copy.yaml"
    task = {"kind": "copy", "vocab_size": 2, "test_lengths": [3], "num_test": 9}
    config.write_text(yaml.safe_dump({"task": task}))
    assert exit_code("data", config, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert "task.num_test" in err and "\n" not in err


# ----------------------------------------------------------------------------- helpers


def test_position_accuracy_true_and_corrupted(built):
    _, data = built
    probe = data.probes["len8"]
    assert position_accuracy(probe.tokens, probe) == [1.0] * 8
    generated = probe.tokens.clone()
    positions = copy_positions(probe)
    rows = len(probe)
    generated[: rows // 4, positions[0, 2]] = 0  # index 2 wrong in a quarter of the rows
    generated[: rows // 2, positions[0, 7]] = 0  # the last one wrong in half of them
    generated[:, 0] = 0  # the prompt does not count
    expected = [1.0, 1.0, 0.75, 1.0, 1.0, 1.0, 1.0, 0.5]
    assert position_accuracy(generated, probe) == pytest.approx(expected)


def test_copy_positions_are_the_scored_positions_but_eos(built):
    _, data = built
    for probe in data.probes.values():
        positions = copy_positions(probe)
        expected = probe.scored.clone()
        expected[torch.arange(len(probe)), probe.scored.sum(dim=1) + probe.prompt_len - 1] = False
        assert torch.equal(expected.nonzero()[:, 1].reshape(positions.shape), positions)


def test_source_positions_point_at_the_copied_symbols(built):
    cfg, data = built
    noise_id = data.vocab.index("<noise>") if cfg.noise_tokens else -1
    for probe in data.probes.values():
        sources, targets = source_positions(probe, data.vocab), copy_positions(probe)
        assert torch.equal(probe.tokens.gather(1, sources), probe.tokens.gather(1, targets))
        assert (sources[:, 1:] > sources[:, :-1]).all()
        assert (sources < probe.prompt_len - 1).all()
        assert (probe.tokens.gather(1, sources) != noise_id).all()
        if not cfg.noise_tokens:
            assert torch.equal(sources, targets - probe.prompt_len)


def test_helpers_take_per_row_stages():
    tokens = torch.tensor([[3, 4, 1, 3, 4, 2, 0], [4, 3, 1, 4, 3, 2, 0]])
    probe = Probe(tokens, 3, torch.zeros_like(tokens, dtype=torch.bool), tokens > 2, {})
    probe.stages = {"first": torch.tensor([3, 3]), "last": torch.tensor([4, 4])}
    assert copy_positions(probe).tolist() == [[3, 4], [3, 4]]
    vocab = ["<pad>", "<sep>", "<eos>", "a", "b"]
    assert source_positions(probe, vocab).tolist() == [[0, 1], [0, 1]]
    probe.stages["last"] = torch.tensor([4, 5])
    with pytest.raises(ValueError, match="one length"):
        copy_positions(probe)


# ----------------------------------------------------------------------------- text files


def test_text_files_round_trip(built, tmp_path: Path):
    cfg, data = built
    counts = write_text_dataset(data, tmp_path)
    symbols = symbol_set(data)
    train = (tmp_path / "train.txt").read_text().splitlines()
    test = (tmp_path / "test.txt").read_text().splitlines()
    assert counts == {"train": len(train), "test": len(test)}
    trained = [check_line(line.split(" "), cfg.noise_tokens, symbols) for line in train]
    assert trained == train_strings(cfg, data)
    spans = json.loads((tmp_path / "test_probes.json").read_text())
    for name, (first, last) in spans.items():
        lines = test[first - 1 : last]
        tested = [check_line(line.split(" "), cfg.noise_tokens, symbols) for line in lines]
        assert {len(s) for s in tested} == {int(name.removeprefix("len"))}
        assert len(set(tested)) == cfg.num_test and not set(tested) & set(trained)
    assert json.loads((tmp_path / "vocab.json").read_text()) == data.vocab
