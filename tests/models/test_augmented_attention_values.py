"""Augmented attention (models/attention.py) computed independently (issue 21, item 18): with
hand-set weights whose key and value MLPs differ, the layer's output is softmax attention over
k + MLP_k(k) and v + MLP_v(v), written out here from the parameters, in fp32 and under bf16
autocast; and the hooks see the augmented keys and values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from reasonlab.models.attention import Augmentation, CausalSelfAttention
from reasonlab.training.precision import autocast_context

D_MODEL, HEADS, HIDDEN, LENGTH = 8, 2, 4, 6
HEAD_DIM = D_MODEL // HEADS


def augmented_layer() -> CausalSelfAttention:
    """An augmented layer with every weight drawn again, the MLPs' last layers included (they
    start at zero): the key and value MLPs are different maps, far from the identity."""
    torch.manual_seed(0)
    layer = CausalSelfAttention(D_MODEL, HEADS, kind="augmented", hidden=HIDDEN).eval()
    with torch.no_grad():
        for param in layer.parameters():
            param.normal_(0.0, 0.6)
    return layer


def mlp(augment: Augmentation, x: Tensor) -> Tensor:
    """x + W_back gelu(W_hidden x), from the parameters."""
    hidden = F.gelu(x @ augment.W_hidden.weight.T + augment.W_hidden.bias)
    return x + hidden @ augment.W_back.weight.T + augment.W_back.bias


@torch.no_grad()
def reference(layer: CausalSelfAttention, x: Tensor, value_map: Augmentation) -> Tensor:
    """The layer's output computed head by head and query by query, in float64, with the
    values passed through ``value_map``."""
    layer = layer.double()
    try:
        batch = x.shape[0]
        qkv = (x.double() @ layer.W_qkv.weight.T + layer.W_qkv.bias).view(
            batch, LENGTH, 3, HEADS, HEAD_DIM
        )
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        k, v = mlp(layer.augment_k, k), mlp(value_map, v)
        z = torch.zeros(batch, LENGTH, HEADS, HEAD_DIM, dtype=torch.float64)
        for b in range(batch):
            for h in range(HEADS):
                for i in range(LENGTH):  # query i sees keys 0..i
                    scores = k[b, : i + 1, h] @ q[b, i, h] / math.sqrt(HEAD_DIM)
                    z[b, i, h] = scores.softmax(0) @ v[b, : i + 1, h]
        return z.reshape(batch, LENGTH, D_MODEL) @ layer.W_out.weight.T + layer.W_out.bias
    finally:
        layer.float()


def relative_tolerance(bf16: bool) -> float:
    """Of the largest magnitude: bf16 keeps 8 significant bits (0.4% per rounding), and a few
    roundings add up along q, k, v, the MLPs, the scores and W_out."""
    return 0.02 if bf16 else 1e-5


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_augmented_output_uses_the_value_mlp_on_values(bf16):
    layer = augmented_layer()
    x = torch.randn(2, LENGTH, D_MODEL, generator=torch.Generator().manual_seed(1))
    expected = reference(layer, x, layer.augment_v)
    wrong = reference(layer, x, layer.augment_k)  # values through the key MLP
    tolerance = relative_tolerance(bf16) * float(expected.abs().max())
    assert (wrong - expected).abs().max() > 5 * tolerance  # the two maps differ enough to tell
    with torch.no_grad(), autocast_context(torch.device("cpu"), bf16):
        got = layer(x).double()
    assert torch.allclose(got, expected, atol=tolerance, rtol=0.0), (got - expected).abs().max()


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_hooks_see_the_augmented_keys_and_values(bf16):
    """hook_k and hook_v receive k + MLP_k(k) and v + MLP_v(v), (batch, L, heads, head_dim)."""
    layer = augmented_layer()
    x = torch.randn(1, LENGTH, D_MODEL, generator=torch.Generator().manual_seed(2))
    seen: dict[str, Tensor] = {}
    for name in ("k", "v"):
        getattr(layer, f"hook_{name}").register_forward_hook(
            lambda module, args, output, name=name: seen.__setitem__(name, output.detach())
        )
    with torch.no_grad(), autocast_context(torch.device("cpu"), bf16):
        layer(x)
        qkv = layer.W_qkv(x).float().view(1, LENGTH, 3, HEADS, HEAD_DIM)
    with torch.no_grad():
        k = mlp(layer.augment_k, qkv[:, :, 1])
        v = mlp(layer.augment_v, qkv[:, :, 2])
    tolerance = relative_tolerance(bf16) * float(v.abs().max())
    assert (mlp(layer.augment_k, qkv[:, :, 2]) - v).abs().max() > 5 * tolerance
    assert torch.allclose(seen["k"].float(), k, atol=tolerance, rtol=0.0)
    assert torch.allclose(seen["v"].float(), v, atol=tolerance, rtol=0.0)
