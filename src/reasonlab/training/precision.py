"""Which precision a run computes in, decided from what the machine offers at run time.

``train.precision``:

- ``auto``: bf16 autocast on CUDA, and on a CPU that has bf16 matrix units (Intel AMX tiles or
  AVX512-BF16), where a bf16 matmul runs several times faster than fp32; fp32 on any other CPU,
  where bf16 would be emulated and slower;
- ``bf16``: bf16 autocast on any device (on a CPU without bf16 units it is slow: said in the
  run's notes);
- ``fp32``: no autocast.

Under autocast the weights and the optimizer's state stay fp32 (master weights), the matmuls run
in bf16, and the losses are computed in fp32 (the tasks cast the outputs before their loss).
``REASONLAB_CPU_BF16=0`` or ``=1`` overrides the detection (tests, or a CPU that misreports).
"""

from __future__ import annotations

import functools
import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

from reasonlab.config import TrainConfig

CPU_BF16_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16")


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


def uses_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether a run with ``cfg`` computes under bf16 autocast on ``device`` (module docstring)."""
    if cfg.precision == "fp32":
        return False
    if cfg.precision == "bf16":
        return True
    return auto_uses_bf16(device)


def auto_uses_bf16(device: torch.device) -> bool:
    """What ``precision: auto`` picks on ``device``: bf16 on CUDA and on a CPU with bf16 units."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16_units())


def precision_notes(cfg: TrainConfig, device: torch.device) -> list[str]:
    """What a run should be told about its precision: bf16 asked for on a CPU without units."""
    if cfg.precision == "bf16" and device.type == "cpu" and not cpu_has_bf16_units():
        return [
            "warning: train.precision bf16 on a CPU without bf16 matrix units (AMX, "
            "AVX512-BF16): bf16 is emulated there and slower than fp32"
        ]
    return []


def autocast_context(device: torch.device, enabled: bool) -> AbstractContextManager[object]:
    """bf16 autocast on ``device`` when ``enabled``, else nothing."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
