"""Benchmark of the selective scan: forward + backward of reasonlab's scan (``selective_scan``
as the model calls it: the compiled scan on CPU for large inputs, else the eager chunked scan; on
CUDA mamba-ssm's kernel when it imports, else the parallel scan), of its eager chunked scan
alone, of its parallel scan alone (``reasonlab_parallel``), of mambapy's parallel (Blelloch) scan
and of the sequential loop (``selective_scan_reference``).

Every method computes the same thing from the same inputs: softplus(delta + delta_bias), the
decays exp(delta * A), the drives delta * u * B, the state recurrence, y = C . h + D * u; then one
backward pass with a fixed random output gradient. Mamba's initialisation sets the inputs
(A = -[1..N] per channel, delta in [1e-3, 1e-1]).

Time: median (and min) wall time of forward + backward over ``repeats`` runs after ``warmup``
untimed ones, methods interleaved run by run in one process, so that a change in the machine's
load hits them alike. The first untimed run's time is reported too (``first_s``): for the
compiled scan it includes compiling its kernels (or loading them from torch's disk cache). Peak
memory: each (method, length) runs once more in a fresh subprocess (Linux), which resets its peak
resident set (``/proc/self/clear_refs``) once its inputs are built (and the compiled scan's
kernels are compiled) and reports how far the peak (``VmHWM``) rose above the resident set of
that moment during one forward + backward. That counts every allocation (torch's CPU allocator
hands large blocks back to the system when they are freed), which tracemalloc would not see.

On CUDA (``device="cuda"``) every run ends with a synchronisation, and the peak memory is
torch's peak allocation above what was allocated before the run, in process. The comparison on a
lent GPU at the COPY shape and the wide shape is one command::

    python -m reasonlab.bench.scan --device cuda --copy     # batch 64, d_inner 256, L 40
    python -m reasonlab.bench.scan --device cuda --wide     # batch 64, d_inner 1024, L 40

``reasonlab bench scan`` and ``benchmarks/scan_speed.py`` call ``scan_benchmark``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from reasonlab.config import ConfigError
from reasonlab.models.scan import compiled as compiled_scan
from reasonlab.models.scan import cuda as cuda_scan
from reasonlab.models.scan import (
    selective_scan,
    selective_scan_chunked,
    selective_scan_parallel,
    selective_scan_reference,
)
from reasonlab.models.scan import threads as scan_threads
from reasonlab.models.scan.chunked import chunk_length

METHODS = ("reasonlab", "reasonlab_eager", "reasonlab_parallel", "mambapy", "sequential")
# Also known to scan_function: reasonlab_one_thread, our scan with its batch rows on the
# calling thread alone (SCAN_THREADS = 1) instead of torch's number of threads.
SCAN_INPUTS = ("u", "delta", "A", "B", "C", "D", "delta_bias")
# The scan of a COPY-like Mamba language model (2 layers of d_model 128, batch 64, 40 tokens):
# ``reasonlab bench scan --batch 64 --lengths 40`` or ``benchmarks/scan_speed.py --copy``.
COPY_SHAPE = {"batch": 64, "d_inner": 256, "d_state": 16, "lengths": (40,)}
# The wide shape of issue 22 (8 layers of d_model 512: d_inner 1024), same batch and length.
WIDE_SHAPE = {"batch": 64, "d_inner": 1024, "d_state": 16, "lengths": (40,)}


def make_scan_inputs(
    batch: int, d_inner: int, d_state: int, length: int, seed: int = 0, device: str = "cpu"
) -> dict[str, Tensor]:
    """float32 inputs in mamba-ssm's layout with Mamba's initialisation (drawn on the CPU, then
    moved to ``device``); leaves needing grad."""
    g = torch.Generator().manual_seed(seed)
    dt = torch.exp(
        torch.rand(d_inner, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
    )
    inputs = {
        "u": torch.randn(batch, d_inner, length, generator=g),
        "delta": 0.1 * torch.randn(batch, d_inner, length, generator=g),
        "A": -torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1),
        "B": torch.randn(batch, d_state, length, generator=g),
        "C": torch.randn(batch, d_state, length, generator=g),
        "D": torch.ones(d_inner),
        "delta_bias": dt + torch.log(-torch.expm1(-dt)),  # softplus(bias) = dt
    }
    return {k: v.to(device).requires_grad_() for k, v in inputs.items()}


def _mambapy_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, delta_bias: Tensor
) -> Tensor:
    """mambapy's selective scan (as in its MambaBlock.selective_scan), in our layout."""
    from mambapy.pscan import pscan

    delta = F.softplus(delta + delta_bias[:, None]).transpose(1, 2)  # (b, L, d)
    u_t = u.transpose(1, 2)  # (b, L, d)
    decays = torch.exp(delta[..., None] * A)  # (b, L, d, N)
    drives = (delta * u_t)[..., None] * B.transpose(1, 2)[:, :, None, :]  # (b, L, d, N)
    states = pscan(decays, drives)  # (b, L, d, N)
    y = (states @ C.transpose(1, 2)[..., None])[..., 0] + D * u_t  # (b, L, d)
    return y.transpose(1, 2)


def scan_function(method: str) -> Callable[..., Tensor]:
    if method == "reasonlab":  # what the model runs (selective_scan's auto dispatch)
        return lambda *args: selective_scan(*args[:6], delta_bias=args[6], delta_softplus=True)
    if method == "reasonlab_eager":  # the eager chunked scan, also when auto would compile
        return lambda *args: selective_scan_chunked(
            *args[:6], delta_bias=args[6], delta_softplus=True
        )
    if method == "reasonlab_parallel":  # the parallel scan, also where auto picks another
        return lambda *args: selective_scan_parallel(
            *args[:6], delta_bias=args[6], delta_softplus=True
        )
    if method == "reasonlab_one_thread":  # SCAN_THREADS = 1 set by _forward_backward
        return scan_function("reasonlab")
    if method == "sequential":
        return lambda *args: selective_scan_reference(
            *args[:6], delta_bias=args[6], delta_softplus=True
        )
    if method == "mambapy":
        return _mambapy_scan
    raise ValueError(f"method: {method!r} is not one of {', '.join(METHODS)}")


def _forward_backward(
    fn: Callable[..., Tensor], inputs: dict[str, Tensor], grad: Tensor, method: str = ""
) -> None:
    for tensor in inputs.values():
        tensor.grad = None
    # reasonlab_one_thread: our scan's rows on one thread instead of torch's number of threads.
    previous = scan_threads.SCAN_THREADS
    if method == "reasonlab_one_thread":
        scan_threads.SCAN_THREADS = 1
    try:
        fn(*(inputs[k] for k in SCAN_INPUTS)).backward(grad)
        if grad.is_cuda:  # CUDA runs asynchronously: the run ends when its kernels have
            torch.cuda.synchronize(grad.device)
    finally:
        scan_threads.SCAN_THREADS = previous


def _cuda_peak_memory(
    fn: Callable[..., Tensor], inputs: dict[str, Tensor], grad: Tensor
) -> dict[str, float]:
    """On CUDA: torch's peak allocation during one forward + backward above what was allocated
    before it (MiB), in process."""
    _forward_backward(fn, inputs, grad)  # gradients of the earlier run freed, then allocated
    before = torch.cuda.memory_allocated(grad.device)
    torch.cuda.reset_peak_memory_stats(grad.device)
    _forward_backward(fn, inputs, grad)
    peak = torch.cuda.max_memory_allocated(grad.device)
    return {"peak_extra_mib": round(max(0, peak - before) / 2**20, 1)}


def _status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS: resident now, VmHWM: its peak), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_memory_case(
    method: str, length: int, batch: int, d_inner: int, d_state: int, threads: int
) -> dict[str, float]:
    """Runs one forward + backward and measures the peak resident set it adds (MiB), in a fresh
    process. VmHWM rather than getrusage's ru_maxrss, which a child inherits from its parent
    across fork and exec (the benchmark's parent holds gigabytes)."""
    torch.set_num_threads(threads)
    fn = scan_function(method)
    # A tiny run first, so that lazily loaded code and thread pools are not counted; for our
    # scan one of the real shape, so that compiling its kernels is not counted either.
    _forward_backward(fn, make_scan_inputs(1, 2, 2, 4), torch.ones(1, 2, 4), method)
    if method.startswith("reasonlab"):
        warm = make_scan_inputs(batch, d_inner, d_state, length)
        _forward_backward(fn, warm, torch.ones(batch, d_inner, length), method)
        del warm
    inputs = make_scan_inputs(batch, d_inner, d_state, length)
    grad = torch.randn(batch, d_inner, length)
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set (Linux >= 4.0)
    _forward_backward(fn, inputs, grad, method)
    peak = _status_kib("VmHWM")
    return {"peak_extra_mib": round(max(0, peak - before) / 1024, 1)}


def _peak_memory_subprocess(
    method: str, length: int, shape: dict[str, int], threads: int
) -> dict[str, Any]:
    code = (
        "import json; from reasonlab.bench.scan import peak_memory_case; "
        f"print(json.dumps(peak_memory_case({method!r}, {length}, {shape['batch']}, "
        f"{shape['d_inner']}, {shape['d_state']}, {threads})))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def scan_benchmark(
    lengths: Sequence[int] = (64, 256, 1024),
    batch: int = 16,
    d_inner: int = 256,
    d_state: int = 16,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    methods: Sequence[str] = METHODS,
    sequential_max_length: int = 1024,
    memory: bool = True,
    device: str = "cpu",
) -> dict[str, Any]:
    """Times forward + backward of each method at each length (float32) and measures peak
    memory; returns a JSON-ready dict (``format_scan_table`` renders it). The sequential loop
    runs once per length (no warm-up) and only up to ``sequential_max_length``: it takes
    seconds per run. ``threads``: torch's intra-op threads (default: as set). ``device``: cpu
    or cuda[:N] (where the compiled scan and the row threads do not apply)."""
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda and not torch.cuda.is_available():
        raise ConfigError(f"--device: {device} asked for, but torch sees no CUDA GPU here")
    if threads is not None:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    available = list(methods)
    mambapy_version = None
    if "mambapy" in available:
        try:
            from importlib.metadata import version

            import mambapy.pscan  # noqa: F401

            mambapy_version = version("mambapy")
        except ImportError:
            available.remove("mambapy")
    shape = {"batch": batch, "d_inner": d_inner, "d_state": d_state}
    cases: list[dict[str, Any]] = []
    for length in lengths:
        inputs = make_scan_inputs(batch, d_inner, d_state, length, device=device)
        grad = torch.randn(batch, d_inner, length, generator=torch.Generator().manual_seed(1))
        grad = grad.to(device)
        runs = {
            m: scan_function(m)
            for m in available
            if m != "sequential" or length <= sequential_max_length
        }
        timings: dict[str, list[float]] = {m: [] for m in runs}
        first: dict[str, float] = {}
        for m, fn in runs.items():
            for i in range(warmup if m != "sequential" else 0):
                started = time.perf_counter()
                _forward_backward(fn, inputs, grad, m)
                if i == 0:
                    first[m] = time.perf_counter() - started
        for i in range(repeats):
            for m, fn in runs.items():
                if m == "sequential" and i > 0:
                    continue
                started = time.perf_counter()
                _forward_backward(fn, inputs, grad, m)
                timings[m].append(time.perf_counter() - started)
        for m, times in timings.items():
            case: dict[str, Any] = {
                "method": m,
                "length": length,
                "median_s": round(statistics.median(times), 4),
                "min_s": round(min(times), 4),
                "runs": len(times),
            }
            if m in first:
                case["first_s"] = round(first[m], 3)
            if memory and on_cuda:
                case.update(_cuda_peak_memory(runs[m], inputs, grad))
            elif memory:
                case.update(_peak_memory_subprocess(m, length, shape, threads))
            cases.append(case)
    result: dict[str, Any] = {
        "shape": shape,
        "lengths": list(lengths),
        "dtype": "float32",
        "threads": threads,
        "device": torch.cuda.get_device_name(device) if on_cuda else "cpu",
        "chunk_length": {L: chunk_length(batch, d_inner, d_state, L, None) for L in lengths},
        # What reasonlab (auto) ran per length: the compiled scan or the eager chunked one.
        "reasonlab_ran": {L: _auto_method(batch, d_inner, d_state, L, device) for L in lengths},
        "compiled_chunk": compiled_scan.COMPILED_CHUNK,
        "compile_error": compiled_scan._compile_error,
        "torch": torch.__version__,
        "mambapy": mambapy_version or "not installed (pip install 'reasonlab[mamba]')",
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cases": cases,
    }
    result["vs_mambapy"] = _ratios(cases)
    return result


def _auto_method(batch: int, d_inner: int, d_state: int, length: int, device: str = "cpu") -> str:
    """The scan selective_scan's auto dispatch picks for float32 inputs of this shape."""
    if torch.device(device).type == "cuda":
        return "cuda" if cuda_scan.mamba_ssm_kernel() is not None else "parallel"
    u, A = torch.empty(batch, d_inner, length), torch.empty(d_inner, d_state)
    return "compiled" if compiled_scan.compiled_scan_applies(u, A) else "chunked"


def _ratios(cases: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Per length: mambapy's median time / ours, and our peak memory / mambapy's."""
    by = {(c["method"], c["length"]): c for c in cases}
    ratios: dict[int, dict[str, float]] = {}
    for (method, length), ours in by.items():
        theirs = by.get(("mambapy", length))
        if method != "reasonlab" or theirs is None:
            continue
        ratios[length] = {"speedup": round(theirs["median_s"] / ours["median_s"], 2)}
        if ours.get("peak_extra_mib") and theirs.get("peak_extra_mib"):
            ratio = ours["peak_extra_mib"] / theirs["peak_extra_mib"]
            ratios[length]["memory_ratio"] = round(ratio, 3)
    return ratios


def format_scan_table(result: dict[str, Any]) -> str:
    """A markdown table of a ``scan_benchmark`` result."""
    shape = result["shape"]
    lines = [
        f"Selective scan, forward + backward, batch {shape['batch']}, d_inner "
        f"{shape['d_inner']}, N {shape['d_state']}, {result['dtype']}, on "
        f"{result.get('device', 'cpu')}, {result['threads']} "
        f"thread(s), load average {result['load_average_1m']} on {result['cpus']} CPUs",
        "",
        "| L | method | median s | min s | runs | first run s | peak extra MiB "
        "| mambapy / ours (time) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case in result["cases"]:
        ratio = result["vs_mambapy"].get(case["length"], {}).get("speedup", "")
        speedup = f"{ratio}x" if case["method"] == "reasonlab" and ratio else ""
        method = case["method"]
        if method == "reasonlab" and "reasonlab_ran" in result:
            method = f"reasonlab ({result['reasonlab_ran'][case['length']]})"
        lines.append(
            f"| {case['length']} | {method} | {case['median_s']:.3f} | "
            f"{case['min_s']:.3f} | {case['runs']} | {case.get('first_s', '-')} | "
            f"{case.get('peak_extra_mib', '-')} | {speedup} |"
        )
    return "\n".join(lines)


def chunk_size_sweep(
    chunk_sizes: Sequence[int],
    lengths: Sequence[int] = (256, 1024),
    batch: int = 16,
    d_inner: int = 256,
    d_state: int = 16,
    repeats: int = 5,
    threads: int | None = None,
) -> dict[str, Any]:
    """Median forward + backward time of the chunked scan per chunk length (interleaved runs)."""
    if threads is not None:
        torch.set_num_threads(threads)
    medians: dict[int, dict[int, float]] = {}
    for length in lengths:
        inputs = make_scan_inputs(batch, d_inner, d_state, length)
        grad = torch.randn(batch, d_inner, length, generator=torch.Generator().manual_seed(1))
        runs = {
            size: lambda *a, size=size: selective_scan_chunked(
                *a[:6], delta_bias=a[6], delta_softplus=True, chunk_size=size
            )
            for size in chunk_sizes
        }
        timings: dict[int, list[float]] = {size: [] for size in chunk_sizes}
        for fn in runs.values():
            _forward_backward(fn, inputs, grad)
        for _ in range(repeats):
            for size, fn in runs.items():
                started = time.perf_counter()
                _forward_backward(fn, inputs, grad)
                timings[size].append(time.perf_counter() - started)
        medians[length] = {size: round(statistics.median(t), 4) for size, t in timings.items()}
    return {
        "shape": {"batch": batch, "d_inner": d_inner, "d_state": d_state},
        "threads": torch.get_num_threads(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "median_s": medians,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m reasonlab.bench.scan``: the benchmark on any device (``reasonlab bench scan``
    runs it on the CPU); the table on stderr, then JSON on stdout."""
    parser = argparse.ArgumentParser(
        prog="python -m reasonlab.bench.scan", description=main.__doc__
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    shapes = parser.add_mutually_exclusive_group()
    shapes.add_argument("--copy", action="store_true", help="the COPY shape: 64 x 256, L 40")
    shapes.add_argument("--wide", action="store_true", help="the wide shape: 64 x 1024, L 40")
    parser.add_argument("--lengths", default="64,256,1024", help="comma-separated lengths")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--d-inner", type=int, default=256)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true", help="skip peak memory")
    args = parser.parse_args(argv)
    shape: dict[str, Any] = {
        "batch": args.batch,
        "d_inner": args.d_inner,
        "d_state": args.d_state,
        "lengths": tuple(int(part) for part in args.lengths.split(",") if part.strip()),
    }
    if args.copy or args.wide:
        shape = dict(COPY_SHAPE if args.copy else WIDE_SHAPE)
    result = scan_benchmark(
        shape.pop("lengths"),
        **shape,
        repeats=args.repeats,
        memory=not args.no_memory,
        device=args.device,
    )
    print(format_scan_table(result), file=sys.stderr)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
