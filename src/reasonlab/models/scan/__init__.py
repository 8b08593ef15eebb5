"""Mamba's selective scan: ``selective_scan`` with the semantics and layout of mamba-ssm's
``selective_scan_ref`` (u, delta: batch x d_inner x L; A: d_inner x N; B, C: batch x N x L),
dispatching to one of five implementations. The files, in reading order:

- reference.py: the recurrence as a plain loop over time (the numerical reference), one step of
  it for decoding, and the preparation every scan shares (dtype, shapes, delta, skip and gate);
- chunked.py: the fast pure-PyTorch scan, chunk by chunk with a hand-written backward (the CPU
  default), and the full state sequence for ``hook_ssm_state``;
- compiled.py: the same chunked recurrence with torch.compile'd chunk kernels (opt-in on CPU:
  REASONLAB_SCAN_COMPILE=1);
- threads.py: one intra-op thread per pass, and the chunked scan's batch rows split over threads
  (REASONLAB_SCAN_THREADS);
- parallel.py: a work-efficient parallel scan in pure PyTorch (O(log L) rounds of whole-tensor
  operations) with a hand-written backward, for CUDA tensors when mamba-ssm is absent;
- cuda.py: mamba-ssm's CUDA kernel, when it is installed and the inputs are on a GPU.
"""

from __future__ import annotations

from torch import Tensor

from reasonlab.models.scan.chunked import scan_output, selective_scan_chunked, selective_scan_states
from reasonlab.models.scan.compiled import (
    compiled_scan_applies,
    compiled_scan_available,
    selective_scan_compiled,
)
from reasonlab.models.scan.cuda import cuda_applies, selective_scan_cuda
from reasonlab.models.scan.parallel import selective_scan_parallel
from reasonlab.models.scan.reference import selective_scan_reference, selective_scan_step

__all__ = [
    "METHODS",
    "compiled_scan_available",
    "scan_output",
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_compiled",
    "selective_scan_cuda",
    "selective_scan_parallel",
    "selective_scan_reference",
    "selective_scan_states",
    "selective_scan_step",
    "set_default_method",
]

METHODS = ("auto", "compiled", "chunked", "parallel", "reference", "cuda")
_default_method = "auto"


def set_default_method(method: str) -> str:
    """Set the method ``selective_scan`` uses when none is passed; returns the previous one.

    ``auto``: the CUDA kernel for CUDA tensors when mamba-ssm imports, ``parallel`` for other
    CUDA tensors, else ``compiled`` for CPU inputs of at least COMPILE_MIN_ELEMENTS elements
    and at most COMPILE_MAX_LENGTH steps while compiling works, else ``chunked``;
    ``reference``: the sequential loop (slow; for checks)."""
    global _default_method
    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(METHODS)}")
    previous, _default_method = _default_method, method
    return previous


def selective_scan(
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
    *,
    method: str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Mamba's selective scan with the semantics and layout of mamba-ssm's ``selective_scan_ref``.

    u, delta, z: (batch, d_inner, L); A: (d_inner, N); B, C: (batch, N, L); D, delta_bias:
    (d_inner,). Returns out (batch, d_inner, L) in u's dtype, and with ``return_last_state`` also
    the state after the last step (batch, d_inner, N). ``method`` (default: the module's, see
    ``set_default_method``): auto | compiled | chunked | parallel | reference | cuda."""
    method = method or _default_method
    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(METHODS)}")
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if method == "reference":
        return selective_scan_reference(*args)
    if method == "cuda" or (method == "auto" and cuda_applies(u)):
        return selective_scan_cuda(*args)
    if method == "parallel" or (method == "auto" and u.is_cuda):
        return selective_scan_parallel(*args)
    if method == "compiled" or (method == "auto" and compiled_scan_applies(u, A)):
        return selective_scan_compiled(*args)
    return selective_scan_chunked(*args)
