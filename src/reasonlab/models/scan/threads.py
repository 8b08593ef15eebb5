"""Threads of the CPU scans: ``with_scan_threads`` runs a forward or backward pass with one
intra-op thread, and ``run_rows`` runs the chunked scan's batch rows in parts, one thread each
(the comment on SCAN_THREADS says why). Used by chunked.py and compiled.py."""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor


# Threads of the chunked scan. Its batch rows are independent, so it splits them into
# SCAN_THREADS parts (None: torch's intra-op setting) and runs each part's whole chunk loop on a
# thread of its own, every operation on that thread alone (one intra-op thread). The parts meet
# once, at the end. Spreading each of the scan's thousands of small operations over torch's
# threads instead makes every operation wait for all of them, which on a CPU shared with other busy
# processes made the scan up to 50x slower (docs/BENCHMARKS.md); parts that never wait for each
# other lose at most their share when a core is taken. REASONLAB_SCAN_THREADS=N (a positive
# number) sets it.
def _scan_threads_setting(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) > 0 else None


SCAN_THREADS: int | None = _scan_threads_setting(os.environ.get("REASONLAB_SCAN_THREADS", ""))


@contextlib.contextmanager
def _scan_threads(device: torch.device) -> Iterator[int]:
    """Runs the body with one intra-op thread (CPU only), then restores torch's setting. Yields
    how many threads the body may run batch rows on: SCAN_THREADS, or torch's setting."""
    previous = torch.get_num_threads()
    if device.type != "cpu":
        yield 1
        return
    workers = SCAN_THREADS or previous
    if previous == 1:
        yield workers
        return
    torch.set_num_threads(1)
    try:
        yield workers
    finally:
        torch.set_num_threads(previous)


def with_scan_threads(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps an autograd.Function's forward or backward in _scan_threads; ``ctx.workers`` holds
    the number of row threads it yields."""

    @functools.wraps(method)
    def wrapper(ctx: Any, *args: Any) -> Any:
        tensors = [a for a in args if isinstance(a, Tensor)]
        with _scan_threads(tensors[0].device if tensors else torch.device("cpu")) as workers:
            ctx.workers = workers
            return method(ctx, *args)

    return wrapper


_executor: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None  # (pid, pool)


def _row_executor() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that run row parts besides the caller's; a new pool in a forked child, where
    the parent's threads do not exist."""
    global _executor
    if _executor is None or _executor[0] != os.getpid():
        pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="reasonlab-scan")
        _executor = (os.getpid(), pool)
    return _executor[1]


def row_parts(batch: int, workers: int) -> list[tuple[int, int]]:
    """[start, end) of each of min(workers, batch) near-equal parts of the batch rows."""
    parts = max(1, min(workers, batch))
    edges = [batch * i // parts for i in range(parts + 1)]
    return list(itertools.pairwise(edges))


def _alone(body: Callable[[int, int], Any], start: int, end: int, inference: bool) -> Any:
    """body(start, end) on a pool thread: one intra-op thread, no autograd graph, and the
    caller's inference mode (grad modes are per thread)."""
    torch.set_num_threads(1)
    with torch.inference_mode(inference), torch.no_grad():
        return body(start, end)


def run_rows(body: Callable[[int, int], Any], batch: int, workers: int) -> list[Any]:
    """body(start, end) for each part of the batch rows, the first on the calling thread and the
    others on pool threads at the same time; their results in row order."""
    parts = row_parts(batch, workers)
    if len(parts) == 1:
        return [body(*parts[0])]
    pool = _row_executor()
    inference = torch.is_inference_mode_enabled()
    futures = [pool.submit(_alone, body, *part, inference) for part in parts[1:]]
    try:
        first = body(*parts[0])
    finally:
        concurrent.futures.wait(futures)  # never leave a part writing after an error here
    return [first, *(future.result() for future in futures)]
