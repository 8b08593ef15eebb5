"""The Grokked-transformers folder layout: written by reasonlab, read back identically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import tiny_task
from reasonlab.config import ConfigError
from reasonlab.tasks.twohop.folder import write_folder
from reasonlab.tasks.twohop.task import build_twohop

PROBE_TYPES = {
    "id_atomic",
    "ood_atomic",
    "train_inferred",
    "test_inferred_iid",
    "test_inferred_ood",
}


def assert_same_task(generated, loaded) -> None:
    assert loaded.vocab == generated.vocab
    assert loaded.pad_id == generated.pad_id
    assert torch.equal(loaded.train_tokens, generated.train_tokens)
    assert torch.equal(loaded.train_loss_mask, generated.train_loss_mask)
    assert set(loaded.probes) == set(generated.probes)
    for name, probe in generated.probes.items():
        other = loaded.probes[name]
        assert torch.equal(other.tokens, probe.tokens), name
        assert torch.equal(other.given, probe.given), name
        assert torch.equal(other.scored, probe.scored), name
        assert other.prompt_len == probe.prompt_len, name
        assert other.stages == probe.stages, name


@pytest.mark.parametrize("cot", ["none", "after_relations", "interleaved", "restated"])
def test_folder_round_trip(tmp_path, cot):
    cfg = tiny_task(cot=cot, ood_fraction=0.3, khop=[3])
    counts = write_folder(cfg, tmp_path)
    generated = build_twohop(cfg)
    assert counts["train.json"] == len(generated.train_tokens)
    assert counts["test.json"] == sum(len(p) for p in generated.probes.values())
    assert counts["vocab.json"] == len(generated.vocab)
    loaded = build_twohop(cfg.model_copy(update={"data_dir": str(tmp_path)}))
    assert_same_task(generated, loaded)
    assert loaded.fingerprint() == generated.fingerprint()


def test_folder_with_noise_round_trips(tmp_path):
    cfg = tiny_task(noise_kind="both", noise_ratio=0.4)
    write_folder(cfg, tmp_path)
    loaded = build_twohop(cfg.model_copy(update={"data_dir": str(tmp_path)}))
    assert_same_task(build_twohop(cfg), loaded)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("grokked")
    write_folder(tiny_task(cot="after_relations"), path)
    return path


def test_item_format(folder):
    train = json.loads((folder / "train.json").read_text())
    test = json.loads((folder / "test.json").read_text())
    valid = json.loads((folder / "valid.json").read_text())
    vocab = json.loads((folder / "vocab.json").read_text())
    assert vocab[:2] == ["<e_0>", "<e_1>"] and "<r_7>" in vocab and "</a>" in vocab
    for item in train + test + valid:
        assert item["target_text"].startswith(item["input_text"])
        assert item["target_text"].endswith("</a>")
        assert len(item["target_text"]) > len(item["input_text"])
    # an atomic fact and a two-hop chain with its bridge, as in the explicit-CoT code
    assert train[0]["input_text"].count("<") == 2
    assert train[-1]["input_text"].count("<") == 3 and train[-1]["target_text"].count("<") == 6
    assert all("type" not in item for item in train)
    assert {item["type"] for item in test} == PROBE_TYPES
    ood = [item for item in test if item["type"] == "test_inferred_ood"]
    assert [{k: v for k, v in item.items() if k != "type"} for item in valid] == [
        {k: v for k, v in item.items() if k != "type"} for item in ood
    ]
    assert not list(folder.glob(".*.tmp"))


def copy_folder(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    target.mkdir()
    for path in folder.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        build_twohop(tiny_task(data_dir=str(path)))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_vocab(folder, tmp_path):
    path = copy_folder(folder, tmp_path)
    (path / "vocab.json").unlink()
    assert str(path / "vocab.json") in load_error(path)


def test_unknown_token(folder, tmp_path):
    path = copy_folder(folder, tmp_path)
    train = json.loads((path / "train.json").read_text())
    train[3]["target_text"] = train[3]["target_text"].replace("</a>", "<e_999></a>")
    (path / "train.json").write_text(json.dumps(train))
    message = load_error(path)
    assert str(path / "train.json") in message and "<e_999>" in message and "item 3" in message


def test_malformed_json(folder, tmp_path):
    path = copy_folder(folder, tmp_path)
    (path / "test.json").write_text('[{"input_text": "<e_1>"')
    assert str(path / "test.json") in load_error(path)


def test_target_not_extending_input(folder, tmp_path):
    path = copy_folder(folder, tmp_path)
    train = json.loads((path / "train.json").read_text())
    train[0]["target_text"] = "<e_1><r_2><e_3></a>"
    train[0]["input_text"] = "<e_2><r_2>"
    (path / "train.json").write_text(json.dumps(train))
    message = load_error(path)
    assert str(path / "train.json") in message and "extend" in message


def test_test_item_without_type(folder, tmp_path):
    path = copy_folder(folder, tmp_path)
    test = json.loads((path / "test.json").read_text())
    del test[0]["type"]
    (path / "test.json").write_text(json.dumps(test))
    assert str(path / "test.json") in load_error(path)


def test_data_dir_that_is_not_a_folder(tmp_path):
    assert load_error(tmp_path / "absent").startswith("task.data_dir")


def test_dict_vocab_is_read_in_id_order(tmp_path):
    """A ``vocab.json`` of token -> id gives the ids it says, not the token order (alphabetical)
    or the order the keys are written in."""
    cfg = tiny_task(cot="after_relations")
    write_folder(cfg, tmp_path)
    generated = build_twohop(cfg)
    tokens = json.loads((tmp_path / "vocab.json").read_text())
    # ids: relations and </a> first, then entities backwards; keys written in a third order
    order = [t for t in tokens if not t.startswith("<e_")] + [
        t for t in reversed(tokens) if t.startswith("<e_")
    ]
    assert order != sorted(order)
    mapping = {token: order.index(token) for token in sorted(tokens, key=len)}
    assert list(mapping) != order and list(mapping) != sorted(order)
    (tmp_path / "vocab.json").write_text(json.dumps(mapping))
    loaded = build_twohop(cfg.model_copy(update={"data_dir": str(tmp_path)}))
    assert loaded.vocab == order  # "<pad>" is in the written vocabulary, so nothing is added
    assert loaded.vocab.index("<e_0>") == len(order) - 1
    assert loaded.pad_id == order.index("<pad>")
    # the same text under other ids: every sequence decodes as before
    assert [loaded.decode(row) for row in loaded.train_tokens] == [
        generated.decode(row) for row in generated.train_tokens
    ]
    assert torch.equal(loaded.train_loss_mask, generated.train_loss_mask)
    probe, other = generated.probes["test_inferred_ood"], loaded.probes["test_inferred_ood"]
    assert [loaded.decode(r) for r in other.tokens] == [generated.decode(r) for r in probe.tokens]
    assert other.stages == probe.stages and torch.equal(other.scored, probe.scored)
