"""``precision: auto`` per model and batch shape (training.precision.choose_precision): the rule's
decisions at the shapes issue 22 measured (REASONLAB_CPU_BF16=1 pretends bf16 units), explicit
bf16 and fp32 untouched by the shape, CUDA always bf16, and the choice with its reason in a
run's summary.json."""

from __future__ import annotations

import json

import pytest
import torch

import reasonlab.training.precision as precision
from helpers import tiny_config
from reasonlab.config import TrainConfig
from reasonlab.training.loop import train
from reasonlab.training.precision import (
    CPU_BF16_MIN_TOKENS,
    CPU_BF16_MIN_WIDTH,
    choose_precision,
    precision_for_run,
    precision_notes,
    precision_reason,
)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
AUTO = TrainConfig(precision="auto")

# (what, d_model, batch, tokens per sequence, bf16 on a CPU with bf16 units), as measured on a
# 2-core CPU with AVX512-BF16 (issue 22).
MEASURED = [
    ("2 x 64 GPT at 64 x 42: fp32 27 ms, bf16 61 ms", 64, 64, 42, False),
    ("2 x 64 Mamba at 64 x 42", 64, 64, 42, False),
    ("quick 4 x 128 GPT at 512 x 5: bf16 1.5x faster", 128, 512, 5, True),
    ("quick CoT study, 4 x 128 at 512 x 6", 128, 512, 6, True),
    ("paper 8 x 768 at 512 x 6", 768, 512, 6, True),
    ("4 x 128 at a small batch, 32 x 5", 128, 32, 5, False),
]


@pytest.mark.parametrize(("what", "width", "batch", "seq_len", "bf16"), MEASURED)
def test_rule_on_a_cpu_with_bf16_units(monkeypatch, what, width, batch, seq_len, bf16):
    monkeypatch.setenv("REASONLAB_CPU_BF16", "1")
    choice = choose_precision(AUTO, CPU, width, batch * seq_len)
    assert choice.bf16 is bf16, what
    assert choice.reason.startswith(f"auto: {choice.name}")
    if not bf16:
        assert "<" in choice.reason  # names the size that kept it at fp32


def test_thresholds_are_inclusive(monkeypatch):
    monkeypatch.setenv("REASONLAB_CPU_BF16", "1")
    assert choose_precision(AUTO, CPU, CPU_BF16_MIN_WIDTH, CPU_BF16_MIN_TOKENS).bf16
    assert not choose_precision(AUTO, CPU, CPU_BF16_MIN_WIDTH - 1, CPU_BF16_MIN_TOKENS).bf16
    assert not choose_precision(AUTO, CPU, CPU_BF16_MIN_WIDTH, CPU_BF16_MIN_TOKENS - 1).bf16
    # Without the shape the old machine-only answer stands (callers that do not know it).
    assert choose_precision(AUTO, CPU).bf16


@pytest.mark.parametrize(("what", "width", "batch", "seq_len", "bf16"), MEASURED)
def test_cpu_without_bf16_units_stays_fp32_and_cuda_is_bf16(
    monkeypatch, what, width, batch, seq_len, bf16
):
    monkeypatch.setenv("REASONLAB_CPU_BF16", "0")
    choice = choose_precision(AUTO, CPU, width, batch * seq_len)
    assert not choice.bf16 and "without bf16 matrix units" in choice.reason
    assert choose_precision(AUTO, CUDA, width, batch * seq_len).bf16


@pytest.mark.parametrize("units", ["0", "1"])
@pytest.mark.parametrize("device", [CPU, CUDA])
@pytest.mark.parametrize("width", [16, 64, 128, 768])
def test_explicit_precision_ignores_the_shape(monkeypatch, units, device, width):
    monkeypatch.setenv("REASONLAB_CPU_BF16", units)
    for value, bf16 in (("bf16", True), ("fp32", False)):
        choice = choose_precision(TrainConfig(precision=value), device, width, 64 * width)
        assert choice.bf16 is bf16 and choice.reason == f"train.precision: {value}"


def test_run_precision_reads_the_width_and_the_batch_of_a_run(monkeypatch):
    monkeypatch.setenv("REASONLAB_CPU_BF16", "1")
    quick = tiny_config("model.d_model=128", "model.n_heads=4", "train.batch_size=512")
    assert precision_for_run(quick, CPU, seq_len=5).bf16
    assert not precision_for_run(quick, CPU, seq_len=4).bf16  # 2048 tokens a batch
    mamba = tiny_config("model.kind=mamba", "model.d_model=64", "train.batch_size=64")
    assert "d_model 64 < 128" in precision_for_run(mamba, CPU, seq_len=42).reason


def test_a_shape_kept_at_fp32_is_a_note_only_where_bf16_units_exist(monkeypatch):
    monkeypatch.setenv("REASONLAB_CPU_BF16", "1")
    choice = choose_precision(AUTO, CPU, 64, 4096)
    assert precision_notes(AUTO, CPU, choice) == [f"precision {choice.reason}"]
    assert precision_notes(AUTO, CPU, choose_precision(AUTO, CPU, 128, 4096)) == []
    monkeypatch.setenv("REASONLAB_CPU_BF16", "0")
    assert precision_notes(AUTO, CPU, choose_precision(AUTO, CPU, 64, 4096)) == []


def test_reason_says_when_the_caller_decided_otherwise(monkeypatch):
    monkeypatch.setenv("REASONLAB_CPU_BF16", "1")
    config = tiny_config()  # d_model 16
    assert precision_reason(config, CPU, 6, bf16=False) == precision_for_run(config, CPU, 6).reason
    other = precision_reason(config, CPU, 6, bf16=True)
    assert other.startswith("bf16, chosen without the run's shape") and "d_model 16" in other


@pytest.mark.parametrize(
    ("value", "units", "expected", "reason_start"),
    [
        ("auto", "0", "fp32", "auto: fp32, cpu without bf16 matrix units"),
        ("fp32", "1", "fp32", "train.precision: fp32"),
        ("auto", "1", None, None),  # the tiny model is narrow: fp32 by the rule
    ],
)
def test_summary_records_the_precision_and_its_reason(
    monkeypatch, tmp_path, value, units, expected, reason_start
):
    monkeypatch.setenv("REASONLAB_CPU_BF16", units)
    precision._detected_cpu_bf16.cache_clear()
    config = tiny_config(f"train.precision={value}", "train.steps=2", "eval.every=2")
    train(config, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    reason = summary["precision_reason"]
    assert summary["precision"] in ("bf16", "fp32") and summary["precision"] in reason
    if expected is not None:
        assert summary["precision"] == expected and reason.startswith(reason_start)
    else:
        assert "d_model 16 < 128" in reason
