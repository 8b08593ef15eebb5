"""Mamba's selective scan: a sequential reference, a fast chunked scan in pure PyTorch, the same
chunked recurrence with torch.compile'd chunk kernels, and mamba-ssm's CUDA kernel when it is
installed and the inputs are on a GPU.

The recurrence, per batch b, channel d and state index n, with the layout of mamba-ssm's
``selective_scan_ref`` (u, delta: batch x d_inner x L; A: d_inner x N; B, C: batch x N x L)::

    delta = softplus(delta + delta_bias)        (each step optional)
    h[t]  = exp(delta[t] * A) * h[t-1] + delta[t] * u[t] * B[t]      h[-1] = 0
    y[t]  = sum_n C[t, n] * h[t, n]  +  D * u[t]
    out   = y * silu(z)

Only input-dependent B and C of shape batch x N x L are supported (the layout Mamba-1 uses), not
mamba-ssm's time-invariant (d_inner x N) or grouped (batch x G x N x L) variants.

The chunked scan (the CPU default for small inputs and long sequences, and the fallback) runs
the recurrence step by step, over one chunk of time at a time held in reused buffers (batch x
chunk x N x d_inner, about CHUNK_ELEMENTS elements each), so a step is one fused multiply-add
over a batch x N x d_inner slice, the chunk's working set stays in cache, and nothing of size
batch x L x d_inner x N is built. Decays are multiplied in one step at a time, each
exp(delta * A) <= 1 for delta >= 0, so nothing overflows however large delta * |A| gets; a
log-space cumulative sum would need exp(-sum delta * A), which overflows in float32 once
|A| * sum(delta) over a chunk passes about 88. The backward pass is a custom autograd function:
it keeps the state at the start of each chunk (1/chunk of the state sequence), recomputes a
chunk's states, and runs the adjoint recurrence backwards through it. Batch rows are
independent: the scan splits them into parts, one per thread (SCAN_THREADS), each running its
own chunk loop with one intra-op thread.

The compiled scan (opt-in: REASONLAB_SCAN_COMPILE=1 makes it the CPU default from
COMPILE_MIN_ELEMENTS elements of batch x d_inner x N x L on, up to COMPILE_MAX_LENGTH steps, while
torch.compile works) runs the same chunked
recurrence, COMPILED_CHUNK steps per call of a compiled kernel that keeps the chunk's states in
registers (the "Compiled scan" section below). Its first call per shape compiles for 10-30 s
(later processes load the kernels from torch's disk cache); if compiling fails it warns once and
``auto`` goes back to the chunked scan.

Speed and memory (docs/BENCHMARKS.md): 6-10x faster than mambapy's parallel scan forward +
backward at L = 64 to 1024 on a CPU, with a tenth of its peak memory or less. The compiled scan
runs on one intra-op thread of its own, without row threads.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import itertools
import math
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

METHODS = ("auto", "compiled", "chunked", "reference", "cuda")
_default_method = "auto"

# Elements (batch x chunk x N x d_inner) per chunk buffer when no chunk size is given: small
# enough that the chunk's few buffers stay in cache, large enough that per-chunk Python
# overhead does not count. Measured in docs/BENCHMARKS.md (selective scan).
CHUNK_ELEMENTS = 1 << 19
LOG2_E = 1 / math.log(2)


# Threads of the chunked scan. Its batch rows are independent, so it splits them into
# SCAN_THREADS parts (None: torch's intra-op setting) and runs each part's whole chunk loop on a
# thread of its own, every operation on that thread alone (one intra-op thread). The parts meet
# once, at the end. Spreading each of the scan's thousands of small operations over torch's
# threads instead makes every operation wait for all of them, which on a CPU shared with other busy
# processes made the scan up to 50x slower (docs/BENCHMARKS.md); parts that never wait for each
# other lose at most their share when a core is taken. REASONLAB_SCAN_THREADS=N (a positive
# number) sets it.
def _scan_threads_setting(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) > 0 else None


SCAN_THREADS: int | None = _scan_threads_setting(os.environ.get("REASONLAB_SCAN_THREADS", ""))

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


def set_default_method(method: str) -> str:
    """Set the method ``selective_scan`` uses when none is passed; returns the previous one.

    ``auto``: the CUDA kernel for CUDA tensors when mamba-ssm imports, else ``compiled`` for
    CPU inputs of at least COMPILE_MIN_ELEMENTS elements and at most COMPILE_MAX_LENGTH steps
    while compiling works, else ``chunked``;
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


def _compiled_applies(u: Tensor, A: Tensor) -> bool:
    """auto picks the compiled scan for large enough CPU inputs of at most COMPILE_MAX_LENGTH
    steps, while compiling works."""
    return (
        u.device.type == "cpu"
        and u.shape[-1] <= COMPILE_MAX_LENGTH
        and u.numel() * A.shape[1] >= COMPILE_MIN_ELEMENTS
        and compiled_scan_available()
    )


def _cuda_applies(u: Tensor) -> bool:
    # The kernel computes in float32 at most; float64 inputs stay on the chunked path.
    return u.is_cuda and u.dtype != torch.float64 and _cuda_selective_scan() is not None


@contextlib.contextmanager
def _scan_threads(device: torch.device) -> Iterator[int]:
    """Runs the body with one intra-op thread (CPU only), then restores torch's setting. Yields
    how many threads the body may run batch rows on: SCAN_THREADS, or torch's setting."""
    previous = torch.get_num_threads()
    if device.type != "cpu":
        yield 1
        return
    workers = SCAN_THREADS or previous
    if previous == 1:
        yield workers
        return
    torch.set_num_threads(1)
    try:
        yield workers
    finally:
        torch.set_num_threads(previous)


def _with_scan_threads(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps an autograd.Function's forward or backward in _scan_threads; ``ctx.workers`` holds
    the number of row threads it yields."""

    @functools.wraps(method)
    def wrapper(ctx: Any, *args: Any) -> Any:
        tensors = [a for a in args if isinstance(a, Tensor)]
        with _scan_threads(tensors[0].device if tensors else torch.device("cpu")) as workers:
            ctx.workers = workers
            return method(ctx, *args)

    return wrapper


_executor: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None  # (pid, pool)


def _row_executor() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that run row parts besides the caller's; a new pool in a forked child, where
    the parent's threads do not exist."""
    global _executor
    if _executor is None or _executor[0] != os.getpid():
        pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="reasonlab-scan")
        _executor = (os.getpid(), pool)
    return _executor[1]


def _row_parts(batch: int, workers: int) -> list[tuple[int, int]]:
    """[start, end) of each of min(workers, batch) near-equal parts of the batch rows."""
    parts = max(1, min(workers, batch))
    edges = [batch * i // parts for i in range(parts + 1)]
    return list(itertools.pairwise(edges))


def _alone(body: Callable[[int, int], Any], start: int, end: int, inference: bool) -> Any:
    """body(start, end) on a pool thread: one intra-op thread, no autograd graph, and the
    caller's inference mode (grad modes are per thread)."""
    torch.set_num_threads(1)
    with torch.inference_mode(inference), torch.no_grad():
        return body(start, end)


def _run_rows(body: Callable[[int, int], Any], batch: int, workers: int) -> list[Any]:
    """body(start, end) for each part of the batch rows, the first on the calling thread and the
    others on pool threads at the same time; their results in row order."""
    parts = _row_parts(batch, workers)
    if len(parts) == 1:
        return [body(*parts[0])]
    pool = _row_executor()
    inference = torch.is_inference_mode_enabled()
    futures = [pool.submit(_alone, body, *part, inference) for part in parts[1:]]
    try:
        first = body(*parts[0])
    finally:
        concurrent.futures.wait(futures)  # never leave a part writing after an error here
    return [first, *(future.result() for future in futures)]


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
    (_run_rows), each part moving its own rows. ``chunk_size``: steps per chunk, or None for
    about CHUNK_ELEMENTS elements of one part's batch x chunk x N x d."""

    @staticmethod
    @_with_scan_threads
    def forward(
        ctx: Any, delta: Tensor, u: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int | None
    ) -> tuple[Tensor, Tensor]:
        batch, d_inner, length = u.shape
        A_t = A.t().contiguous()  # (N, d)
        d_state = A_t.shape[0]
        part_rows = -(-batch // max(1, min(ctx.workers, batch)))
        chunk = _chunk_length(part_rows, d_inner, d_state, length, chunk_size)
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

        _run_rows(rows, batch, ctx.workers)
        ctx.chunk = chunk
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*moved, A_t, starts)
        return y.transpose(1, 2), starts[-1].clone()

    @staticmethod
    @_with_scan_threads
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

        grad_A_t = torch.stack(_run_rows(rows, batch, ctx.workers)).sum(0)
        grad_delta, grad_u, grad_B, grad_C = (g.transpose(1, 2) for g in grads)
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
    """delta (biased, softplus-ed), u, A, B in the compute dtype (any strides: the scans move
    them to their own layout once)."""
    delta = _prepare_delta(delta, delta_bias, delta_softplus, dtype)
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
    _check_shapes(u, delta, A, B, C)
    dtype = _compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    prepared = _prepared(u, delta, A, B, delta_bias, delta_softplus, dtype)
    y, last_state = _ChunkedScan.apply(*prepared, C.to(dtype), chunk_size)  # (b, d, L), (b, N, d)
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
# Compiled scan (CPU). torch.compile turns each chunk kernel below, T steps unrolled, into one C++
# loop nest per (batch, channel) or (batch, state index) that keeps the chunk's states in
# registers and small local buffers, where the eager scan writes and reads several
# batch x T x N x d_inner buffers per chunk. The forward pass and the sums over N of the backward
# pass run with the state as (b, d, N): N innermost, so inductor fuses the recurrence and the
# sums over N into one loop nest (with the state as (b, N, d) it stored every step's state
# instead). The sums over d_inner (dLoss/dB, dLoss/dC) need the other order, so a second backward
# kernel recomputes the chunk with the state as (b, N, d). Each kernel computes exp(delta * A)
# anew: saving the forward pass's decays and loading them in the backward pass measured no
# faster (the store costs about what the exp does). dLoss/dA is accumulated per batch row as
# (b, d, N) and summed at the end. Measured alternatives (docs/BENCHMARKS.md): chunks of 2-16
# steps (4 was fastest), unrolling N too (3 minutes to compile, slower), two threads (slower on
# this shared CPU).
#
# Sequences are time-major inside ((L, b, d) and (L, b, N)), with L zero-padded to whole chunks:
# a chunk is then a contiguous slice whose shape and strides do not depend on L, so each kernel
# compiles once per (batch, d_inner, N, dtype) (10-30 s on a 2-core CPU, then cached on disk by
# torch) whatever the length. A padded step has delta = u = B = C = 0: decay exp(0) = 1 and drive
# 0, so it carries the state (and the adjoint) through unchanged.


def _decay_of(delta: Tensor, A: Tensor) -> Tensor:
    """exp(delta * A), floored as in _exp_decay (inside a compiled kernel: fused, in registers)."""
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
    @_with_scan_threads
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
    @_with_scan_threads
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
    _check_shapes(u, delta, A, B, C)
    dtype = _compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    chunk = max(1, int(chunk_size or COMPILED_CHUNK))  # not cut to L: one compile for all L
    args = [None if x is None else x.to(dtype) for x in (u, delta, A, B, C, D, z, delta_bias)]
    out, last_state = _CompiledScan.apply(*args, delta_softplus, chunk)
    out = out.to(u.dtype)
    return (out, last_state) if return_last_state else out


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
    ``set_default_method``): auto | compiled | chunked | reference | cuda."""
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
    if method == "compiled" or (method == "auto" and _compiled_applies(u, A)):
        return selective_scan_compiled(*args)
    return selective_scan_chunked(*args)
