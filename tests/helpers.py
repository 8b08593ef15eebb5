"""What the tests share: tiny configs that build and train in well under a second on a CPU, tiny
models, the command line in process, and readers of run folders.

Every test file imports these with ``from helpers import ...`` (pyproject.toml puts ``tests`` on
pytest's path); ``conftest.py`` holds only fixtures and hooks.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from reasonlab.config import RunConfig, TwoHopTaskConfig, apply_overrides, config_from_dict
from reasonlab.models.gpt import GPT, GPTConfig
from reasonlab.models.mamba import Mamba, MambaConfig
from reasonlab.tasks.twohop.graph import Graph

# ----------------------------------------------------------------------------- configs

# A graph of 30 entities x 4 relations: 120 atomic facts, 12 of them OOD, a few hundred chains.
TINY_TASK: dict[str, Any] = {
    "num_entities": 30,
    "num_relations": 8,
    "out_degree": 4,
    "ood_fraction": 0.1,
    "lam": 1.5,
    "id_test_fraction": 0.05,
    "max_probe_size": 64,
}

TINY_RUN: dict[str, Any] = {
    "task": TINY_TASK,
    "model": {"n_layers": 1, "d_model": 16, "n_heads": 2},
    "train": {"steps": 12, "batch_size": 32, "warmup_steps": 2, "device": "cpu"},
    "eval": {"every": 2, "batch_size": 256},
    "log": {"progress": False},
}
TINY_YAML = yaml.safe_dump(TINY_RUN)


# A graph of 40 entities x 4 relations with a few dozen OOD two-hop chains, for trained analyses.
SMALL_TASK: dict[str, Any] = {
    "num_entities": 40,
    "num_relations": 8,
    "out_degree": 4,
    "lam": 1.5,
    "ood_fraction": 0.2,
    "id_test_fraction": 0.05,
}

# The export tests' two-hop task: 30 entities, big enough for every probe to have items.
EXPORT_TWOHOP_TASK: dict[str, Any] = {
    "kind": "twohop",
    "num_entities": 30,
    "num_relations": 6,
    "out_degree": 3,
    "lam": 1,
    "ood_fraction": 0.3,
    "id_test_fraction": 0.1,
}

# A tiny two-hop graph and model, as --set overrides of a ready study's cpu preset.
TWOHOP_TINY = [
    "task.num_entities=40",
    "task.num_relations=8",
    "task.out_degree=4",
    "task.lam=1.5",
    "task.ood_fraction=0.2",
    "task.id_test_fraction=0.05",
    "model.n_layers=1",
    "model.d_model=16",
    "model.n_heads=2",
    "train.batch_size=32",
]
# Overrides that shrink a two-hop study's cpu preset to a few seconds.
STUDY_TINY = [
    *TWOHOP_TINY,
    "task.khop=[]",
    "train.steps=6",
    "train.warmup_steps=2",
    "eval.every=3",
    "log.progress=false",
]
# Two steps of a ready study (its analysis still runs on them), with the Mamba studies' tiny sizes.
QUICK = ["train.steps=2", "train.warmup_steps=1", "eval.every=2", "log.progress=false"]
MAMBA_TINY = {
    "mamba-copy": [
        "task.num_train=200",
        "task.num_test=6",
        "task.max_length=4",
        "task.test_lengths=[3,6]",
        "model.d_model=16",
    ],
    "mamba-dp": ["task.num_train=200", "task.num_test=6", "model.d_model=16"],
    "mamba-locality": ["task.num_train=200", "task.num_test=6", "model.d_model=8"],
}


def tiny_config(*overrides: str) -> RunConfig:
    """The tiny run config with ``key.sub=value`` overrides (same syntax as ``--set``)."""
    return config_from_dict(apply_overrides(copy.deepcopy(TINY_RUN), list(overrides)))


def tiny_task(**fields: Any) -> TwoHopTaskConfig:
    return TwoHopTaskConfig(**{**TINY_TASK, **fields})


# ----------------------------------------------------------------------------- models


def tiny_gpt(
    vocab_size: int,
    max_seq_len: int,
    *,
    seed: int | None = 0,
    weight_std: float | None = None,
    n_layers: int = 2,
    d_model: int = 16,
    n_heads: int = 2,
    **fields: Any,
) -> GPT:
    """A small GPT in eval mode, built right after ``torch.manual_seed(seed)`` (None: from the
    global generator as it stands). With ``weight_std`` every parameter, biases and norms too,
    is drawn again from N(0, weight_std), so that logits are far from ties."""
    if seed is not None:
        torch.manual_seed(seed)
    config = GPTConfig(
        vocab_size=vocab_size,
        max_seq_len=max_seq_len,
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        **fields,
    )
    model = GPT(config).eval()
    if weight_std is not None:
        with torch.no_grad():
            for param in model.parameters():
                param.normal_(0.0, weight_std)
    return model


def tiny_mamba(
    vocab_size: int,
    *,
    seed: int | None = 0,
    n_layers: int = 2,
    d_model: int = 16,
    d_state: int = 4,
    dt_rank: int | None = None,
    **fields: Any,
) -> Mamba:
    """A small Mamba as built (training mode), right after ``torch.manual_seed(seed)`` (None:
    from the global generator as it stands); ``dt_rank`` None is the config's auto rank,
    ceil(d_model / 16)."""
    if seed is not None:
        torch.manual_seed(seed)
    rank = math.ceil(d_model / 16) if dt_rank is None else dt_rank
    config = MambaConfig(
        vocab_size=vocab_size,
        n_layers=n_layers,
        d_model=d_model,
        d_state=d_state,
        dt_rank=rank,
        **fields,
    )
    return Mamba(config)


# ----------------------------------------------------------------------------- command line


def exit_code(*args: object) -> int:
    """``reasonlab ARGS`` in process; its exit code (what it printed stays in ``capsys``)."""
    from reasonlab.cli import main

    with pytest.raises(SystemExit) as info:
        main([str(arg) for arg in args])
    return info.value.code


def run_cli(args: list, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``reasonlab ARGS`` in process: (exit code, stdout, stderr)."""
    code = exit_code(*args)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    """The message of a refusal, checked to be one ``error: ...`` line with no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: "), err
    return lines[0].removeprefix("error: ")


def interrupt_at_loss(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """Raises KeyboardInterrupt (what Ctrl-C and, in run and study, SIGTERM raise) when the
    training loop computes its loss for the ``call``-th time."""
    import reasonlab.training.loop as train_module

    real, calls = train_module.step_loss, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(train_module, "step_loss", interrupted)


# ----------------------------------------------------------------------------- run folders


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_elapsed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in records]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# ----------------------------------------------------------------------------- two-hop data


def fact_tables(graph: Graph) -> tuple[np.ndarray, np.ndarray]:
    """tail[e, r] (-1 where entity e has no relation r) and ood[e, r], for direct lookups."""
    n_entities, _ = graph.relation_of.shape
    n_relations = int(graph.relation_of.max()) + 1
    tail = np.full((n_entities, n_relations), -1, np.int64)
    ood = np.zeros((n_entities, n_relations), bool)
    rows = np.repeat(np.arange(n_entities), graph.relation_of.shape[1])
    tail[rows, graph.relation_of.ravel()] = graph.tail_of.ravel()
    ood[rows, graph.relation_of.ravel()] = graph.is_ood.ravel()
    return tail, ood


def splits_or_skip(cfg: Any):
    """Two-hop splits of a hypothesis-drawn config; a graph that cannot satisfy the request is
    refused with one of the expected fields, and the example is skipped."""
    from hypothesis import assume

    from reasonlab.config import ConfigError
    from reasonlab.tasks.twohop.generator import build_splits

    try:
        return build_splits(cfg)
    except ConfigError as error:
        assert str(error).split(":")[0] in (
            "task.lam",
            "task.ood_fraction",
            "task.id_test_fraction",
        )
        assume(False)
