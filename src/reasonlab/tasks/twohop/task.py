"""The two-hop task: generated splits encoded in the config's CoT pattern, or a folder in the
Grokked-transformers layout (``task.data_dir``)."""

from __future__ import annotations

import numpy as np
import torch

from reasonlab.config import TwoHopTaskConfig
from reasonlab.tasks.base import TaskData
from reasonlab.tasks.twohop.encoding import Vocabulary, chains_to_probe, chains_to_training, pad_to
from reasonlab.tasks.twohop.folder import load_folder
from reasonlab.tasks.twohop.generator import build_splits, probe_chains, statistics


def build_twohop(cfg: TwoHopTaskConfig) -> TaskData:
    if cfg.data_dir is not None:
        return load_folder(cfg)
    splits = build_splits(cfg)
    vocab = Vocabulary(cfg.num_entities, cfg.num_relations)
    atomic_tokens, atomic_mask = chains_to_training(splits.atomic, cfg.cot, vocab)
    chain_tokens, chain_mask = chains_to_training(splits.train_chains, cfg.cot, vocab)
    length = max(atomic_tokens.shape[1], chain_tokens.shape[1])
    tokens = np.concatenate(
        [pad_to(atomic_tokens, length, vocab.pad_id), pad_to(chain_tokens, length, vocab.pad_id)]
    )
    mask = np.concatenate([pad_to(atomic_mask, length, 0), pad_to(chain_mask, length, 0)])
    mask = mask.astype(bool)
    probes = {
        name: chains_to_probe(chains, cfg.cot, vocab)
        for name, chains in probe_chains(splits, cfg).items()
    }
    notes = []
    if cfg.cot == "interleaved":
        notes.append(
            "CoT pattern h r1 b r2 t: at evaluation the question's r2 is fed after the "
            "model's own bridge; only b and t are generated."
        )
    for k in cfg.khop:
        for split in ("iid", "ood"):
            if f"test_inferred_{k}hop_{split}" not in probes:
                notes.append(f"no {k}-hop {split.upper()} chain exists in this graph")
    return TaskData(
        vocab=vocab.tokens,
        pad_id=vocab.pad_id,
        train_tokens=torch.from_numpy(tokens),
        train_loss_mask=torch.from_numpy(mask),
        probes=probes,
        stats=statistics(splits),
        notes=notes,
    )
