"""Sizes have bounds: every count of the schema has a stated upper limit, a model that would not
fit in memory is refused before anything is allocated, names have a length limit, and an error
message quotes at most a couple of hundred characters of what the user gave."""

from __future__ import annotations

from pathlib import Path
from typing import get_args, get_origin

import pytest
import torch
import yaml

import reasonlab.models.build as build_module
from helpers import TINY_RUN, TINY_YAML, one_line_error, run_cli, tiny_config
from reasonlab.config import (
    CopyTaskConfig,
    DPTaskConfig,
    GPTModelConfig,
    MambaModelConfig,
    RunConfig,
    TwoHopTaskConfig,
    section_models,
)
from reasonlab.config.limits import MAX_STEPS, shown
from reasonlab.tasks import build_task
from reasonlab.training.loop import build_task_model

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def cli_error(capsys, *args: object) -> str:
    code, _, err = run_cli(list(args), capsys)
    message = one_line_error(err)
    assert code == 2, err
    return message


def every_section_class() -> list[type]:
    return [model for field in RunConfig.model_fields.values() for model in
            section_models(field.annotation)]  # fmt: skip


def test_train_steps_past_its_limit_is_refused(capsys):
    message = cli_error(capsys, "config", "--set", "train.steps=9999999999999999999999")
    assert message.startswith("train.steps: ") and f"{MAX_STEPS}" in message
    assert cli_error(capsys, "config", "--set", f"train.steps={MAX_STEPS + 1}").startswith(
        "train.steps: "
    )
    code, out, _ = run_cli(["config", "--set", f"train.steps={MAX_STEPS}"], capsys)
    assert code == 0 and f"steps: {MAX_STEPS}" in out


def test_every_count_of_the_schema_has_an_upper_limit_stated_in_the_reference():
    unbounded = []
    for model in every_section_class():
        for name, field in model.model_fields.items():
            if int not in (field.annotation, *get_args(field.annotation)):
                continue
            if name == "dt_rank" or get_origin(field.annotation) is list:
                continue  # bounded by their validators, below
            if not any(getattr(item, "le", None) is not None for item in field.metadata):
                unbounded.append(f"{model.__name__}.{name}")
    assert not unbounded, f"counts without an upper limit: {unbounded}"
    with pytest.raises(ValueError, match="dt_rank"):
        MambaModelConfig(dt_rank=10**9)
    with pytest.raises(ValueError, match="test_lengths"):
        CopyTaskConfig(test_lengths=[5, 10**9])
    with pytest.raises(ValueError, match="test_lengths"):
        DPTaskConfig(test_lengths=[10**6])
    with pytest.raises(ValueError, match="khop"):
        TwoHopTaskConfig(khop=[3, 10**6])
    rows = {line.split("|")[1].strip(): line for line in DOCS.read_text().splitlines()
            if line.startswith("| `")}  # fmt: skip
    assert "at most 100,000,000" in rows["`train.steps`"]
    assert "at most 65,536" in rows["`model.d_model`"]
    assert "at most 200 characters" in rows["`name`"]


def test_a_width_of_two_to_the_32_is_exit_2_not_a_traceback(write_yaml, tmp_path, capsys):
    data = {**TINY_RUN, "model": {"n_layers": 1, "d_model": 4294967296, "n_heads": 1}}
    out = tmp_path / "run"
    message = cli_error(capsys, "run", write_yaml(yaml.safe_dump(data)), "--out", out)
    assert message.startswith("model.d_model: ")
    assert not out.exists()


def test_a_model_beyond_memory_is_refused_before_allocation_with_its_bytes(
    tiny_yaml, tmp_path, capsys, monkeypatch
):
    overrides = ["model.d_model=32", "model.n_layers=2"]
    config = tiny_config(*overrides)
    needed = build_task_model(config.model, build_task(config.task)).num_parameters() * 16
    args = [tiny_yaml, *(part for text in overrides for part in ("--set", text))]

    monkeypatch.setattr(build_module, "memory_bytes", lambda device=None: needed - 1)
    allocated: list[int] = []
    monkeypatch.setattr(torch.nn.Linear, "reset_parameters", lambda self: allocated.append(1))
    out = tmp_path / "too-big"
    message = cli_error(capsys, "run", *args, "--out", out)
    assert message.startswith("model.d_model: ")
    assert f"{needed:,} bytes" in message and "AdamW" in message  # 4 x 4 bytes a parameter
    assert not allocated and not out.exists()
    monkeypatch.undo()
    monkeypatch.setattr(build_module, "memory_bytes", lambda device=None: needed)
    assert run_cli(["run", *args, "--out", out], capsys)[0] == 0


@pytest.mark.parametrize(
    "config",
    [
        GPTModelConfig(n_layers=2, d_model=32, n_heads=4),
        GPTModelConfig(n_layers=1, d_model=16, n_heads=2, d_mlp=24, positions="rotary"),
        GPTModelConfig(n_layers=1, d_model=16, n_heads=2, attention="augmented"),
        GPTModelConfig(n_layers=1, d_model=16, n_heads=2, tie_embeddings=True),
        MambaModelConfig(n_layers=2, d_model=24, d_state=8, expand=3, d_conv=3),
        MambaModelConfig(n_layers=1, d_model=16, dt_rank=5, tie_embeddings=True),
    ],
    ids=lambda config: config.describe(),
)
def test_the_memory_estimate_counts_the_built_model(config):
    for vocab, length, io in [(37, 12, {}), (0, 9, {"input_dim": 5, "output_dim": 1})]:
        if config.tie_embeddings and io:
            continue
        model = build_module.build_model(config, vocab, length, **io)
        estimate = build_module.estimate_parameters(config, vocab, length, **io)
        assert estimate == model.num_parameters()  # a count: exact
    assert build_module.memory_bytes() > 2**20  # this machine's memory is known


def test_a_ten_megabyte_name_is_refused_and_nothing_is_written(write_yaml, tmp_path, capsys):
    path = write_yaml(TINY_YAML + "name: " + "x" * 10_000_000 + "\n")
    out = tmp_path / "run"
    message = cli_error(capsys, "run", path, "--out", out)
    assert message.startswith("name: ") and "200" in message and len(message) < 300
    assert not out.exists()


@pytest.mark.parametrize("key", ["train.device", "model.kind", "task.kind", "model.dt_rank"])
def test_an_error_message_cuts_a_long_value(capsys, key):
    long = "z" * 50_000
    extra = ["--set", "model.kind=mamba"] if key == "model.dt_rank" else []
    message = cli_error(capsys, "config", *extra, "--set", f"{key}={long}")
    assert message.startswith(key) and "50,000 chars" in message and len(message) < 600


def test_a_deep_self_sharing_value_is_shown_in_a_few_hundred_characters():
    bomb: list = [1] * 9
    for _ in range(12):  # 9^13 values if it were expanded
        bomb = [bomb] * 9
    text = shown(bomb)  # bounded work: expanded, it would never end
    assert len(text) < 400 and "(9 items)" in text
    assert shown("y" * 10_000) == repr("y" * 200) + "... (10,000 chars)"
    assert shown(10**5000).startswith("an integer of about 5,00")
