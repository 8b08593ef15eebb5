"""The parallel selective scan (models/scan/parallel.py) against the sequential reference:
outputs, last state and every input's gradient, at odd and power-of-two lengths, in float32 and
float64; a Mamba trained with it against one trained with the chunked scan; ``auto``'s choice;
and mamba-ssm's kernel where it is installed with a GPU.

Tolerances (max |difference| / max |reference|): 1e-9 in float64, 1e-4 in float32 (the two scans
sum the same terms in different orders)."""

from __future__ import annotations

import itertools

import pytest
import torch

from helpers import tiny_mamba
from reasonlab.models import scan
from reasonlab.models.scan import (
    selective_scan,
    selective_scan_chunked,
    selective_scan_parallel,
    selective_scan_reference,
)
from reasonlab.models.scan.cuda import mamba_ssm_kernel
from reasonlab.models.scan.parallel import linear_scan_

TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(
    batch: int = 2,
    d_inner: int = 3,
    d_state: int = 4,
    length: int = 9,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    delta_scale: float = 0.5,
    device: str = "cpu",
) -> dict[str, torch.Tensor]:
    """Random inputs in mamba-ssm's layout (leaves that require grad), A negative with a spread
    of magnitudes as after Mamba's initialisation."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    tensors = {
        "u": randn(batch, d_inner, length),
        "delta": randn(batch, d_inner, length) * delta_scale,
        "A": -torch.exp(randn(d_inner, d_state)),
        "B": randn(batch, d_state, length),
        "C": randn(batch, d_state, length),
        "D": randn(d_inner),
        "z": randn(batch, d_inner, length),
        "delta_bias": randn(d_inner) * 0.5,
    }
    return {k: v.to(device, dtype).requires_grad_() for k, v in tensors.items()}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (the plain difference when expected is 0)."""
    expected = expected.detach().double()
    scale = expected.abs().max().item()
    diff = (actual.detach().double() - expected).abs().max().item()
    return diff / scale if scale > 0 else diff


def run_with_grads(fn, inputs, names, flags, weight_out=True, weight_last=True):
    """out, last state and {name: grad} of a fixed random weighting of out and the last state."""
    out, last = fn(**{k: inputs[k] for k in names}, **flags, return_last_state=True)
    g = torch.Generator().manual_seed(1)
    loss = out.new_zeros(())
    if weight_out:
        loss = loss + (out * torch.randn(out.shape, generator=g).to(out)).sum()
    if weight_last:
        loss = loss + (last * torch.randn(last.shape, generator=g).to(last)).sum()
    used = [inputs[k] for k in names]
    grads = torch.autograd.grad(loss, used, allow_unused=True)  # last alone: no C, D, z
    grads = [torch.zeros_like(x) if g is None else g for x, g in zip(used, grads, strict=True)]
    return out, last, dict(zip(names, grads, strict=True))


def assert_parallel_matches_reference(inputs, names, flags, dtype, **weights):
    ref = run_with_grads(selective_scan_reference, inputs, names, flags, **weights)
    ours = run_with_grads(selective_scan_parallel, inputs, names, flags, **weights)
    tol = TOLERANCE[dtype]
    assert ours[0].dtype == dtype and ours[0].shape == inputs["u"].shape
    assert ours[1].shape == ref[1].shape
    assert relative_error(ours[0], ref[0]) <= tol
    assert relative_error(ours[1], ref[1]) <= tol
    for name in names:
        assert ours[2][name].shape == inputs[name].shape
        assert relative_error(ours[2][name], ref[2][name]) <= tol, name


@pytest.mark.parametrize("length", [1, 2, 3, 7, 40, 64, 257])
@pytest.mark.parametrize("d_state", [1, 16])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_and_gradients_match_reference(length, d_state, dtype):
    inputs = make_inputs(length=length, d_state=d_state, dtype=dtype, seed=length)
    assert_parallel_matches_reference(inputs, NAMES, {"delta_softplus": True}, dtype)


OPTIONS = [
    dict(zip(("D", "z", "delta_bias", "delta_softplus"), combo, strict=True))
    for combo in itertools.product([False, True], repeat=4)
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(k for k, v in o.items() if v))
def test_every_option_matches_reference(options):
    names = ["u", "delta", "A", "B", "C"] + [k for k in ("D", "z", "delta_bias") if options[k]]
    flags = {"delta_softplus": options["delta_softplus"]}
    assert_parallel_matches_reference(make_inputs(length=11), names, flags, torch.float64)


@pytest.mark.parametrize("which", ["out", "last"])
def test_gradient_of_the_output_or_the_last_state_alone(which):
    """Autograd passes None for the output nobody used: the backward must cope with either."""
    inputs = make_inputs(length=10)
    weights = {"weight_out": which == "out", "weight_last": which == "last"}
    assert_parallel_matches_reference(
        inputs, NAMES, {"delta_softplus": True}, torch.float64, **weights
    )


def test_gradcheck():
    inputs = make_inputs(batch=1, d_inner=2, d_state=3, length=6)

    def fn(*args):
        return selective_scan_parallel(*args, delta_softplus=True, return_last_state=True)

    assert torch.autograd.gradcheck(fn, tuple(inputs[k] for k in NAMES))


def test_large_decays_stay_finite_and_match_reference():
    """delta * |A| in the thousands: products of decays underflow to 0, nothing overflows."""
    inputs = make_inputs(length=50, dtype=torch.float32, delta_scale=30.0)
    with torch.no_grad():
        inputs["A"].mul_(100)
    assert_parallel_matches_reference(inputs, NAMES, {"delta_softplus": True}, torch.float32)


def test_half_precision_inputs_compute_in_float32():
    inputs = make_inputs(length=9, dtype=torch.float32)
    half = {k: v.detach().to(torch.bfloat16) for k, v in inputs.items()}
    out = selective_scan_parallel(**half, delta_softplus=True)
    ref = selective_scan_reference(**half, delta_softplus=True)
    assert out.dtype == torch.bfloat16
    assert relative_error(out, ref) <= 1e-2  # one bf16 rounding of the output


def test_bf16_autocast_does_not_lower_the_scan_to_bf16():
    """Under autocast (a bf16 run) the scan still computes in float32, as mamba-ssm's kernel."""
    inputs = make_inputs(length=12, d_state=16, dtype=torch.float32)
    flags = {"delta_softplus": True}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = run_with_grads(selective_scan_parallel, inputs, NAMES, flags)
    ref = run_with_grads(selective_scan_reference, inputs, NAMES, flags)
    assert ours[0].dtype == torch.float32
    assert relative_error(ours[0], ref[0]) <= TOLERANCE[torch.float32]
    for name in NAMES:
        assert relative_error(ours[2][name], ref[2][name]) <= TOLERANCE[torch.float32], name


def test_linear_scan_is_the_recurrence():
    g = torch.Generator().manual_seed(3)
    for length in (1, 2, 5, 16, 33):
        a, b = torch.rand(2, length, 3, generator=g), torch.randn(2, length, 3, generator=g)
        expected, h = [], torch.zeros(2, 3)
        for t in range(length):
            h = a[:, t] * h + b[:, t]
            expected.append(h)
        scanned = linear_scan_(a.clone(), b.clone())
        torch.testing.assert_close(scanned, torch.stack(expected, 1), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Dispatch and a model trained with it


def test_method_parallel_is_selectable_and_cpu_auto_stays_chunked():
    inputs = make_inputs(length=6)
    args = [inputs[k] for k in NAMES]
    assert "parallel" in scan.METHODS
    assert torch.equal(selective_scan(*args), selective_scan_chunked(*args))
    assert torch.equal(selective_scan(*args, method="parallel"), selective_scan_parallel(*args))
    previous = scan.set_default_method("parallel")
    try:
        assert torch.equal(selective_scan(*args), selective_scan_parallel(*args))
    finally:
        scan.set_default_method(previous)


def _train_losses(method: str, steps: int = 4) -> list[float]:
    model = tiny_mamba(vocab_size=11, d_model=16, d_state=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, 11, (4, 10), generator=g)
    previous = scan.set_default_method(method)
    losses = []
    try:
        for _ in range(steps):
            logits = model(tokens[:, :-1])
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    finally:
        scan.set_default_method(previous)
    return losses


def test_mamba_trains_the_same_with_the_parallel_scan():
    chunked, parallel = _train_losses("chunked"), _train_losses("parallel")
    assert chunked[-1] < chunked[0]  # it learns at all
    for ours, theirs in zip(parallel, chunked, strict=True):
        assert ours == pytest.approx(theirs, rel=1e-5)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_cuda_auto_runs_parallel_without_mamba_ssm_and_matches_reference(monkeypatch):
    from reasonlab.models.scan import cuda as cuda_scan

    monkeypatch.setattr(cuda_scan, "mamba_ssm_kernel", lambda: None)
    calls = []
    original = scan.selective_scan_parallel
    monkeypatch.setattr(scan, "selective_scan_parallel", lambda *a: calls.append(1) or original(*a))
    inputs = make_inputs(length=40, d_state=16, dtype=torch.float32, device="cuda")
    args = [inputs[k] for k in NAMES]
    out = selective_scan(*args, delta_softplus=True)
    assert calls == [1]
    ref = selective_scan_reference(*args, delta_softplus=True)
    assert relative_error(out, ref) <= TOLERANCE[torch.float32]


@pytest.mark.skipif(
    not torch.cuda.is_available() or mamba_ssm_kernel() is None,
    reason="needs a CUDA GPU and mamba-ssm installed",
)
@pytest.mark.parametrize("length", [1, 40, 257])
def test_parallel_matches_mamba_ssm_kernel(length):
    inputs = make_inputs(batch=4, d_inner=32, d_state=16, length=length, dtype=torch.float32,
                         device="cuda")  # fmt: skip
    flags = {"delta_softplus": True}
    theirs = run_with_grads(scan.selective_scan_cuda, inputs, NAMES, flags)
    ours = run_with_grads(selective_scan_parallel, inputs, NAMES, flags)
    assert relative_error(ours[0], theirs[0]) <= 1e-3
    assert relative_error(ours[1], theirs[1]) <= 1e-3
    for name in NAMES:
        assert relative_error(ours[2][name], theirs[2][name]) <= 1e-3, name
