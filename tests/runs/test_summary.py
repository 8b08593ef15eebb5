"""The typed run summary and study result (runs/summary.py): the JSON they write is, byte for
byte, the JSON written from plain dicts before them: same keys, same order, same values."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from helpers import tiny_config
from reasonlab.config import ConfigError
from reasonlab.core.files import write_json
from reasonlab.runs.summary import RunSummary, StudyResult, StudyRun


def run_summary_dict(**changes: Any) -> dict[str, Any]:
    """A run's summary as training wrote it from a dict, keys in its order."""
    summary = {
        "status": "interrupted",
        "steps": 20,
        "device": "cpu",
        "precision": "fp32",
        "num_parameters": 4688,
        "data_fingerprint": "52d506650c47f7e0",
        "data_stats": {"atomic_facts": 120, "lam": 1.5},
        "metric": {"label": "exact-match accuracy", "higher_is_better": True},
        "notes": ["continued from step 12: train.steps 12 -> 20"],
        "versions": {"reasonlab": "0.3.0", "torch": "2.13.0"},
        "continued_from": [12],
        "final": {"test_inferred_ood": 0.25, "test_inferred_ood.tail": None, "x": math.nan},
        "best": {"test_inferred_ood": 0.5, "test_inferred_ood.tail": None, "x": math.inf},
        "steps_to_threshold": {"test_inferred_ood": None, "x": 4},
        "step": 14,
        "last_checkpoint": None,
        "wall_s": 1.25,
        "resume": "reasonlab run --resume runs/x",
        "error": "RuntimeError: boom",
    }
    return {**summary, **changes}


def written(path: Path, data: Any) -> bytes:
    write_json(path, data)
    return path.read_bytes()


@pytest.mark.parametrize(
    "data",
    [
        run_summary_dict(),
        # the summary written when training starts: no last_checkpoint, resume or error yet
        {
            k: v
            for k, v in run_summary_dict(status="running").items()
            if k not in ("continued_from", "last_checkpoint", "resume", "error")
        },
        {"status": "failed", "error": "ConfigError: task.lam: too large"},  # a failed trial
    ],
)
def test_run_summary_writes_the_bytes_of_the_dict(tmp_path, data):
    summary = RunSummary.model_validate(data)
    summary.write(tmp_path / "model.json")
    assert (tmp_path / "model.json").read_bytes() == written(tmp_path / "dict.json", data)
    assert RunSummary.read(tmp_path / "model.json").as_json().keys() == data.keys()


def test_fields_set_in_any_order_are_written_in_the_files_order(tmp_path):
    data = run_summary_dict()
    reordered = RunSummary(**dict(reversed(list(data.items()))))
    reordered.write(tmp_path / "model.json")
    assert (tmp_path / "model.json").read_bytes() == written(tmp_path / "dict.json", data)


def test_keys_of_another_version_are_kept_and_bad_values_name_the_file(tmp_path):
    data = {**run_summary_dict(), "added_later": {"a": 1}}
    assert RunSummary.model_validate(data).as_json() == data
    path = tmp_path / "summary.json"
    write_json(path, {"status": "finished"})
    with pytest.raises(ConfigError, match=f"{path}: status: "):
        RunSummary.read(path)


def test_training_writes_its_summary_through_the_model(tmp_path):
    from reasonlab.training.loop import train

    returned = train(tiny_config(), tmp_path / "run")
    path = tmp_path / "run" / "summary.json"
    assert json.loads(path.read_text()) == returned
    assert list(returned) == [
        "status",
        "steps",
        "device",
        "precision",
        "precision_reason",
        "num_parameters",
        "data_fingerprint",
        "data_stats",
        "metric",
        "notes",
        "versions",
        "final",
        "best",
        "steps_to_threshold",
        "step",
        "last_checkpoint",
        "wall_s",
        "config_sha256",
    ]
    assert path.read_bytes() == written(tmp_path / "dict.json", returned)
    RunSummary.read(path).write(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()


def study_dict() -> dict[str, Any]:
    """A study's summary as the study runner wrote it from a dict, keys in its order."""
    config = tiny_config().model_dump(mode="json")
    return {
        "study": "cot-twohop",
        "preset": "cpu",
        "seeds": 1,
        "overrides": ["train.steps=6"],
        "status": "completed",
        "runs": {
            "no-cot-s0": {**run_summary_dict(status="completed"), "config": config},
            "cot-s0": {"status": "failed", "error": "RuntimeError: boom", "config": config},
        },
        "wall_s": 12.5,
        "analysis": {"claims": ["a claim"], "accuracy": {"m1": {"1": 0.5}}, "gap": math.nan},
    }


def test_study_result_writes_the_bytes_of_the_dict(tmp_path):
    data = study_dict()
    StudyResult.model_validate(data).write(tmp_path / "model.json")
    assert (tmp_path / "model.json").read_bytes() == written(tmp_path / "dict.json", data)


def test_a_study_result_built_run_by_run_writes_the_runners_bytes(tmp_path):
    """As experiments/study.py builds it: the header, then each run, then wall time and the
    analysis, saved after every step."""
    data = study_dict()
    result = StudyResult(
        study="cot-twohop",
        preset="cpu",
        seeds=1,
        overrides=["train.steps=6"],
        status="running",
        runs={},  # given, so written even while empty
    )
    for name, run in data["runs"].items():
        result.runs[name] = StudyRun.model_validate(run)
        result.wall_s = 1.0
    result.status, result.wall_s = "completed", 12.5
    result.analysis = {"claims": ["a claim"], "accuracy": {"m1": {1: 0.5}}, "gap": math.nan}
    result.write(tmp_path / "model.json")
    assert (tmp_path / "model.json").read_bytes() == written(tmp_path / "dict.json", data)
    assert result.runs["cot-s0"].final == {} and result.runs["no-cot-s0"].final["x"] != 0
