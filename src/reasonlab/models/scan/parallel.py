"""The parallel selective scan in pure PyTorch, for GPUs without mamba-ssm: the same arguments
and results as ``selective_scan_reference``.

The recurrence h[t] = a[t] * h[t-1] + b[t] (a = exp(delta * A), b = delta * u * B) is a scan
with the associative operator (a1, b1) then (a2, b2) = (a1 * a2, a2 * b1 + b2). ``linear_scan_``
runs it in place, work-efficiently, in 2 * ceil(log2 L) rounds of whole-tensor operations (so a
GPU runs O(log L) kernels instead of L):

- up: each pair of neighbours (2i, 2i + 1) is combined into the odd element, which halves the
  problem; the odd elements (a strided view) are scanned the same way, recursively;
- down: the odd elements now hold their prefixes h[2i + 1]; each even element 2i (i >= 1) takes
  h[2i] = a[2i] * h[2i - 1] + b[2i] from its left neighbour.

Any length works (an odd last element is finished in the down step). Only products of decays in
[0, 1] are formed, never their inverses, so nothing overflows however large delta * |A| is (a
log-space cumulative sum would need exp(-sum delta * A): see chunked.py).

The backward pass is written by hand (``_ParallelScan``): the adjoint lambda[t] = dLoss/dh[t] obeys
lambda[t] = g[t] + a[t + 1] * lambda[t + 1], the same scan run backwards in time, and from it
dLoss/db = lambda and dLoss/d(delta * A) = lambda * a * h[t - 1]. The decays are recomputed in
the backward pass instead of saved; the state sequence (batch x L x d_inner x N) is saved, as
mambapy's scan also holds it.

Inside, time is the second axis: delta, u (b, L, d); B, C (b, L, N); a, b, h (b, L, d, N).
On a CPU the chunked scan is faster (docs/BENCHMARKS.md), so ``auto`` uses this scan only for
CUDA tensors when mamba-ssm's kernel is absent; ``method="parallel"`` forces it anywhere.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from reasonlab.models.scan.reference import (
    check_shapes,
    compute_dtype,
    prepare_delta,
    skip_and_gate,
)


def linear_scan_(a: Tensor, b: Tensor) -> Tensor:
    """In place: b[:, t] <- h[t] = a[:, t] * h[t - 1] + b[:, t] (h[-1] = 0) along dim 1; a is
    overwritten with partial products of itself. Returns b."""
    length = a.shape[1]
    if length == 1:
        return b
    pairs = length // 2
    a_even, a_odd = a[:, 0 : 2 * pairs : 2], a[:, 1 : 2 * pairs : 2]
    b_even, b_odd = b[:, 0 : 2 * pairs : 2], b[:, 1 : 2 * pairs : 2]
    b_odd.addcmul_(a_odd, b_even)  # combine each pair into its odd element (uses a_odd first)
    a_odd.mul_(a_even)
    linear_scan_(a_odd, b_odd)  # the odd elements now hold h[1], h[3], ...
    if length > 2:  # h[2i] = a[2i] h[2i - 1] + b[2i] for i >= 1 (a[2i] is still the original)
        b[:, 2:length:2].addcmul_(a[:, 2:length:2], b[:, 1 : length - 1 : 2])
    return b


def _no_autocast(like: Tensor) -> torch.autocast:
    """The scan's products and sums run in its compute dtype (float32 at least, as mamba-ssm's
    kernel) also inside a bf16 autocast region, which would run its matmuls in bf16."""
    return torch.autocast(like.device.type, enabled=False)


def _decays(delta: Tensor, A: Tensor) -> Tensor:
    """a = exp(delta * A): (b, L, d, N) from delta (b, L, d) and A (d, N)."""
    return torch.exp(delta[..., None] * A)


class _ParallelScan(torch.autograd.Function):
    """y[t] = sum_n C[t, n] h[t, n] and the last state.

    delta (biased, softplus-ed), u: (b, L, d); A: (d, N); B, C: (b, L, N); one float dtype.
    Returns y (b, L, d) and the last state (b, d, N)."""

    @staticmethod
    def forward(
        ctx: Any, delta: Tensor, u: Tensor, A: Tensor, B: Tensor, C: Tensor
    ) -> tuple[Tensor, Tensor]:
        with _no_autocast(u):
            return _ParallelScan._forward(ctx, delta, u, A, B, C)

    @staticmethod
    def _forward(
        ctx: Any, delta: Tensor, u: Tensor, A: Tensor, B: Tensor, C: Tensor
    ) -> tuple[Tensor, Tensor]:
        drive_scale = delta * u  # (b, L, d)
        states = drive_scale[..., None] * B[:, :, None, :]  # b[t], scanned in place into h[t]
        linear_scan_(_decays(delta, A), states)
        y = torch.matmul(states, C[..., None])[..., 0]  # (b, L, d)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(delta, u, A, B, C, states)
        return y, states[:, -1].clone()

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor | None, grad_last: Tensor | None):  # type: ignore[override]
        with _no_autocast(ctx.saved_tensors[0]):
            return _ParallelScan._backward(ctx, grad_y, grad_last)

    @staticmethod
    def _backward(ctx: Any, grad_y: Tensor | None, grad_last: Tensor | None):
        delta, u, A, B, C, states = ctx.saved_tensors
        if grad_y is None:
            adjoint = torch.zeros_like(states)
            grad_C = torch.zeros_like(C)
        else:
            adjoint = grad_y[..., None] * C[:, :, None, :]  # dLoss/dh[t] from y[t] alone
            grad_C = torch.einsum("bldn,bld->bln", states, grad_y)
        if grad_last is not None:
            adjoint[:, -1] += grad_last
        decays = _decays(delta, A)
        # lambda[t] = g[t] + a[t + 1] lambda[t + 1]: a forward scan over reversed time, whose
        # decay at reversed step s is a[L - s] (the first one multiplies h = 0: any value does).
        reversed_decays = decays.flip(1)
        reversed_decays[:, 1:] = reversed_decays[:, :-1].clone()
        adjoint = linear_scan_(reversed_decays, adjoint.flip(1)).flip(1)
        drive_scale = delta * u
        grad_drive_scale = torch.matmul(adjoint, B[..., None])[..., 0]  # (b, L, d)
        grad_B = torch.einsum("bldn,bld->bln", adjoint, drive_scale)
        # dLoss/d(delta * A) = lambda[t] * a[t] * h[t - 1]
        grad_log_decay = adjoint.mul_(decays)
        grad_log_decay[:, 1:].mul_(states[:, :-1])
        grad_log_decay[:, 0].zero_()
        grad_A = torch.einsum("bldn,bld->dn", grad_log_decay, delta)
        grad_delta = (grad_log_decay * A).sum(-1)  # (b, L, d)
        grad_delta.addcmul_(grad_drive_scale, u)
        grad_u = grad_drive_scale * delta
        return grad_delta, grad_u, grad_A, grad_B, grad_C


def selective_scan_parallel(
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
    """The parallel scan (any device; ``auto``'s choice for CUDA tensors without mamba-ssm).
    Same arguments and results as ``selective_scan_reference``."""
    check_shapes(u, delta, A, B, C)
    dtype = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    delta_ = prepare_delta(delta, delta_bias, delta_softplus, dtype).transpose(1, 2)
    u_, B_, C_ = (x.to(dtype).transpose(1, 2) for x in (u, B, C))  # (b, L, k)
    y, last_state = _ParallelScan.apply(delta_, u_, A.to(dtype), B_, C_)
    out = skip_and_gate(y.transpose(1, 2), u, D, z, u.dtype)
    return (out, last_state) if return_last_state else out
