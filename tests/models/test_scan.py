"""The selective scan: the chunked and the compiled scans against the sequential reference
(outputs, last state, state sequence and every gradient; float64 to 1e-8 and float32 to 1e-4
relative), against mambapy's parallel scan, single-step decoding, dispatch and its fallbacks
(a failing torch.compile included), bad shapes.

The compiled-scan tests share one shape per dtype (batch 2, d_inner 3, N 4; the time axis is
padded to whole chunks, so every length gives the same kernel shapes): the kernels compile once
per dtype for the whole file (tens of seconds the first time, then from torch's disk cache)."""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time

import pytest
import torch

from reasonlab.models import scan
from reasonlab.models.scan import chunked as chunked_scan
from reasonlab.models.scan import compiled as compiled_scan
from reasonlab.models.scan import cuda as cuda_scan
from reasonlab.models.scan import (
    scan_output,
    selective_scan,
    selective_scan_chunked,
    selective_scan_compiled,
    selective_scan_reference,
    selective_scan_states,
    selective_scan_step,
)
from reasonlab.models.scan import threads as scan_threads

TOLERANCE = {torch.float64: 1e-8, torch.float32: 1e-4}
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(
    batch: int = 2,
    d_inner: int = 3,
    d_state: int = 4,
    length: int = 9,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    delta_scale: float = 0.5,
) -> dict[str, torch.Tensor]:
    """Random scan inputs in mamba-ssm's layout, each a leaf that requires grad. A is negative
    with a spread of magnitudes, as after Mamba's initialisation."""
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
    return {k: v.to(dtype).requires_grad_() for k, v in tensors.items()}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (0 when both are 0)."""
    scale = expected.detach().abs().max().item()
    diff = (actual.detach().to(expected.dtype) - expected.detach()).abs().max().item()
    return diff / scale if scale > 0 else diff


def outputs_and_grads(fn, inputs, kwargs, seed: int = 1):
    """Runs the scan, backpropagates a fixed random weighting of the output and of the last
    state, and returns (out, last_state, {input name: grad})."""
    out, last = fn(**{k: inputs[k] for k in kwargs["tensors"]}, **kwargs["flags"])
    g = torch.Generator().manual_seed(seed)
    w_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
    w_last = torch.randn(last.shape, generator=g, dtype=torch.float64).to(last.dtype)
    loss = (out * w_out).sum() + (last * w_last).sum()
    used = [inputs[k] for k in kwargs["tensors"]]
    grads = torch.autograd.grad(loss, used)
    return out, last, dict(zip(kwargs["tensors"], grads, strict=True))


def assert_matches_reference(inputs, tensors, flags, chunk_size, dtype, scan_fn=None):
    """scan_fn (default selective_scan_chunked), called with chunk_size, against the reference."""
    kwargs = {"tensors": tensors, "flags": {**flags, "return_last_state": True}}
    ref_out, ref_last, ref_grads = outputs_and_grads(selective_scan_reference, inputs, kwargs)
    scan_fn = scan_fn or selective_scan_chunked

    def chunked(**kw):
        return scan_fn(**kw, chunk_size=chunk_size)

    out, last, grads = outputs_and_grads(chunked, inputs, kwargs)
    tol = TOLERANCE[dtype]
    assert out.dtype == dtype and out.shape == inputs["u"].shape
    assert relative_error(out, ref_out) <= tol
    assert relative_error(last, ref_last) <= tol
    for name in tensors:
        assert grads[name].shape == inputs[name].shape
        assert relative_error(grads[name], ref_grads[name]) <= tol, name


OPTIONS = [
    # (D, z, delta_bias, delta_softplus): every on/off combination
    dict(zip(("D", "z", "delta_bias", "delta_softplus"), combo, strict=True))
    for combo in itertools.product([False, True], repeat=4)
]


def split_options(options: dict[str, bool]) -> tuple[list[str], dict[str, bool]]:
    tensors = ["u", "delta", "A", "B", "C"] + [k for k in ("D", "z", "delta_bias") if options[k]]
    return tensors, {"delta_softplus": options["delta_softplus"]}


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(k for k, v in o.items() if v))
def test_every_option_matches_reference_float64(options):
    tensors, flags = split_options(options)
    inputs = make_inputs(length=11)
    assert_matches_reference(inputs, tensors, flags, chunk_size=4, dtype=torch.float64)


@pytest.mark.parametrize(
    "length,chunk_size",
    [
        (1, None),  # a single step
        (1, 5),  # a chunk longer than the sequence
        (7, 3),  # not a power of two, not a multiple of the chunk
        (13, 1),  # chunks of one step
        (16, 16),  # one full chunk
        (16, 4),  # several full chunks
        (37, None),  # the default chunk length
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lengths_and_chunks_match_reference(length, chunk_size, dtype):
    options = {"D": True, "z": True, "delta_bias": True, "delta_softplus": True}
    tensors, flags = split_options(options)
    inputs = make_inputs(length=length, dtype=dtype, seed=length)
    assert_matches_reference(inputs, tensors, flags, chunk_size=chunk_size, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_long_sequence_matches_reference(dtype):
    options = {"D": True, "z": True, "delta_bias": True, "delta_softplus": True}
    tensors, flags = split_options(options)
    inputs = make_inputs(batch=1, d_inner=2, d_state=3, length=1000, dtype=dtype, seed=3)
    assert_matches_reference(inputs, tensors, flags, chunk_size=64, dtype=dtype)


def test_wide_float32_matches_reference():
    """Mamba-like widths (16 states, many channels): sums over N and d in float32."""
    options = {"D": True, "z": True, "delta_bias": True, "delta_softplus": True}
    tensors, flags = split_options(options)
    inputs = make_inputs(batch=2, d_inner=64, d_state=16, length=50, dtype=torch.float32)
    assert_matches_reference(inputs, tensors, flags, chunk_size=8, dtype=torch.float32)


def test_gradcheck_of_chunked_scan():
    inputs = make_inputs(batch=1, d_inner=2, d_state=2, length=5)

    def fn(u, delta, A, B, C, D, z, delta_bias):
        return selective_scan_chunked(
            u, delta, A, B, C, D, z, delta_bias, True, return_last_state=True, chunk_size=2
        )

    assert torch.autograd.gradcheck(fn, tuple(inputs[k] for k in NAMES))


def reference_states(inputs: dict[str, torch.Tensor], length: int) -> torch.Tensor:
    """(batch, d_inner, L, N): the reference's last state after each prefix."""
    args = {k: inputs[k] for k in ("A", "delta_bias")}
    return torch.stack(
        [
            selective_scan_reference(
                inputs["u"][:, :, : t + 1],
                inputs["delta"][:, :, : t + 1],
                B=inputs["B"][:, :, : t + 1],
                C=inputs["C"][:, :, : t + 1],
                delta_softplus=True,
                return_last_state=True,
                **args,
            )[1]
            for t in range(length)
        ],
        dim=2,
    )


def test_state_sequence_matches_reference_and_ends_in_the_last_state():
    inputs = make_inputs(length=10)
    common = {k: inputs[k] for k in ("u", "delta", "A", "B", "delta_bias")}
    states = selective_scan_states(**common, delta_softplus=True, chunk_size=3)
    assert states.shape == (2, 3, 10, 4)
    assert relative_error(states, reference_states(inputs, 10)) <= 1e-12

    out, last = selective_scan(**common, C=inputs["C"], delta_softplus=True, return_last_state=True)
    # Two code paths (the states' chunk loop vs the scan's, other chunks and memory layouts):
    # equal up to float64 rounding, not bit for bit (vector widths differ between CPUs).
    assert relative_error(last, states[:, :, -1]) <= 1e-12
    assert last.shape == (2, 3, 4)
    assert relative_error(out, scan_output(states, inputs["u"], inputs["C"])) <= 1e-12
    ref_last = selective_scan_reference(
        **common, C=inputs["C"], delta_softplus=True, return_last_state=True
    )[1]
    assert relative_error(last, ref_last) <= 1e-12


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_state_sequence_gradients_match_reference(dtype):
    """scan_output(selective_scan_states(...)) is the scan, gradients included (the path the
    model takes when hook_ssm_state is watched)."""
    inputs = make_inputs(length=9, dtype=dtype)
    tensors, flags = split_options(dict.fromkeys(("D", "z", "delta_bias", "delta_softplus"), True))

    def via_states(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        states = selective_scan_states(u, delta, A, B, delta_bias, delta_softplus, chunk_size=4)
        return scan_output(states, u, C, D, z), states[:, :, -1]

    kwargs = {"tensors": tensors, "flags": {**flags, "return_last_state": True}}
    ref_out, ref_last, ref_grads = outputs_and_grads(selective_scan_reference, inputs, kwargs)
    out, last, grads = outputs_and_grads(via_states, inputs, kwargs)
    assert out.dtype == dtype
    assert relative_error(out, ref_out) <= TOLERANCE[dtype]
    assert relative_error(last, ref_last) <= TOLERANCE[dtype]
    for name in tensors:
        assert relative_error(grads[name], ref_grads[name]) <= TOLERANCE[dtype], name


def test_steps_reproduce_the_scan():
    """Decoding one token at a time with selective_scan_step gives the scan's outputs and state."""
    inputs = make_inputs(length=8)
    full, last = selective_scan(
        *(inputs[k] for k in NAMES), delta_softplus=True, return_last_state=True
    )
    state = torch.zeros(2, 3, 4, dtype=torch.float64)
    outs = []
    for t in range(8):
        y, state = selective_scan_step(
            state,
            inputs["u"][:, :, t],
            inputs["delta"][:, :, t],
            inputs["A"],
            inputs["B"][:, :, t],
            inputs["C"][:, :, t],
            inputs["D"],
            inputs["z"][:, :, t],
            inputs["delta_bias"],
            delta_softplus=True,
        )
        outs.append(y)
    assert relative_error(torch.stack(outs, dim=-1), full) <= 1e-12
    assert relative_error(state, last) <= 1e-12


def test_large_decays_stay_finite_and_match_reference():
    """delta * |A| far past float32's exp range: decays underflow, nothing overflows."""
    inputs = make_inputs(d_state=4, length=12, dtype=torch.float32, delta_scale=1.0)
    with torch.no_grad():
        inputs["A"].mul_(300.0)  # |delta * A| up to thousands
    tensors, flags = split_options(dict.fromkeys(("D", "z", "delta_bias", "delta_softplus"), True))
    kwargs = {"tensors": tensors, "flags": {**flags, "return_last_state": True}}
    ref_out, ref_last, ref_grads = outputs_and_grads(selective_scan_reference, inputs, kwargs)
    out, last, grads = outputs_and_grads(selective_scan_chunked, inputs, kwargs)
    assert torch.isfinite(out).all() and torch.isfinite(last).all()
    assert relative_error(out, ref_out) <= 1e-4
    assert relative_error(last, ref_last) <= 1e-4
    for name in tensors:
        assert torch.isfinite(grads[name]).all(), name
        assert relative_error(grads[name], ref_grads[name]) <= 1e-4, name


def test_half_precision_inputs_compute_in_float32():
    inputs = make_inputs(length=6, dtype=torch.float64)
    half = {k: v.detach().to(torch.bfloat16) for k, v in inputs.items()}
    as_float = {k: v.float() for k, v in half.items()}
    out = selective_scan(*(half[k] for k in NAMES), delta_softplus=True)
    expected = selective_scan_reference(*(as_float[k] for k in NAMES), delta_softplus=True)
    assert out.dtype == torch.bfloat16
    assert relative_error(out.float(), expected.to(torch.bfloat16).float()) <= 1e-2


# ----------------------------------------------------------------------------------------------
# The compiled scan (torch.compile'd chunk kernels): same checks as the chunked scan. One shape
# per dtype (see the module docstring); chunk_size 4 is the default chunk.


@pytest.fixture
def no_compile_failure():
    """Fails the test if the compiled scan fell back to its eager kernels (a broken compile
    would otherwise pass every comparison, silently)."""
    yield
    assert compiled_scan._compile_error is None, compiled_scan._compile_error


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(k for k, v in o.items() if v))
def test_compiled_every_option_matches_reference_float64(options, no_compile_failure):
    tensors, flags = split_options(options)
    inputs = make_inputs(length=11)
    assert_matches_reference(inputs, tensors, flags, 4, torch.float64, selective_scan_compiled)


@pytest.mark.parametrize("length", [1, 3, 4, 7, 16, 37, 129])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_lengths_match_reference(length, dtype, no_compile_failure):
    """L = 1, below, at and across chunk boundaries, not a multiple of the chunk, long."""
    options = {"D": True, "z": True, "delta_bias": True, "delta_softplus": True}
    tensors, flags = split_options(options)
    inputs = make_inputs(length=length, dtype=dtype, seed=length)
    assert_matches_reference(inputs, tensors, flags, 4, dtype, selective_scan_compiled)


def test_compiled_long_sequence_matches_reference_float32(no_compile_failure):
    options = {"D": True, "z": True, "delta_bias": True, "delta_softplus": True}
    tensors, flags = split_options(options)
    inputs = make_inputs(length=1000, dtype=torch.float32, seed=3)
    assert_matches_reference(inputs, tensors, flags, 4, torch.float32, selective_scan_compiled)


def test_gradcheck_of_compiled_scan(no_compile_failure):
    inputs = make_inputs(length=6)

    def fn(u, delta, A, B, C, D, z, delta_bias):
        return selective_scan_compiled(
            u, delta, A, B, C, D, z, delta_bias, True, return_last_state=True
        )

    assert torch.autograd.gradcheck(fn, tuple(inputs[k] for k in NAMES))


def test_compiled_large_decays_stay_finite_and_match_reference(no_compile_failure):
    inputs = make_inputs(length=12, dtype=torch.float32, delta_scale=1.0)
    with torch.no_grad():
        inputs["A"].mul_(300.0)  # |delta * A| up to thousands
    tensors, flags = split_options(dict.fromkeys(("D", "z", "delta_bias", "delta_softplus"), True))
    kwargs = {"tensors": tensors, "flags": {**flags, "return_last_state": True}}
    ref_out, ref_last, ref_grads = outputs_and_grads(selective_scan_reference, inputs, kwargs)
    out, last, grads = outputs_and_grads(selective_scan_compiled, inputs, kwargs)
    assert torch.isfinite(out).all() and torch.isfinite(last).all()
    assert relative_error(out, ref_out) <= 1e-4
    assert relative_error(last, ref_last) <= 1e-4
    for name in tensors:
        assert torch.isfinite(grads[name]).all(), name
        assert relative_error(grads[name], ref_grads[name]) <= 1e-4, name


def test_compiled_gradient_of_the_output_or_the_last_state_alone(no_compile_failure):
    """Backward with no gradient for one of the two outputs (autograd passes None)."""
    inputs = make_inputs(length=9)
    args = [inputs[k] for k in NAMES]
    for pick in (0, 1):
        ours = selective_scan_compiled(*args, delta_softplus=True, return_last_state=True)[pick]
        ref = selective_scan_reference(*args, delta_softplus=True, return_last_state=True)[pick]
        our_grads = torch.autograd.grad(ours.sum(), args, allow_unused=True)
        ref_grads = torch.autograd.grad(ref.sum(), args, allow_unused=True)
        for name, mine, theirs in zip(NAMES, our_grads, ref_grads, strict=True):
            if theirs is None:
                assert mine is None or not mine.abs().max(), name
            else:
                assert relative_error(mine, theirs) <= 1e-8, name


def test_compiled_half_precision_inputs_compute_in_float32(no_compile_failure):
    inputs = make_inputs(length=6, dtype=torch.float64)
    half = {k: v.detach().to(torch.bfloat16).requires_grad_() for k, v in inputs.items()}
    as_float = {k: v.detach().float() for k, v in half.items()}
    out = selective_scan_compiled(*(half[k] for k in NAMES), delta_softplus=True)
    expected = selective_scan_reference(*(as_float[k] for k in NAMES), delta_softplus=True)
    assert out.dtype == torch.bfloat16
    assert relative_error(out.float(), expected.to(torch.bfloat16).float()) <= 1e-2
    out.float().sum().backward()
    assert all(half[k].grad is not None and half[k].grad.dtype == torch.bfloat16 for k in NAMES)


def test_compile_failure_warns_and_falls_back(monkeypatch):
    """torch.compile raising (no C++ compiler, say): a warning, the same results from the plain
    kernels, and auto stops picking the compiled scan."""

    def broken(name):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(compiled_scan, "_compiled_kernel", broken)
    monkeypatch.setattr(compiled_scan, "_compile_error", None)
    monkeypatch.setattr(compiled_scan, "COMPILE_MIN_ELEMENTS", 1)
    inputs = make_inputs(length=7)
    tensors, flags = split_options(dict.fromkeys(("D", "z", "delta_bias", "delta_softplus"), True))
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        assert_matches_reference(inputs, tensors, flags, 4, torch.float64, selective_scan_compiled)
    assert "no C++ compiler" in compiled_scan._compile_error
    assert not compiled_scan.compiled_scan_available()
    args = [inputs[k] for k in NAMES]
    assert torch.equal(selective_scan(*args), selective_scan_chunked(*args))


def test_auto_picks_the_compiled_scan_for_large_cpu_inputs(monkeypatch, no_compile_failure):
    calls: list[str] = []
    real = scan.selective_scan_compiled

    def spy(*args, **kwargs):
        calls.append("compiled")
        return real(*args, **kwargs)

    monkeypatch.setattr(scan, "selective_scan_compiled", spy)
    monkeypatch.setattr(compiled_scan, "COMPILE", True)  # REASONLAB_SCAN_COMPILE=1
    inputs = make_inputs(length=5)
    args = [inputs[k] for k in NAMES]
    selective_scan(*args)  # 2 x 3 x 4 x 5 = 120 elements: below COMPILE_MIN_ELEMENTS
    assert calls == []
    monkeypatch.setattr(compiled_scan, "COMPILE_MIN_ELEMENTS", 120)
    out = selective_scan(*args)
    assert calls == ["compiled"]
    assert relative_error(out, selective_scan_reference(*args)) <= 1e-12
    selective_scan(*args, method="compiled")
    assert calls == ["compiled"] * 2
    monkeypatch.setattr(compiled_scan, "COMPILE_MAX_LENGTH", 4)  # L = 5: too long
    selective_scan(*args)
    assert calls == ["compiled"] * 2
    monkeypatch.setattr(compiled_scan, "COMPILE_MAX_LENGTH", 5)
    monkeypatch.setattr(compiled_scan, "COMPILE", False)
    selective_scan(*args)
    assert calls == ["compiled"] * 2


def test_compiled_scan_runs_on_scan_threads(monkeypatch, no_compile_failure):
    original = torch.set_num_threads
    before = torch.get_num_threads()
    calls: list[int] = []

    def spy(n: int) -> None:
        calls.append(n)
        original(n)

    original(2)
    try:
        monkeypatch.setattr(torch, "set_num_threads", spy)
        inputs = make_inputs(length=6)
        selective_scan_compiled(*(inputs[k] for k in NAMES)).sum().backward()
        assert calls == [1, 2, 1, 2] and torch.get_num_threads() == 2
    finally:
        original(before)


# ----------------------------------------------------------------------------------------------
# mambapy's parallel scan (a test extra)


def mambapy_scan(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """mambapy's selective scan on our inputs: its pscan takes the decays exp(delta A) and the
    drives delta B u as (batch, L, d_inner, N) and returns the states in that layout; the
    output is then sum_n C h + D u, moved back to (batch, d_inner, L)."""
    from mambapy.pscan import pscan

    u = inputs["u"].transpose(1, 2)  # (b, L, d)
    delta = torch.nn.functional.softplus(inputs["delta"] + inputs["delta_bias"][:, None])
    delta = delta.transpose(1, 2)  # (b, L, d)
    B = inputs["B"].transpose(1, 2)  # (b, L, N)
    C = inputs["C"].transpose(1, 2)
    decays = torch.exp(delta[..., None] * inputs["A"])  # (b, L, d, N)
    drives = (delta * u)[..., None] * B[:, :, None, :]  # (b, L, d, N)
    states = pscan(decays, drives)  # (b, L, d, N)
    y = (states @ C[..., None])[..., 0] + inputs["D"] * u  # (b, L, d)
    return y.transpose(1, 2)


@pytest.mark.parametrize("length", [1, 7, 64, 100])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_mambapy_parallel_scan(length, dtype):
    pytest.importorskip("mambapy")
    inputs = make_inputs(length=length, dtype=dtype, seed=7)  # the compiled tests' shape
    used = ["u", "delta", "A", "B", "C", "D", "delta_bias"]
    theirs = mambapy_scan(inputs)
    weight = torch.randn(theirs.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    their_grads = torch.autograd.grad((theirs * weight).sum(), [inputs[k] for k in used])
    for method in ("chunked", "compiled"):
        ours = selective_scan(**{k: inputs[k] for k in used}, delta_softplus=True, method=method)
        assert relative_error(ours, theirs) <= TOLERANCE[dtype], method
        our_grads = torch.autograd.grad((ours * weight).sum(), [inputs[k] for k in used])
        for name, mine, other in zip(used, our_grads, their_grads, strict=True):
            assert relative_error(mine, other) <= TOLERANCE[dtype], (method, name)


# ----------------------------------------------------------------------------------------------
# Dispatch


def test_default_on_cpu_is_the_chunked_scan_and_reference_can_be_forced():
    inputs = make_inputs(length=5)
    args = [inputs[k] for k in NAMES]
    chunked = selective_scan_chunked(*args)
    assert torch.equal(selective_scan(*args), chunked)
    reference = selective_scan(*args, method="reference")
    assert torch.equal(reference, selective_scan_reference(*args))
    previous = scan.set_default_method("reference")
    try:
        assert previous == "auto"
        assert torch.equal(selective_scan(*args), reference)
    finally:
        scan.set_default_method(previous)
    with pytest.raises(ValueError, match="method"):
        selective_scan(*args, method="fast")
    with pytest.raises(ValueError, match="method"):
        scan.set_default_method("fast")


def test_cuda_kernel_absent_falls_back_cleanly(monkeypatch):
    """Without mamba-ssm the loader gives None, auto runs the chunked scan, and forcing the
    kernel fails with a message instead of an ImportError."""
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)  # makes `import mamba_ssm...` fail
    cuda_scan.mamba_ssm_kernel.cache_clear()
    try:
        assert cuda_scan.mamba_ssm_kernel() is None
        inputs = make_inputs(length=4)
        args = [inputs[k] for k in NAMES]
        assert torch.equal(selective_scan(*args), selective_scan_chunked(*args))
        with pytest.raises(RuntimeError, match="mamba-ssm"):
            selective_scan(*args, method="cuda")
    finally:
        cuda_scan.mamba_ssm_kernel.cache_clear()


def test_cuda_kernel_is_not_used_for_cpu_tensors(monkeypatch):
    calls = []
    monkeypatch.setattr(cuda_scan, "mamba_ssm_kernel", lambda: lambda *a: calls.append(a))
    inputs = make_inputs(length=4)
    selective_scan(*(inputs[k] for k in NAMES))
    assert calls == []


def test_chunked_scan_runs_on_one_intra_op_thread_and_restores_torch_setting(monkeypatch):
    """Forward and backward run with one intra-op thread on the calling thread (and on each row
    thread) and give torch's setting back afterwards."""
    original = torch.set_num_threads
    before = torch.get_num_threads()
    calls: list[tuple[int, bool]] = []
    main = threading.get_ident()

    def spy(n: int) -> None:
        calls.append((n, threading.get_ident() == main))
        original(n)

    original(2)
    try:
        monkeypatch.setattr(torch, "set_num_threads", spy)
        monkeypatch.setattr(scan_threads, "SCAN_THREADS", 1)
        inputs = make_inputs(length=6)
        selective_scan_chunked(*(inputs[k] for k in NAMES)).sum().backward()
        assert calls == [(1, True), (2, True), (1, True), (2, True)]
        assert torch.get_num_threads() == 2
        calls.clear()
        monkeypatch.setattr(scan_threads, "SCAN_THREADS", 2)  # one row thread besides the caller
        selective_scan_chunked(*(inputs[k] for k in NAMES)).sum().backward()
        on_caller = [n for n, is_main in calls if is_main]
        on_rows = [n for n, is_main in calls if not is_main]
        assert on_caller == [1, 2, 1, 2] and on_rows == [1, 1]
        assert torch.get_num_threads() == 2
    finally:
        original(before)


@pytest.mark.parametrize("threads", [2, 3, 5])
def test_row_threads_give_the_results_of_one_thread(monkeypatch, threads):
    """Rows split over threads (more threads than rows included) give the outputs and gradients
    of one thread up to float rounding (smaller parts get longer chunks, and dLoss/dA sums the
    parts in another order), with pool threads really running parts beside the caller."""
    inputs = make_inputs(batch=4, length=11, dtype=torch.float32)
    spec = {"tensors": NAMES, "flags": {"delta_softplus": True, "return_last_state": True}}
    monkeypatch.setattr(scan_threads, "SCAN_THREADS", 1)
    expected = outputs_and_grads(selective_scan_chunked, inputs, spec)
    seen: set[int] = set()
    forward_rows = chunked_scan._forward_rows

    def spy(*args, **kwargs):
        seen.add(threading.get_ident())
        return forward_rows(*args, **kwargs)

    monkeypatch.setattr(chunked_scan, "_forward_rows", spy)
    monkeypatch.setattr(scan_threads, "SCAN_THREADS", threads)
    actual = outputs_and_grads(selective_scan_chunked, inputs, spec)
    assert len(seen) >= 2  # the caller and a pool thread (which may take several parts)
    assert relative_error(actual[0], expected[0]) < 1e-6
    assert relative_error(actual[1], expected[1]) < 1e-6
    for name in NAMES:
        assert relative_error(actual[2][name], expected[2][name]) < 1e-6, name


def test_row_parts_cover_every_row_once():
    for batch, workers in itertools.product([1, 2, 5, 64], [1, 2, 3, 8, 100]):
        parts = scan_threads.row_parts(batch, workers)
        assert len(parts) == min(batch, workers)
        assert [r for start, end in parts for r in range(start, end)] == list(range(batch))
        assert max(end - start for start, end in parts) - min(e - s for s, e in parts) <= 1


def test_row_threads_follow_inference_mode_and_report_errors(monkeypatch):
    """Row threads run in the caller's inference mode (writing inference tensors outside it
    fails), and an error on a row thread reaches the caller after every part has stopped."""
    monkeypatch.setattr(scan_threads, "SCAN_THREADS", 2)
    inputs = {k: v.detach() for k, v in make_inputs(batch=3, length=5).items()}
    expected = selective_scan_reference(*(inputs[k] for k in NAMES))
    with torch.inference_mode():
        fresh = {k: v.clone() for k, v in inputs.items()}
        out = selective_scan_chunked(*(fresh[k] for k in NAMES))
    assert relative_error(out, expected) < TOLERANCE[torch.float64]

    forward_rows = chunked_scan._forward_rows

    def fail_off_the_caller(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("row thread failed")
        return forward_rows(*args, **kwargs)

    monkeypatch.setattr(chunked_scan, "_forward_rows", fail_off_the_caller)
    with pytest.raises(RuntimeError, match="row thread failed"):
        selective_scan_chunked(*(inputs[k] for k in NAMES))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_row_threads_work_in_a_forked_child(monkeypatch):
    """A child forked after the parent started its row threads (which it does not inherit)
    starts threads of its own instead of waiting forever for the parent's."""
    monkeypatch.setattr(scan_threads, "SCAN_THREADS", 2)
    inputs = {k: v.detach() for k, v in make_inputs(batch=2, length=5).items()}
    expected = selective_scan_chunked(*(inputs[k] for k in NAMES))  # starts the parent's pool
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether the scan gave the parent's result, then leave
        try:
            out = selective_scan_chunked(*(inputs[k] for k in NAMES))
            os.write(write_end, b"1" if torch.equal(out, expected) else b"0")
        finally:
            os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    assert os.read(read_end, 1) == b"1" and status == 0


def test_inputs_laid_out_as_time_second_views_match(monkeypatch):
    """The model passes (b, k, L) views of (b, L, k) memory, which the scan reads in place; its
    output and gradients are the same as for contiguous inputs."""
    inputs = make_inputs(batch=3, length=7)
    spec = {"tensors": NAMES, "flags": {"delta_softplus": True, "return_last_state": True}}
    expected = outputs_and_grads(selective_scan_chunked, inputs, spec)
    views = {
        k: (v.detach().transpose(-1, -2).contiguous().transpose(-1, -2) if v.dim() == 3 else v)
        .detach()
        .requires_grad_()
        for k, v in inputs.items()
    }
    assert not views["u"].is_contiguous()
    actual = outputs_and_grads(selective_scan_chunked, views, spec)
    assert relative_error(actual[0], expected[0]) < 1e-12
    for name in NAMES:
        assert relative_error(actual[2][name], expected[2][name]) < 1e-12, name


@pytest.mark.parametrize(
    "name,shape,match",
    [
        ("B", (2, 1, 4, 6), "grouped"),  # batch x groups x N x L
        ("C", (3, 4), "time-invariant"),  # d_inner x N
        ("A", (3,), "A must be"),
        ("delta", (2, 3, 5), "u and delta"),
    ],
)
def test_unsupported_shapes_are_rejected(name, shape, match):
    inputs = {k: v.detach() for k, v in make_inputs(length=6).items()}
    inputs[name] = torch.zeros(shape, dtype=torch.float64)
    for method in ("chunked", "reference"):
        with pytest.raises(ValueError, match=match):
            selective_scan(*(inputs[k] for k in NAMES), method=method)


def test_empty_sequence_is_rejected():
    inputs = {
        k: v.detach()[..., :0] if v.dim() == 3 else v.detach() for k, v in make_inputs().items()
    }
    with pytest.raises(ValueError, match="L = 0"):
        selective_scan(*(inputs[k] for k in NAMES))


# ----------------------------------------------------------------------------------------------
# The benchmark (reasonlab bench scan) on a tiny shape


def test_scan_benchmark_reports_every_method_and_length():
    from reasonlab.bench.scan import format_scan_table, peak_memory_case, scan_benchmark

    methods = ["reasonlab", "sequential"]
    result = scan_benchmark(
        lengths=(3, 5), batch=1, d_inner=2, d_state=2, repeats=2, methods=methods, memory=False
    )
    cases = {(c["method"], c["length"]): c for c in result["cases"]}
    assert set(cases) == {(m, n) for m in methods for n in (3, 5)}
    assert all(c["median_s"] > 0 for c in cases.values())
    assert cases[("reasonlab", 5)]["runs"] == 2 and cases[("sequential", 5)]["runs"] == 1
    table = format_scan_table(result)
    assert table.count("\n| 5 |") == 2 and "batch 1, d_inner 2, N 2" in table
    if os.path.exists("/proc/self/clear_refs"):  # the peak-memory probe is Linux-only
        peak = peak_memory_case("reasonlab", 4, 1, 2, 2, torch.get_num_threads())
        assert peak["peak_extra_mib"] >= 0


@pytest.mark.parametrize(
    ("text", "threads"), [("1", 1), ("2", 2), ("torch", None), ("", None), ("0", None), ("x", None)]
)
def test_scan_threads_come_from_the_environment(text, threads):
    assert scan_threads._scan_threads_setting(text) == threads


def test_an_error_on_the_caller_waits_for_the_row_threads(monkeypatch):
    """When the caller's own part fails, the call returns (raises) only after the other parts have
    stopped: none is left writing into buffers after the scan has failed."""
    monkeypatch.setattr(scan_threads, "SCAN_THREADS", 2)
    inputs = {k: v.detach() for k, v in make_inputs(batch=2, length=5).items()}
    finished: list[bool] = []
    forward_rows = chunked_scan._forward_rows

    def slow_pool_part_failing_caller(*args, **kwargs):
        if threading.current_thread() is threading.main_thread():
            raise RuntimeError("caller's part failed")
        time.sleep(0.3)
        forward_rows(*args, **kwargs)
        finished.append(True)

    monkeypatch.setattr(chunked_scan, "_forward_rows", slow_pool_part_failing_caller)
    with pytest.raises(RuntimeError, match="caller's part failed"):
        selective_scan_chunked(*(inputs[k] for k in NAMES))
    assert finished == [True]
