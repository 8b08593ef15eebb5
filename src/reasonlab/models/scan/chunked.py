"""The chunked selective scan in pure PyTorch: the CPU default (and the fallback on any device),
with the same arguments and results as ``selective_scan_reference``; also the full state
sequence (``selective_scan_states``) for ``hook_ssm_state``.

It runs the recurrence step by step, over one chunk of time at a time held in reused buffers
(batch x chunk x N x d_inner, about CHUNK_ELEMENTS elements each), so a step is one fused
multiply-add over a batch x N x d_inner slice, the chunk's working set stays in cache, and nothing
of size batch x L x d_inner x N is built. Decays are multiplied in one step at a time, each
exp(delta * A) <= 1 for delta >= 0, so nothing overflows however large delta * |A| gets; a
log-space cumulative sum would need exp(-sum delta * A), which overflows in float32 once
|A| * sum(delta) over a chunk passes about 88. The backward pass is a custom autograd function:
it keeps the state at the start of each chunk (1/chunk of the state sequence), recomputes a
chunk's states, and runs the adjoint recurrence backwards through it. Batch rows are
independent: the scan splits them into parts, one per thread (threads.SCAN_THREADS), each running
its own chunk loop with one intra-op thread.

Speed and memory (docs/BENCHMARKS.md): 6-10x faster than mambapy's parallel scan forward +
backward at L = 64 to 1024 on a CPU, with a tenth of its peak memory or less.

Inside a chunk, time is the second axis and the state index comes before the channel: delta, u:
(b, T, d); B, C: (b, T, N); buffers (b, T, N, d). A step is then a (b, N, d) slice of b
contiguous blocks, and sums over N run over a middle axis with a long contiguous inner axis
(several times faster on CPU than summing an inner axis of 16).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from reasonlab.models.scan.reference import (
    check_shapes,
    compute_dtype,
    prepare_delta,
    skip_and_gate,
)
from reasonlab.models.scan.threads import run_rows, with_scan_threads

# Elements (batch x chunk x N x d_inner) per chunk buffer when no chunk size is given: small
# enough that the chunk's few buffers stay in cache, large enough that per-chunk Python
# overhead does not count. Measured in docs/BENCHMARKS.md (selective scan).
CHUNK_ELEMENTS = 1 << 19
LOG2_E = 1 / math.log(2)


def chunk_length(
    batch: int, d_inner: int, d_state: int, length: int, chunk_size: int | None
) -> int:
    """Steps per chunk: chunk_size, or (None) about CHUNK_ELEMENTS elements of batch x chunk x N x
    d_inner; at least 1, at most L."""
    if chunk_size is None:
        chunk_size = CHUNK_ELEMENTS // max(1, batch * d_inner * d_state)
    return max(1, min(int(chunk_size), length))


def _chunk_buffer(flat: Tensor, batch: int, steps: int, d_state: int, d_inner: int) -> Tensor:
    """A contiguous (batch, steps, N, d) view at the start of a reused flat buffer."""
    return flat[: batch * steps * d_state * d_inner].view(batch, steps, d_state, d_inner)


def _exp_decay(decay: Tensor, delta: Tensor, A_t: Tensor) -> Tensor:
    """decay <- exp(delta * A): (b, T, N, d) from delta (b, T, d) and A_t (N, d).

    Computed as exp2(delta * A * log2(e)): torch's exp goes through a vector math library that
    is slow on some CPUs (1.5-2 ns an element on an AMD EPYC, where exp2 takes 0.9); the
    result differs from exp's by a rounding of the argument."""
    torch.mul(delta[:, :, None, :], A_t * LOG2_E, out=decay)
    # exp2 of an argument below log2(smallest normal) takes a slow path and gives a denormal or
    # 0; flooring it there changes a state by at most 1.2e-38 * |h| in float32.
    return decay.clamp_(min=math.log2(torch.finfo(decay.dtype).tiny)).exp2_()


def _fill_chunk(
    decay: Tensor,
    states: Tensor,
    delta: Tensor,
    drive_scale: Tensor,
    A_t: Tensor,
    B: Tensor,
    start: Tensor,
) -> None:
    """Writes one chunk's decays and states into the given buffers.

    decay, states: (b, T, N, d) buffers; delta, drive_scale (= delta * u): (b, T, d);
    A_t: (N, d); B: (b, T, N); start: (b, N, d), the state before the chunk."""
    _exp_decay(decay, delta, A_t)
    torch.mul(B[..., None], drive_scale[:, :, None, :], out=states)  # delta u B, the drive
    step_states, step_decays = states.unbind(1), decay.unbind(1)
    step_states[0].addcmul_(step_decays[0], start)
    for t in range(1, len(step_states)):
        step_states[t].addcmul_(step_decays[t], step_states[t - 1])


def _backward_chunk(
    adjoint: Tensor,
    decay: Tensor,
    states: Tensor,
    start: Tensor,
    carry: Tensor | None,
    delta: Tensor,
    drive_scale: Tensor,
    A_t: Tensor,
    B: Tensor,
    scratch: Tensor,
    grad_A_t: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Backward through one chunk of T steps.

    adjoint: (b, T, N, d), on entry dLoss/dstates from this chunk's own outputs, turned in place
    into the total adjoint lambda[t] = adjoint[t] + decay[t+1] * lambda[t+1]. carry: (b, N, d),
    decay * lambda at the first step of the next chunk, or dLoss/d(last state) for the last
    chunk. decay (overwritten) and states as written by _fill_chunk; scratch: a (b, T, N, d)
    buffer; grad_A_t (N, d) is accumulated. Returns the carry for the chunk before, and the
    chunk's dLoss/d(delta * u) (b, T, d), dLoss/ddelta through the decay (b, T, d), dLoss/dB
    (b, T, N)."""
    step_adjoints, step_decays = adjoint.unbind(1), decay.unbind(1)
    if carry is not None:
        step_adjoints[-1].add_(carry)
    for t in range(len(step_adjoints) - 2, -1, -1):
        step_adjoints[t].addcmul_(step_decays[t + 1], step_adjoints[t + 1])
    carry = step_decays[0] * step_adjoints[0]

    # The drive delta * u * B: lambda summed over N (against B) and over d (against delta * u).
    grad_drive_scale = torch.matmul(B[:, :, None, :], adjoint)[:, :, 0]
    grad_B = torch.mul(adjoint, drive_scale[:, :, None, :], out=scratch).sum(-1)

    # The decay exp(delta * A): dLoss/d(delta * A) = lambda[t] * decay[t] * h[t-1].
    grad_log_decay = decay.mul_(adjoint)
    grad_log_decay[:, 1:].mul_(states[:, :-1])
    grad_log_decay[:, 0].mul_(start)
    grad_delta = torch.mul(grad_log_decay, A_t, out=scratch).sum(2)
    grad_A_t.add_(grad_log_decay.mul_(delta[:, :, None, :]).sum((0, 1)))
    return carry, grad_drive_scale, grad_delta, grad_B


def _chunks(length: int, chunk: int, reverse: bool = False) -> list[tuple[int, int, int]]:
    """(index, start, end) of each chunk of time steps."""
    spans = [(i, c0, min(c0 + chunk, length)) for i, c0 in enumerate(range(0, length, chunk))]
    return spans[::-1] if reverse else spans


def _time_second(x: Tensor) -> Tensor:
    """(b, k, L) -> contiguous (b, L, k)."""
    return x.transpose(1, 2).contiguous()


def _forward_rows(
    delta: Tensor,
    u: Tensor,
    A_t: Tensor,
    B: Tensor,
    C: Tensor,
    starts: Tensor,
    chunk: int,
    y: Tensor,
) -> None:
    """The chunk loop forward over some batch rows. delta, u: (b, L, d); B, C: (b, L, N);
    A_t: (N, d); starts: (chunks + 1, b, N, d) with starts[0] the initial state, each later one
    written with the state after a chunk; y (b, L, d) is written."""
    batch, length, d_inner = u.shape
    d_state = A_t.shape[0]
    flat_decay = u.new_empty(batch * chunk * d_state * d_inner)  # reused for every chunk
    flat_states = torch.empty_like(flat_decay)
    for index, c0, c1 in _chunks(length, chunk):
        states = _chunk_buffer(flat_states, batch, c1 - c0, d_state, d_inner)
        decay = _chunk_buffer(flat_decay, batch, c1 - c0, d_state, d_inner)
        drive_scale = delta[:, c0:c1] * u[:, c0:c1]  # (b, T, d)
        _fill_chunk(decay, states, delta[:, c0:c1], drive_scale, A_t, B[:, c0:c1], starts[index])
        y[:, c0:c1] = torch.matmul(C[:, c0:c1, None, :], states)[:, :, 0]
        starts[index + 1] = states[:, -1]  # the buffer is reused: keep a copy


def _backward_rows(
    delta: Tensor,
    u: Tensor,
    A_t: Tensor,
    B: Tensor,
    C: Tensor,
    starts: Tensor,
    grad_y: Tensor,
    carry: Tensor | None,
    chunk: int,
    grads: tuple[Tensor, Tensor, Tensor, Tensor],
) -> Tensor:
    """The chunk loop backward over some batch rows, inputs as _forward_rows (starts as it wrote
    them); grad_y (b, L, d); carry (b, N, d): dLoss/d(last state) or None. Writes ``grads``:
    dLoss/ddelta, dLoss/du (b, L, d), dLoss/dB, dLoss/dC (b, L, N); returns these rows'
    dLoss/dA_t (N, d)."""
    batch, length, d_inner = u.shape
    d_state = A_t.shape[0]
    flat = [u.new_empty(batch * chunk * d_state * d_inner) for _ in range(4)]
    grad_delta, grad_u, grad_B, grad_C = grads
    grad_A_t = torch.zeros_like(A_t)
    for index, c0, c1 in _chunks(length, chunk, reverse=True):
        decay, states, adjoint, scratch = (
            _chunk_buffer(f, batch, c1 - c0, d_state, d_inner) for f in flat
        )
        delta_c, u_c, B_c = delta[:, c0:c1], u[:, c0:c1], B[:, c0:c1]
        drive_scale = delta_c * u_c
        _fill_chunk(decay, states, delta_c, drive_scale, A_t, B_c, starts[index])
        grad_out = grad_y[:, c0:c1, None, :]  # (b, T, 1, d)
        torch.sum(torch.mul(states, grad_out, out=scratch), -1, out=grad_C[:, c0:c1])
        torch.mul(C[:, c0:c1, :, None], grad_out, out=adjoint)
        carry, grad_drive_scale, grad_delta_c, grad_B[:, c0:c1] = _backward_chunk(
            adjoint, decay, states, starts[index], carry, delta_c, drive_scale, A_t, B_c,
            scratch, grad_A_t,
        )  # fmt: skip
        torch.addcmul(grad_delta_c, grad_drive_scale, u_c, out=grad_delta[:, c0:c1])
        torch.mul(grad_drive_scale, delta_c, out=grad_u[:, c0:c1])
    return grad_A_t


def _time_second_view(x: Tensor) -> Tensor | None:
    """x (b, k, L) as a contiguous (b, L, k) view when its memory is laid out that way (a
    transposed view of a (b, L, k) tensor, as the Mamba mixer passes), else None."""
    moved = x.transpose(1, 2)
    return moved if moved.is_contiguous() else None


class _ChunkedScan(torch.autograd.Function):
    """y[t] = sum_n C[t, n] h[t, n] and the last state.

    delta (already biased and softplus-ed), u: (b, d, L); A: (d, N); B, C: (b, N, L); one
    float dtype, any strides. Returns y: (b, d, L) and the last state (b, N, d). The scan works
    on (b, L, k) memory: inputs laid out that way (transposed views of (b, L, k) tensors) are
    used as they are, others are moved once; y and the gradients are returned as (b, d, L)
    views of (b, L, k) memory. The batch rows run in parts on ``ctx.workers`` threads
    (run_rows), each part moving its own rows. ``chunk_size``: steps per chunk, or None for
    about CHUNK_ELEMENTS elements of one part's batch x chunk x N x d."""

    @staticmethod
    @with_scan_threads
    def forward(
        ctx: Any, delta: Tensor, u: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int | None
    ) -> tuple[Tensor, Tensor]:
        batch, d_inner, length = u.shape
        A_t = A.t().contiguous()  # (N, d)
        d_state = A_t.shape[0]
        part_rows = -(-batch // max(1, min(ctx.workers, batch)))
        chunk = chunk_length(part_rows, d_inner, d_state, length, chunk_size)
        inputs = (delta, u, B, C)
        views = [_time_second_view(x) for x in inputs]
        moved = [
            x.new_empty(batch, length, x.shape[1]) if view is None else view
            for x, view in zip(inputs, views, strict=True)
        ]  # (b, L, d) and (b, L, N)
        # starts[i]: the state before chunk i; the last row ends up holding the final state.
        starts = u.new_empty(len(_chunks(length, chunk)) + 1, batch, d_state, d_inner)
        starts[0].zero_()
        y = u.new_empty(batch, length, d_inner)

        def rows(r0: int, r1: int) -> None:
            part = slice(r0, r1)
            for source, view, target in zip(inputs, views, moved, strict=True):
                if view is None:
                    target[part] = source[part].transpose(1, 2)
            delta_p, u_p, B_p, C_p = (x[part] for x in moved)
            _forward_rows(delta_p, u_p, A_t, B_p, C_p, starts[:, part], chunk, y[part])

        run_rows(rows, batch, ctx.workers)
        ctx.chunk = chunk
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*moved, A_t, starts)
        return y.transpose(1, 2), starts[-1].clone()

    @staticmethod
    @with_scan_threads
    def backward(ctx: Any, grad_y: Tensor | None, grad_last: Tensor | None):  # type: ignore[override]
        delta, u, B, C, A_t, starts = ctx.saved_tensors
        batch, length, d_inner = u.shape
        grads = tuple(torch.empty_like(x) for x in (delta, u, B, C))  # (b, L, k)

        def rows(r0: int, r1: int) -> Tensor:
            part = slice(r0, r1)
            if grad_y is None:
                grad_y_part = u.new_zeros(r1 - r0, length, d_inner)
            else:
                grad_y_part = _time_second(grad_y[part])  # no copy when laid out as y
            carry = None if grad_last is None else grad_last[part]
            return _backward_rows(
                delta[part], u[part], A_t, B[part], C[part], starts[:, part], grad_y_part,
                carry, ctx.chunk, tuple(g[part] for g in grads),
            )  # fmt: skip

        grad_A_t = torch.stack(run_rows(rows, batch, ctx.workers)).sum(0)
        grad_delta, grad_u, grad_B, grad_C = (g.transpose(1, 2) for g in grads)
        return grad_delta, grad_u, grad_A_t.t(), grad_B, grad_C, None


class _ChunkedStates(torch.autograd.Function):
    """The full state sequence (b, L, N, d), from the same inputs as _ChunkedScan (without C)."""

    @staticmethod
    @with_scan_threads
    def forward(ctx: Any, delta: Tensor, u: Tensor, A: Tensor, B: Tensor, chunk: int) -> Tensor:
        delta, u, B = (_time_second(x) for x in (delta, u, B))
        A_t = A.t().contiguous()  # (N, d)
        batch, length, d_inner = u.shape
        d_state = A_t.shape[0]
        flat_decay = u.new_empty(batch * chunk * d_state * d_inner)
        states = u.new_empty(batch, length, d_state, d_inner)
        state = u.new_zeros(batch, d_state, d_inner)
        for _, c0, c1 in _chunks(length, chunk):
            chunk_states = states[:, c0:c1]  # (b, T, N, d), written in place
            decay = _chunk_buffer(flat_decay, batch, c1 - c0, d_state, d_inner)
            drive_scale = delta[:, c0:c1] * u[:, c0:c1]
            _fill_chunk(decay, chunk_states, delta[:, c0:c1], drive_scale, A_t, B[:, c0:c1], state)
            state = chunk_states[:, -1]
        ctx.chunk = chunk
        ctx.save_for_backward(delta, u, A_t, B, states)
        return states

    @staticmethod
    @with_scan_threads
    def backward(ctx: Any, grad_states: Tensor):  # type: ignore[override]
        delta, u, A_t, B, states = ctx.saved_tensors
        batch, length, d_inner = u.shape
        d_state = A_t.shape[0]
        flat = [u.new_empty(batch * ctx.chunk * d_state * d_inner) for _ in range(3)]
        grad_delta, grad_u = torch.empty_like(u), torch.empty_like(u)
        grad_B, grad_A_t = torch.empty_like(B), torch.zeros_like(A_t)
        zero = u.new_zeros(batch, d_state, d_inner)
        carry = None
        for _, c0, c1 in _chunks(length, ctx.chunk, reverse=True):
            decay, adjoint, scratch = (
                _chunk_buffer(f, batch, c1 - c0, d_state, d_inner) for f in flat
            )
            delta_c, u_c, B_c = delta[:, c0:c1], u[:, c0:c1], B[:, c0:c1]
            drive_scale = delta_c * u_c
            _exp_decay(decay, delta_c, A_t)
            adjoint.copy_(grad_states[:, c0:c1])
            start = zero if c0 == 0 else states[:, c0 - 1]
            carry, grad_drive_scale, grad_delta_c, grad_B[:, c0:c1] = _backward_chunk(
                adjoint, decay, states[:, c0:c1], start, carry, delta_c, drive_scale, A_t, B_c,
                scratch, grad_A_t,
            )  # fmt: skip
            grad_delta[:, c0:c1] = grad_delta_c.addcmul_(grad_drive_scale, u_c)
            torch.mul(grad_drive_scale, delta_c, out=grad_u[:, c0:c1])
        grad_delta, grad_u, grad_B = (_time_second(x) for x in (grad_delta, grad_u, grad_B))
        return grad_delta, grad_u, grad_A_t.t(), grad_B, None


def _prepared(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """delta (biased, softplus-ed), u, A, B in the compute dtype (any strides: the scans move
    them to their own layout once)."""
    delta = prepare_delta(delta, delta_bias, delta_softplus, dtype)
    return tuple(x.to(dtype) for x in (delta, u, A, B))  # type: ignore[return-value]


def selective_scan_chunked(
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
    """The fast pure-PyTorch scan (any device; the default on CPU). Same arguments and results as
    ``selective_scan_reference``; ``chunk_size`` steps per chunk (default: about CHUNK_ELEMENTS
    elements of batch x chunk x d_inner x N per part of the batch run on one thread)."""
    check_shapes(u, delta, A, B, C)
    dtype = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    prepared = _prepared(u, delta, A, B, delta_bias, delta_softplus, dtype)
    y, last_state = _ChunkedScan.apply(*prepared, C.to(dtype), chunk_size)  # (b, d, L), (b, N, d)
    out = skip_and_gate(y, u, D, z, u.dtype)
    return (out, last_state.transpose(1, 2)) if return_last_state else out


def selective_scan_states(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    chunk_size: int | None = None,
) -> Tensor:
    """The full state sequence h: (batch, d_inner, L, N) in the compute dtype, differentiable
    (for ``hook_ssm_state``; holds L x batch x d_inner x N, so only when someone watches it).
    ``scan_output(states, u, C, D, z)`` turns it into the scan's output."""
    check_shapes(u, delta, A, B, B)
    dtype = compute_dtype(u, delta, A, B, delta_bias)
    batch, d_inner, length = u.shape
    chunk = chunk_length(batch, d_inner, A.shape[1], length, chunk_size)
    prepared = _prepared(u, delta, A, B, delta_bias, delta_softplus, dtype)
    states = _ChunkedStates.apply(*prepared, chunk)  # (b, L, N, d)
    return states.permute(0, 3, 1, 2)  # (b, d, L, N), a non-contiguous view


def scan_output(
    states: Tensor, u: Tensor, C: Tensor, D: Tensor | None = None, z: Tensor | None = None
) -> Tensor:
    """y = sum_n C h (+ D u) (* silu(z)) from states (batch, d_inner, L, N); u, z:
    (batch, d_inner, L); C: (batch, N, L). Returns u's dtype."""
    y = torch.einsum("bdln,bnl->bdl", states, C.to(states.dtype))
    return skip_and_gate(y, u, D, z, u.dtype)
