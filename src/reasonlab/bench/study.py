"""Time to result: a study's runs trained packed and unpacked, each into a temporary folder, with
wall time, runs per hour and the device's utilization (``reasonlab bench study``).

Utilization is, on a CPU, the process's CPU time over (wall time x torch's threads); on CUDA,
the mean of ``torch.cuda.utilization()`` sampled every 0.2 s while the study runs (where pynvml
lets torch read it; null otherwise). This module knows no study: the caller hands in ``train``,
which trains the study into a folder with a ``--pack`` value and returns how many runs it trained
(``cli/bench.py`` calls ``experiments.study.run_study``; bench sits beside experiments).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# train(folder, pack) -> runs trained
TrainStudy = Callable[[Path, str], int]


class _GpuSampler:
    """Samples ``torch.cuda.utilization()`` in a thread while a block runs."""

    def __init__(self, period: float = 0.2) -> None:
        self.period, self.samples = period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(float(torch.cuda.utilization()))
            except Exception:  # no pynvml, or a device that does not report it
                return
            self._stop.wait(self.period)

    def __enter__(self) -> _GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples) / 100, 3) if self.samples else None


def time_study(
    train: TrainStudy,
    packs: dict[str, str],
    device: str = "cpu",
    warmup: TrainStudy | None = None,
) -> dict[str, Any]:
    """Trains the study once per ``packs`` entry (label -> --pack value), each into a fresh
    temporary folder, and measures it; first ``warmup`` (untimed) with every pack value, so that
    neither case pays the imports and first-call costs alone."""
    threads = torch.get_num_threads()
    cases: dict[str, dict[str, Any]] = {}
    walls: dict[str, float] = {}
    for pack in packs.values() if warmup is not None else ():
        with tempfile.TemporaryDirectory(prefix="reasonlab-bench-") as folder:
            warmup(Path(folder) / "study", pack)
    for label, pack in packs.items():
        with tempfile.TemporaryDirectory(prefix="reasonlab-bench-") as folder:
            sampler = _GpuSampler() if device.startswith("cuda") else None
            cpu_before, started = time.process_time(), time.perf_counter()
            if sampler is not None:
                with sampler:
                    runs = train(Path(folder) / "study", pack)
            else:
                runs = train(Path(folder) / "study", pack)
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu_before
        walls[label] = wall
        utilization = sampler.mean() if sampler is not None else round(cpu / (wall * threads), 3)
        cases[label] = {
            "pack": pack,
            "runs": runs,
            "wall_s": round(wall, 3),
            "runs_per_hour": round(runs * 3600 / wall, 1) if wall > 0 else None,
            "utilization": utilization,
            "cpu_s": round(cpu, 3),
        }
    result: dict[str, Any] = {"device": device, "threads": threads, "cases": cases}
    if "unpacked" in walls and "packed" in walls and walls["packed"] > 0:
        result["speedup"] = round(walls["unpacked"] / walls["packed"], 3)
    return result


def format_study_table(result: dict[str, Any]) -> str:
    """The measurements as a markdown table."""
    what = "GPU utilization" if result["device"].startswith("cuda") else "CPU utilization"
    lines = [
        f"| case | --pack | runs | wall s | runs / hour | {what} |",
        "|---|---|---|---|---|---|",
    ]
    for label, case in result["cases"].items():
        shown = "n/a" if case["utilization"] is None else f"{case['utilization']:.0%}"
        lines.append(
            f"| {label} | {case['pack']} | {case['runs']} | {case['wall_s']:.1f} | "
            f"{case['runs_per_hour']} | {shown} |"
        )
    if "speedup" in result:
        lines.append(f"\npacked vs unpacked: {result['speedup']:.2f}x ({result['device']})")
    return "\n".join(lines)
