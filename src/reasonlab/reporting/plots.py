"""Heatmaps and line plots for the analysis commands (PNG, written atomically).

Titles are wrapped to the figure's width, and narrow heatmaps are widened to a minimum, so that
no title is clipped and figures placed side by side in a report never run into each other.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from reasonlab.core.files import atomic_path
from reasonlab.reporting.backend import use_file_backend

use_file_backend()  # Agg, unless a notebook or MPLBACKEND chose another

TITLE_SIZE = 9
MIN_WIDTH = 4.2  # inches: room for a wrapped title above even a two-column heatmap


def wrap_title(title: str, width_in: float, fontsize: float = TITLE_SIZE) -> str:
    """``title`` broken into lines that fit ``width_in`` inches at ``fontsize`` points (about
    0.6 em per character, a little wide for DejaVu Sans, so lines err on the short side)."""
    chars = max(16, int(width_in * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.fill(line, chars) for line in title.split("\n"))


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes (laid out tight), for embedding in a report; closes it."""
    import io

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def save_png(fig, path: Path, rect: tuple[float, float, float, float] | None = None) -> None:
    """Writes the figure (laid out tight within ``rect``) to ``path`` whole or not at all."""
    fig.tight_layout(rect=rect)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def heatmap(
    values: np.ndarray,
    rows: list[str],
    columns: list[str],
    title: str,
    path: Path,
    read_position: int | None = None,
    vmin: float = 0.0,
    vmax: float = 1.0,
    cmap: str = "viridis",
) -> None:
    """values (rows, >= len(columns)); layer 0 at the bottom, positions left to right."""
    values = np.asarray(values, dtype=float)[:, : len(columns)]
    width = max(MIN_WIDTH, 1.6 + 0.9 * len(columns))
    title = wrap_title(title, 0.85 * width)  # the axes, not the colorbar, centre the title
    height = 1.0 + 0.42 * len(rows) + 0.17 * title.count("\n")
    fig, axis = plt.subplots(figsize=(width, height))
    image = axis.imshow(values, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap=cmap)
    axis.set_xticks(range(len(columns)), columns)
    axis.set_yticks(range(len(rows)), rows)
    axis.set_xlabel("position")
    axis.set_ylabel("layer")
    for (i, j), value in np.ndenumerate(values):
        if not np.isnan(value):
            axis.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if (value - vmin) / (vmax - vmin + 1e-9) < 0.5 else "black",
            )
    if read_position is not None:
        axis.axvline(read_position + 0.5, color="red", lw=0.8, ls=":")
    axis.set_title(title, fontsize=TITLE_SIZE)
    fig.colorbar(image, ax=axis, fraction=0.05)
    save_png(fig, path)


def lines(series: dict[str, list[float]], xticks: list[str], title: str, path: Path) -> None:
    """One line per series over the layers (x), values in [0, 1]."""
    title = wrap_title(title, 0.85 * 5.5)
    fig, axis = plt.subplots(figsize=(5.5, 3.2 + 0.17 * title.count("\n")))
    colours = plt.get_cmap("viridis")(np.linspace(0, 1, max(2, len(series))))
    for colour, (label, values) in zip(colours, series.items(), strict=False):
        axis.plot(range(len(values)), values, marker="o", color=colour, label=label)
    axis.set_xticks(range(len(xticks)), xticks)
    axis.set_ylim(-0.03, 1.03)
    axis.set_xlabel("layer")
    axis.set_title(title, fontsize=TITLE_SIZE)
    axis.legend(fontsize=7, ncol=2)
    axis.grid(alpha=0.3)
    save_png(fig, path)


def trace_over_training(
    steps: list[int],
    top1: np.ndarray,
    clean_top1: list[float],
    layers: list[str],
    positions: list[str],
    title: str,
    path: Path,
) -> None:
    """Causal tracing over checkpoints: one panel per patched position, the share of queries
    still answering the clean target (y) against the step (x), one line per layer; the dashed
    line is the unpatched model's top-1 share. top1: (steps, layers, >= len(positions))."""
    top1 = np.asarray(top1, dtype=float)
    columns = min(4, len(positions))
    rows = math.ceil(len(positions) / columns)
    width = max(MIN_WIDTH, 2.7 * columns)
    title = wrap_title(title, width)
    lines_of_title = title.count("\n") + 1
    fig, axes = plt.subplots(
        rows, columns, figsize=(width, 0.6 + 2.3 * rows + 0.2 * lines_of_title), squeeze=False
    )
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(2, len(layers))))
    for index, axis in enumerate(axes.flat):
        if index >= len(positions):
            axis.axis("off")
            continue
        for colour, label, values in zip(colours, layers, top1[:, :, index].T, strict=False):
            axis.plot(steps, values, marker="o", ms=3, color=colour, label=label)
        axis.plot(steps, clean_top1, color="black", ls="--", lw=1, label="unpatched")
        axis.set_title(f"patched at {positions[index]}", fontsize=TITLE_SIZE)
        axis.set_ylim(-0.03, 1.03)
        axis.set_xlabel("step", fontsize=8)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    axes.flat[0].set_ylabel("clean target top-1", fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(8, len(labels)), fontsize=7)
    fig.suptitle(title, fontsize=TITLE_SIZE)
    bottom = 0.5 / fig.get_size_inches()[1]  # room for the legend
    top = 1 - 0.2 * lines_of_title / fig.get_size_inches()[1]
    save_png(fig, path, rect=(0, bottom, 1, top))


def decay_panels(layers: list[dict], title: str, path: Path) -> None:
    """The decay probe (analysis/ssm.py): one panel per layer, log10 values against distance:
    the measured score c.b, the surviving decay alpha, the effective weight, and the growth of
    c.b that Theorem 1 says is needed (dashed)."""
    columns = min(3, len(layers))
    rows = math.ceil(len(layers) / columns)
    title = wrap_title(title, 0.85 * 4.2 * columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    series = {
        "log10_cb": "|c_i . b_j|",
        "log10_alpha_max": "alpha (most persistent channel)",
        "log10_score": "effective weight",
        "log10_required": "needed c.b: (1/a)^distance",
    }
    for axis, layer in zip(axes.flat, layers, strict=False):
        for key, label in series.items():
            style = "--" if key == "log10_required" else "-"
            axis.plot(layer["distances"], layer[key], style, marker=".", label=label)
        axis.set_title(
            f"layer {layer['layer']} (median step decay {layer['step_decay_median']:.3f})",
            fontsize=TITLE_SIZE,
        )
        axis.set_xlabel("distance i - j")
        axis.set_ylabel("log10")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(layers) :]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=TITLE_SIZE)
    save_png(fig, path, rect=(0, 0, 1, 0.95))
