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
from reasonlab.core.files import atomic_path, make_dir, read_json
from reasonlab.tasks.base import Probe, TaskData, as_probe
from reasonlab.tasks.twohop.encoding import END, PAD, Vocabulary, encode
from reasonlab.tasks.twohop.generator import build_splits, probe_chains

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
    """Writes the dataset of ``cfg`` to ``out``; returns the number of items per file. A config
    with ``data_dir`` trains on that folder, so that folder is what is written."""
    if cfg.data_dir is not None:
        return copy_folder(cfg, out)
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


def read_vocab(path: Path) -> list[str]:
    data = read_json(path, MISSING)
    if isinstance(data, dict):  # token -> id: the ids must be exactly 0 .. n-1
        ids = list(data.values())
        if not all(type(i) is int for i in ids) or sorted(ids) != list(range(len(ids))):
            raise ConfigError(f"{path}: ids must be the integers 0..{len(ids) - 1}, each once")
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


Item = tuple[Any, list[int], int]  # (type or None, token ids, prompt length)

# How a two-hop item looks in each CoT pattern: (kinds of its tokens before </a>, e = entity,
# r = relation; the prompt length). Atomic facts (``ere``, 2) say nothing about the pattern.
PATTERNS = {
    ("erre", 3): "none",
    ("erree", 3): "after_relations",
    ("erere", 2): "interleaved",
    ("errerere", 3): "restated",
}
WRITTEN = {
    "none": "h r1 r2 t",
    "after_relations": "h r1 r2 b t",
    "interleaved": "h r1 b r2 t",
    "restated": "h r1 r2 then h r1 b r2 t",
}


def detect_cot(items: list[Item], vocab: list[str], path: Path) -> str | None:
    """The CoT pattern the folder's two-hop items are written in (None: no two-hop item);
    a folder that mixes patterns is refused."""
    first_seen: dict[str, int] = {}
    for index, (_, tokens, prompt_len) in enumerate(items):
        kinds = "".join(vocab[t][1:2] for t in tokens[:-1])
        pattern = PATTERNS.get((kinds, prompt_len))
        if pattern is not None:
            first_seen.setdefault(pattern, index)
    if len(first_seen) > 1:
        found = ", ".join(f"{WRITTEN[p]} (item {i})" for p, i in first_seen.items())
        raise ConfigError(f"{path}: two-hop items in more than one CoT pattern: {found}")
    return next(iter(first_seen), None)


def _given(tokens: list[int], prompt_len: int, vocab: list[str], cot: str) -> list[int]:
    """With the interleaved pattern the relations inside the completion are given, not
    generated."""
    if cot != "interleaved":
        return []
    return [p for p in range(prompt_len, len(tokens)) if vocab[tokens[p]].startswith("<r_")]


def _parse_items(path: Path, ids: dict[str, int], vocab: list[str]) -> list[Item]:
    """(type or None, token ids, prompt length) per item, checked."""
    data = read_json(path, MISSING)
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a list of items")
    items: list[Item] = []
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
        items.append((item.get("type"), tokens, len(prompt)))
    return items


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


def folder_cot(cfg: TwoHopTaskConfig, folder: Path, vocab: list[str], items: list[Item]) -> str:
    """The pattern to read the folder with: the one its items are written in. A ``task.cot``
    set explicitly to another pattern is refused; an unset one takes the folder's."""
    detected = detect_cot(items, vocab, folder)
    if detected is None:
        return cfg.cot
    if "cot" in cfg.model_fields_set and cfg.cot != detected:
        raise ConfigError(
            f"task.cot: {cfg.cot} ({WRITTEN[cfg.cot]}) contradicts {folder}, whose two-hop "
            f"items are written {detected} ({WRITTEN[detected]}); drop task.cot or set it to "
            f"{detected}"
        )
    return detected


def load_folder(cfg: TwoHopTaskConfig) -> TaskData:
    folder = Path(cfg.data_dir or "")
    if not folder.is_dir():
        raise ConfigError(f"task.data_dir: {folder} is not a folder")
    vocab = read_vocab(folder / "vocab.json")
    ids = {token: i for i, token in enumerate(vocab)}
    pad_id = ids[PAD]
    train_items = _parse_items(folder / "train.json", ids, vocab)
    test_items = _parse_items(folder / "test.json", ids, vocab)
    if not train_items:
        raise ConfigError(f"{folder / 'train.json'}: no training items")
    cot = folder_cot(cfg, folder, vocab, train_items + test_items)
    rows, masks = [], []
    for _, tokens, prompt_len in train_items:
        given = _given(tokens, prompt_len, vocab, cot)
        rows.append(tokens)
        masks.append([prompt_len <= p and p not in given for p in range(len(tokens))])
    groups: dict[str, list] = {}
    for kind, tokens, prompt_len in test_items:
        if not isinstance(kind, str) or not kind:
            raise ConfigError(f"{folder / 'test.json'}: every item needs a type")
        groups.setdefault(kind, []).append(
            (tokens, prompt_len, _given(tokens, prompt_len, vocab, cot))
        )
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
        stages = _stages(items[0][0], items[0][1], vocab, cot)
        if any(_stages(t, p, vocab, cot) != stages for t, p, _ in items):
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
        resolved={"cot": cot},
    )


FOLDER_FILES = ("train.json", "valid.json", "test.json", "vocab.json")


def copy_folder(cfg: TwoHopTaskConfig, out: Path) -> dict[str, int]:
    """``reasonlab data`` of a config that trains on a folder: the folder's files, as the run
    reads them (checked by loading them first); returns the number of items per file."""
    load_folder(cfg)
    folder = Path(cfg.data_dir or "")
    make_dir(out)
    counts = {}
    for filename in FOLDER_FILES:
        source = folder / filename
        if not source.exists():
            continue
        content = source.read_bytes()
        with atomic_path(out / filename) as tmp:
            tmp.write_bytes(content)
        counts[filename] = len(json.loads(content))
    return counts
