"""The compiled selective scan (CPU): the chunked recurrence with torch.compile'd chunk kernels,
COMPILED_CHUNK steps per call of a kernel that keeps the chunk's states in registers; same
arguments and results as ``selective_scan_reference``.

Opt-in: REASONLAB_SCAN_COMPILE=1 makes it ``auto``'s CPU choice from COMPILE_MIN_ELEMENTS
elements of batch x d_inner x N x L on, up to COMPILE_MAX_LENGTH steps, while torch.compile works.
Its first call per shape compiles for 10-30 s (later processes load the kernels from torch's disk
cache); if compiling fails it warns once and ``auto`` goes back to the chunked scan. It runs on
one intra-op thread of its own, without row threads.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from reasonlab.models.scan.reference import check_shapes, compute_dtype
from reasonlab.models.scan.threads import with_scan_threads

# The compiled scan (selective_scan_compiled): whether ``auto`` uses it on CPU (environment:
# REASONLAB_SCAN_COMPILE=1 turns it on; off by default, because it gained only 1.2-1.3x over the
# chunked scan at the COPY shape (before that scan's rework, which made it faster still) while
# every new (batch, d_inner, N) shape costs a 10-35 s compile,
# and evaluation batches add shapes), for inputs of at least COMPILE_MIN_ELEMENTS elements of
# batch x d_inner x N x L (below that the eager scan takes milliseconds, less than a compile)
# and at most COMPILE_MAX_LENGTH steps (at L = 1024 the chunked scan measured faster, with less
# memory: docs/BENCHMARKS.md), with COMPILED_CHUNK steps unrolled per kernel call (4 measured
# fastest).
COMPILE = os.environ.get("REASONLAB_SCAN_COMPILE", "0") == "1"
COMPILE_MIN_ELEMENTS = 1 << 20
COMPILE_MAX_LENGTH = 512
COMPILED_CHUNK = 4


def compiled_scan_applies(u: Tensor, A: Tensor) -> bool:
    """auto picks the compiled scan for large enough CPU inputs of at most COMPILE_MAX_LENGTH
    steps, while compiling works."""
    return (
        u.device.type == "cpu"
        and u.shape[-1] <= COMPILE_MAX_LENGTH
        and u.numel() * A.shape[1] >= COMPILE_MIN_ELEMENTS
        and compiled_scan_available()
    )


# The kernels. torch.compile turns each chunk kernel below, T steps unrolled, into one C++ loop nest
# per (batch, channel) or (batch, state index) that keeps the chunk's states in registers and small
# local buffers, where the eager scan writes and reads several batch x T x N x d_inner buffers per
# chunk. The forward pass and the sums over N of the backward pass run with the state as (b, d, N):
# N innermost, so inductor fuses the recurrence and the sums over N into one loop nest (with the
# state as (b, N, d) it stored every step's state instead). The sums over d_inner (dLoss/dB,
# dLoss/dC) need the other order, so a second backward kernel recomputes the chunk with the state as
# (b, N, d). Each kernel computes exp(delta * A) anew: saving the forward pass's decays and loading
# them in the backward pass measured no faster (the store costs about what the exp does). dLoss/dA
# is accumulated per batch row as (b, d, N) and summed at the end. Measured alternatives
# (docs/BENCHMARKS.md): chunks of 2-16 steps (4 was fastest), unrolling N too (3 minutes to compile,
# slower), two threads (slower on this shared CPU).
#
# Sequences are time-major inside ((L, b, d) and (L, b, N)), with L zero-padded to whole chunks:
# a chunk is then a contiguous slice whose shape and strides do not depend on L, so each kernel
# compiles once per (batch, d_inner, N, dtype) (10-30 s on a 2-core CPU, then cached on disk by
# torch) whatever the length. A padded step has delta = u = B = C = 0: decay exp(0) = 1 and drive
# 0, so it carries the state (and the adjoint) through unchanged.


def _decay_of(delta: Tensor, A: Tensor) -> Tensor:
    """exp(delta * A), floored as in chunked._exp_decay (inside a compiled kernel: fused, in
    registers)."""
    return torch.exp(torch.clamp(delta * A, min=math.log(torch.finfo(A.dtype).tiny)))


def _fused_forward(
    start: Tensor, delta: Tensor, u: Tensor, A: Tensor, B: Tensor, C: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One chunk forward. start: (b, d, N); delta, u: (T, b, d); A: (d, N); B, C: (T, b, N).
    Returns y (T, b, d) and the state after the chunk as (b, d, N) and as (b, N, d)."""
    state = start
    ys = []
    for t in range(delta.shape[0]):
        step = delta[t, :, :, None]
        state = _decay_of(step, A) * state + (step * u[t, :, :, None]) * B[t, :, None, :]
        ys.append((state * C[t, :, None, :]).sum(-1))
    return torch.stack(ys), state, state.transpose(1, 2).contiguous()


def _fused_backward_n(
    start: Tensor,
    delta: Tensor,
    u: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    grad_y: Tensor,
    carry: Tensor,
    grad_A: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One chunk backward, the sums over N. Layouts as _fused_forward; grad_y (T, b, d); carry
    (b, d, N): dLoss/d(state after the chunk); grad_A (b, d, N): dLoss/dA so far, per batch
    row. Returns dLoss/ddelta, dLoss/du (T, b, d), the new grad_A, and dLoss/d(start)."""
    steps = delta.shape[0]
    states, decays = [start], []
    for t in range(steps):
        step = delta[t, :, :, None]
        decays.append(_decay_of(step, A))
        states.append(decays[t] * states[t] + (step * u[t, :, :, None]) * B[t, :, None, :])
    adjoint = carry  # lambda[t] = dLoss/dstate[t], built backwards
    grad_delta: list[Tensor] = []
    grad_u: list[Tensor] = []
    for t in range(steps - 1, -1, -1):
        adjoint = C[t, :, None, :] * grad_y[t, :, :, None] + adjoint
        grad_drive_scale = (adjoint * B[t, :, None, :]).sum(-1)  # d/d(delta * u)
        grad_log_decay = adjoint * decays[t] * states[t]  # d/d(delta * A)
        grad_delta.append((grad_log_decay * A).sum(-1) + grad_drive_scale * u[t])
        grad_u.append(grad_drive_scale * delta[t])
        grad_A = grad_A + grad_log_decay * delta[t, :, :, None]
        adjoint = decays[t] * adjoint
    return torch.stack(grad_delta[::-1]), torch.stack(grad_u[::-1]), grad_A, adjoint


def _fused_backward_d(
    start: Tensor,
    delta: Tensor,
    u: Tensor,
    A_t: Tensor,
    B: Tensor,
    C: Tensor,
    grad_y: Tensor,
    carry: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """One chunk backward, the sums over d_inner, with the state as (b, N, d): start, carry
    (b, N, d); A_t (N, d); the rest as _fused_backward_n. Returns dLoss/dB and dLoss/dC
    (T, b, N) and dLoss/d(start) (b, N, d)."""
    steps = delta.shape[0]
    states, decays = [start], []
    for t in range(steps):
        step = delta[t, :, None, :]
        decays.append(_decay_of(step, A_t))
        states.append(decays[t] * states[t] + (step * u[t, :, None, :]) * B[t, :, :, None])
    adjoint = carry
    grad_B: list[Tensor] = []
    grad_C: list[Tensor] = []
    for t in range(steps - 1, -1, -1):
        grad_out = grad_y[t, :, None, :]
        grad_C.append((states[t + 1] * grad_out).sum(-1))
        adjoint = C[t, :, :, None] * grad_out + adjoint
        grad_B.append((adjoint * (delta[t] * u[t])[:, None, :]).sum(-1))
        adjoint = decays[t] * adjoint
    return torch.stack(grad_B[::-1]), torch.stack(grad_C[::-1]), adjoint


_KERNELS: dict[str, Callable[..., Any]] = {
    "forward": _fused_forward,
    "backward_n": _fused_backward_n,
    "backward_d": _fused_backward_d,
}
_compile_error: str | None = None  # why torch.compile failed, once it has


@functools.cache
def _compiled_kernel(name: str) -> Callable[..., Any]:
    with warnings.catch_warnings():
        # Inductor imports torch.utils.mkldnn, which warns about its own use of torch.jit (torch
        # 2.13): imported here, where the warning is silenced, rather than on the first call.
        warnings.simplefilter("ignore", DeprecationWarning)
        import torch._inductor.compile_fx

        return torch.compile(_KERNELS[name], fullgraph=True)


def _run_kernel(name: str, *args: Tensor) -> Any:
    """The compiled kernel; if compiling fails (no C++ compiler, an unsupported platform or torch)
    a warning, the plain function (same results, far slower), and ``auto`` stops choosing the
    compiled scan."""
    global _compile_error
    if _compile_error is None:
        try:
            return _compiled_kernel(name)(*args)
        except Exception as error:  # any compile failure: fall back
            _compile_error = f"{type(error).__name__}: {error}".splitlines()[0][:300]
            warnings.warn(
                f"reasonlab: torch.compile of the selective scan failed ({_compile_error}); "
                "falling back to the eager scan",
                RuntimeWarning,
                stacklevel=2,
            )
    return _KERNELS[name](*args)


def compiled_scan_available() -> bool:
    """Whether ``auto`` may pick the compiled scan: COMPILE is on and no compile has failed."""
    return COMPILE and _compile_error is None


def _time_major(x: Tensor, chunk: int) -> Tensor:
    """(b, k, L) -> contiguous (L', b, k), L' = L zero-padded to whole chunks."""
    length = x.shape[-1]
    padded = -(-length // chunk) * chunk
    x = x.permute(2, 0, 1)
    return F.pad(x, (0, 0, 0, 0, 0, padded - length)) if padded > length else x.contiguous()


def _silu_grad(z: Tensor) -> Tensor:
    """d silu(z) / dz = sigmoid(z) (1 + z (1 - sigmoid(z)))."""
    sig = torch.sigmoid(z)
    return sig * (1 + z * (1 - sig))


class _CompiledScan(torch.autograd.Function):
    """The whole scan (bias, softplus, recurrence, D, gate) with compiled chunk kernels and a
    hand-written backward, so that all of its work runs on SCAN_THREADS. Takes the inputs of
    selective_scan in the compute dtype (u, delta, z: (b, d, L); A: (d, N); B, C: (b, N, L);
    D, delta_bias: (d,) or None), contiguous or not; returns out (b, d, L) and the last state
    (b, d, N). Keeps the state at each chunk's start in both layouts (2 / chunk of the state
    sequence) and the time-major inputs."""

    @staticmethod
    @with_scan_threads
    def forward(
        ctx: Any,
        u: Tensor,
        delta: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        D: Tensor | None,
        z: Tensor | None,
        delta_bias: Tensor | None,
        delta_softplus: bool,
        chunk: int,
    ) -> tuple[Tensor, Tensor]:
        batch, d_inner, length = u.shape
        d_state = A.shape[1]
        raw = delta.permute(2, 0, 1)  # (L, b, d), a view
        if delta_bias is not None:
            raw = raw + delta_bias
        step = F.softplus(raw) if delta_softplus else raw
        # Padded after the bias and softplus: a padded step must have delta = 0.
        step, u_tm, B_tm, C_tm = (
            _time_major(x, chunk) for x in (step.permute(1, 2, 0), u, B, C)
        )  # (L', b, d) and (L', b, N)
        starts = [u.new_zeros(batch, d_inner, d_state)]  # (b, d, N) before each chunk
        starts_t = [u.new_zeros(batch, d_state, d_inner)]  # the same as (b, N, d)
        ys = []
        A = A.contiguous()
        for c0 in range(0, step.shape[0], chunk):
            c1 = c0 + chunk
            y, state, state_t = _run_kernel(
                "forward", starts[-1], step[c0:c1], u_tm[c0:c1], A, B_tm[c0:c1], C_tm[c0:c1]
            )
            ys.append(y)
            starts.append(state)
            starts_t.append(state_t)
        y = torch.cat(ys)[:length].permute(1, 2, 0)  # (b, d, L), a view
        pre_gate = y + u * D[:, None] if D is not None else y
        out = pre_gate * F.silu(z) if z is not None else pre_gate
        ctx.chunk, ctx.length, ctx.delta_softplus = chunk, length, delta_softplus
        ctx.starts, ctx.starts_t = starts[:-1], starts_t[:-1]
        ctx.has_bias = delta_bias is not None
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(
            raw if delta_softplus else None,
            step,
            u_tm,
            B_tm,
            C_tm,
            A,
            u,
            D,
            z,
            pre_gate if z is not None else None,
        )
        return out, starts[-1]

    @staticmethod
    @with_scan_threads
    def backward(ctx: Any, grad_out: Tensor | None, grad_last: Tensor | None):  # type: ignore[override]
        raw, step, u_tm, B_tm, C_tm, A, u, D, z, pre_gate = ctx.saved_tensors
        chunk, length = ctx.chunk, ctx.length
        batch, d_inner, _ = u.shape
        d_state = A.shape[1]
        grad_D = grad_z = grad_bias = None
        if grad_out is None:
            grad_y = torch.zeros_like(u)
        elif z is not None:
            grad_z = grad_out * pre_gate * _silu_grad(z)
            grad_y = grad_out * F.silu(z)
        else:
            grad_y = grad_out
        if D is not None:
            grad_D = (grad_y * u).sum((0, 2))
        grad_y_tm = _time_major(grad_y, chunk)
        A_t = A.t().contiguous()
        carry = u.new_zeros(batch, d_inner, d_state) if grad_last is None else grad_last
        carry = carry.contiguous()
        carry_t = carry.transpose(1, 2).contiguous()
        grad_A = u.new_zeros(batch, d_inner, d_state)
        grads: list[tuple[Tensor, ...]] = []
        for index in range(len(ctx.starts) - 1, -1, -1):
            c0, c1 = index * chunk, (index + 1) * chunk
            inputs = (step[c0:c1], u_tm[c0:c1])
            grad_step, grad_u, grad_A, carry = _run_kernel(
                "backward_n",
                ctx.starts[index], *inputs, A, B_tm[c0:c1], C_tm[c0:c1], grad_y_tm[c0:c1],
                carry, grad_A,
            )  # fmt: skip
            grad_B, grad_C, carry_t = _run_kernel(
                "backward_d",
                ctx.starts_t[index], *inputs, A_t, B_tm[c0:c1], C_tm[c0:c1], grad_y_tm[c0:c1],
                carry_t,
            )  # fmt: skip
            grads.append((grad_step, grad_u, grad_B, grad_C))
        grad_step, grad_u, grad_B, grad_C = (
            torch.cat(g[::-1])[:length] for g in zip(*grads, strict=True)
        )
        if ctx.delta_softplus:
            grad_step = grad_step * torch.sigmoid(raw)
        if ctx.has_bias:
            grad_bias = grad_step.sum((0, 1))
        # Back to the inputs' layouts here, on one thread: a strided gradient would be copied
        # later anyway (into .grad, or by the next backward op), on torch's threads.
        grad_u, grad_delta, grad_B, grad_C = (
            x.permute(1, 2, 0).contiguous() for x in (grad_u, grad_step, grad_B, grad_C)
        )
        if D is not None:
            grad_u.addcmul_(grad_y, D[:, None])
        return (
            grad_u,
            grad_delta,
            grad_A.sum(0),
            grad_B,
            grad_C,
            grad_D,
            grad_z,
            grad_bias,
            None,
            None,
        )


def selective_scan_compiled(
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
    chunk_size: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """The chunked scan with torch.compile'd chunk kernels (the CPU default for large inputs,
    see ``selective_scan``). Same arguments and results as ``selective_scan_reference``;
    ``chunk_size``: steps per kernel call (default COMPILED_CHUNK). The first call per shape
    and dtype compiles (seconds); if compiling fails it warns and runs the same kernels eagerly."""
    check_shapes(u, delta, A, B, C)
    dtype = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    chunk = max(1, int(chunk_size or COMPILED_CHUNK))  # not cut to L: one compile for all L
    args = [None if x is None else x.to(dtype) for x in (u, delta, A, B, C, D, z, delta_bias)]
    out, last_state = _CompiledScan.apply(*args, delta_softplus, chunk)
    out = out.to(u.dtype)
    return (out, last_state) if return_last_state else out
