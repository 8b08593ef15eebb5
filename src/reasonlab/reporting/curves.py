"""A study's metrics against the training step: one colour per variant, the mean over its seeds
with a band from the lowest to the highest seed."""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from reasonlab.core.files import atomic_path
from reasonlab.reporting.backend import use_file_backend
from reasonlab.reporting.seeds import variant_of
from reasonlab.runs.summary import RunMetric

use_file_backend()  # Agg, unless a notebook or MPLBACKEND chose another


def distinct_colours(names: list[str]) -> dict[str, Any]:
    """A colour per name, none repeated: tab10 up to 10 names, tab20 up to 20, else evenly
    spaced on a continuous map (cot-pattern has 28 variants)."""
    if len(names) <= 20:
        cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
        return {name: cmap(i) for i, name in enumerate(names)}
    cmap = plt.get_cmap("turbo")
    return {name: cmap(i / (len(names) - 1)) for i, name in enumerate(names)}


def seed_curve(runs: list[list[dict[str, Any]]], key: str) -> tuple[list[int], np.ndarray]:
    """Steps at which every run of a variant has ``key``, and their values (runs, steps)."""
    by_run = [{r["step"]: r[key] for r in records if r.get(key) is not None} for records in runs]
    steps = sorted(set.intersection(*(set(values) for values in by_run))) if by_run else []
    return steps, np.array([[values[s] for s in steps] for values in by_run], dtype=float)


def plot_curves(
    histories: dict[str, list[dict[str, Any]]],
    keys: list[str],
    title: str,
    path: Path | None = None,
    threshold: float | None = None,
    metric: RunMetric | None = None,
) -> bytes:
    """One panel per metric key, its value vs step, one colour per variant; returns PNG bytes.
    ``metric`` (a run summary's) labels the y axis; an accuracy (the default) is drawn on
    [0, 1], an error on a log scale.
    A variant with one seed is one line; with several, the line is the mean over seeds at the
    steps every seed reached and the shaded band spans their minimum to maximum."""
    accuracy = metric is None or metric.higher_is_better
    columns = min(3, len(keys))
    rows = -(-len(keys) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.1 * rows), squeeze=False)
    variants = sorted({variant_of(name) for name in histories})
    colours = distinct_colours(variants)
    seeds: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    for run_name, records in histories.items():
        seeds[variant_of(run_name)].append(records)
    for axis, key in zip(axes.flat, keys, strict=False):
        for variant in variants:
            steps, values = seed_curve(seeds[variant], key)
            if not steps:
                continue
            many = len(values) > 1
            label = f"{variant} (mean of {len(values)} seeds)" if many else variant
            axis.plot(steps, values.mean(0), color=colours[variant], lw=1.6, label=label)
            if many:
                axis.fill_between(
                    steps, values.min(0), values.max(0), color=colours[variant], alpha=0.2, lw=0
                )
        if threshold is not None:
            axis.axhline(threshold, color="grey", lw=0.8, ls=":")
        axis.set_title(key, fontsize=10)
        if accuracy:
            axis.set_ylim(-0.03, 1.03)
        elif axis.has_data():
            axis.set_yscale("log")
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(keys) :]:
        axis.axis("off")
    axes.flat[0].set_ylabel(metric.label if metric else "exact-match accuracy")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        ncol = min(len(labels), 3 if any("mean of" in label for label in labels) else 5)
        fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False)
        legend_in = 0.3 * -(-len(labels) // ncol)  # inches: one row of legend per ncol labels
    else:
        legend_in = 0.0
    fig.suptitle(title)
    fig.tight_layout(rect=(0, (0.05 + legend_in) / fig.get_size_inches()[1], 1, 0.96))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    png = buffer.getvalue()
    if path is not None:
        with atomic_path(path) as tmp:
            tmp.write_bytes(png)
    return png
