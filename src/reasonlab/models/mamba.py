"""A Mamba-1 language model built for inspection: pre-norm RMSNorm residual blocks around a
selective state-space mixer, the reference initialization, hook points inside the mixer, and
incremental decoding with a conv + SSM state.

Per block, on one residual stream (batch, L, d_model)::

    x, z   = in_proj(norm(resid))                      (batch, L, d_inner) each
    u      = silu(causal depthwise conv(x))
    dt, B, C = x_proj(u)                               ranks dt_rank, d_state, d_state
    delta  = softplus(dt_proj(dt))                     (batch, L, d_inner)
    y      = selective_scan(u, delta, A = -exp(A_log), B, C, D) * silu(z)
    resid  = resid + out_proj(y)

The scan is ``reasonlab.models.scan.selective_scan`` (layout batch x d_inner x L). The full state
sequence (batch x L x d_inner x d_state) is built only while ``hook_ssm_state`` is watched.
Inputs are token ids (batch, L); outputs logits (batch, L, vocab). There is no position table, so
any length works.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reasonlab.models.base import DecodingState, LanguageModel
from reasonlab.models.causal_conv import causal_depthwise_conv
from reasonlab.models.hooks import HookPoint
from reasonlab.models.scan import (
    scan_output,
    selective_scan,
    selective_scan_states,
    selective_scan_step,
)


@dataclass
class MambaConfig:
    vocab_size: int
    n_layers: int = 4
    d_model: int = 128
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    dt_rank: int = 8  # resolved already: the config layer turns "auto" into ceil(d_model / 16)
    tie_embeddings: bool = False
    input_dim: int | None = None  # continuous inputs (a linear read-in) instead of token ids
    output_dim: int | None = None  # continuous outputs (a linear read-out) instead of logits
    norm_eps: float = 1e-5
    dt_min: float = 1e-3  # softplus(dt_proj.bias) starts log-uniform in [dt_min, dt_max]
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model


class RMSNorm(nn.Module):
    """RMSNorm whose scale and normalized output (before the gain) are hook points, as in the
    GPT's LayerNorm, so that the logit lens reads a residual through the final norm the same way."""

    def __init__(self, d_model: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))
        self.eps = eps
        self.hook_scale = HookPoint()  # (batch, L, 1)
        self.hook_normalized = HookPoint()  # (batch, L, d_model)

    def forward(self, x: Tensor) -> Tensor:
        if not (self.hook_scale.active or self.hook_normalized.active):
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale) * self.weight


@dataclass
class LayerState:
    """One block's decoding state."""

    conv: Tensor  # (batch, d_inner, d_conv - 1): the convolution's last inputs, oldest first
    ssm: Tensor  # (batch, d_inner, d_state): the SSM state after the last position


class MambaState(DecodingState):
    """Per layer the conv and SSM states; ``length`` counts the positions fed so far."""

    def __init__(self, layers: list[LayerState]):
        self.layers = layers
        self.length = 0


@dataclass
class _Scan:
    """The selective scan's inputs in its layout: u, delta, z (b, d_inner, L); B, C (b, N, L).
    ``delta_bias`` None means delta is already biased and softplus-ed."""

    u: Tensor
    delta: Tensor
    A: Tensor
    B: Tensor
    C: Tensor
    D: Tensor
    z: Tensor
    delta_bias: Tensor | None

    def args(self) -> dict[str, Tensor | bool | None]:
        return {
            "u": self.u,
            "delta": self.delta,
            "A": self.A,
            "B": self.B,
            "C": self.C,
            "D": self.D,
            "z": self.z,
            "delta_bias": self.delta_bias,
            "delta_softplus": self.delta_bias is not None,
        }

    def step_args(self) -> dict[str, Tensor | bool | None]:
        """The arguments of the single time step (L = 1)."""
        return {
            name: value[..., 0] if name in ("u", "delta", "B", "C", "z") else value
            for name, value in self.args().items()
        }

    def survival(self) -> Tensor:
        """exp(A * sum of delta up to t): the part of the state before this piece still left at
        each step t, (b, d_inner, L, N). Every factor is <= 1, so nothing overflows."""
        delta = self.delta.to(torch.promote_types(self.delta.dtype, torch.float32))
        if self.delta_bias is not None:
            delta = F.softplus(delta + self.delta_bias[:, None])
        return torch.exp(delta.cumsum(-1)[..., None] * self.A[:, None, :])


class Mixer(nn.Module):
    """The selective SSM mixer (Mamba-1), d_model -> d_model."""

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.cfg = cfg
        d_inner, d_state, dt_rank = cfg.d_inner, cfg.d_state, cfg.dt_rank
        self.in_proj = nn.Linear(cfg.d_model, 2 * d_inner, bias=False)
        # Left padding is added in forward (zeros, or the decoding state's last inputs).
        self.conv1d = nn.Conv1d(d_inner, d_inner, cfg.d_conv, groups=d_inner, bias=True)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(d_inner, d_state))
        self.D = nn.Parameter(torch.empty(d_inner))
        self.out_proj = nn.Linear(d_inner, cfg.d_model, bias=False)
        self.hook_delta = HookPoint()  # (batch, L, d_inner), after softplus
        self.hook_B = HookPoint()  # (batch, L, d_state)
        self.hook_C = HookPoint()  # (batch, L, d_state)
        self.hook_ssm_state = HookPoint()  # (batch, L, d_inner, d_state)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """The reference initialization: A = -[1..N] per channel, D = 1, dt_proj weights uniform
        in +-dt_rank^-0.5, and a dt bias whose softplus is log-uniform in [dt_min, dt_max]."""
        cfg = self.cfg
        states = torch.arange(1, cfg.d_state + 1, dtype=torch.float32, device=self.A_log.device)
        self.A_log.copy_(states.log().expand(cfg.d_inner, -1))
        self.D.fill_(1.0)
        bound = cfg.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        log_dt = torch.rand(cfg.d_inner, device=self.D.device) * (
            math.log(cfg.dt_max) - math.log(cfg.dt_min)
        ) + math.log(cfg.dt_min)
        dt = log_dt.exp().clamp(min=cfg.dt_init_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        # Marks read by Mamba._init_weights (keep this bias) and, as in the reference, by an
        # optimizer that leaves A_log and D out of weight decay.
        self.dt_proj.bias._no_reinit = True  # type: ignore[attr-defined]
        self.A_log._no_weight_decay = True  # type: ignore[attr-defined]
        self.D._no_weight_decay = True  # type: ignore[attr-defined]

    def _conv(self, x: Tensor, cache: LayerState | None) -> Tensor:
        """Causal depthwise convolution of x (batch, L, d_inner) with conv1d's parameters;
        updates ``cache.conv``."""
        context = self.cfg.d_conv - 1
        if cache is None:
            padded = F.pad(x, (0, 0, context, 0))  # (b, context + L, d_inner)
        else:
            padded = torch.cat([cache.conv.to(x.dtype).transpose(1, 2), x], dim=1)
            cache.conv = padded[:, padded.shape[1] - context :].transpose(1, 2).contiguous()
        return causal_depthwise_conv(padded, self.conv1d.weight[:, 0], self.conv1d.bias)

    def forward(
        self, hidden: Tensor, cache: LayerState | None = None, fresh: bool = True
    ) -> Tensor:
        """hidden: (batch, L, d_model) -> (batch, L, d_model). With ``cache``, continue from its
        state (``fresh``: nothing fed yet, so the SSM state is zero) and update it."""
        cfg = self.cfg
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # (b, L, d_inner) each
        # Tensors stay (b, L, k) in memory; the scan takes them as (b, k, L) views.
        u = F.silu(self._conv(x, cache))  # (b, L, d_inner)
        dt, B, C = self.x_proj(u).split([cfg.dt_rank, cfg.d_state, cfg.d_state], -1)
        B, C = self.hook_B(B), self.hook_C(C)  # (b, L, N)
        delta = F.linear(dt, self.dt_proj.weight)  # (b, L, d_inner); the bias is added in the scan
        delta_bias: Tensor | None = self.dt_proj.bias
        if self.hook_delta.active:
            delta = self.hook_delta(F.softplus(delta + self.dt_proj.bias))
            delta_bias = None
        scan = _Scan(
            u=u.transpose(1, 2),
            delta=delta.transpose(1, 2),
            A=-torch.exp(self.A_log),
            B=B.transpose(1, 2),
            C=C.transpose(1, 2),
            D=self.D,
            z=z.transpose(1, 2),
            delta_bias=delta_bias,
        )
        if self.hook_ssm_state.active:
            y = self._scan_with_states(scan, cache, fresh)
        elif cache is None:
            y = selective_scan(**scan.args())
        elif u.shape[1] == 1:  # one decoding step: O(1), no scan machinery
            out, cache.ssm = selective_scan_step(cache.ssm, **scan.step_args())
            y = out[..., None]
        else:
            y, last = selective_scan(**scan.args(), return_last_state=True)
            if not fresh:  # the scan starts from zero: add what the old state contributes
                survival = scan.survival()  # (b, d_inner, L, N)
                carried = torch.einsum("bdln,bdn,bnl->bdl", survival, cache.ssm, scan.C)
                y = y + (carried * F.silu(scan.z)).to(y.dtype)
                last = last + survival[:, :, -1] * cache.ssm
            cache.ssm = last
        return self.out_proj(y.transpose(1, 2))  # (b, L, d_model)

    def _scan_with_states(self, scan: _Scan, cache: LayerState | None, fresh: bool) -> Tensor:
        """The scan through its full state sequence, which ``hook_ssm_state`` reads or replaces."""
        states = selective_scan_states(
            scan.u, scan.delta, scan.A, scan.B, scan.delta_bias, scan.delta_bias is not None
        )  # (b, d_inner, L, N)
        if cache is not None and not fresh:
            states = states + scan.survival() * cache.ssm[:, :, None, :]
        states = self.hook_ssm_state(states.transpose(1, 2)).transpose(1, 2)
        if cache is not None:
            cache.ssm = states[:, :, -1].contiguous()
        return scan_output(states, scan.u, scan.C, scan.D, scan.z)


class Block(nn.Module):
    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mixer = Mixer(cfg)
        self.hook_resid_pre = HookPoint()
        self.hook_mixer_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, resid: Tensor, cache: LayerState | None = None, fresh: bool = True) -> Tensor:
        resid = self.hook_resid_pre(resid)
        mixed = self.mixer(self.norm(resid), cache, fresh)
        return self.hook_resid_post(resid + self.hook_mixer_out(mixed))


class Mamba(LanguageModel):
    family = "mamba"

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.input_dim is None:
            self.embed: nn.Module = nn.Embedding(cfg.vocab_size, cfg.d_model)
        else:
            self.embed = nn.Linear(cfg.input_dim, cfg.d_model)
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.unembed = nn.Linear(cfg.d_model, cfg.output_dim or cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.unembed.weight = self.embed.weight
        self.apply(self._init_weights)
        # The reference's prenorm-residual rescale: one residual write per block.
        with torch.no_grad():
            for block in self.blocks:
                block.mixer.out_proj.weight.div_(math.sqrt(cfg.n_layers))
        self.setup_hooks()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """The reference's generic pass: PyTorch's default Linear and conv weights, zero Linear
        biases (except those marked ``_no_reinit``: the dt bias), normal(0.02) embeddings."""
        if isinstance(module, nn.Linear) and module.bias is not None:
            if not getattr(module.bias, "_no_reinit", False):
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def component_hooks(self) -> dict[str, list[str]]:
        return {"mixer_out": [f"blocks.{i}.hook_mixer_out" for i in range(self.cfg.n_layers)]}

    def describe(self) -> str:
        cfg = self.cfg
        return (
            f"Mamba: {cfg.n_layers} layers, width {cfg.d_model}, d_state {cfg.d_state}, "
            f"expand {cfg.expand}, d_conv {cfg.d_conv}, dt_rank {cfg.dt_rank}"
        )

    def new_state(self, batch_size: int) -> MambaState:
        """An empty decoding state: zero conv inputs and zero SSM states, on the model's device."""
        cfg, weight = self.cfg, self.unembed.weight
        ssm_dtype = torch.promote_types(weight.dtype, torch.float32)  # the scan's compute dtype
        return MambaState(
            [
                LayerState(
                    conv=weight.new_zeros(batch_size, cfg.d_inner, cfg.d_conv - 1),
                    ssm=weight.new_zeros(batch_size, cfg.d_inner, cfg.d_state, dtype=ssm_dtype),
                )
                for _ in range(cfg.n_layers)
            ]
        )

    def forward(self, inputs: Tensor, state: MambaState | None = None) -> Tensor:
        """inputs: (batch, L) token ids or (batch, L, input_dim) -> logits (batch, L, vocab) or
        (batch, L, output_dim). With ``state``, the inputs
        continue the sequence it has seen and it is updated in place."""
        resid = self.hook_embed(self.embed(inputs))
        fresh = state is None or state.length == 0
        for index, block in enumerate(self.blocks):
            resid = block(resid, None if state is None else state.layers[index], fresh)
        if state is not None:
            state.length += inputs.shape[1]
        return self.read_out(resid)
