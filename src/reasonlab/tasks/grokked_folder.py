"""The dataset folder layout of the Grokked-transformers / explicit-CoT code, both ways.

``train.json`` (training items), ``valid.json`` (the OOD two-hop set), ``test.json`` (items with a
``type``), ``vocab.json`` (the token list). Each item has ``input_text`` (the question) and
``target_text`` (question + completion), tokens written ``<e_12><r_3>...</a>``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reasonlab.config import ConfigError, TwoHopTaskConfig
from reasonlab.io import atomic_path, make_dir, read_json
from reasonlab.tasks.base import Probe, TaskData, as_probe
from reasonlab.tasks.twohop import (
    END,
    PAD,
    Vocabulary,
    build_splits,
    encode,
    probe_chains,
)

TOKEN = re.compile(r"<[^<>]+>")
MISSING = "missing (expected the Grokked dataset layout)"


# ----------------------------------------------------------------------------- writing


def _items(tokens: np.ndarray, prompt_len: int, vocab: list[str], kind: str | None) -> list[dict]:
    text = np.array(vocab, dtype=object)[tokens]
    items = []
    for row in text:
        item: dict[str, Any] = {
            "input_text": "".join(row[:prompt_len]),
            "target_text": "".join(row),
        }
        if kind is not None:
            item["type"] = kind
        items.append(item)
    return items


def write_folder(cfg: TwoHopTaskConfig, out: Path) -> dict[str, int]:
    """Writes the dataset of ``cfg`` to ``out``; returns the number of items per file."""
    splits = build_splits(cfg)
    vocab = Vocabulary(cfg.num_entities, cfg.num_relations)
    train: list[dict] = []
    for chains in (splits.atomic, splits.train_chains):
        tokens, plan = encode(chains, cfg.cot, vocab)
        train += _items(tokens, plan.prompt_len, vocab.tokens, None)
    test: list[dict] = []
    valid: list[dict] = []
    for name, chains in probe_chains(splits, cfg).items():
        tokens, plan = encode(chains, cfg.cot, vocab)
        items = _items(tokens, plan.prompt_len, vocab.tokens, name)
        test += items
        if name == "test_inferred_ood":
            valid = [dict(item) for item in items]
    make_dir(out)
    files = {
        "train.json": train,
        "valid.json": valid,
        "test.json": test,
        "vocab.json": vocab.tokens,
    }
    for filename, content in files.items():
        with atomic_path(out / filename) as tmp:
            tmp.write_text(json.dumps(content))
    return {name: len(content) for name, content in files.items()}


# ----------------------------------------------------------------------------- reading


def _read_vocab(path: Path) -> list[str]:
    data = read_json(path, MISSING)
    if isinstance(data, dict):  # token -> id
        data = [token for token, _ in sorted(data.items(), key=lambda item: item[1])]
    if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
        raise ConfigError(f"{path}: expected a list of tokens")
    if END not in data:
        raise ConfigError(f"{path}: the end token {END} is missing")
    if len(set(data)) != len(data):
        raise ConfigError(f"{path}: repeated tokens")
    return data if PAD in data else [*data, PAD]


def _tokenize(text: Any, ids: dict[str, int], where: str) -> list[int]:
    if not isinstance(text, str):
        raise ConfigError(f"{where}: expected a string")
    tokens = TOKEN.findall(text)
    if "".join(tokens) != text:
        raise ConfigError(f"{where}: text outside <...> tokens")
    try:
        return [ids[token] for token in tokens]
    except KeyError as error:
        raise ConfigError(f"{where}: unknown token {error.args[0]}") from None


def _parse_items(path: Path, ids: dict[str, int], vocab: list[str], cot: str):
    """Yields (type or None, token ids, prompt length, given positions) per item."""
    data = read_json(path, MISSING)
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a list of items")
    for index, item in enumerate(data):
        where = f"{path} item {index}"
        if not isinstance(item, dict) or "input_text" not in item or "target_text" not in item:
            raise ConfigError(f"{where}: needs input_text and target_text")
        prompt = _tokenize(item["input_text"], ids, f"{where} input_text")
        tokens = _tokenize(item["target_text"], ids, f"{where} target_text")
        if tokens[: len(prompt)] != prompt or len(tokens) <= len(prompt):
            raise ConfigError(f"{where}: target_text must extend input_text")
        if vocab[tokens[-1]] != END:
            raise ConfigError(f"{where}: target_text must end with {END}")
        # With the interleaved pattern the relations inside the completion are given, not generated.
        given = [
            p
            for p in range(len(prompt), len(tokens))
            if cot == "interleaved" and vocab[tokens[p]].startswith("<r_")
        ]
        yield item.get("type"), tokens, len(prompt), given


def _stages(tokens: list[int], prompt_len: int, vocab: list[str], cot: str) -> dict[str, int]:
    if cot == "none":
        return {}
    entities = [p for p in range(prompt_len, len(tokens)) if vocab[tokens[p]].startswith("<e_")]
    if cot == "restated":
        entities = entities[1:]  # the restated head
    if len(entities) < 2:
        return {}
    bridges = entities[:-1]
    names = ["bridge"] if len(bridges) == 1 else [f"bridge{i + 1}" for i in range(len(bridges))]
    return {**dict(zip(names, bridges, strict=True)), "tail": entities[-1]}


def _stack(rows: list[list[int]], pad_id: int) -> np.ndarray:
    out = np.full((len(rows), max(map(len, rows))), pad_id, np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def load_folder(cfg: TwoHopTaskConfig) -> TaskData:
    folder = Path(cfg.data_dir or "")
    if not folder.is_dir():
        raise ConfigError(f"task.data_dir: {folder} is not a folder")
    vocab = _read_vocab(folder / "vocab.json")
    ids = {token: i for i, token in enumerate(vocab)}
    pad_id = ids[PAD]
    rows, masks = [], []
    for _, tokens, prompt_len, given in _parse_items(folder / "train.json", ids, vocab, cfg.cot):
        mask = [prompt_len <= p and p not in given for p in range(len(tokens))]
        rows.append(tokens)
        masks.append(mask)
    if not rows:
        raise ConfigError(f"{folder / 'train.json'}: no training items")
    groups: dict[str, list] = {}
    for kind, tokens, prompt_len, given in _parse_items(folder / "test.json", ids, vocab, cfg.cot):
        if not isinstance(kind, str) or not kind:
            raise ConfigError(f"{folder / 'test.json'}: every item needs a type")
        groups.setdefault(kind, []).append((tokens, prompt_len, given))
    probes: dict[str, Probe] = {}
    for kind, items in groups.items():
        if len({prompt_len for _, prompt_len, _ in items}) != 1:
            raise ConfigError(
                f"{folder / 'test.json'}: items of type {kind} differ in prompt length"
            )
        tokens = _stack([t for t, _, _ in items], pad_id)
        given = np.zeros(tokens.shape, bool)
        for i, (_, _, positions) in enumerate(items):
            given[i, positions] = True
        stages = _stages(items[0][0], items[0][1], vocab, cfg.cot)
        if any(_stages(t, p, vocab, cfg.cot) != stages for t, p, _ in items):
            stages = {}
        probes[kind] = as_probe(
            torch.from_numpy(tokens), items[0][1], torch.from_numpy(given), pad_id, stages
        )
    train_tokens = _stack(rows, pad_id)
    train_mask = np.zeros(train_tokens.shape, bool)
    for i, mask in enumerate(masks):
        train_mask[i, : len(mask)] = mask
    return TaskData(
        vocab=vocab,
        pad_id=pad_id,
        train_tokens=torch.from_numpy(train_tokens),
        train_loss_mask=torch.from_numpy(train_mask),
        probes=probes,
        stats={"train_items": len(rows), "source": str(folder)},
    )
