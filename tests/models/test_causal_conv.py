"""Mamba's causal depthwise convolution: the same outputs and gradients as torch's conv1d with
groups = channels on the transposed input, for every kernel size, and its gradients pass
gradcheck."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reasonlab.models.causal_conv import causal_depthwise_conv


def conv1d_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x (b, L, c), weight (c, 1, k) -> (b, L, c) through conv1d."""
    k = weight.shape[-1]
    padded = F.pad(x.transpose(1, 2), (k - 1, 0))
    return F.conv1d(padded, weight, bias, groups=x.shape[-1]).transpose(1, 2)


@pytest.mark.parametrize("d_conv", [1, 2, 4])
@pytest.mark.parametrize("length", [1, 3, 9])
def test_matches_conv1d_with_gradients(d_conv, length):
    g = torch.Generator().manual_seed(d_conv * 10 + length)
    x = torch.randn(3, length, 5, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 1, d_conv, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(3, length, 5, generator=g, dtype=torch.float64)

    expected = conv1d_reference(x, weight, bias)
    expected_grads = torch.autograd.grad(expected, (x, weight, bias), grad_out)
    actual = causal_depthwise_conv(F.pad(x, (0, 0, d_conv - 1, 0)), weight[:, 0], bias)
    actual_grads = torch.autograd.grad(actual, (x, weight, bias), grad_out)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    for a, e in zip(actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_gradcheck_and_partial_gradients():
    g = torch.Generator().manual_seed(0)
    padded = torch.randn(2, 7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(causal_depthwise_conv, (padded, weight, bias))
    # Only some inputs need a gradient (a frozen conv, or inputs that are data).
    (grad_weight,) = torch.autograd.grad(
        causal_depthwise_conv(padded.detach(), weight, bias.detach()).sum(), (weight,)
    )
    assert grad_weight.shape == weight.shape
