"""train.precision: the automatic choice from the machine's units, bf16 autocast on a CPU, and
the same metrics for the same config and seed under bf16 (reasonlab.training.precision)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import reasonlab.training.precision as precision
from helpers import TINY_RUN, read_metrics, without_elapsed
from reasonlab.config import TrainConfig
from reasonlab.training.precision import autocast_context, cpu_has_bf16_units, uses_bf16

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(
    ("precision_value", "units", "device", "expected"),
    [
        ("auto", "1", CPU, True),
        ("auto", "0", CPU, False),
        ("auto", "0", CUDA, True),
        ("fp32", "1", CPU, False),
        ("fp32", "1", CUDA, False),
        ("bf16", "0", CPU, True),
    ],
)
def test_precision_follows_the_config_and_the_machine(
    monkeypatch, precision_value, units, device, expected
):
    monkeypatch.setenv("REASONLAB_CPU_BF16", units)
    assert uses_bf16(TrainConfig(precision=precision_value), device) is expected


def test_detection_falls_back_to_the_cpu_flags(monkeypatch):
    """Without torch's probes the flags of /proc/cpuinfo decide: AMX or AVX512-BF16 yes, AVX2
    alone no."""
    monkeypatch.delenv("REASONLAB_CPU_BF16", raising=False)
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    for flags, expected in (
        ({"avx2", "amx_tile"}, True),
        ({"avx512_bf16"}, True),
        ({"avx2"}, False),
    ):
        monkeypatch.setattr(precision, "_cpuinfo_flags", lambda flags=flags: flags)
        precision._detected_cpu_bf16.cache_clear()
        assert cpu_has_bf16_units() is expected
    precision._detected_cpu_bf16.cache_clear()


def test_detection_agrees_with_torch_when_it_can_tell():
    probes = [
        getattr(torch.cpu, n, None) for n in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    ]
    if not all(callable(p) for p in probes) or "REASONLAB_CPU_BF16" in os.environ:
        pytest.skip("torch cannot tell, or the detection is overridden")
    precision._detected_cpu_bf16.cache_clear()
    assert precision._detected_cpu_bf16() is any(p() for p in probes)


def test_cpu_autocast_runs_matmuls_in_bf16_with_fp32_weights():
    layer = torch.nn.Linear(8, 4)
    with autocast_context(CPU, True):
        out = layer(torch.randn(3, 8))
    assert out.dtype == torch.bfloat16 and layer.weight.dtype == torch.float32
    with autocast_context(CPU, False):
        assert layer(torch.randn(3, 8)).dtype == torch.float32


def _run(tmp_path: Path, name: str, precision_value: str, units: str, hash_seed: int) -> Path:
    config = {**TINY_RUN, "train": {**TINY_RUN["train"], "precision": precision_value}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / name
    env = {**os.environ, "REASONLAB_CPU_BF16": units, "PYTHONHASHSEED": str(hash_seed)}
    result = subprocess.run(
        [sys.executable, "-m", "reasonlab", "run", str(path), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.slow
def test_bf16_on_a_cpu_is_deterministic_and_differs_from_fp32(tmp_path):
    """Two processes with precision bf16 write the same metrics and weights; the summary says
    bf16 and, on a CPU said to lack bf16 units, warns; fp32 gives other weights (autocast was
    on)."""
    first = _run(tmp_path, "bf16-a", "bf16", "0", 1)
    second = _run(tmp_path, "bf16-b", "bf16", "0", 2)
    fp32 = _run(tmp_path, "fp32", "fp32", "0", 1)
    assert without_elapsed(read_metrics(first)) == without_elapsed(read_metrics(second))
    steps = TINY_RUN["train"]["steps"]
    weights = [
        load_file(r / f"checkpoints/step-{steps}.safetensors") for r in (first, second, fp32)
    ]
    model_keys = [k for k in weights[0] if k.startswith("model.")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in model_keys)
    assert any(not torch.equal(weights[0][k], weights[2][k]) for k in model_keys)
    assert all(weights[0][k].dtype == torch.float32 for k in model_keys)
    summary = json.loads((first / "summary.json").read_text())
    assert summary["precision"] == "bf16"
    assert any("without bf16 matrix units" in note for note in summary["notes"])
    assert json.loads((fp32 / "summary.json").read_text())["precision"] == "fp32"
