"""Shared fixtures: tiny configs that build and train in well under a second on a CPU."""

from __future__ import annotations

import copy
import json
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from reasonlab.config import RunConfig, TwoHopTaskConfig, apply_overrides, config_from_dict
from reasonlab.tasks.twohop.graph import Graph

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


# A graph of 40 entities x 4 relations with a few dozen OOD two-hop chains, for trained analyses.
SMALL_TASK: dict[str, Any] = {
    "num_entities": 40,
    "num_relations": 8,
    "out_degree": 4,
    "lam": 1.5,
    "ood_fraction": 0.2,
    "id_test_fraction": 0.05,
}

# Overrides that shrink a ready study's cpu preset to a few seconds (a tiny graph and model).
STUDY_TINY = [
    "task.num_entities=40",
    "task.num_relations=8",
    "task.out_degree=4",
    "task.lam=1.5",
    "task.ood_fraction=0.2",
    "task.id_test_fraction=0.05",
    "task.khop=[]",
    "model.n_layers=1",
    "model.d_model=16",
    "model.n_heads=2",
    "train.steps=6",
    "train.batch_size=32",
    "train.warmup_steps=2",
    "eval.every=3",
    "log.progress=false",
]


def tiny_config(*overrides: str) -> RunConfig:
    """The tiny run config with ``key.sub=value`` overrides (same syntax as ``--set``)."""
    return config_from_dict(apply_overrides(copy.deepcopy(TINY_RUN), list(overrides)))


def tiny_task(**fields: Any) -> TwoHopTaskConfig:
    return TwoHopTaskConfig(**{**TINY_TASK, **fields})


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


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_elapsed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in records]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture
def write_yaml(tmp_path: Path):
    def write(text: str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


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


@pytest.fixture(autouse=True)
def restore_sigterm():
    """``run`` and ``study`` install a SIGTERM handler; every test leaves the process's handler
    as it found it."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def tiny_yaml(write_yaml) -> Path:
    return write_yaml(yaml.safe_dump(TINY_RUN), name="tiny.yaml")


def run_cli(args: list, capsys) -> tuple[int, str, str]:
    """``reasonlab ARGS`` in process: (exit code, stdout, stderr)."""
    from reasonlab.cli import main

    with pytest.raises(SystemExit) as info:
        main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def interrupt_at_loss(monkeypatch, call: int) -> None:
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
