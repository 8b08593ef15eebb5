"""Heatmaps and line plots for the analysis commands (PNG, written atomically)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from reasonlab.io import atomic_path


def _save(fig, path: Path) -> None:
    fig.tight_layout()
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
    fig, axis = plt.subplots(figsize=(1.0 + 0.9 * len(columns), 0.9 + 0.42 * len(rows)))
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
    axis.set_title(title, fontsize=9)
    fig.colorbar(image, ax=axis, fraction=0.05)
    _save(fig, path)


def lines(series: dict[str, list[float]], xticks: list[str], title: str, path: Path) -> None:
    fig, axis = plt.subplots(figsize=(5.5, 3.2))
    colours = plt.get_cmap("viridis")(np.linspace(0, 1, max(2, len(series))))
    for colour, (label, values) in zip(colours, series.items(), strict=False):
        axis.plot(range(len(values)), values, marker="o", color=colour, label=label)
    axis.set_xticks(range(len(xticks)), xticks)
    axis.set_ylim(-0.03, 1.03)
    axis.set_xlabel("layer")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7, ncol=2)
    axis.grid(alpha=0.3)
    _save(fig, path)
