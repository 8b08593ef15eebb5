"""Benchmark of evaluation: scoring every probe of a trained run with the original algorithm
(greedy decoding by full recomputation, and a teacher-forced pass over every row for the tail:
``evaluate(..., recompute=True)``) against the current one (incremental decoding with the model's
decoding state, the teacher-forced tail rerun only where greedy decoding left the true prefix).

The run's task is rebuilt to get its probes, the model is loaded from a checkpoint (the newest by
default) and both paths score every probe with the run's ``eval.batch_size`` and in the run's own
precision (``training.loaded_run.run_precision``), as training did.
Time: median (and min) wall time over ``repeats`` runs after one untimed run of each, the two
paths interleaved probe by probe in one process, so that a change in the machine's load hits
them alike; queries per second = the probes' rows / the median. The metrics of both paths must be
equal: ``metrics_equal`` says whether they are, ``mismatches`` lists any that differ.

``benchmarks/eval_speed.py`` calls ``eval_benchmark``.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from reasonlab.runs.folder import RunDir, check_data_fingerprint
from reasonlab.tasks import build_task
from reasonlab.training.evaluation import evaluate
from reasonlab.training.loaded_run import run_precision

PATHS = ("recompute", "incremental")


def eval_benchmark(
    run_dir: str | Path,
    repeats: int = 3,
    step: int | None = None,
    device: str = "cpu",
    threads: int | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Times the evaluation of every probe of the run in ``run_dir`` with both paths (module
    docstring); returns a JSON-ready dict (``format_eval_table`` renders it). ``step``: the
    checkpoint (default: the newest); ``threads``: torch's intra-op threads (default: as set);
    ``batch_size``: default the run's ``eval.batch_size``."""
    if repeats < 1:
        raise ValueError("repeats: must be at least 1")
    if threads is not None:
        torch.set_num_threads(threads)
    run = RunDir(run_dir)
    config = run.load_config()
    data = build_task(config.task)
    data_note = check_data_fingerprint(run, data.fingerprint(), allow_change=True)
    steps = run.checkpoint_steps()
    if step is None and steps:
        step = steps[-1]
    torch_device = torch.device(device)
    model = run.load_model(step, config).to(torch_device)
    batch_size = batch_size or config.eval.batch_size
    # the precision the run trained and was scored in (summary.json), not this machine's choice
    autocast = run_precision(run, config) == "bf16"

    def score(path: str, name: str) -> tuple[float, float, dict[str, float]]:
        started, cpu_started = time.perf_counter(), time.process_time()
        metrics = evaluate(
            model,
            {name: data.probes[name]},
            batch_size,
            torch_device,
            autocast,
            recompute=path == "recompute",
        )
        if torch_device.type == "cuda":
            torch.cuda.synchronize(torch_device)
        return time.perf_counter() - started, time.process_time() - cpu_started, metrics

    metrics: dict[str, dict[str, float]] = {path: {} for path in PATHS}
    seconds: dict[str, dict[str, list[float]]] = {p: {n: [] for n in data.probes} for p in PATHS}
    cpu_seconds: dict[str, list[float]] = {path: [] for path in PATHS}
    for repeat in range(repeats + 1):  # the first round warms up and is not timed
        for name in data.probes:
            for path in PATHS:
                elapsed, cpu, values = score(path, name)
                if repeat:
                    seconds[path][name].append(elapsed)
                    cpu_seconds[path].append(cpu)
                for key, value in values.items():
                    if metrics[path].setdefault(key, value) != value:
                        raise RuntimeError(f"{path} scored {key} differently when run again")

    queries = sum(len(probe) for probe in data.probes.values())
    totals = {
        path: [sum(run) for run in zip(*seconds[path].values(), strict=True)] for path in PATHS
    }
    paths = {
        path: {
            "median_s": round(statistics.median(totals[path]), 4),
            "min_s": round(min(totals[path]), 4),
            "queries_per_s": round(queries / statistics.median(totals[path]), 1),
            # CPU time of this process (all its threads), less sensitive to other jobs' load
            "cpu_s_per_repeat": round(sum(cpu_seconds[path]) / repeats, 4),
        }
        for path in PATHS
    }
    probes = {}
    for name, probe in data.probes.items():
        old, new = (statistics.median(seconds[path][name]) for path in PATHS)
        probes[name] = {
            "queries": len(probe),
            "length": int(probe.tokens.shape[1]),
            "prompt_len": probe.prompt_len,
            "recompute_s": round(old, 4),
            "incremental_s": round(new, 4),
            "speedup": round(old / new, 2),
        }
    old_metrics, new_metrics = metrics["recompute"], metrics["incremental"]
    mismatches = {
        key: {"recompute": old_metrics.get(key), "incremental": new_metrics.get(key)}
        for key in sorted(old_metrics.keys() | new_metrics.keys())
        if old_metrics.get(key) != new_metrics.get(key)
    }
    return {
        "run": str(run.path),
        "step": step,
        "model": model.describe() if hasattr(model, "describe") else type(model).__name__,
        "device": str(torch_device),
        "autocast_bf16": autocast,
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "repeats": repeats,
        "queries": queries,
        "recompute": paths["recompute"],
        "incremental": paths["incremental"],
        "speedup": round(paths["recompute"]["median_s"] / paths["incremental"]["median_s"], 2),
        "metrics_equal": not mismatches,
        "mismatches": mismatches,
        "metrics": new_metrics,
        "probes": probes,
        "data_note": data_note,
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def format_eval_table(result: dict[str, Any]) -> str:
    """A markdown table of ``eval_benchmark``'s result: per probe and in total."""
    old, new = result["recompute"], result["incremental"]
    lines = [
        f"{result['run']} (step {result['step']}): {result['model']}",
        f"{result['queries']} queries, batch {result['batch_size']}, {result['device']}, "
        f"{result['threads']} thread(s), median of {result['repeats']}, load average "
        f"{result['load_average_1m']} on {result['cpus']} CPUs",
        "",
        "| probe | queries | length | recompute s | incremental s | speedup |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, probe in result["probes"].items():
        lines.append(
            f"| {name} | {probe['queries']} | {probe['length']} | {probe['recompute_s']:.3f} | "
            f"{probe['incremental_s']:.3f} | {probe['speedup']:.2f}x |"
        )
    lines += [
        f"| **all** | {result['queries']} | | {old['median_s']:.3f} | {new['median_s']:.3f} | "
        f"**{result['speedup']:.2f}x** |",
        "",
        f"queries/s: recompute {old['queries_per_s']:.0f}, incremental {new['queries_per_s']:.0f}; "
        f"CPU s per repeat: recompute {old['cpu_s_per_repeat']:.3f}, incremental "
        f"{new['cpu_s_per_repeat']:.3f}; "
        f"metrics equal: {'yes' if result['metrics_equal'] else 'NO'}",
    ]
    if result["mismatches"]:
        lines.append(f"mismatches: {result['mismatches']}")
    return "\n".join(lines)
