"""Mamba's selective scan: a sequential reference, a fast chunked scan in pure PyTorch, and
mamba-ssm's CUDA kernel when it is installed and the inputs are on a GPU.

The recurrence, per batch b, channel d and state index n, with the layout of mamba-ssm's
``selective_scan_ref`` (u, delta: batch x d_inner x L; A: d_inner x N; B, C: batch x N x L)::

    delta = softplus(delta + delta_bias)        (each step optional)
    h[t]  = exp(delta[t] * A) * h[t-1] + delta[t] * u[t] * B[t]      h[-1] = 0
    y[t]  = sum_n C[t, n] * h[t, n]  +  D * u[t]
    out   = y * silu(z)

Only input-dependent B and C of shape batch x N x L are supported (the layout Mamba-1 uses), not
mamba-ssm's time-invariant (d_inner x N) or grouped (batch x G x N x L) variants.

The chunked scan (the CPU default) runs the recurrence step by step, over one chunk of time at
a time held in reused buffers (batch x chunk x N x d_inner, about CHUNK_ELEMENTS elements each),
so a step is one fused multiply-add over a batch x N x d_inner slice, the chunk's working set
stays in cache, and nothing of size batch x L x d_inner x N is built. Decays are multiplied in
one step at a time, each exp(delta * A) <= 1 for delta >= 0, so nothing overflows however large
delta * |A| gets; a log-space cumulative sum would need exp(-sum delta * A), which overflows in
float32 once |A| * sum(delta) over a chunk passes about 88. The backward pass is a custom autograd
function: it keeps the state at the start of each chunk (1/chunk of the state sequence),
recomputes a chunk's states, and runs the adjoint recurrence backwards through it.

Speed and memory (docs/BENCHMARKS.md): about 9x faster than mambapy's parallel scan forward
+ backward at L = 256 and 1024 on a CPU, with about a ninth of its peak memory. The chunked scan
runs on one intra-op thread of its own (SCAN_THREADS).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

METHODS = ("auto", "chunked", "reference", "cuda")
_default_method = "auto"

# Elements (batch x chunk x N x d_inner) per chunk buffer when no chunk size is given: small
# enough that the chunk's few buffers stay in cache, large enough that per-chunk Python
# overhead does not count. Measured in docs/BENCHMARKS.md (selective scan).
CHUNK_ELEMENTS = 1 << 19

# Intra-op threads of the chunked scan (None: torch's setting). It issues thousands of small
# operations; with more than one thread each waits for all of them to be scheduled, which on a
# CPU shared with other busy processes made it up to 50x slower (docs/BENCHMARKS.md).
SCAN_THREADS: int | None = 1


def set_default_method(method: str) -> str:
    """Set the method ``selective_scan`` uses when none is passed; returns the previous one.

    ``auto``: the CUDA kernel for CUDA tensors when mamba-ssm imports, else ``chunked``;
    ``reference``: the sequential loop (slow; for checks)."""
    global _default_method
    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(METHODS)}")
    previous, _default_method = _default_method, method
    return previous


@functools.lru_cache(maxsize=1)
def _cuda_selective_scan() -> Callable[..., Any] | None:
    """mamba-ssm's ``selective_scan_fn``, or None when mamba-ssm (or its CUDA build) is absent."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except (ImportError, OSError):  # not installed, or built against another CUDA / torch
        return None
    return selective_scan_fn


def _cuda_applies(u: Tensor) -> bool:
    # The kernel computes in float32 at most; float64 inputs stay on the chunked path.
    return u.is_cuda and u.dtype != torch.float64 and _cuda_selective_scan() is not None


@contextlib.contextmanager
def _scan_threads(device: torch.device) -> Iterator[None]:
    """Runs the body with SCAN_THREADS intra-op threads (CPU only), then restores the setting."""
    previous = torch.get_num_threads()
    if device.type != "cpu" or SCAN_THREADS is None or previous == SCAN_THREADS:
        yield
        return
    torch.set_num_threads(SCAN_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _with_scan_threads(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps an autograd.Function's forward or backward in _scan_threads."""

    @functools.wraps(method)
    def wrapper(ctx: Any, *args: Any) -> Any:
        tensors = [a for a in args if isinstance(a, Tensor)]
        with _scan_threads(tensors[0].device if tensors else torch.device("cpu")):
            return method(ctx, *args)

    return wrapper


# ----------------------------------------------------------------------------------------------
# Shared preparation


def _compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    """float64 if any input is float64, else float32 (half inputs are computed in float32, as in
    mamba-ssm)."""
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def _check_shapes(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> None:
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(
            f"u and delta must both be batch x d_inner x L, got {tuple(u.shape)} and "
            f"{tuple(delta.shape)}"
        )
    batch, d_inner, length = u.shape
    if length == 0:
        raise ValueError("u has no time steps (L = 0)")
    if A.dim() != 2 or A.shape[0] != d_inner:
        raise ValueError(f"A must be d_inner x N = {d_inner} x N, got {tuple(A.shape)}")
    expected = (batch, A.shape[1], length)
    for name, t in (("B", B), ("C", C)):
        if tuple(t.shape) != expected:
            raise ValueError(
                f"{name} must be batch x N x L = {expected}, got {tuple(t.shape)} "
                "(time-invariant and grouped B/C are not supported)"
            )


def _prepare_delta(
    delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool, dtype: torch.dtype
) -> Tensor:
    """delta: (b, d, L) or (b, d) for one step; delta_bias: (d,)."""
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype).view(-1, *[1] * (delta.dim() - 2))
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def _finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, out_dtype: torch.dtype):
    """Skip connection and gate. y, u, z: (batch, d_inner, L); D: (d_inner,)."""
    if D is not None:
        y = y + u.to(y.dtype) * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(out_dtype)


# ----------------------------------------------------------------------------------------------
# Reference


def selective_scan_reference(
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
    """The numerical reference: a plain loop over time, differentiable by autograd. Computes in
    float64 when any input is float64, else float32; returns u's dtype (and the last state,
    batch x d_inner x N, in the compute dtype)."""
    _check_shapes(u, delta, A, B, C)
    dtype = _compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    delta = _prepare_delta(delta, delta_bias, delta_softplus, dtype)  # (b, d, L)
    u_, A_, B_, C_ = u.to(dtype), A.to(dtype), B.to(dtype), C.to(dtype)
    batch, d_inner, length = u.shape
    state = u_.new_zeros(batch, d_inner, A.shape[1])  # (b, d, N)
    ys = []
    for t in range(length):
        decay = torch.exp(delta[:, :, t, None] * A_)  # (b, d, N)
        drive = (delta[:, :, t] * u_[:, :, t])[:, :, None] * B_[:, None, :, t]  # (b, d, N)
        state = decay * state + drive
        ys.append((state * C_[:, None, :, t]).sum(-1))  # (b, d)
    y = torch.stack(ys, dim=-1)  # (b, d, L)
    out = _finish(y, u_, D, z, u.dtype)
    return (out, state) if return_last_state else out


def selective_scan_step(
    state: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> tuple[Tensor, Tensor]:
    """One step of the recurrence, for decoding with state (O(1) per token).

    state: (batch, d_inner, N); u, delta, z: (batch, d_inner); A: (d_inner, N); B, C: (batch, N).
    Returns (out (batch, d_inner) in u's dtype, new state in the compute dtype)."""
    dtype = _compute_dtype(state, u, delta, A, B, C, D, z, delta_bias)
    delta = _prepare_delta(delta, delta_bias, delta_softplus, dtype)  # (b, d)
    u_ = u.to(dtype)
    decay = torch.exp(delta[:, :, None] * A.to(dtype))  # (b, d, N)
    new_state = decay * state.to(dtype) + (delta * u_)[:, :, None] * B.to(dtype)[:, None, :]
    y = (new_state * C.to(dtype)[:, None, :]).sum(-1)  # (b, d)
    out = _finish(y[..., None], u_[..., None], D, None if z is None else z[..., None], u.dtype)
    return out[..., 0], new_state


# ----------------------------------------------------------------------------------------------
# Chunked scan. Inside a chunk, time is the second axis and the state index comes before the
# channel: delta, u: (b, T, d); B, C: (b, T, N); buffers (b, T, N, d). A step is then a (b, N, d)
# slice of b contiguous blocks, and sums over N run over a middle axis with a long contiguous
# inner axis (several times faster on CPU than summing an inner axis of 16).


def _chunk_length(
    batch: int, d_inner: int, d_state: int, length: int, chunk_size: int | None
) -> int:
    if chunk_size is None:
        chunk_size = CHUNK_ELEMENTS // max(1, batch * d_inner * d_state)
    return max(1, min(int(chunk_size), length))


def _chunk_buffer(flat: Tensor, batch: int, steps: int, d_state: int, d_inner: int) -> Tensor:
    """A contiguous (batch, steps, N, d) view at the start of a reused flat buffer."""
    return flat[: batch * steps * d_state * d_inner].view(batch, steps, d_state, d_inner)


def _exp_decay(decay: Tensor, delta: Tensor, A_t: Tensor) -> Tensor:
    """decay <- exp(delta * A): (b, T, N, d) from delta (b, T, d) and A_t (N, d)."""
    torch.mul(delta[:, :, None, :], A_t, out=decay)
    # exp of an argument below log(smallest normal) takes a slow path (18x here) and gives a
    # denormal or 0; flooring it there changes a state by at most 1.2e-38 * |h| in float32.
    return decay.clamp_(min=math.log(torch.finfo(decay.dtype).tiny)).exp_()


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


class _ChunkedScan(torch.autograd.Function):
    """y[t] = sum_n C[t, n] h[t, n] and the last state.

    delta (already biased and softplus-ed), u: (b, d, L); A: (d, N); B, C: (b, N, L); one
    float dtype. Returns y: (b, d, L) and the last state (b, N, d). Inputs are moved to
    (b, L, k) once, and y and the gradients back once: swapping axes is slow on CPU (~10x a
    plain copy), but one chunk at a time is slower still."""

    @staticmethod
    @_with_scan_threads
    def forward(
        ctx: Any, delta: Tensor, u: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int
    ) -> tuple[Tensor, Tensor]:
        delta, u, B, C = (_time_second(x) for x in (delta, u, B, C))  # (b, L, d) / (b, L, N)
        A_t = A.t().contiguous()  # (N, d)
        batch, length, d_inner = u.shape
        d_state = A_t.shape[0]
        flat_decay = u.new_empty(batch * chunk * d_state * d_inner)  # reused for every chunk
        flat_states = torch.empty_like(flat_decay)
        spans = _chunks(length, chunk)
        # starts[i]: the state before chunk i; the last row ends up holding the final state.
        starts = u.new_empty(len(spans) + 1, batch, d_state, d_inner)
        starts[0].zero_()
        y = torch.empty_like(u)  # (b, L, d)
        for index, c0, c1 in spans:
            states = _chunk_buffer(flat_states, batch, c1 - c0, d_state, d_inner)
            decay = _chunk_buffer(flat_decay, batch, c1 - c0, d_state, d_inner)
            drive_scale = delta[:, c0:c1] * u[:, c0:c1]  # (b, T, d)
            _fill_chunk(
                decay, states, delta[:, c0:c1], drive_scale, A_t, B[:, c0:c1], starts[index]
            )
            y[:, c0:c1] = torch.matmul(C[:, c0:c1, None, :], states)[:, :, 0]
            starts[index + 1] = states[:, -1]  # the buffer is reused: keep a copy
        ctx.chunk = chunk
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(delta, u, A_t, B, C, starts)
        return _time_second(y), starts[-1].clone()

    @staticmethod
    @_with_scan_threads
    def backward(ctx: Any, grad_y: Tensor | None, grad_last: Tensor | None):  # type: ignore[override]
        delta, u, A_t, B, C, starts = ctx.saved_tensors
        batch, length, d_inner = u.shape
        d_state = A_t.shape[0]
        grad_y = torch.zeros_like(u) if grad_y is None else _time_second(grad_y)  # (b, L, d)
        flat = [u.new_empty(batch * ctx.chunk * d_state * d_inner) for _ in range(4)]
        grad_delta, grad_u = torch.empty_like(u), torch.empty_like(u)
        grad_B, grad_C, grad_A_t = torch.empty_like(B), torch.empty_like(C), torch.zeros_like(A_t)
        carry = grad_last
        for index, c0, c1 in _chunks(length, ctx.chunk, reverse=True):
            decay, states, adjoint, scratch = (
                _chunk_buffer(f, batch, c1 - c0, d_state, d_inner) for f in flat
            )
            delta_c, u_c, B_c = delta[:, c0:c1], u[:, c0:c1], B[:, c0:c1]
            drive_scale = delta_c * u_c
            _fill_chunk(decay, states, delta_c, drive_scale, A_t, B_c, starts[index])
            grad_out = grad_y[:, c0:c1, None, :]  # (b, T, 1, d)
            grad_C[:, c0:c1] = torch.mul(states, grad_out, out=scratch).sum(-1)
            torch.mul(C[:, c0:c1, :, None], grad_out, out=adjoint)
            carry, grad_drive_scale, grad_delta_c, grad_B[:, c0:c1] = _backward_chunk(
                adjoint, decay, states, starts[index], carry, delta_c, drive_scale, A_t, B_c,
                scratch, grad_A_t,
            )  # fmt: skip
            grad_delta[:, c0:c1] = grad_delta_c.addcmul_(grad_drive_scale, u_c)
            torch.mul(grad_drive_scale, delta_c, out=grad_u[:, c0:c1])
        grads = (_time_second(x) for x in (grad_delta, grad_u, grad_B, grad_C))
        grad_delta, grad_u, grad_B, grad_C = grads
        return grad_delta, grad_u, grad_A_t.t(), grad_B, grad_C, None


class _ChunkedStates(torch.autograd.Function):
    """The full state sequence (b, L, N, d), from the same inputs as _ChunkedScan (without C)."""

    @staticmethod
    @_with_scan_threads
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
    @_with_scan_threads
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
    """delta (biased, softplus-ed), u, A, B: contiguous, in the compute dtype."""
    delta = _prepare_delta(delta, delta_bias, delta_softplus, dtype)
    return tuple(x.to(dtype).contiguous() for x in (delta, u, A, B))  # type: ignore[return-value]


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
    elements of batch x chunk x d_inner x N)."""
    _check_shapes(u, delta, A, B, C)
    dtype = _compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    batch, d_inner, length = u.shape
    chunk = _chunk_length(batch, d_inner, A.shape[1], length, chunk_size)
    prepared = _prepared(u, delta, A, B, delta_bias, delta_softplus, dtype)
    C_ = C.to(dtype).contiguous()
    y, last_state = _ChunkedScan.apply(*prepared, C_, chunk)  # (b, d, L), (b, N, d)
    out = _finish(y, u, D, z, u.dtype)
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
    _check_shapes(u, delta, A, B, B)
    dtype = _compute_dtype(u, delta, A, B, delta_bias)
    batch, d_inner, length = u.shape
    chunk = _chunk_length(batch, d_inner, A.shape[1], length, chunk_size)
    prepared = _prepared(u, delta, A, B, delta_bias, delta_softplus, dtype)
    states = _ChunkedStates.apply(*prepared, chunk)  # (b, L, N, d)
    return states.permute(0, 3, 1, 2)  # (b, d, L, N), a non-contiguous view


def scan_output(
    states: Tensor, u: Tensor, C: Tensor, D: Tensor | None = None, z: Tensor | None = None
) -> Tensor:
    """y = sum_n C h (+ D u) (* silu(z)) from states (batch, d_inner, L, N); u, z:
    (batch, d_inner, L); C: (batch, N, L). Returns u's dtype."""
    y = torch.einsum("bdln,bnl->bdl", states, C.to(states.dtype))
    return _finish(y, u, D, z, u.dtype)


# ----------------------------------------------------------------------------------------------
# Dispatch


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
    ``set_default_method``): auto | chunked | reference | cuda."""
    method = method or _default_method
    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(METHODS)}")
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if method == "reference":
        return selective_scan_reference(*args)
    if method == "cuda" or (method == "auto" and _cuda_applies(u)):
        kernel = _cuda_selective_scan()
        if kernel is None or not u.is_cuda:
            raise RuntimeError("method 'cuda' needs CUDA tensors and mamba-ssm installed")
        return kernel(*args)
    return selective_scan_chunked(*args)
