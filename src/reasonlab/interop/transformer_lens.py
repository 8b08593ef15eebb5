"""Our GPT as a TransformerLens ``HookedTransformer``, for parity checks and TransformerLens tools.

The two models compute the same function (pre-LN blocks, tanh GELU, learned positions, LayerNorm
eps 1e-5, no unembedding bias) and share hook names (``blocks.{i}.hook_resid_post``,
``blocks.{i}.attn.hook_pattern``, ...), so the weights only change layout: per-head
(n_heads, d_model, d_head) matrices instead of our packed ``W_qkv``, and (in, out) instead of
``nn.Linear``'s (out, in). The HookedTransformer is built from its config and loaded with
``load_state_dict``: none of TransformerLens's weight processing (fold_ln, centering, ...) is
applied, so its activations are ours, not a re-parameterized version of them.

``transformer_lens`` is imported lazily; ``HookedTransformer`` exists in TransformerLens 2.x and
3.x (4.0 removed it in favour of ``TransformerBridge``).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

from reasonlab.interop.huggingface import load_every_parameter, require_standard_gpt
from reasonlab.models.gpt import GPT

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

INSTALL_HINT = "pip install 'reasonlab[lens]'"


def _transformer_lens() -> Any:
    try:
        import transformer_lens
    except ImportError:
        raise ImportError(
            f"to_hooked_transformer needs transformer-lens ({INSTALL_HINT})"
        ) from None
    try:
        transformer_lens.HookedTransformer  # noqa: B018
    except (ImportError, AttributeError):
        version = getattr(transformer_lens, "__version__", "this version")
        raise ImportError(
            f"transformer-lens {version} has no HookedTransformer (removed in 4.0); "
            f"install transformer-lens<4 ({INSTALL_HINT})"
        ) from None
    return transformer_lens


def hooked_transformer_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our GPT's weights under TransformerLens's names and in its layout."""
    cfg = model.cfg
    heads, d_head, d_model = cfg.n_heads, cfg.d_model // cfg.n_heads, cfg.d_model
    ours = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    state = {
        "embed.W_E": ours["embed.weight"],
        "pos_embed.W_pos": ours["pos_embed.weight"],
        "ln_final.w": ours["ln_final.weight"],
        "ln_final.b": ours["ln_final.bias"],
        "unembed.W_U": ours["unembed.weight"].T,
        "unembed.b_U": torch.zeros(ours["unembed.weight"].shape[0]),
    }
    for layer in range(cfg.n_layers):
        mine, theirs = f"blocks.{layer}.", f"blocks.{layer}."
        for norm in ("ln1", "ln2"):
            state[f"{theirs}{norm}.w"] = ours[f"{mine}{norm}.weight"]
            state[f"{theirs}{norm}.b"] = ours[f"{mine}{norm}.bias"]
        # W_qkv: (3 * d_model, d_model), rows = [q | k | v], each heads x d_head.
        qkv_weight = ours[f"{mine}attn.W_qkv.weight"].view(3, heads, d_head, d_model)
        qkv_bias = ours[f"{mine}attn.W_qkv.bias"].view(3, heads, d_head)
        for index, name in enumerate("QKV"):
            state[f"{theirs}attn.W_{name}"] = qkv_weight[index].transpose(1, 2)  # (h, d, d_head)
            state[f"{theirs}attn.b_{name}"] = qkv_bias[index]  # (h, d_head)
        # W_out: (d_model, heads * d_head) -> W_O: (heads, d_head, d_model).
        state[f"{theirs}attn.W_O"] = ours[f"{mine}attn.W_out.weight"].T.reshape(
            heads, d_head, d_model
        )
        state[f"{theirs}attn.b_O"] = ours[f"{mine}attn.W_out.bias"]
        state[f"{theirs}mlp.W_in"] = ours[f"{mine}mlp.W_in.weight"].T  # (d_model, d_mlp)
        state[f"{theirs}mlp.b_in"] = ours[f"{mine}mlp.W_in.bias"]
        state[f"{theirs}mlp.W_out"] = ours[f"{mine}mlp.W_out.weight"].T  # (d_mlp, d_model)
        state[f"{theirs}mlp.b_out"] = ours[f"{mine}mlp.W_out.bias"]
    return {name: tensor.contiguous().clone() for name, tensor in state.items()}


def to_hooked_transformer(model: GPT) -> HookedTransformer:
    """A ``transformer_lens.HookedTransformer`` (eval mode, on the CPU, float32) computing the
    same logits and activations as ``model``."""
    require_standard_gpt(model, "TransformerLens")
    cfg = model.cfg
    transformer_lens = _transformer_lens()
    lens_cfg = transformer_lens.HookedTransformerConfig(
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        d_head=cfg.d_model // cfg.n_heads,
        n_heads=cfg.n_heads,
        d_mlp=cfg.d_mlp,
        d_vocab=cfg.vocab_size,
        n_ctx=cfg.max_seq_len,
        act_fn="gelu_new",
        normalization_type="LN",
        positional_embedding_type="standard",
        eps=cfg.layer_norm_eps,
        default_prepend_bos=False,
        device="cpu",
        dtype=torch.float32,
    )
    with warnings.catch_warnings():  # 3.x warns that 4.0 removes it; we ask for <4 on purpose
        warnings.filterwarnings("ignore", "HookedTransformer is deprecated", DeprecationWarning)
        lens = transformer_lens.HookedTransformer(lens_cfg)
    return load_every_parameter(lens, hooked_transformer_state_dict(model), "TransformerLens")
