"""Causal multi-head self-attention with hook points, SDPA when nobody looks at the pattern."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reasonlab.models.hooks import HookPoint


def rotary_tables(length: int, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos and sin, each (length, head_dim), for rotary position embeddings (GPT-NeoX layout)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: (batch, heads, L, head_dim); rotates the two halves of each head by position."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    length = x.shape[-2]
    return x * cos[:length].to(x.dtype) + rotated * sin[:length].to(x.dtype)


class CausalSelfAttention(nn.Module):
    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float = 0.0,
        rotary: bool = False,
        max_seq_len: int = 1024,
    ):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.W_qkv = nn.Linear(d_model, 3 * d_model)
        self.W_out = nn.Linear(d_model, d_model)
        self.dropout = dropout
        self.rotary = rotary
        if rotary:
            cos, sin = rotary_tables(max_seq_len, self.head_dim)
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.register_buffer("rotary_sin", sin, persistent=False)
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_attn_scores = HookPoint()  # (batch, heads, query, key), before softmax
        self.hook_pattern = HookPoint()  # (batch, heads, query, key), after softmax
        self.hook_z = HookPoint()  # (batch, L, heads, head_dim), heads' outputs before W_out

    def forward(self, x: Tensor) -> Tensor:
        """x: (batch, L, d_model) -> (batch, L, d_model)."""
        batch, length, _ = x.shape
        q, k, v = self.W_qkv(x).view(batch, length, 3, self.n_heads, self.head_dim).unbind(2)
        # Hooks see (batch, L, heads, head_dim), as in TransformerLens.
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (batch, heads, L, head_dim)
        if self.rotary:
            q = apply_rotary(q, self.rotary_cos, self.rotary_sin)
            k = apply_rotary(k, self.rotary_cos, self.rotary_sin)
        dropout = self.dropout if self.training else 0.0
        if self.hook_pattern.active or self.hook_attn_scores.active:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
            causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
            scores = self.hook_attn_scores(scores.masked_fill(~causal, float("-inf")))
            pattern = self.hook_pattern(scores.softmax(dim=-1))
            z = F.dropout(pattern, dropout, self.training) @ v
        else:
            z = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        z = self.hook_z(z.transpose(1, 2))
        return self.W_out(z.reshape(batch, length, -1))
