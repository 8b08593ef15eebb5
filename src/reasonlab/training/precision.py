"""Which precision a run computes in, decided from what the machine offers at run time.

``train.precision``:

- ``auto``: bf16 autocast on CUDA; on a CPU that has bf16 matrix units (Intel AMX tiles or
  AVX512-BF16) bf16 only where the matmuls are big enough for it to pay (``choose_precision``:
  d_model and tokens per batch at or above CPU_BF16_MIN_WIDTH and CPU_BF16_MIN_TOKENS), else
  fp32; fp32 on any other CPU, where bf16 would be emulated and slower;
- ``bf16``: bf16 autocast on any device (on a CPU without bf16 units it is slow: said in the
  run's notes);
- ``fp32``: no autocast.

Under autocast the weights and the optimizer's state stay fp32 (master weights), the matmuls run
in bf16, and the losses are computed in fp32 (the tasks cast the outputs before their loss).
``REASONLAB_CPU_BF16=0`` or ``=1`` overrides the detection (tests, or a CPU that misreports).
A run records the choice and its reason (``precision_reason`` in summary.json).
"""

from __future__ import annotations

import functools
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from reasonlab.config import RunConfig, TrainConfig

CPU_BF16_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16")

# ``auto`` on a CPU with bf16 units: bf16 only for d_model >= CPU_BF16_MIN_WIDTH and batches of
# at least CPU_BF16_MIN_TOKENS tokens (batch_size x the task's longest sequence). Taken from the
# two shapes measured on a 2-core CPU with AVX512-BF16 (issue 22): a 2 x 64 GPT at batch 64 x 42
# (2688 tokens) stepped in 27 ms in fp32 and 61 ms under bf16 autocast (the casts cost more than
# the narrow matmuls save), the quick 4 x 128 GPT at batch 512 x 5 (2560 tokens) 1.5x faster
# under bf16. Both thresholds sit at the smallest shape measured faster, so shapes between the two
# points stay fp32 (never slower than fp32 is the rule's promise, not the most bf16).
CPU_BF16_MIN_WIDTH = 128
CPU_BF16_MIN_TOKENS = 2560


@dataclass(frozen=True)
class PrecisionChoice:
    """A run's precision and why (``reason`` goes to summary.json's ``precision_reason``)."""

    bf16: bool
    reason: str

    @property
    def name(self) -> str:
        return "bf16" if self.bf16 else "fp32"


def _cpuinfo_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@functools.cache
def _detected_cpu_bf16() -> bool:
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch >= 2.3, private
    found = [getattr(torch.cpu, name, None) for name in probes]
    if all(callable(probe) for probe in found):
        try:
            return any(bool(probe()) for probe in found)  # type: ignore[misc]
        except RuntimeError:
            pass
    return bool(_cpuinfo_flags() & set(CPU_BF16_FLAGS))


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX or AVX512-BF16), read at run
    time; ``REASONLAB_CPU_BF16`` (0 or 1) overrides."""
    override = os.environ.get("REASONLAB_CPU_BF16", "").strip()
    if override in ("0", "1"):
        return override == "1"
    return _detected_cpu_bf16()


def uses_bf16(
    cfg: TrainConfig,
    device: torch.device,
    d_model: int | None = None,
    tokens_per_batch: int | None = None,
) -> bool:
    """Whether a run with ``cfg`` computes under bf16 autocast on ``device`` (module docstring);
    without the shape, ``auto`` on a CPU with bf16 units is bf16 (``choose_precision``)."""
    return choose_precision(cfg, device, d_model, tokens_per_batch).bf16


def choose_precision(
    cfg: TrainConfig,
    device: torch.device,
    d_model: int | None = None,
    tokens_per_batch: int | None = None,
) -> PrecisionChoice:
    """The precision of a run with ``cfg`` on ``device`` and its reason. ``auto`` on a CPU with
    bf16 units weighs the model's width ``d_model`` and the tokens per training batch against
    CPU_BF16_MIN_WIDTH and CPU_BF16_MIN_TOKENS; a size not given is not weighed."""
    if cfg.precision != "auto":
        return PrecisionChoice(cfg.precision == "bf16", f"train.precision: {cfg.precision}")
    if device.type == "cuda":
        return PrecisionChoice(True, "auto: bf16 autocast on CUDA")
    if device.type != "cpu" or not cpu_has_bf16_units():
        return PrecisionChoice(
            False, f"auto: fp32, {device.type} without bf16 matrix units (AMX, AVX512-BF16)"
        )
    units = "auto: {}, a CPU with bf16 matrix units"
    if d_model is not None and d_model < CPU_BF16_MIN_WIDTH:
        return PrecisionChoice(
            False,
            f"{units.format('fp32')} but d_model {d_model} < {CPU_BF16_MIN_WIDTH}: bf16 "
            "autocast's casts would cost more than its matmuls save",
        )
    if tokens_per_batch is not None and tokens_per_batch < CPU_BF16_MIN_TOKENS:
        return PrecisionChoice(
            False,
            f"{units.format('fp32')} but {tokens_per_batch} tokens a batch < "
            f"{CPU_BF16_MIN_TOKENS}: bf16 autocast's casts would cost more than its matmuls save",
        )
    sizes = [
        f"{name} {value} >= {floor}"
        for name, value, floor in (
            ("d_model", d_model, CPU_BF16_MIN_WIDTH),
            ("tokens a batch", tokens_per_batch, CPU_BF16_MIN_TOKENS),
        )
        if value is not None
    ]
    return PrecisionChoice(True, units.format("bf16") + "".join(f", {s}" for s in sizes))


def precision_for_run(config: RunConfig, device: torch.device, seq_len: int) -> PrecisionChoice:
    """``choose_precision`` for a run: its model's width and train.batch_size x ``seq_len`` (the
    task's longest sequence, ``Task.io().max_seq_len``) tokens a batch."""
    width = getattr(config.model, "d_model", None)
    tokens = config.train.batch_size * seq_len
    return choose_precision(config.train, device, width, tokens)


def precision_reason(config: RunConfig, device: torch.device, seq_len: int, bf16: bool) -> str:
    """The reason summary.json records for a run that computes in bf16 (``bf16``) or fp32: the
    rule's (``precision_for_run``), and said so where the caller decided otherwise."""
    choice = precision_for_run(config, device, seq_len)
    if choice.bf16 == bf16:
        return choice.reason
    used = "bf16" if bf16 else "fp32"
    return f"{used}, chosen without the run's shape; the per-shape rule says: {choice.reason}"


def auto_uses_bf16(device: torch.device) -> bool:
    """What ``precision: auto`` picks on ``device`` for a shape not given: bf16 on CUDA and on a
    CPU with bf16 units."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16_units())


def precision_notes(
    cfg: TrainConfig, device: torch.device, choice: PrecisionChoice | None = None
) -> list[str]:
    """What a run should be told about its precision: bf16 asked for on a CPU without units;
    and ``choice`` (the run's, from ``precision_for_run``) where the shape kept ``auto`` at fp32
    on a CPU with bf16 units."""
    if cfg.precision == "bf16" and device.type == "cpu" and not cpu_has_bf16_units():
        return [
            "warning: train.precision bf16 on a CPU without bf16 matrix units (AMX, "
            "AVX512-BF16): bf16 is emulated there and slower than fp32"
        ]
    shape_kept_fp32 = choice is not None and not choice.bf16 and cfg.precision == "auto"
    if shape_kept_fp32 and device.type == "cpu" and cpu_has_bf16_units():
        return [f"precision {choice.reason}"]  # type: ignore[union-attr]
    return []


def autocast_context(device: torch.device, enabled: bool) -> AbstractContextManager[object]:
    """bf16 autocast on ``device`` when ``enabled``, else nothing."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
