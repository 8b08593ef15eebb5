"""mamba-ssm's CUDA selective scan, used when mamba-ssm is installed and the inputs are CUDA
tensors (``auto`` picks it then); same arguments and results as ``selective_scan_reference``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


@functools.lru_cache(maxsize=1)
def mamba_ssm_kernel() -> Callable[..., Any] | None:
    """mamba-ssm's ``selective_scan_fn``, or None when mamba-ssm (or its CUDA build) is absent."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except (ImportError, OSError):  # not installed, or built against another CUDA / torch
        return None
    return selective_scan_fn


def cuda_applies(u: Tensor) -> bool:
    """Whether ``auto`` runs mamba-ssm's kernel on inputs like u."""
    # The kernel computes in float32 at most; float64 inputs stay on the chunked path.
    return u.is_cuda and u.dtype != torch.float64 and mamba_ssm_kernel() is not None


def selective_scan_cuda(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """mamba-ssm's kernel; a RuntimeError unless u is a CUDA tensor and mamba-ssm imports."""
    kernel = mamba_ssm_kernel()
    if kernel is None or not u.is_cuda:
        raise RuntimeError("method 'cuda' needs CUDA tensors and mamba-ssm installed")
    return kernel(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
