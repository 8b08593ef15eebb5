"""Causal multi-head self-attention with hook points, SDPA when nobody looks at the pattern, an
optional key/value cache for incremental decoding, and the variants that the contrastive view of
in-context learning suggests (arXiv 2310.13220; ``analysis/dual.py`` has the single-query forms):

- ``softmax``: standard attention, a_ij = softmax_j(q_i . k_j / sqrt(d)) over the keys j <= i;
- ``linear``: no softmax: weights (q_i . k_j / sqrt(d)) / (i + 1), the mean over visible keys;
- ``regularized``: a norm regularizer on the dual model scales the query's own term: a_ii is
  multiplied by 1 - reg (the other weights are kept, not renormalized);
- ``augmented``: keys and values pass through small residual MLPs, k + MLP_k(k) and
  v + MLP_v(v) (per head, shared by heads; the last layer starts at zero, so training starts from
  softmax attention); the hooks see the augmented keys and values;
- ``negative``: beta times the mean of the other visible values is subtracted from each value,
  sum_j a_ij (v_j - beta mean_{l != j} v_l), i.e. weights a_ij - beta (1 - a_ij) / i over the
  i + 1 visible keys (nothing is subtracted for the first position, which sees only itself).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reasonlab.models.hooks import HookPoint


class LayerKV:
    """One layer's cached keys and values, (batch, heads, length, head_dim) each, rotated already
    when positions are rotary; None before anything was fed."""

    def __init__(self) -> None:
        self.keys: Tensor | None = None
        self.values: Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]


def rotary_tables(length: int, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos and sin, each (length, head_dim), for rotary position embeddings (GPT-NeoX layout)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, start: int = 0) -> Tensor:
    """x: (batch, heads, L, head_dim) at positions start..start+L-1; rotates the two halves of
    each head by position."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    end = start + x.shape[-2]
    return x * cos[start:end].to(x.dtype) + rotated * sin[start:end].to(x.dtype)


ATTENTION_KINDS = ("softmax", "linear", "regularized", "augmented", "negative")


class Augmentation(nn.Module):
    """x + W_2 gelu(W_1 x) on each head's vectors; W_2 starts at zero (the identity map)."""

    def __init__(self, head_dim: int, hidden: int):
        super().__init__()
        self.W_hidden = nn.Linear(head_dim, hidden)
        self.W_back = nn.Linear(hidden, head_dim)
        self.start_as_identity()

    def start_as_identity(self) -> None:
        """Zero last layer: the map starts as the identity (call after a model-wide init)."""
        nn.init.zeros_(self.W_back.weight)
        nn.init.zeros_(self.W_back.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.W_back(F.gelu(self.W_hidden(x)))


def variant_weights(
    kind: str, scores: Tensor, causal: Tensor, start: int, reg: float, beta: float
) -> Tensor:
    """Attention weights (batch, heads, query, key) of a variant from the scaled scores q.k /
    sqrt(d) and the causal mask (query, key); query i sits at position start + i."""
    if kind == "linear":
        visible = causal.sum(-1, keepdim=True)  # i + 1 keys for the query at position i
        return scores.masked_fill(~causal, 0.0) / visible
    weights = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
    if kind == "regularized":
        own = torch.zeros_like(causal)
        own[torch.arange(causal.shape[0]), start + torch.arange(causal.shape[0])] = True
        weights = torch.where(own, weights * (1.0 - reg), weights)
    elif kind == "negative":
        others = (causal.sum(-1, keepdim=True) - 1).clamp(min=1)  # the other visible keys
        weights = torch.where(causal, weights - beta * (1.0 - weights) / others, weights)
    return weights


class CausalSelfAttention(nn.Module):
    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float = 0.0,
        rotary: bool = False,
        max_seq_len: int = 1024,
        kind: str = "softmax",
        reg: float = 0.5,
        hidden: int = 16,
        beta: float = 0.1,
    ):
        super().__init__()
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"unknown attention kind {kind!r} (known: {ATTENTION_KINDS})")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.kind, self.reg, self.beta = kind, reg, beta
        if kind == "augmented":
            self.augment_k = Augmentation(self.head_dim, hidden)
            self.augment_v = Augmentation(self.head_dim, hidden)
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

    def forward(self, x: Tensor, cache: LayerKV | None = None) -> Tensor:
        """x: (batch, L, d_model) -> (batch, L, d_model). With ``cache``, x continues the
        sequence the cache holds: its queries also attend to the cached keys, and its keys and
        values are appended to the cache."""
        batch, length, _ = x.shape
        q, k, v = self.W_qkv(x).view(batch, length, 3, self.n_heads, self.head_dim).unbind(2)
        if self.kind == "augmented":
            k, v = self.augment_k(k), self.augment_v(v)
        # Hooks see (batch, L, heads, head_dim), as in TransformerLens.
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (batch, heads, L, head_dim)
        start = 0 if cache is None else cache.length
        if self.rotary:
            q = apply_rotary(q, self.rotary_cos, self.rotary_sin, start)
            k = apply_rotary(k, self.rotary_cos, self.rotary_sin, start)
        if cache is not None:
            if cache.keys is not None:
                k = torch.cat([cache.keys, k], dim=2)
                v = torch.cat([cache.values, v], dim=2)
            cache.keys, cache.values = k, v
        dropout = self.dropout if self.training else 0.0
        explicit = self.kind not in ("softmax", "augmented")  # SDPA computes softmax weights only
        if explicit or self.hook_pattern.active or self.hook_attn_scores.active:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
            # query i sits at position start + i and sees keys 0..start + i
            causal = torch.ones(length, start + length, dtype=torch.bool, device=x.device)
            causal = causal.tril(start)
            scores = self.hook_attn_scores(scores.masked_fill(~causal, float("-inf")))
            weights = variant_weights(self.kind, scores, causal, start, self.reg, self.beta)
            pattern = self.hook_pattern(weights)
            z = F.dropout(pattern, dropout, self.training) @ v
        elif start == 0:  # the training path, and a first piece: SDPA's square causal mask
            z = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        elif length == 1:  # one new query after cached keys sees every key: no mask
            z = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        else:
            # Several new queries after cached keys: SDPA's is_causal would align the mask to the
            # top left, so it is given explicitly.
            mask = torch.ones(length, start + length, dtype=torch.bool, device=x.device).tril(start)
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        z = self.hook_z(z.transpose(1, 2))
        return self.W_out(z.reshape(batch, length, -1))
