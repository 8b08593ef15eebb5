"""The selective scan's numerical reference: the recurrence as a plain loop over time, with the
semantics and tensor layout of mamba-ssm's ``selective_scan_ref``, and one step of it for
decoding. The fast scans (chunked.py, compiled.py) are checked against it.

The recurrence, per batch b, channel d and state index n, with the layout of mamba-ssm's
``selective_scan_ref`` (u, delta: batch x d_inner x L; A: d_inner x N; B, C: batch x N x L)::

    delta = softplus(delta + delta_bias)        (each step optional)
    h[t]  = exp(delta[t] * A) * h[t-1] + delta[t] * u[t] * B[t]      h[-1] = 0
    y[t]  = sum_n C[t, n] * h[t, n]  +  D * u[t]
    out   = y * silu(z)

Only input-dependent B and C of shape batch x N x L are supported (the layout Mamba-1 uses), not
mamba-ssm's time-invariant (d_inner x N) or grouped (batch x G x N x L) variants.

The end of the file holds the preparation every scan shares: the compute dtype, the shape
checks, delta's bias and softplus, and the skip connection and gate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


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
    check_shapes(u, delta, A, B, C)
    dtype = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    delta = prepare_delta(delta, delta_bias, delta_softplus, dtype)  # (b, d, L)
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
    out = skip_and_gate(y, u_, D, z, u.dtype)
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
    dtype = compute_dtype(state, u, delta, A, B, C, D, z, delta_bias)
    delta = prepare_delta(delta, delta_bias, delta_softplus, dtype)  # (b, d)
    u_ = u.to(dtype)
    decay = torch.exp(delta[:, :, None] * A.to(dtype))  # (b, d, N)
    new_state = decay * state.to(dtype) + (delta * u_)[:, :, None] * B.to(dtype)[:, None, :]
    y = (new_state * C.to(dtype)[:, None, :]).sum(-1)  # (b, d)
    out = skip_and_gate(
        y[..., None], u_[..., None], D, None if z is None else z[..., None], u.dtype
    )
    return out[..., 0], new_state


# ----------------------------------------------------------------------------------------------
# Shared preparation (the chunked and compiled scans use it too)


def compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    """float64 if any input is float64, else float32 (half inputs are computed in float32, as in
    mamba-ssm)."""
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def check_shapes(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> None:
    """Raises a ValueError naming the input whose shape is not mamba-ssm's layout."""
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


def prepare_delta(
    delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool, dtype: torch.dtype
) -> Tensor:
    """delta: (b, d, L) or (b, d) for one step; delta_bias: (d,)."""
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype).view(-1, *[1] * (delta.dim() - 2))
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def skip_and_gate(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, out_dtype: torch.dtype):
    """Skip connection and gate. y, u, z: (batch, d_inner, L); D: (d_inner,)."""
    if D is not None:
        y = y + u.to(y.dtype) * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(out_dtype)
