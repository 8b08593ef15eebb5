"""A GPT-2-style decoder built for inspection: pre-LN blocks, learned or rotary positions, SDPA
attention, optional tied embeddings, GPT-2 initialization, and TransformerLens hook names.

Inputs are token ids (batch, L), or vectors (batch, L, input_dim) when ``input_dim`` is set (for
in-context regression); outputs are logits (batch, L, vocab) or vectors (batch, L, output_dim).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from reasonlab.models.attention import Augmentation, CausalSelfAttention, LayerKV
from reasonlab.models.base import DecodingState, LanguageModel
from reasonlab.models.hooks import HookPoint


@dataclass
class GPTConfig:
    vocab_size: int
    max_seq_len: int
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int | None = None
    positions: str = "learned"  # learned | rotary
    tie_embeddings: bool = False
    dropout: float = 0.0
    attention: str = "softmax"  # or a variant: models/attention.py
    attention_reg: float = 0.5
    attention_hidden: int = 16
    attention_beta: float = 0.1
    input_dim: int | None = None  # continuous inputs instead of token ids
    output_dim: int | None = None  # continuous outputs instead of logits
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        self.d_mlp = self.d_mlp or 4 * self.d_model


class KVCache(DecodingState):
    """The GPT's decoding state: every layer's keys and values, and the positions fed so far."""

    def __init__(self, batch_size: int, n_layers: int):
        self.batch_size = batch_size
        self.layers = [LayerKV() for _ in range(n_layers)]
        self.length = 0

    def select(self, rows: Tensor) -> KVCache:
        """A new state holding a copy of ``rows`` (a branch: feeding one leaves the other)."""
        branch = KVCache(len(rows), len(self.layers))
        for mine, theirs in zip(self.layers, branch.layers, strict=True):
            if mine.keys is not None and mine.values is not None:
                theirs.keys, theirs.values = mine.keys[rows], mine.values[rows]
        branch.length = self.length
        return branch


class LayerNorm(nn.LayerNorm):
    """LayerNorm whose normalized output (before the affine map) is a hook point, so that the
    logit lens can read any residual stream through the final norm."""

    def __init__(self, d_model: int, eps: float):
        super().__init__(d_model, eps=eps)
        self.hook_scale = HookPoint()  # (batch, L, 1)
        self.hook_normalized = HookPoint()  # (batch, L, d_model)

    def forward(self, x: Tensor) -> Tensor:
        if not (self.hook_scale.active or self.hook_normalized.active):
            return super().forward(x)  # fused kernel when nobody reads the inside
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale) * self.weight + self.bias


class MLP(nn.Module):
    def __init__(self, d_model: int, d_mlp: int):
        super().__init__()
        self.W_in = nn.Linear(d_model, d_mlp)
        self.act = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
        self.hook_post = HookPoint()  # (batch, L, d_mlp)
        self.W_out = nn.Linear(d_mlp, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.W_out(self.hook_post(self.act(self.W_in(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = LayerNorm(cfg.d_model, cfg.layer_norm_eps)
        self.attn = CausalSelfAttention(
            cfg.d_model,
            cfg.n_heads,
            cfg.dropout,
            rotary=cfg.positions == "rotary",
            max_seq_len=cfg.max_seq_len,
            kind=cfg.attention,
            reg=cfg.attention_reg,
            hidden=cfg.attention_hidden,
            beta=cfg.attention_beta,
        )
        self.ln2 = LayerNorm(cfg.d_model, cfg.layer_norm_eps)
        self.mlp = MLP(cfg.d_model, cfg.d_mlp)
        self.dropout = nn.Dropout(cfg.dropout)
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, resid: Tensor, cache: LayerKV | None = None) -> Tensor:
        resid = self.hook_resid_pre(resid)
        resid = self.hook_resid_mid(
            resid + self.hook_attn_out(self.dropout(self.attn(self.ln1(resid), cache)))
        )
        return self.hook_resid_post(
            resid + self.hook_mlp_out(self.dropout(self.mlp(self.ln2(resid))))
        )


class GPT(LanguageModel):
    family = "gpt"

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.input_dim is None:
            self.embed: nn.Module = nn.Embedding(cfg.vocab_size, cfg.d_model)
        else:
            self.embed = nn.Linear(cfg.input_dim, cfg.d_model)
        self.hook_embed = HookPoint()
        self.pos_embed = (
            nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.positions == "learned" else None
        )
        self.hook_pos_embed = HookPoint()
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = LayerNorm(cfg.d_model, cfg.layer_norm_eps)
        out_features = cfg.output_dim or cfg.vocab_size
        self.unembed = nn.Linear(cfg.d_model, out_features, bias=False)
        if cfg.tie_embeddings:
            if cfg.input_dim is not None or cfg.output_dim is not None:
                raise ValueError("tied embeddings need token inputs and token outputs")
            self.unembed.weight = self.embed.weight
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layers).
        for name, param in self.named_parameters():
            if name.endswith("W_out.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))
        if cfg.input_dim is not None:
            # PyTorch's default init for a read-in of vectors, as Garg et al.'s read-in: with
            # normal(0.02) in-context regression learned about half as fast (measured here)
            self.embed.reset_parameters()
        for module in self.modules():
            if isinstance(module, Augmentation):
                module.start_as_identity()
        self.setup_hooks()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def component_hooks(self) -> dict[str, list[str]]:
        layers = range(self.cfg.n_layers)
        kinds = ("attn_out", "mlp_out")
        return {kind: [f"blocks.{i}.hook_{kind}" for i in layers] for kind in kinds}

    def describe(self) -> str:
        cfg = self.cfg
        attention = "" if cfg.attention == "softmax" else f", {cfg.attention} attention"
        return (
            f"GPT: {cfg.n_layers} layers, width {cfg.d_model}, {cfg.n_heads} heads, "
            f"MLP {cfg.d_mlp}, {cfg.positions} positions{attention}"
        )

    def new_state(self, batch_size: int) -> KVCache:
        return KVCache(batch_size, self.cfg.n_layers)

    def forward(self, inputs: Tensor, state: KVCache | None = None) -> Tensor:
        """inputs: (batch, L) token ids or (batch, L, input_dim) -> (batch, L, vocab/output_dim).
        With ``state``, inputs continue the sequence the state has seen (positions go on from
        ``state.length``), the state is updated, and the new positions' outputs come back."""
        length = inputs.shape[1]
        start = 0 if state is None else state.length
        if start + length > self.cfg.max_seq_len:
            seen = "" if state is None else f" ({start} fed before, {length} now)"
            raise ValueError(
                f"sequence length {start + length}{seen} exceeds max_seq_len {self.cfg.max_seq_len}"
            )
        if state is not None and inputs.shape[0] != state.batch_size:
            raise ValueError(
                f"batch size {inputs.shape[0]} differs from the decoding state's {state.batch_size}"
            )
        resid = self.hook_embed(self.embed(inputs))
        if self.pos_embed is not None:
            positions = torch.arange(start, start + length, device=resid.device)
            position_embeddings = self.pos_embed(positions).expand(resid.shape[0], -1, -1)
            resid = resid + self.hook_pos_embed(position_embeddings)
        resid = self.drop(resid)
        if state is None:
            for block in self.blocks:
                resid = block(resid)
            return self.read_out(resid)
        saved = [(layer.keys, layer.values) for layer in state.layers]
        try:
            for block, cache in zip(self.blocks, state.layers, strict=True):
                resid = block(resid, cache)
        except BaseException:
            # a hook that raised must not leave some layers a piece ahead of the others
            for layer, (keys, values) in zip(state.layers, saved, strict=True):
                layer.keys, layer.values = keys, values
            raise
        state.length = start + length
        return self.read_out(resid)
